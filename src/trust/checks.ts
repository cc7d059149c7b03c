/**
 * One requirement against one image, as c/image's isRunningImageAllowed: insecureAcceptAnything
 * accepts, reject rejects, signedBy needs one GPG simple signature (from lookaside storage) by a
 * trusted key over exactly this digest with an acceptable identity, sigstoreSigned hands over
 * to the sigstore verifier (sigstore.ts). Every failure comes back as a reason, not a throw,
 * except an abort.
 */
import { digestOf, parseDigest } from '../image/digest.js';
import { isPullUnpackError } from '../errors.js';
import { readGpgKeys, SignatureCheckError, verifySimpleSigning } from './gpg.js';
import { identityMatcher, type NamedReference } from './identity.js';
import { sigstoreRequirementOf } from './keys.js';
import type { PolicyRequirement } from './requirements.js';
import type { IdentityMatcher, SignatureReport, SigstoreRequirement, TrustContext } from './types.js';

export interface CheckedImage {
  ctx: TrustContext;
  /** The bytes of the manifest or index `ctx.digest` names. */
  manifestBytes: Buffer;
  dockerReference: NamedReference | undefined;
  /** The GPG simple signatures stored for the digest (read once, on first use). */
  simpleSignatures: () => Promise<{ blobs: Buffer[]; where: string }>;
  /** Why sigstore attachments are not looked up for this image, when they are not. */
  sigstoreDisabled: () => Promise<string | undefined>;
}

export interface CheckResult {
  ok: boolean;
  reason?: string | undefined;
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
        if (disabled) return { ok: false, reason: disabled, signatures: [] };
        return await checkSigstore(await sigstoreRequirementOf(requirement), image);
      }
    }
  } catch (err) {
    // A broken registries.d is a configuration error, not a verdict about this image.
    if (isPullUnpackError(err, 'ABORTED') || isPullUnpackError(err, 'INVALID_POLICY')) throw err;
    return { ok: false, reason: (err as Error).message, signatures: [] };
  }
}

/** The sigstore verifier's verdict for a requirement already built (from a policy or --verify-* flags). */
export async function checkSigstore(requirement: SigstoreRequirement, image: CheckedImage): Promise<CheckResult> {
  const matcher = identityMatcher(requirement.signedIdentity, image.dockerReference);
  // The sigstore verifiers and @sigstore/* (~0.05-0.1 s to load) are imported when a sigstoreSigned
  // requirement is first checked, not at start-up of every command.
  const { verifySigstoreSigned } = await import('./sigstore.js');
  try {
    const { accepted, seen } = await verifySigstoreSigned(image.ctx, requirement, matcher);
    return { ok: true, signatures: seen.length > 0 ? seen : [accepted] };
  } catch (err) {
    if (isPullUnpackError(err, 'ABORTED')) throw err;
    return { ok: false, reason: (err as Error).message, signatures: [] };
  }
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
