/**
 * One requirement against one image, as c/image's isRunningImageAllowed: insecureAcceptAnything
 * accepts, reject rejects, signedBy needs one GPG simple signature (from lookaside storage) by a
 * trusted key over exactly this digest with an acceptable identity, sigstoreSigned hands over
 * to the sigstore verifier (sigstore.ts). Every failure comes back as a reason, not a throw,
 * except signatures that cannot be read (trust/unavailable.ts) and a broken configuration.
 */
import { digestOf, parseDigest } from '../image/digest.js';
import { isPullUnpackError } from '../errors.js';
import { readGpgKeys, SignatureCheckError, verifySimpleSigning } from './gpg.js';
import { identityMatcher, type NamedReference } from './identity.js';
import { sigstoreRequirementOf } from './keys.js';
import type { PolicyRequirement } from './requirements.js';
import type { IdentityMatcher, SignatureReport, SigstoreRequirement, TrustContext } from './types.js';
import { isUnavailable } from './unavailable.js';

export interface CheckedImage {
  ctx: TrustContext;
  /** The bytes of the manifest or index `ctx.digest` names. */
  manifestBytes: Buffer;
  dockerReference: NamedReference | undefined;
  /** The GPG simple signatures stored for the digest (read once, on first use). */
  simpleSignatures: () => Promise<{ blobs: Buffer[]; where: string }>;
  /** Why sigstore attachments are not looked up for this image, and what to do, when they are not. */
  sigstoreDisabled: () => Promise<{ reason: string; hint: string } | undefined>;
}

export interface CheckResult {
  ok: boolean;
  reason?: string | undefined;
  /** What to do about a failure, when something more specific than the caller's general hint applies. */
  hint?: string | undefined;
  signatures: SignatureReport[];
}

/** Evaluates `requirement` for the image. */
export async function checkRequirement(requirement: PolicyRequirement, image: CheckedImage): Promise<CheckResult> {
  try {
    switch (requirement.type) {
      case 'insecureAcceptAnything':
        return { ok: true, signatures: [] };
      case 'reject':
        return { ok: false, reason: 'the policy rejects every image in this scope', signatures: [] };
      case 'signedBaseLayer':
        return { ok: false, reason: 'signedBaseLayer is not implemented (nor in containers/image)', signatures: [] };
      case 'signedBy':
        return await checkSignedBy(requirement, image);
      case 'sigstoreSigned': {
        const disabled = await image.sigstoreDisabled();
        if (disabled) return { ok: false, ...disabled, signatures: [] };
        return await checkSigstore(await sigstoreRequirementOf(requirement), image);
      }
    }
  } catch (err) {
    // A broken registries.d is a configuration error, and unreadable signatures are no verdict about this image.
    if (isUnavailable(err) || isPullUnpackError(err, 'INVALID_POLICY')) throw err;
    return { ok: false, reason: (err as Error).message, signatures: [] };
  }
}

/** The sigstore verifier's verdict for a requirement already built (from a policy or --verify-* flags). */
export async function checkSigstore(requirement: SigstoreRequirement, image: CheckedImage): Promise<CheckResult> {
  // The sigstore verifiers and @sigstore/* (~0.05-0.1 s to load) are imported when a sigstoreSigned
  // requirement is first checked, not at start-up of every command.
  const { checkSigstoreSigned } = await import('./sigstore.js');
  try {
    const outcome = await checkSigstoreSigned(image.ctx, requirement, sigstoreMatcher(requirement, image));
    if (outcome.accepted) return { ok: true, signatures: outcome.seen };
    return { ok: false, reason: outcome.reason, hint: outcome.hint, signatures: outcome.seen };
  } catch (err) {
    if (isUnavailable(err)) throw err;
    return { ok: false, reason: (err as Error).message, signatures: [] };
  }
}

/**
 * signedIdentity for sigstore signatures. An image with no registry name (an oci: layout) has
 * no name a signature's identity could match: under --verify-* (acceptDigestOnlySignatures)
 * the signature's digest alone binds it, as `cosign verify --local-image` does; under a policy
 * only exactReference and exactRepository can match it, as in containers/image.
 */
function sigstoreMatcher(requirement: SigstoreRequirement, image: CheckedImage): IdentityMatcher {
  if (requirement.acceptDigestOnlySignatures && image.dockerReference === undefined) return () => true;
  return identityMatcher(requirement.signedIdentity, image.dockerReference);
}

async function checkSignedBy(requirement: Extract<PolicyRequirement, { type: 'signedBy' }>, image: CheckedImage): Promise<CheckResult> {
  if (requirement.keyType !== 'GPGKeys') {
    return { ok: false, reason: `keyType "${requirement.keyType}" is not implemented (nor in containers/image)`, signatures: [] };
  }
  const keys = await readGpgKeys(requirement.keys);
  if (keys.length === 0) return { ok: false, reason: `no public keys in ${requirement.keys.describe}`, signatures: [] };
  const { blobs, where } = await image.simpleSignatures();
  if (blobs.length === 0) return { ok: false, reason: `a signature was required, but no signature exists (${where})`, signatures: [] };
  const matches = identityMatcher(requirement.signedIdentity, image.dockerReference);
  const signatures: SignatureReport[] = [];
  for (const blob of blobs) signatures.push(await checkSimpleSignature(blob, keys, image, matches));
  if (signatures.some((s) => s.verified)) return { ok: true, signatures };
  const reasons = signatures.map((s) => s.reason);
  const reason = reasons.length === 1 ? reasons[0] : `none of the ${reasons.length} signatures was accepted: ${reasons.join('; ')}`;
  return { ok: false, reason, signatures };
}

async function checkSimpleSignature(
  blob: Buffer,
  keys: Awaited<ReturnType<typeof readGpgKeys>>,
  image: CheckedImage,
  matches: IdentityMatcher,
): Promise<SignatureReport> {
  const report = (signer: string | undefined, reason?: string): SignatureReport => ({
    kind: 'simple-signing',
    signer,
    verified: reason === undefined,
    reason,
  });
  let verified;
  try {
    verified = await verifySimpleSigning(blob, keys);
  } catch (err) {
    if (err instanceof SignatureCheckError) return report(err.signer, err.message);
    throw err;
  }
  const { claims, signer } = verified;
  // The digest is recomputed with the signature's algorithm, as c/image's manifest.MatchesDigest.
  const algorithm = parseDigest(claims.digest).algorithm;
  if (digestOf(image.manifestBytes, algorithm) !== claims.digest) {
    return report(signer, `the signature by ${signer} is for digest ${claims.digest}, not ${image.ctx.digest}`);
  }
  if (!matches(claims.dockerReference)) {
    return report(signer, `the signature by ${signer} is for identity "${claims.dockerReference}", which signedIdentity does not accept`);
  }
  return report(signer);
}
