/**
 * Images on the test registry with cosign signatures made by the tests (sigstore-fixtures.ts),
 * stored as `cosign sign` stores them (`sha256-<hex>.sig` tags), and the files a user hands
 * pull-unpack to verify them: cosign.pub files, a trusted_root.json for the test Fulcio CA and
 * Rekor log, the CA and Rekor key as PEM files for a policy, and registries.d directories.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { compressLayer, pushImage, pushMultiPlatform, sha256, tarLayer, type Descriptor } from '../../testdata/lib/image-builder.mjs';
import { testRegistry, uniqueRepo } from './registry.js';
import {
  keylessSignature,
  keyPair,
  keySignature,
  OIDC_ISSUER,
  SIMPLE_SIGNING,
  pushSignatures,
  simpleSigningPayload,
  TestFulcio,
  TestRekor,
  trustedRoot,
  type KeyPair,
  type SignatureLayer,
} from './sigstore-fixtures.js';

export const SIGNER_EMAIL = 'release@example.com';

export interface CosignFixtures {
  root: string;
  /** Key A signs most images; key B signs `otherKey`. */
  a: KeyPair & { path: string };
  b: KeyPair & { path: string };
  fulcio: TestFulcio;
  log: TestRekor;
  /** sigstore's trusted_root.json for `fulcio` and `log`. */
  trustedRootPath: string;
  /** The Fulcio CA certificates (PEM) and the Rekor public key (PEM), as a policy names them. */
  fulcioCaPath: string;
  rekorKeyPath: string;
  /** registries.d directories: use-sigstore-attachments true for every registry, and false. */
  registriesD: { on: string; off: string };
  /** 'host/test/cosign-…': every repository below is in this namespace. */
  ns: string;
  /** The digest of the image most references name, and its one layer. */
  digest: string;
  descriptor: Descriptor;
  layerDigest: string;
  images: {
    /** Signed with key A for its own name. */
    signed: string;
    /** The same manifest by digest (the signature names the v1 tag). */
    byDigest: string;
    /** Signed with key B. */
    otherKey: string;
    unsigned: string;
    /** A valid signature by key A, but over another digest (the tag moved after signing). */
    otherDigest: string;
    /** Keyless: a Fulcio certificate for SIGNER_EMAIL from OIDC_ISSUER, logged in Rekor. */
    keyless: string;
    /** Keyless, for another email. */
    keylessOther: string;
    /** A multi-platform index whose index digest is signed with key A. */
    index: string;
    /** The same images, but only the platform manifests are signed, not the index. */
    indexImagesOnly: string;
  };
  /**
   * Pushes the image `signed` names to a new repository `ns/label/app` (tag v1) and attaches the
   * signature `sign` makes over its digest for the name `claimed(repository)` (by default the
   * registry's own name, host/repository:v1; a test may name a proxy in front of the registry
   * instead); returns the repository.
   */
  pushSigned(label: string, sign: Signer, claimed?: (repository: string) => string): Promise<string>;
}

/** Makes a cosign signature layer over `digest` claiming the docker reference `name`. */
export type Signer = (digest: string, name: string) => SignatureLayer;

/** A cosign signature by `key`. */
export function signedWith(key: KeyPair): Signer {
  return (digest, name) => keySignature(key, simpleSigningPayload(digest, name));
}

/** A keyless cosign signature: a certificate from `fulcio` for `email` and `issuer`, logged in `log`. */
export function signedKeyless(fulcio: TestFulcio, log: TestRekor, email: string, issuer = OIDC_ISSUER): Signer {
  return (digest, name) => keylessSignature(fulcio, fulcio.leaf({ email }, { issuer }), log, simpleSigningPayload(digest, name));
}

/** Builds the images on the test registry and the key, trust-root and registries.d files under `root`. */
export async function cosignFixtures(root: string): Promise<CosignFixtures> {
  const { host, url } = testRegistry();
  const fulcio = new TestFulcio();
  const log = new TestRekor();
  const keyFile = async (name: string, pair: KeyPair): Promise<KeyPair & { path: string }> => {
    const path = join(root, name);
    await writeFile(path, pair.pem);
    return { ...pair, path };
  };
  const a = await keyFile('cosign.pub', keyPair());
  const b = await keyFile('other-cosign.pub', keyPair());
  const trustedRootPath = join(root, 'trusted_root.json');
  await writeFile(trustedRootPath, JSON.stringify(trustedRoot(fulcio, log), null, 2));
  const fulcioCaPath = join(root, 'fulcio.pem');
  await writeFile(fulcioCaPath, fulcio.caPem);
  const rekorKeyPath = join(root, 'rekor.pub');
  await writeFile(rekorKeyPath, log.key.pem);
  const registriesD = { on: join(root, 'registries.d'), off: join(root, 'registries.d-off') };
  for (const [dir, use] of [
    [registriesD.on, true],
    [registriesD.off, false],
  ] as const) {
    await mkdir(dir);
    await writeFile(join(dir, 'default.yaml'), `default-docker:\n  use-sigstore-attachments: ${use}\n`);
  }

  const ns = `${host}/${uniqueRepo('cosign')}`;
  const path = (ref: string): string => ref.slice(host.length + 1).replace(/:[^:/]+$/, '');
  const tar = await tarLayer([{ name: 'hello.txt', type: 'file', content: `cosign ${ns}\n` }]);
  const push = async (ref: string, content = 'hello'): Promise<{ descriptor: Descriptor; layerDigest: string }> => {
    const layer = content === 'hello' ? tar : await tarLayer([{ name: 'other.txt', type: 'file', content }]);
    const pushed = await pushImage(url, path(ref), 'v1', { layers: [{ tar: layer }] });
    return { descriptor: pushed.descriptor, layerDigest: pushed.layers[0]!.digest };
  };
  const byKey = (key: KeyPair, digest: string, ref: string): SignatureLayer => signedWith(key)(digest, ref);
  const keyless = (email: string, digest: string, ref: string): SignatureLayer => signedKeyless(fulcio, log, email)(digest, ref);

  const images = {
    signed: `${ns}/signed/app:v1`,
    byDigest: '',
    otherKey: `${ns}/other/app:v1`,
    unsigned: `${ns}/unsigned/app:v1`,
    otherDigest: `${ns}/moved/app:v1`,
    keyless: `${ns}/keyless/app:v1`,
    keylessOther: `${ns}/keyless-other/app:v1`,
    index: `${ns}/multi/app:v1`,
    indexImagesOnly: `${ns}/multi-images/app:v1`,
  };
  const { descriptor, layerDigest } = await push(images.signed);
  const digest = descriptor.digest;
  images.byDigest = `${ns}/signed/app@${digest}`;
  await pushSignatures(url, path(images.signed), digest, [byKey(a, digest, images.signed)]);
  await push(images.otherKey);
  await pushSignatures(url, path(images.otherKey), digest, [byKey(b, digest, images.otherKey)]);
  await push(images.unsigned);
  // Signed while the tag named `digest`; the tag then moved to another image, whose .sig tag
  // now holds that signature (as a registry copy of the signatures would leave it).
  const moved = await push(images.otherDigest, 'moved\n');
  await pushSignatures(url, path(images.otherDigest), moved.descriptor.digest, [byKey(a, digest, images.otherDigest)]);
  await push(images.keyless);
  await pushSignatures(url, path(images.keyless), digest, [keyless(SIGNER_EMAIL, digest, images.keyless)]);
  await push(images.keylessOther);
  await pushSignatures(url, path(images.keylessOther), digest, [keyless('someone@example.com', digest, images.keylessOther)]);

  for (const [ref, signIndex] of [
    [images.index, true],
    [images.indexImagesOnly, false],
  ] as const) {
    const multi = await pushMultiPlatform(url, path(ref), 'v1', ['linux/amd64', 'linux/arm64'], { files: { 'ns.txt': ns } });
    const signedDigests = signIndex ? [multi.descriptor.digest] : multi.images.map((i) => i.descriptor.digest);
    for (const d of signedDigests) await pushSignatures(url, path(ref), d, [byKey(a, d, ref)]);
  }
  const pushSigned = async (label: string, sign: Signer, claimed = (r: string): string => `${host}/${r}:v1`): Promise<string> => {
    const repository = path(`${ns}/${label}/app:v1`);
    await push(`${ns}/${label}/app:v1`);
    await pushSignatures(url, repository, digest, [sign(digest, claimed(repository))]);
    return repository;
  };
  return {
    pushSigned,
    root,
    a,
    b,
    fulcio,
    log,
    trustedRootPath,
    fulcioCaPath,
    rekorKeyPath,
    registriesD,
    ns,
    digest,
    descriptor,
    layerDigest,
    images,
  };
}

/**
 * Writes an OCI layout as `cosign save` does: the image (one layer holding hello.txt) and its
 * signature manifest, both unnamed and marked with cosign's `kind` annotation; the signature
 * is made by `sign` over the image digest. Returns the image's manifest descriptor.
 */
export async function writeCosignSaveLayout(dir: string, sign: (digest: string) => SignatureLayer): Promise<Descriptor> {
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  const put = async (bytes: Buffer, mediaType: string, annotations?: Record<string, string>): Promise<Descriptor> => {
    await writeFile(join(dir, 'blobs/sha256', sha256(bytes).slice('sha256:'.length)), bytes);
    return { mediaType, digest: sha256(bytes), size: bytes.length, ...(annotations && { annotations }) };
  };
  const tar = await tarLayer([{ name: 'hello.txt', type: 'file', content: 'saved by cosign\n' }]);
  const layer = await put(await compressLayer(tar, 'gzip'), 'application/vnd.oci.image.layer.v1.tar+gzip');
  const config = await put(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } })),
    'application/vnd.oci.image.config.v1+json',
  );
  const manifest = (cfg: Descriptor, layers: Descriptor[]): Buffer =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: cfg, layers }));
  const image = await put(manifest(config, [layer]), 'application/vnd.oci.image.manifest.v1+json');
  const signed = sign(image.digest);
  const payload = await put(signed.payload, SIMPLE_SIGNING, signed.annotations);
  const sigConfig = await put(Buffer.from('{}'), 'application/vnd.oci.image.config.v1+json');
  const signatures = await put(manifest(sigConfig, [payload]), 'application/vnd.oci.image.manifest.v1+json');
  // cosign save marks its entries with a `kind` annotation and names none of them.
  const manifests = [
    { ...image, annotations: { kind: 'dev.cosignproject.cosign/image' } },
    { ...signatures, annotations: { kind: 'dev.cosignproject.cosign/sigs' } },
  ];
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }),
  );
  return image;
}

export { OIDC_ISSUER };
