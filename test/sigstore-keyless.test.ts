/**
 * Keyless cosign signatures: a test Fulcio CA issues Fulcio-like leaves (email or URI SAN,
 * code-signing EKU, OIDC issuer extensions), a test Rekor log signs the entry timestamp, and
 * the signature manifest is pushed to the real test registry as cosign stores it.
 */
import { describe, expect, it } from 'vitest';
import { parseReference } from '../src/image/reference.js';
import { RegistryClient } from '../src/registry/client.js';
import { registrySource } from '../src/sources/source.js';
import { verifySigstoreSigned } from '../src/trust/sigstore.js';
import type { SigstoreRequirement, TrustContext } from '../src/trust/types.js';
import { pushImage } from '../testdata/lib/image-builder.mjs';
import { failure } from './helpers/errors.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import {
  keylessSignature,
  keyPair,
  OIDC_ISSUER,
  pushSignatures,
  signBytes,
  simpleSigningPayload,
  TestFulcio,
  TestRekor,
  type SignatureLayer,
} from './helpers/sigstore-fixtures.js';
import { makeCertificate, OIDS, tlv, type CertificateSpec, type TestCertificate } from './helpers/x509-builder.js';

const { host, url } = testRegistry();
const EMAIL = 'release@example.com';
const fulcio = new TestFulcio();
const log = new TestRekor();

function keyless(
  subject: { subjectEmail?: string; subjectUri?: string } = { subjectEmail: EMAIL },
  ca = fulcio.caPem,
  logs = [log],
): SigstoreRequirement {
  return {
    type: 'sigstoreSigned',
    publicKeys: [],
    fulcio: { caCertificates: ca, oidcIssuer: OIDC_ISSUER, ...subject },
    rekorPublicKeys: logs.map((l) => l.key.pem),
    signedIdentity: { type: 'matchRepoDigestOrExact' },
  };
}

interface Signed {
  name: string;
  digest: string;
  payload: Buffer;
  ctx: TrustContext;
  attach(layer: SignatureLayer): Promise<void>;
}

async function image(): Promise<Signed> {
  const repo = uniqueRepo('keyless');
  const pushed = await pushImage(url, repo, 'v1', {});
  const name = `${host}/${repo}:v1`;
  const digest = pushed.descriptor.digest;
  return {
    name,
    digest,
    payload: simpleSigningPayload(digest, name),
    ctx: { source: registrySource(new RegistryClient({ registry: host }), repo), reference: parseReference(name), digest },
    attach: async (layer) => void (await pushSignatures(url, repo, digest, [layer])),
  };
}

const matches = (name: string) => (signed: string) => signed === name;

/** A Fulcio-like leaf for EMAIL from OIDC_ISSUER, valid now, with `overrides` applied. */
function leafWith(overrides: Partial<CertificateSpec>): TestCertificate {
  const now = Date.now();
  return makeCertificate({
    issuer: fulcio.intermediate,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 60_000),
    emails: [EMAIL],
    extendedKeyUsages: [OIDS.codeSigning],
    issuerV2: OIDC_ISSUER,
    ...overrides,
  });
}

describe('keyless cosign signatures (Fulcio certificate + Rekor bundle)', () => {
  it('accepts a Fulcio leaf with the email SAN and the OIDC issuer, chained to the trusted CA and logged in Rekor', async () => {
    const img = await image();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), log, img.payload));
    const result = await verifySigstoreSigned(img.ctx, keyless(), matches(img.name));
    expect(result.accepted).toEqual({ kind: 'cosign', signer: `${EMAIL} from ${OIDC_ISSUER}`, verified: true });
  });

  it('accepts a leaf that names the signer as a URI SAN (a CI workflow identity)', async () => {
    const img = await image();
    const uri = 'https://github.com/example/app/.github/workflows/release.yml@refs/heads/main';
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ uri }), log, img.payload));
    const result = await verifySigstoreSigned(img.ctx, keyless({ subjectUri: uri }), matches(img.name));
    expect(result.accepted.signer).toBe(`${uri} from ${OIDC_ISSUER}`);
  });

  it('accepts a leaf with only the v1 issuer extension (older Fulcio)', async () => {
    const img = await image();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }, { v1Only: true }), log, img.payload));
    expect((await verifySigstoreSigned(img.ctx, keyless(), matches(img.name))).accepted.verified).toBe(true);
  });

  it('chains through an intermediate that only the signature chain annotation carries', async () => {
    const img = await image();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), log, img.payload));
    const result = await verifySigstoreSigned(img.ctx, keyless(undefined, fulcio.root.pem), matches(img.name));
    expect(result.accepted.verified).toBe(true);
  });

  it('rejects a certificate from an untrusted CA', async () => {
    const img = await image();
    const rogue = new TestFulcio('rogue');
    await img.attach(keylessSignature(rogue, rogue.leaf({ email: EMAIL }), log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toContain(`the certificate for ${EMAIL} from ${OIDC_ISSUER} does not chain to a trusted Fulcio CA`);
  });

  it('rejects a certificate for another identity', async () => {
    const img = await image();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: 'intruder@example.com' }), log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain(`the certificate is for intruder@example.com, not ${EMAIL}`);
  });

  it('rejects a certificate from another OIDC issuer', async () => {
    const img = await image();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }, { issuer: 'https://other.example' }), log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain(`the certificate was issued for https://other.example, not ${OIDC_ISSUER}`);
  });

  it('rejects a leaf whose v1 and v2 issuer extensions disagree', async () => {
    const img = await image();
    const leaf = leafWith({ issuerV1: 'https://other.example' });
    await img.attach(keylessSignature(fulcio, leaf, log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('names two OIDC issuers');
  });

  it('rejects a tampered Rekor SET', async () => {
    const img = await image();
    const layer = keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), log, img.payload);
    const set = JSON.parse(layer.annotations['dev.sigstore.cosign/bundle']!);
    set.Payload.integratedTime += 3600;
    layer.annotations['dev.sigstore.cosign/bundle'] = JSON.stringify(set);
    await img.attach(layer);
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('the Rekor signed entry timestamp does not verify with the Rekor key');
  });

  it('rejects a Rekor SET from a log whose key is not trusted', async () => {
    const img = await image();
    const otherLog = new TestRekor();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), otherLog, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain(`the Rekor entry is from log ${otherLog.logId}, not one whose key is trusted`);
  });

  it('rejects a keyless signature without a Rekor bundle', async () => {
    const img = await image();
    const layer = keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), log, img.payload);
    delete layer.annotations['dev.sigstore.cosign/bundle'];
    await img.attach(layer);
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('it has no Rekor bundle, which keyless signatures need');
  });

  it('rejects a Rekor entry that records another certificate', async () => {
    const img = await image();
    const leaf = fulcio.leaf({ email: EMAIL });
    const layer = keylessSignature(fulcio, leaf, log, img.payload);
    const signature = Buffer.from(layer.annotations['dev.cosignproject.cosign/signature']!, 'base64');
    const other = fulcio.leaf({ email: EMAIL });
    layer.annotations['dev.sigstore.cosign/bundle'] = log.cosignBundle(signature, other.pem, img.payload, Math.floor(Date.now() / 1000));
    await img.attach(layer);
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('the Rekor entry records another key or certificate');
  });

  it('rejects a certificate that was not valid when Rekor logged the signature', async () => {
    const img = await image();
    const leaf = fulcio.leaf({ email: EMAIL }, { at: new Date(Date.now() - 2 * 3_600_000) });
    await img.attach(keylessSignature(fulcio, leaf, log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toMatch(/the certificate for release@example\.com from .* was not valid at /);
  });

  it('rejects a leaf that is not for code signing', async () => {
    const img = await image();
    await img.attach(keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }, { eku: [OIDS.serverAuth] }), log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('is not for code signing');
  });

  it('rejects a leaf with a critical extension it does not understand', async () => {
    const img = await image();
    const leaf = leafWith({ extra: [['1.3.6.1.4.1.99999.1', true, tlv(0x05)]] });
    await img.attach(keylessSignature(fulcio, leaf, log, img.payload));
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('has an unsupported critical extension 1.3.6.1.4.1.99999.1');
  });

  it('rejects a chain through a certificate that is not a CA', async () => {
    const img = await image();
    const notCa = leafWith({
      commonName: 'not a CA',
      issuer: fulcio.root,
      emails: undefined,
      extendedKeyUsages: undefined,
      issuerV2: undefined,
    });
    const leaf = leafWith({ issuer: notCa });
    const layer = keylessSignature(fulcio, leaf, log, img.payload);
    layer.annotations['dev.sigstore.cosign/chain'] = notCa.pem + fulcio.root.pem;
    await img.attach(layer);
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('does not chain to a trusted Fulcio CA');
  });

  it('rejects a certificate chain annotation with more certificates than the cap', async () => {
    const img = await image();
    const layer = keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), log, img.payload);
    layer.annotations['dev.sigstore.cosign/chain'] = fulcio.intermediate.pem.repeat(11);
    await img.attach(layer);
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain('the certificate chain holds 11 certificates, over the cap of 10');
  });

  it("rejects a signature not made with the certificate's key", async () => {
    const img = await image();
    const leaf = fulcio.leaf({ email: EMAIL });
    const layer = keylessSignature(fulcio, leaf, log, img.payload);
    const forged = signBytes(keyPair().privateKey, img.payload);
    layer.annotations['dev.cosignproject.cosign/signature'] = forged.toString('base64');
    layer.annotations['dev.sigstore.cosign/bundle'] = log.cosignBundle(forged, leaf.pem, img.payload, Math.floor(Date.now() / 1000));
    await img.attach(layer);
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(), matches(img.name)));
    expect(err.message).toContain(`the signature does not verify with the certificate for ${EMAIL} from ${OIDC_ISSUER}`);
  });

  it('refuses a keyless requirement without a Rekor key as an invalid policy', async () => {
    const img = await image();
    const err = await failure(verifySigstoreSigned(img.ctx, keyless(undefined, undefined, []), matches(img.name)));
    expect(err.code).toBe('INVALID_POLICY');
    expect(err.message).toContain('needs a Rekor public key');
  });
});
