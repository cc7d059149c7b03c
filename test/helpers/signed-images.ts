/**
 * Images with GPG simple signatures made by `skopeo copy --sign-by` on the test registry, in a
 * file:// lookaside named by a registries.d directory: the fixtures of the trust tests.
 */
import { cp, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pushImage, pushManifest, pushMultiPlatform, tarLayer } from '../../testdata/lib/image-builder.mjs';
import { gpgHome, makeGpgKey, registriesDir, skopeoSign, type GpgKey } from './gpg.js';
import { testRegistry, uniqueRepo } from './registry.js';

export interface SignedFixtures {
  root: string;
  home: string;
  /** Key A (RSA, gpg's default) signs most images; key B (ed25519) signs `otherKey`. */
  a: GpgKey;
  b: GpgKey;
  lookaside: string;
  registriesD: string;
  /** 'host/test/trust-…': every repository below is in this namespace. */
  ns: string;
  /** The digest of the image `signed` names (also that of otherKey, unsigned, upstream, mirror). */
  digest: string;
  layerDigest: string;
  images: {
    /** Signed by A as ns/signed/app:v1. */
    signed: string;
    /** The same manifest by digest. */
    byDigest: string;
    /** The same manifest tagged v2: its only signature names v1. */
    retagged: string;
    /** Signed by B. */
    otherKey: string;
    unsigned: string;
    /** Signed by A as ns/upstream/app:v1, served as ns/mirror/app:v1 (remapIdentity). */
    mirror: string;
    /** Its lookaside holds a valid signature by A for this name, but over another image's digest. */
    otherDigest: string;
    /** A multi-platform index signed by A with `skopeo copy --all --sign-by` (the index and each image). */
    index: string;
  };
}

/** Builds every fixture under `root` (keys, lookaside, registries.d) and on the test registry. */
export async function signedFixtures(root: string): Promise<SignedFixtures> {
  const { host, url } = testRegistry();
  const home = await gpgHome(root);
  const [a, b] = [await makeGpgKey(home, 'signer-a'), await makeGpgKey(home, 'signer-b', 'ed25519')];
  const lookaside = join(root, 'lookaside');
  await mkdir(lookaside);
  const registriesD = await registriesDir(root, lookaside);
  const ns = `${host}/${uniqueRepo('trust')}`;
  const path = (ref: string): string => ref.slice(host.length + 1).replace(/:[^:/]+$/, '');
  const tar = await tarLayer([{ name: 'hello.txt', type: 'file', content: `signed ${ns}\n` }]);
  const source = await pushImage(url, path(`${ns}/source/app:v1`), 'v1', { layers: [{ tar }] });
  const digest = source.descriptor.digest;
  const sign = (key: GpgKey, dest: string): Promise<void> => skopeoSign(home, registriesD, key.fingerprint, `${ns}/source/app:v1`, dest);
  const images = {
    signed: `${ns}/signed/app:v1`,
    byDigest: `${ns}/signed/app@${digest}`,
    retagged: `${ns}/signed/app:v2`,
    otherKey: `${ns}/other/app:v1`,
    unsigned: `${ns}/unsigned/app:v1`,
    mirror: `${ns}/mirror/app:v1`,
    otherDigest: `${ns}/signed/moved:v1`,
    index: `${ns}/signed/multi:v1`,
  };
  await sign(a, images.signed);
  await pushManifest(url, path(images.signed), 'v2', source.manifestBytes, source.descriptor.mediaType);
  await sign(b, images.otherKey);
  await pushImage(url, path(images.unsigned), 'v1', { layers: [{ tar }] });
  await sign(a, `${ns}/upstream/app:v1`);
  await pushImage(url, path(images.mirror), 'v1', { layers: [{ tar }] });
  const dirOf = (repo: string, d: string): string => join(lookaside, `${path(repo)}@${d.replace(':', '=')}`);
  await cp(dirOf(`${ns}/upstream/app:v1`, digest), dirOf(images.mirror, digest), { recursive: true });
  // A valid signature for ns/signed/moved:v1 over the source digest, then the tag moves to another image.
  await sign(a, images.otherDigest);
  const moved = await pushImage(url, path(images.otherDigest), 'v1', {
    layers: [{ tar: await tarLayer([{ name: 'other.txt', type: 'file', content: 'moved\n' }]) }],
  });
  await cp(dirOf(images.otherDigest, digest), dirOf(images.otherDigest, moved.descriptor.digest), { recursive: true });
  await pushMultiPlatform(url, path(`${ns}/source/multi:v1`), 'v1', ['linux/amd64', 'linux/arm64'], { files: { 'ns.txt': ns } });
  await skopeoSign(home, registriesD, a.fingerprint, `${ns}/source/multi:v1`, images.index, true);
  return { root, home, a, b, lookaside, registriesD, ns, digest, layerDigest: source.layers[0]!.digest, images };
}
