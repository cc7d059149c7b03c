/**
 * sigstoreSigned requirements: cosign signatures attached as `sha256-<hex>.sig` manifests and
 * sigstore bundles attached through the referrers API, verified with public keys or keyless
 * (Fulcio certificate + Rekor entry).
 */
import { PullUnpackError } from '../errors.js';
import type { IdentityMatcher, SigstoreRequirement, SignatureReport, TrustContext, VerifyOptions } from './types.js';

/**
 * The signature that satisfies `requirement` for `ctx.digest`, with a report of every signature
 * seen; throws SIGNATURE_REJECTED (naming why the closest one failed) when none does.
 */
export async function verifySigstoreSigned(
  ctx: TrustContext,
  _requirement: SigstoreRequirement,
  _matchIdentity: IdentityMatcher,
): Promise<{ accepted: SignatureReport; seen: SignatureReport[] }> {
  throw new PullUnpackError('SIGNATURE_REJECTED', `${ctx.digest}: sigstoreSigned requirements are not verified in this build yet`);
}

/** The requirement the --verify-* flags describe, with its key files and trusted root read. */
export async function requirementFromVerifyOptions(_options: VerifyOptions): Promise<SigstoreRequirement> {
  throw new PullUnpackError('USAGE', '--verify-key and --verify-identity are not supported in this build yet');
}
