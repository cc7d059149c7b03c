/**
 * Sigstore bundles (DSSE in-toto statements, as cosign's new bundle format signs images)
 * attached as OCI 1.1 referrers: found through the referrers API (a loopback server adds it in
 * front of the real registry, which lacks it) or the `sha256-<hex>` referrers tag fallback (the
 * real registry), and verified with sigstore-js.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReference } from '../src/image/reference.js';
import { RegistryClient } from '../src/registry/client.js';
import { cachingSource, offlineSource } from '../src/store/cached-source.js';
import { registrySource } from '../src/sources/source.js';
import { BlobStore } from '../src/store/blob-store.js';
import { verifySigstoreSigned } from '../src/trust/sigstore.js';
import type { SigstoreRequirement, TrustContext } from '../src/trust/types.js';
import { pushImage, type Descriptor } from '../testdata/lib/image-builder.mjs';
import { failure } from './helpers/errors.js';
import { startReferrersProxy, type ReferrersProxy } from './helpers/referrers-proxy.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import {
  keyPair,
  makeBundle,
  OIDC_ISSUER,
  pushBundleReferrer,
  pushReferrersTag,
  TestFulcio,
  TestRekor,
  type BundleOptions,
  type KeyPair,
} from './helpers/sigstore-fixtures.js';

const { host, url } = testRegistry();
const EMAIL = 'release@example.com';
const fulcio = new TestFulcio();
const log = new TestRekor();
let proxy: ReferrersProxy;

beforeAll(async () => {
  proxy = await startReferrersProxy(url);
});
afterAll(async () => {
  await proxy.close();
});

/** As the --verify-* flags ask: cosign's bundles name no identity and are accepted on their digest. */
function keyless(acceptDigestOnlySignatures = true, ca = fulcio.caPem): SigstoreRequirement {
  return {
    type: 'sigstoreSigned',
    publicKeys: [],
    fulcio: { caCertificates: ca, oidcIssuer: OIDC_ISSUER, subjectEmail: EMAIL },
    rekorPublicKeys: [log.key.pem],
    signedIdentity: { type: 'matchRepoDigestOrExact' },
    acceptDigestOnlySignatures,
  };
}

function withKey(key: KeyPair, logs: TestRekor[] = [log]): SigstoreRequirement {
  const { fulcio: _none, ...rest } = keyless();
  return { ...rest, publicKeys: [key.pem], rekorPublicKeys: logs.map((l) => l.key.pem) };
}

interface Image {
  repo: string;
  descriptor: Descriptor;
  digest: string;
  /** Verification through the referrers API (the proxy) or the real registry (tag fallback). */
  via(kind: 'api' | 'tag', notices?: string[]): TrustContext;
  /** Pushes `bundle` as a referrer and lists it where `kind` looks. */
  attach(kind: 'api' | 'tag', bundle: Buffer): Promise<void>;
}

async function image(label = 'a'): Promise<Image> {
  const repo = uniqueRepo('bundles');
  const { descriptor } = await pushImage(url, repo, 'v1', { config: { config: { Labels: { label } } } });
  const digest = descriptor.digest;
  const tagged: Descriptor[] = [];
  return {
    repo,
    descriptor,
    digest,
    via(kind, notices = []) {
      const registry = kind === 'api' ? proxy.host : host;
      const name = `${registry}/${repo}:v1`;
      const source = registrySource(new RegistryClient({ registry }), repo);
      return { source, reference: parseReference(name), digest, onNotice: (m) => notices.push(m) };
    },
    async attach(kind, bundle) {
      const referrer = await pushBundleReferrer(url, repo, descriptor, bundle);
      if (kind === 'api') proxy.add(repo, digest, referrer);
      else await pushReferrersTag(url, repo, digest, [...tagged.splice(0), referrer]);
      tagged.push(referrer);
    },
  };
}

const bundle = (o: Partial<BundleOptions> & { digest: string }): Buffer => makeBundle({ log, leaf: fulcio.leaf({ email: EMAIL }), ...o });
const any = () => true;

describe('sigstore bundles attached as OCI 1.1 referrers', () => {
  it('accepts a keyless bundle found through the referrers API', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest }));
    const before = proxy.requests.length;
    const result = await verifySigstoreSigned(img.via('api'), keyless(), any);
    expect(result.accepted).toEqual({ kind: 'sigstore-bundle', signer: `${EMAIL} from ${OIDC_ISSUER}`, verified: true });
    const asked = proxy.requests.slice(before);
    expect(asked).toContain(`/v2/${img.repo}/referrers/${img.digest}`);
    expect(asked).not.toContain(`/v2/${img.repo}/manifests/${img.digest.replace(':', '-')}`);
  });

  it('falls back to the sha256-<hex> referrers tag on a registry without the referrers API', async () => {
    const img = await image();
    await img.attach('tag', bundle({ digest: img.digest }));
    const notices: string[] = [];
    const result = await verifySigstoreSigned(img.via('tag', notices), keyless(), any);
    expect(result.accepted.kind).toBe('sigstore-bundle');
    expect(notices).toEqual([
      `${host}/${img.repo} has no referrers API: reading sigstore bundles from the ${img.digest.replace(':', '-')} tag`,
    ]);
  });

  it('accepts a bundle signed with a trusted key and logged in Rekor', async () => {
    const img = await image();
    const key = keyPair();
    await img.attach('api', makeBundle({ digest: img.digest, key, log }));
    const result = await verifySigstoreSigned(img.via('api'), withKey(key), any);
    expect(result.accepted.signer).toMatch(/^SHA256:[0-9a-f]{64}$/);
    const err = await failure(verifySigstoreSigned(img.via('api'), withKey(keyPair()), any));
    expect(err.message).toContain('the bundle does not verify with the trusted key');
  });

  it('rejects a bundle whose statement signs another digest', async () => {
    const [img, other] = [await image('a'), await image('b')];
    await img.attach('tag', bundle({ digest: other.digest }));
    const err = await failure(verifySigstoreSigned(img.via('tag'), keyless(), any));
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toContain(`it signs ${other.digest}, not ${img.digest}`);
  });

  it('rejects a bundle that names no image identity when digest-only signatures are not accepted (policy files)', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(false), any));
    expect(err.message).toContain("it names no image identity (cosign's bundles sign the digest only)");
  });

  it('checks the identity a bundle names against the signedIdentity matcher', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest, subjectName: 'registry.example/other:v1' }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(false), (signed) => signed === 'registry.example/app:v1'));
    expect(err.message).toContain('it is signed for registry.example/other:v1, which the signedIdentity rule does not accept');
    const result = await verifySigstoreSigned(img.via('api'), keyless(false), (signed) => signed === 'registry.example/other:v1');
    expect(result.accepted.verified).toBe(true);
  });

  it('rejects a bundle whose signature was tampered with', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest, tamperSignature: true }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.message).toContain('the bundle does not verify');
  });

  it('rejects a bundle whose certificate is from an untrusted CA', async () => {
    const img = await image();
    const rogue = new TestFulcio('rogue');
    await img.attach('api', bundle({ digest: img.digest, leaf: rogue.leaf({ email: EMAIL }) }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.message).toMatch(/the bundle does not verify: .*certificate chain/i);
  });

  it('rejects a bundle whose certificate is for another identity', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest, leaf: fulcio.leaf({ email: 'intruder@example.com' }) }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.message).toContain(`the certificate is for intruder@example.com, not ${EMAIL}`);
  });

  it('rejects a bundle whose Rekor entry is from an untrusted log', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest, log: new TestRekor() }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.message).toMatch(/the bundle does not verify: .*inclusion promise/);
  });

  it('does not count attestations of other predicates as signatures', async () => {
    const img = await image();
    await img.attach('api', bundle({ digest: img.digest, predicateType: 'https://slsa.dev/provenance/v1' }));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.message).toContain('is a "https://slsa.dev/provenance/v1" attestation, not an image signature');
  });

  it('rejects a keyless bundle whose log entry has an inclusion proof but no signed entry timestamp: nothing dates the certificate', async () => {
    const img = await image();
    const doc = JSON.parse(bundle({ digest: img.digest }).toString()) as {
      verificationMaterial: { tlogEntries: Array<{ inclusionPromise?: unknown }> };
    };
    delete doc.verificationMaterial.tlogEntries[0]!.inclusionPromise;
    await img.attach('api', Buffer.from(JSON.stringify(doc)));
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toMatch(/the bundle does not verify: expected 1 timestamps, got 0/);
  });

  it('rejects a sigstore bundle over its size cap', async () => {
    const img = await image();
    const padded = Buffer.concat([bundle({ digest: img.digest }), Buffer.alloc(1024 * 1024, ' ')]);
    await img.attach('api', padded);
    const err = await failure(verifySigstoreSigned(img.via('api'), keyless(), any));
    expect(err.message).toMatch(/over the 1048576-byte limit/);
  });

  for (const kind of ['api', 'tag'] as const) {
    it(`verifies bundles offline from the cache after an online verification (${kind === 'api' ? 'referrers API' : 'referrers tag'})`, async () => {
      const img = await image();
      await img.attach(kind, bundle({ digest: img.digest }));
      const cache = await mkdtemp(join(tmpdir(), 'sigstore-bundles-cache-'));
      try {
        const store = new BlobStore(cache);
        const online = img.via(kind);
        const name = online.reference!.toString();
        const offline = { ...online, source: offlineSource(store, online.source.name, name) };
        expect((await failure(verifySigstoreSigned(offline, keyless(), any))).message).toContain('has no sigstore signature');
        const first = await verifySigstoreSigned({ ...online, source: cachingSource(online.source, store) }, keyless(), any);
        expect(await verifySigstoreSigned(offline, keyless(), any)).toEqual(first);
        const err = await failure(verifySigstoreSigned(offline, keyless(true, new TestFulcio('other').caPem), any));
        expect(err.message).toContain('does not verify');
      } finally {
        await rm(cache, { recursive: true, force: true });
      }
    });
  }
});
