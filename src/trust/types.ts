/**
 * The seam between the policy side of signature verification (containers-policy.json(5), scopes,
 * signedIdentity, GPG simple signing in lookaside storage: policy.ts, evaluate.ts, ...) and the
 * sigstore side (cosign attachments, keyless certificates, Rekor, sigstore bundles through the
 * referrers API: sigstore.ts). The policy side loads key files and decides which requirement
 * applies; each verifier finds the signatures for one digest and says which one satisfies it.
 */
import type { Reference } from '../image/reference.js';
import type { ImageSource } from '../sources/source.js';

/** containers-policy.json(5) `signedIdentity`: which identity a signature must claim. */
export type SignedIdentity =
  | { type: 'matchExact' }
  | { type: 'matchRepoDigestOrExact' }
  | { type: 'matchRepository' }
  | { type: 'exactReference'; dockerReference: string }
  | { type: 'exactRepository'; dockerRepository: string }
  | { type: 'remapIdentity'; prefix: string; signedPrefix: string };

/**
 * A `sigstoreSigned` requirement with its key material already read (keyPath, keyPaths, keyData;
 * fulcio caPath|caData; rekorPublicKeyPath|rekorPublicKeyData).
 */
export interface SigstoreRequirement {
  type: 'sigstoreSigned';
  /** PEM public keys, any one of which may have signed; empty for a keyless (fulcio) requirement. */
  publicKeys: string[];
  /**
   * Keyless: the certificate must chain to `caCertificates` (PEM) and name this OIDC issuer and
   * subject: an email SAN (the policy's subjectEmail) or, from --verify-identity, a URI SAN.
   */
  fulcio?: { caCertificates: string; oidcIssuer: string; subjectEmail?: string | undefined; subjectUri?: string | undefined } | undefined;
  /** PEM public keys of the Rekor log whose signed entry timestamp must accompany the signature. */
  rekorPublicKeys: string[];
  signedIdentity: SignedIdentity;
  /**
   * Accept a signature that names no image identity on its digest alone, as `cosign verify`
   * does: cosign's sigstore bundles (in-toto statements) sign the digest only, with no
   * docker-reference for signedIdentity to match. The --verify-* flags set it; policy files
   * leave it unset (c/image has no such signatures), so there such a signature is rejected.
   */
  acceptDigestOnlySignatures?: boolean | undefined;
}

/** Where and what to verify: the digest a reference resolved to, in the source it came from. */
export interface TrustContext {
  /** The image's source (a registry repository, a cached source, or an oci: layout). */
  source: ImageSource;
  /** The image as the user named it, for signedIdentity; undefined when a local source has no name. */
  reference: Reference | undefined;
  /** The digest the reference resolved to: the index when a tag names an index (as c/image). */
  digest: string;
  signal?: AbortSignal | undefined;
  /** Signatures come from the cache alone (--offline): only what an online pull read is there. */
  offline?: boolean | undefined;
  /** Notices for the user (e.g. "the registry has no referrers API: using the tag fallback"). */
  onNotice?: ((message: string) => void) | undefined;
}

/**
 * Whether the docker reference a signature's payload claims (`critical.identity.docker-reference`)
 * is acceptable under the requirement's signedIdentity for this image (trust/identity.ts).
 */
export type IdentityMatcher = (signedDockerReference: string) => boolean;

/** One signature found for the digest, as `inspect` and the JSON events show it. */
export interface SignatureReport {
  kind: 'cosign' | 'sigstore-bundle' | 'simple-signing';
  /** A key fingerprint, or a certificate's identity ("user@example.com from https://issuer"). */
  signer: string | undefined;
  verified: boolean;
  /** Why it does not satisfy the requirement, when it does not. */
  reason?: string | undefined;
}

/**
 * `--verify-key FILE` (repeatable), or keyless `--verify-identity EMAIL|URI` + `--verify-issuer URL`
 * + `--trusted-root FILE` (sigstore's trusted_root.json): a cosign check without a policy file,
 * applied with signedIdentity matchRepoDigestOrExact.
 */
export interface VerifyOptions {
  keyPaths: string[];
  identity?: string | undefined;
  issuer?: string | undefined;
  trustedRootPath?: string | undefined;
}
