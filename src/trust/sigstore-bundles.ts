/**
 * Sigstore bundles, as newer cosign attaches them through the referrers API: a DSSE envelope
 * holding an in-toto statement (predicate type https://sigstore.dev/cosign/sign/v1) whose
 * subject is the image digest, with the signer's key hint or Fulcio certificate and Rekor
 * entries. The envelope, certificate chain and log entries are verified by sigstore-js
 * (@sigstore/bundle, @sigstore/verify); this module builds its trust material from the
 * requirement and checks what the statement claims.
 *
 * https://github.com/sigstore/cosign/blob/main/specs/BUNDLE_SPEC.md
 * https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
 */
import { createHash } from 'node:crypto';
import { bundleFromJSON, type Bundle, type TransparencyLogEntry } from '@sigstore/bundle';
import { X509Certificate as SigstoreCertificate } from '@sigstore/core';
import { toSignedEntity, Verifier, type TrustMaterial } from '@sigstore/verify';
import { parseDigest } from '../image/digest.js';
import { checkLeafCertificate } from './sigstore-certificates.js';
import { objectOf, parseStrictJson } from './sigstore-json.js';
import type { TrustedKey } from './sigstore-keys.js';
import { Progress, rejectOnError, SignatureRejection } from './sigstore-rejection.js';
import type { PreparedTrust } from './sigstore-trust.js';
import type { IdentityMatcher } from './types.js';

/** The predicate type of cosign's image signatures (`cosign sign` with the bundle format). */
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_TYPES = new Set(['https://in-toto.io/Statement/v1', 'https://in-toto.io/Statement/v0.1']);
const ALL_TIME = { start: new Date(0), end: new Date(8.64e15) };

/** The signer when the bundle satisfies the trust and its statement this digest and identity; throws a SignatureRejection. */
export function verifySigstoreBundle(bytes: Buffer, trust: PreparedTrust, digest: string, matchIdentity: IdentityMatcher): string {
  const bundle = rejectOnError(Progress.Unusable, 'the sigstore bundle', () => bundleFromJSON(parseStrictJson(bytes, 'it')));
  if (bundle.content.$case !== 'dsseEnvelope' || bundle.content.dsseEnvelope.payloadType !== IN_TOTO_PAYLOAD_TYPE) {
    throw new SignatureRejection(Progress.Unusable, 'the sigstore bundle holds no in-toto statement, so it signs no image');
  }
  const signer = trust.fulcio ? verifyKeyless(bundle, trust) : verifyWithKeys(bundle, trust);
  try {
    checkStatement(bundle.content.dsseEnvelope.payload, digest, matchIdentity, trust.acceptDigestOnly);
  } catch (err) {
    if (err instanceof SignatureRejection) err.signer = signer;
    throw err;
  }
  return signer;
}

function verifyWithKeys(bundle: Bundle, trust: PreparedTrust): string {
  if (bundle.verificationMaterial.content.$case !== 'publicKey') {
    throw new SignatureRejection(Progress.Untrusted, 'the bundle is signed with a certificate, and the requirement trusts keys');
  }
  // Without Rekor keys the log entries cannot be checked, and none are required (as for cosign-format signatures).
  const checked =
    trust.rekor.length > 0 ? bundle : { ...bundle, verificationMaterial: { ...bundle.verificationMaterial, tlogEntries: [] } };
  let failure = '';
  for (const key of trust.keys) {
    try {
      verifier(trust, key).verify(entity(checked));
      return key.fingerprint;
    } catch (err) {
      failure = (err as Error).message;
    }
  }
  const keys = trust.keys.length === 1 ? `the trusted key ${trust.keys[0]!.fingerprint}` : `any of the ${trust.keys.length} trusted keys`;
  throw new SignatureRejection(Progress.Untrusted, `the bundle does not verify with ${keys} (${failure})`);
}

function verifyKeyless(bundle: Bundle, trust: PreparedTrust): string {
  const material = bundle.verificationMaterial.content;
  const leaf =
    material.$case === 'certificate'
      ? material.certificate.rawBytes
      : material.$case === 'x509CertificateChain'
        ? material.x509CertificateChain.certificates[0]?.rawBytes
        : undefined;
  if (!leaf) throw new SignatureRejection(Progress.Untrusted, 'the bundle is signed with a key, and the requirement is keyless');
  const signer = checkLeafCertificate(leaf, trust.fulcio!);
  try {
    verifier(trust).verify(entity(bundle));
  } catch (err) {
    throw new SignatureRejection(Progress.Untrusted, `the bundle does not verify: ${(err as Error).message}`, signer);
  }
  return signer;
}

/**
 * sigstore-js's view of the bundle. A log entry's signed entry timestamp (checked against the
 * Rekor keys) proves its inclusion, as for cosign-format signatures and in containers/image;
 * its checkpoint names the log by URL, which a PEM key does not give, so an inclusion proof
 * beside a SET is not checked. RFC 3161 timestamps need authorities the requirement does not
 * name: they are left out, and the log's time is used.
 */
function entity(bundle: Bundle): ReturnType<typeof toSignedEntity> {
  // bundleFromJSON checked that every entry has its logId and kindVersion.
  const entries = bundle.verificationMaterial.tlogEntries as TransparencyLogEntry[];
  const tlogEntries = entries.map((e): TransparencyLogEntry => (e.inclusionPromise ? { ...e, inclusionProof: undefined } : e));
  return toSignedEntity({
    ...bundle,
    verificationMaterial: { ...bundle.verificationMaterial, tlogEntries, timestampVerificationData: undefined },
  });
}

function verifier(trust: PreparedTrust, key?: TrustedKey): Verifier {
  const material: TrustMaterial = {
    certificateAuthorities: trust.fulcio
      ? [{ certChain: trust.fulcio.anchors.map((c) => SigstoreCertificate.parse(c.raw)), validFor: ALL_TIME }]
      : [],
    timestampAuthorities: [],
    tlogs: trust.rekor.map(tlogAuthority),
    // Certificate transparency is not required, as in containers/image: the Rekor entry already logs the certificate.
    ctlogs: [],
    publicKey: () => {
      if (!key) throw new Error('the bundle names a key, and the requirement is keyless');
      return { publicKey: key.key, validFor: () => true };
    },
  };
  const logged = trust.rekor.length > 0 ? 1 : 0;
  return new Verifier(material, { tlogThreshold: logged, timestampThreshold: trust.fulcio ? 1 : logged, ctlogThreshold: 0 });
}

function tlogAuthority(key: TrustedKey): TrustMaterial['tlogs'][number] {
  return { logID: createHash('sha256').update(key.spki).digest(), baseURL: '', publicKey: key.key, validFor: ALL_TIME };
}

/** The statement must be cosign's image signature for `digest`, and name an accepted identity (or none, when allowed). */
function checkStatement(payload: Buffer, digest: string, matchIdentity: IdentityMatcher, acceptDigestOnly: boolean): void {
  const statement = rejectOnError(Progress.Unusable, 'the signed statement', () => objectOf(parseStrictJson(payload, 'it'), 'it'));
  if (!STATEMENT_TYPES.has(statement['_type'] as string)) {
    throw new SignatureRejection(
      Progress.Unusable,
      `the signed statement is of type ${JSON.stringify(statement['_type'])}, not an in-toto statement`,
    );
  }
  if (statement['predicateType'] !== COSIGN_SIGN_PREDICATE) {
    throw new SignatureRejection(
      Progress.Unusable,
      `it is a ${JSON.stringify(statement['predicateType'])} attestation, not an image signature`,
    );
  }
  const { algorithm, hex } = parseDigest(digest);
  const subjects = Array.isArray(statement['subject']) ? (statement['subject'] as unknown[]) : [];
  const subject = subjects.find((s) => (s as { digest?: Record<string, unknown> } | null)?.digest?.[algorithm] === hex) as
    { name?: unknown } | undefined;
  if (!subject) {
    const signed = subjects.map((s) =>
      Object.entries((s as { digest?: object } | null)?.digest ?? {}).map(([a, h]) => `${a}:${String(h)}`),
    );
    throw new SignatureRejection(Progress.OtherDigest, `it signs ${signed.flat().join(', ') || 'no digest'}, not ${digest}`);
  }
  const name = typeof subject.name === 'string' && subject.name !== '' ? subject.name : undefined;
  if (name === undefined && !acceptDigestOnly) {
    throw new SignatureRejection(
      Progress.OtherIdentity,
      "it names no image identity (cosign's bundles sign the digest only), which a signedIdentity rule cannot accept",
    );
  }
  if (name !== undefined && !matchIdentity(name)) {
    throw new SignatureRejection(Progress.OtherIdentity, `it is signed for ${name}, which the signedIdentity rule does not accept`);
  }
}
