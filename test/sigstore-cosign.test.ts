/**
 * cosign-format signatures with public keys, made by the tests with node:crypto and pushed to
 * the real test registry as cosign stores them (`sha256-<hex>.sig` manifests), verified by
 * verifySigstoreSigned; also offline from the blob cache and from a `cosign save` layout.
 */
import { describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReference } from '../src/image/reference.js';
import { RegistryClient } from '../src/registry/client.js';
import { cachingSource, offlineSource } from '../src/store/cached-source.js';
import { openLocalSource } from '../src/sources/layout.js';
import { parseLocalReference } from '../src/image/local-reference.js';
import { registrySource } from '../src/sources/source.js';
import { BlobStore } from '../src/store/blob-store.js';
import { verifySigstoreSigned } from '../src/trust/sigstore.js';
import type { IdentityMatcher, SigstoreRequirement, TrustContext } from '../src/trust/types.js';
import { pushImage } from '../testdata/lib/image-builder.mjs';
import { writeCosignSaveLayout } from './helpers/cosign-images.js';
import { failure } from './helpers/errors.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import {
  keyPair,
  keySignature,
  pushSignatures,
  signatureTag,
  simpleSigningPayload,
  TestRekor,
  type KeyPair,
  type SignatureLayer,
} from './helpers/sigstore-fixtures.js';

const { host, url } = testRegistry();

function keyRequirement(keys: KeyPair[], rekor: TestRekor[] = []): SigstoreRequirement {
  return {
    type: 'sigstoreSigned',
    publicKeys: keys.map((k) => k.pem),
    rekorPublicKeys: rekor.map((r) => r.key.pem),
    signedIdentity: { type: 'matchRepoDigestOrExact' },
  };
}

/** A matcher accepting exactly `reference`, standing in for trust/identity.ts. */
const only =
  (reference: string): IdentityMatcher =>
  (signed) =>
    signed === reference;

interface Pushed {
  repo: string;
  name: string;
  digest: string;
  ctx: TrustContext;
}

/** Pushes a small image tagged v1 (distinct per `label`) and the context to verify it in. */
async function image(label = 'a'): Promise<Pushed> {
  const repo = uniqueRepo('sigstore');
  const pushed = await pushImage(url, repo, 'v1', { config: { config: { Labels: { label } } } });
  const name = `${host}/${repo}:v1`;
  const client = new RegistryClient({ registry: host });
  return {
    repo,
    name,
    digest: pushed.descriptor.digest,
    ctx: { source: registrySource(client, repo), reference: parseReference(name), digest: pushed.descriptor.digest },
  };
}

async function sign(img: Pushed, layers: SignatureLayer[]): Promise<void> {
  await pushSignatures(url, img.repo, img.digest, layers);
}

describe('cosign signatures verified with public keys', () => {
  for (const type of ['ec', 'rsa', 'ed25519'] as const) {
    it(`accepts a cosign signature made with the trusted ${type} key`, async () => {
      const img = await image();
      const key = keyPair(type);
      await sign(img, [keySignature(key, simpleSigningPayload(img.digest, img.name))]);
      const result = await verifySigstoreSigned(img.ctx, keyRequirement([key]), only(img.name));
      expect(result.accepted).toMatchObject({ kind: 'cosign', verified: true });
      expect(result.accepted.signer).toMatch(/^SHA256:[0-9a-f]{64}$/);
      expect(result.seen).toHaveLength(1);
    });
  }

  it('rejects an unsigned image: no signature', async () => {
    const img = await image();
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([keyPair()]), only(img.name)));
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toContain('has no sigstore signature');
    expect(err.message).toContain(signatureTag(img.digest));
  });

  it('rejects a signature made with another key', async () => {
    const img = await image();
    await sign(img, [keySignature(keyPair(), simpleSigningPayload(img.digest, img.name))]);
    const trusted = keyPair();
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([trusted]), only(img.name)));
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toContain('not signed by the trusted key SHA256:');
    expect(err.hint).toContain('private key');
  });

  it('rejects a valid signature over another digest', async () => {
    const img = await image('a');
    const other = await image('b');
    const key = keyPair();
    // A genuine signature of the other image, attached to this one.
    await sign(img, [keySignature(key, simpleSigningPayload(other.digest, img.name))]);
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key]), only(img.name)));
    expect(err.message).toContain(`it signs ${other.digest}, not ${img.digest}`);
    expect(err.hint).toContain('tag may have moved');
  });

  it('rejects a signature for an identity the signedIdentity matcher refuses', async () => {
    const img = await image();
    const key = keyPair();
    await sign(img, [keySignature(key, simpleSigningPayload(img.digest, `${host}/elsewhere/app:v1`))]);
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key]), only(img.name)));
    expect(err.message).toContain(`it is signed for ${host}/elsewhere/app:v1, which the signedIdentity rule does not accept`);
  });

  it('rejects a tampered payload', async () => {
    const img = await image();
    const key = keyPair();
    const signed = keySignature(key, simpleSigningPayload(img.digest, img.name));
    const tampered = Buffer.from(signed.payload.toString().replace(img.name, `${host}/evil/app:v1`));
    await sign(img, [{ payload: tampered, annotations: signed.annotations }]);
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key]), () => true));
    expect(err.message).toContain('not signed by the trusted key');
  });

  it('rejects a signed payload that repeats a key, which two JSON parsers could read differently', async () => {
    const img = await image();
    const other = await image('b');
    const key = keyPair();
    const text = `{"critical":{"identity":{"docker-reference":"${img.name}"},"image":{"docker-manifest-digest":"${other.digest}","docker-manifest-digest":"${img.digest}"},"type":"cosign container image signature"},"optional":null}`;
    await sign(img, [keySignature(key, Buffer.from(text))]);
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key]), only(img.name)));
    expect(err.message).toContain('repeats the key "docker-manifest-digest"');
  });

  it('accepts when one of several signatures verifies, and reports every signature seen', async () => {
    const img = await image();
    const [stranger, trusted] = [keyPair(), keyPair()];
    await sign(img, [
      keySignature(stranger, simpleSigningPayload(img.digest, img.name)),
      keySignature(trusted, simpleSigningPayload(img.digest, img.name)),
    ]);
    const result = await verifySigstoreSigned(img.ctx, keyRequirement([keyPair(), trusted]), only(img.name));
    expect(result.seen.map((s) => s.verified)).toEqual([false, true]);
    expect(result.seen[0]!.reason).toContain('not signed by any of the 2 trusted keys');
    expect(result.accepted).toBe(result.seen[1]);
  });

  it('rejects a signature payload over its size cap without reading it', async () => {
    const img = await image();
    const key = keyPair();
    const big = simpleSigningPayload(img.digest, img.name, { padding: 'x'.repeat(1024 * 1024) });
    await sign(img, [keySignature(key, big)]);
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key]), only(img.name)));
    expect(err.message).toMatch(/is \d+ bytes, over the 1048576-byte limit/);
  });

  it('rejects a signature manifest over its size cap', async () => {
    const img = await image();
    const key = keyPair();
    const layer = keySignature(key, simpleSigningPayload(img.digest, img.name));
    layer.annotations['org.example.padding'] = 'x'.repeat(1024 * 1024);
    await sign(img, [layer]);
    const err = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key]), only(img.name)));
    expect(err.message).toMatch(/sha256-[0-9a-f]{64}\.sig is \d+ bytes, over the cap of 1048576/);
  });

  it('requires a Rekor entry signed by a trusted log when the requirement names Rekor keys', async () => {
    const img = await image();
    const [key, log, otherLog] = [keyPair(), new TestRekor(), new TestRekor()];
    const payload = simpleSigningPayload(img.digest, img.name);
    await sign(img, [keySignature(key, payload)]);
    const missing = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key], [log]), only(img.name)));
    expect(missing.message).toContain('it has no Rekor bundle, which the requirement asks for');

    await sign(img, [keySignature(key, payload, { log: otherLog, at: Math.floor(Date.now() / 1000) })]);
    const untrustedLog = await failure(verifySigstoreSigned(img.ctx, keyRequirement([key], [log]), only(img.name)));
    expect(untrustedLog.message).toContain(`the Rekor entry is from log ${otherLog.logId}`);

    await sign(img, [keySignature(key, payload, { log, at: Math.floor(Date.now() / 1000) })]);
    const result = await verifySigstoreSigned(img.ctx, keyRequirement([key], [log]), only(img.name));
    expect(result.accepted.verified).toBe(true);
  });

  it('refuses a requirement with both keys and a Fulcio CA as an invalid policy', async () => {
    const img = await image();
    const requirement = { ...keyRequirement([keyPair()]), fulcio: { caCertificates: '', oidcIssuer: 'https://x', subjectEmail: 'a@b' } };
    const err = await failure(verifySigstoreSigned(img.ctx, requirement, only(img.name)));
    expect(err.code).toBe('INVALID_POLICY');
  });
});

describe('cosign signatures offline and in local layouts', () => {
  it('verifies offline from the cache exactly as online, after an online verification', async () => {
    const img = await image();
    const key = keyPair();
    await sign(img, [keySignature(key, simpleSigningPayload(img.digest, img.name))]);
    const cache = await mkdtemp(join(tmpdir(), 'sigstore-cache-'));
    try {
      const store = new BlobStore(cache);
      const offline = { ...img.ctx, source: offlineSource(store, img.ctx.source.name, img.name) };
      const before = await failure(verifySigstoreSigned(offline, keyRequirement([key]), only(img.name)));
      expect(before.message).toContain('has no sigstore signature');

      const online = await verifySigstoreSigned(
        { ...img.ctx, source: cachingSource(img.ctx.source, store) },
        keyRequirement([key]),
        only(img.name),
      );
      const again = await verifySigstoreSigned(offline, keyRequirement([key]), only(img.name));
      expect(again).toEqual(online);
      // Offline verification is verification: another key is still refused.
      const refused = await failure(verifySigstoreSigned(offline, keyRequirement([keyPair()]), only(img.name)));
      expect(refused.message).toContain('not signed by the trusted key');
    } finally {
      await rm(cache, { recursive: true, force: true });
    }
  });

  it('verifies the signatures a cosign save layout carries, from the oci: layout', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cosign-save-'));
    try {
      const key = keyPair();
      const imageDescriptor = await writeCosignSaveLayout(dir, (digest) =>
        keySignature(key, simpleSigningPayload(digest, 'registry.example/app:1.0')),
      );
      const opened = await openLocalSource(parseLocalReference(`oci:${dir}`)!);
      try {
        expect(opened.reference).toBe(imageDescriptor.digest);
        const ctx = { source: opened.source, reference: undefined, digest: imageDescriptor.digest };
        const result = await verifySigstoreSigned(ctx, keyRequirement([key]), only('registry.example/app:1.0'));
        expect(result.accepted.signer).toMatch(/^SHA256:/);
        const err = await failure(verifySigstoreSigned(ctx, keyRequirement([keyPair()]), only('registry.example/app:1.0')));
        expect(err.message).toContain('not signed by the trusted key');
      } finally {
        await opened.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
