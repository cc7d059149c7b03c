/**
 * sigstoreSigned requirements: cosign signatures attached as `sha256-<hex>.sig` manifests and
 * sigstore bundles attached through the referrers API, verified with public keys or keyless
 * (Fulcio certificate + Rekor entry).
 */
import { abortError, PullUnpackError } from '../errors.js';
import { parseDigest } from '../image/digest.js';
import { cosignSignatures, sigstoreBundles, type Finding } from './sigstore-attachments.js';
import { verifySigstoreBundle } from './sigstore-bundles.js';
import { verifyCosignSignature } from './sigstore-cosign.js';
import { Progress, SignatureRejection } from './sigstore-rejection.js';
import { prepareTrust, type PreparedTrust } from './sigstore-trust.js';
import { isUnavailable } from './unavailable.js';
import type { IdentityMatcher, SigstoreRequirement, SignatureReport, TrustContext } from './types.js';

export { requirementFromVerifyOptions } from './sigstore-options.js';

/** What the signatures of a digest come to: the one accepted, or why none is and what to do. */
export type SigstoreOutcome =
  { accepted: SignatureReport; seen: SignatureReport[] } | { accepted: undefined; seen: SignatureReport[]; reason: string; hint: string };

/**
 * Every sigstore signature of `ctx.digest` checked against `requirement`: the first that
 * satisfies it, with a report of every signature seen (verified or why not), or why none does
 * (naming the one that came closest). Throws INVALID_POLICY for unusable key material, and
 * the error itself when signatures cannot be read (trust/unavailable.ts).
 */
export async function checkSigstoreSigned(
  ctx: TrustContext,
  requirement: SigstoreRequirement,
  matchIdentity: IdentityMatcher,
): Promise<SigstoreOutcome> {
  const trust = prepareTrust(requirement);
  const findings = [...(await cosignSignatures(ctx)), ...(await sigstoreBundles(ctx))];
  const seen: SignatureReport[] = [];
  let accepted: SignatureReport | undefined;
  let closest: { where: string; rejection: SignatureRejection } | undefined;
  for (const finding of findings) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal);
    try {
      const report: SignatureReport = { kind: finding.kind, signer: verify(finding, trust, ctx.digest, matchIdentity), verified: true };
      seen.push(report);
      accepted ??= report;
    } catch (err) {
      const rejection = asRejection(err);
      seen.push({ kind: finding.kind, signer: rejection.signer, verified: false, reason: `${finding.where}: ${rejection.message}` });
      if (!closest || rejection.progress > closest.rejection.progress) closest = { where: finding.where, rejection };
    }
  }
  if (accepted) return { accepted, seen };
  return { accepted, seen, ...rejected(ctx, trust, seen.length, closest) };
}

/**
 * The signature that satisfies `requirement` for `ctx.digest`, with a report of every signature
 * seen; throws SIGNATURE_REJECTED (naming why the closest one failed) when none does.
 */
export async function verifySigstoreSigned(
  ctx: TrustContext,
  requirement: SigstoreRequirement,
  matchIdentity: IdentityMatcher,
): Promise<{ accepted: SignatureReport; seen: SignatureReport[] }> {
  const outcome = await checkSigstoreSigned(ctx, requirement, matchIdentity);
  if (outcome.accepted) return outcome;
  const image = `${ctx.reference?.toString() ?? ctx.source.name} (${ctx.digest})`;
  throw new PullUnpackError('SIGNATURE_REJECTED', `${image}: ${outcome.reason}`, { hint: outcome.hint });
}

function verify(finding: Finding, trust: PreparedTrust, digest: string, matchIdentity: IdentityMatcher): string {
  if ('problem' in finding) throw new SignatureRejection(Progress.Unusable, finding.problem);
  if ('signature' in finding) return verifyCosignSignature(finding.signature, trust, digest, matchIdentity);
  return verifySigstoreBundle(finding.bundle, trust, digest, matchIdentity);
}

/** Untrusted input that trips a library in an unforeseen way rejects that signature, never the process. */
function asRejection(err: unknown): SignatureRejection {
  if (err instanceof SignatureRejection) return err;
  if (isUnavailable(err)) throw err;
  return new SignatureRejection(Progress.Unusable, `it could not be verified: ${(err as Error).message}`);
}

function rejected(
  ctx: TrustContext,
  trust: PreparedTrust,
  count: number,
  closest: { where: string; rejection: SignatureRejection } | undefined,
): { reason: string; hint: string } {
  if (!closest) {
    const { algorithm, hex } = parseDigest(ctx.digest);
    return {
      reason: `${ctx.digest} has no sigstore signature: no ${algorithm}-${hex}.sig signature manifest, and no sigstore bundle refers to it`,
      hint: ctx.offline
        ? 'offline, only the signatures an earlier online pull read are known: verify once without --offline'
        : 'sign it with cosign sign, or pull from the registry that holds its signatures',
    };
  }
  const { where, rejection } = closest;
  const verdict = count === 1 ? 'its signature is not accepted' : `none of its ${count} signatures is accepted; the closest`;
  return { reason: `${verdict}: ${where}: ${rejection.message}`, hint: HINTS[rejection.progress](trust) };
}

const HINTS: Record<Progress, (trust: PreparedTrust) => string> = {
  [Progress.Unusable]: () => 'the signature could not be read; it may be damaged or in a format this version does not know',
  [Progress.Untrusted]: (trust) =>
    trust.fulcio
      ? 'check the signer identity and OIDC issuer, and that the Fulcio CA and Rekor keys (--trusted-root) are the ones it was signed under'
      : 'check that the image was signed with the private key of the public key given',
  [Progress.OtherDigest]: () => 'the signatures are for other images: the tag may have moved since it was signed',
  [Progress.OtherIdentity]: () => 'the signature names another image; check the signedIdentity rule, or pull the reference that was signed',
};
