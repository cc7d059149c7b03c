/**
 * cosign-format signatures ("simple signing" payloads signed with a key, or keyless with a
 * Fulcio certificate and a Rekor bundle), verified as containers/image does
 * (signature/policy_eval_sigstore.go, signature/internal/sigstore_payload.go): the signature
 * first, then the payload, parsed strictly, must name this digest and an accepted identity.
 *
 * Storage and payload: https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md
 */
import { parseDigest } from '../image/digest.js';
import { verifyFulcioCertificate } from './sigstore-certificates.js';
import { exactObject, objectOf, parseStrictJson, stringOf } from './sigstore-json.js';
import { certificatesFromPem, verifySignature } from './sigstore-keys.js';
import { verifyRekorSet } from './sigstore-rekor.js';
import { Progress, rejectOnError, SignatureRejection } from './sigstore-rejection.js';
import type { PreparedTrust } from './sigstore-trust.js';
import type { IdentityMatcher } from './types.js';

/** `critical.type` of a cosign simple-signing payload. */
export const SIMPLE_SIGNING_TYPE = 'cosign container image signature';

/** One signature of a `.sig` manifest: a layer's payload and its layer annotations. */
export interface CosignSignature {
  payload: Buffer;
  /** `dev.cosignproject.cosign/signature`: the base64 signature over the payload. */
  base64Signature: string;
  /** `dev.sigstore.cosign/certificate`: the PEM signing certificate (keyless). */
  certificate: string | undefined;
  /** `dev.sigstore.cosign/chain`: PEM intermediates (and root) for the certificate. */
  chain: string | undefined;
  /** `dev.sigstore.cosign/bundle`: the Rekor bundle (signed entry timestamp). */
  rekorBundle: string | undefined;
}

/** The signer ("SHA256:…" key fingerprint or "subject from issuer") when `sig` satisfies the trust; throws a SignatureRejection. */
export function verifyCosignSignature(sig: CosignSignature, trust: PreparedTrust, digest: string, matchIdentity: IdentityMatcher): string {
  const signature = rejectOnError(Progress.Unusable, 'the signature annotation', () => base64(sig.base64Signature));
  const signer = trust.fulcio ? verifyKeyless(sig, signature, trust) : verifyWithKeys(sig, signature, trust);
  try {
    checkClaims(sig.payload, digest, matchIdentity);
  } catch (err) {
    if (err instanceof SignatureRejection) err.signer = signer;
    throw err;
  }
  return signer;
}

function verifyWithKeys(sig: CosignSignature, signature: Buffer, trust: PreparedTrust): string {
  const key = trust.keys.find((k) => verifySignature(k.key, sig.payload, signature));
  if (!key) {
    const keys = trust.keys.length === 1 ? `the trusted key ${trust.keys[0]!.fingerprint}` : `any of the ${trust.keys.length} trusted keys`;
    throw new SignatureRejection(Progress.Untrusted, `not signed by ${keys}`);
  }
  if (trust.rekor.length > 0) {
    if (sig.rekorBundle === undefined)
      throw new SignatureRejection(Progress.Untrusted, 'it has no Rekor bundle, which the requirement asks for', key.fingerprint);
    withSigner(key.fingerprint, () =>
      verifyRekorSet(sig.rekorBundle!, trust.rekor, { signature, signerDer: key.spki, payload: sig.payload }),
    );
  }
  return key.fingerprint;
}

function verifyKeyless(sig: CosignSignature, signature: Buffer, trust: PreparedTrust): string {
  if (sig.certificate === undefined)
    throw new SignatureRejection(Progress.Untrusted, 'it has no certificate, so it is not a keyless signature');
  if (sig.rekorBundle === undefined)
    throw new SignatureRejection(Progress.Untrusted, 'it has no Rekor bundle, which keyless signatures need');
  const certificate = sig.certificate;
  const leaf = rejectOnError(Progress.Untrusted, 'the certificate annotation', () =>
    certificatesFromPem(certificate, 'the certificate'),
  )[0];
  if (!leaf) throw new SignatureRejection(Progress.Untrusted, 'the certificate annotation holds no PEM certificate');
  const at = verifyRekorSet(sig.rekorBundle, trust.rekor, { signature, signerDer: leaf.raw, payload: sig.payload });
  const { key, signer } = verifyFulcioCertificate(certificate, sig.chain, trust.fulcio!, at);
  if (!verifySignature(key, sig.payload, signature)) {
    throw new SignatureRejection(Progress.Untrusted, `the signature does not verify with the certificate for ${signer}`, signer);
  }
  return signer;
}

/** The payload must be a simple-signing document for `digest` whose identity `matchIdentity` accepts. */
function checkClaims(payload: Buffer, digest: string, matchIdentity: IdentityMatcher): void {
  const claims = rejectOnError(Progress.Unusable, 'the signed payload', () => parseSimpleSigning(payload));
  if (claims.digest !== digest) throw new SignatureRejection(Progress.OtherDigest, `it signs ${claims.digest}, not ${digest}`);
  if (!matchIdentity(claims.dockerReference)) {
    throw new SignatureRejection(
      Progress.OtherIdentity,
      `it is signed for ${claims.dockerReference}, which the signedIdentity rule does not accept`,
    );
  }
}

/**
 * `critical.image.docker-manifest-digest` and `critical.identity.docker-reference` of a
 * simple-signing payload, read as strictly as c/image's UntrustedSigstorePayload.
 */
export function parseSimpleSigning(payload: Buffer): { digest: string; dockerReference: string } {
  const doc = exactObject(parseStrictJson(payload, 'the payload'), ['critical', 'optional'], 'the payload');
  // cosign writes "optional": null when the signer added no annotations.
  if (doc['optional'] !== null) {
    const optional = objectOf(doc['optional'], 'optional');
    if (optional['creator'] !== undefined) stringOf(optional['creator'], 'optional.creator');
    const timestamp = optional['timestamp'];
    if (timestamp !== undefined && !Number.isSafeInteger(timestamp)) throw new Error('optional.timestamp is not an integer');
  }
  const critical = exactObject(doc['critical'], ['type', 'image', 'identity'], 'critical');
  if (critical['type'] !== SIMPLE_SIGNING_TYPE)
    throw new Error(`critical.type is ${JSON.stringify(critical['type'])}, not "${SIMPLE_SIGNING_TYPE}"`);
  const image = exactObject(critical['image'], ['docker-manifest-digest'], 'critical.image');
  const digest = stringOf(image['docker-manifest-digest'], 'critical.image.docker-manifest-digest');
  parseDigest(digest);
  const identity = exactObject(critical['identity'], ['docker-reference'], 'critical.identity');
  return { digest, dockerReference: stringOf(identity['docker-reference'], 'critical.identity.docker-reference') };
}

function base64(text: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0 || text.length === 0) throw new Error('it is not base64');
  return Buffer.from(text, 'base64');
}

function withSigner<T>(signer: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof SignatureRejection) err.signer ??= signer;
    throw err;
  }
}
