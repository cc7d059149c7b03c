/**
 * How `inspect` shows signature verification: for each requirement checked, whether it holds
 * and why not, and every signature found for the digest (kind, signer, verified or why not).
 */
import type { TrustVerdict } from '../trust/evaluate.js';

/** The lines `inspect` adds for `verdicts` (none when nothing was checked). */
export function formatTrust(verdicts: readonly TrustVerdict[] | undefined): string[] {
  if (!verdicts || verdicts.length === 0) return [];
  const lines = [`  signatures: ${verdicts.every((v) => v.accepted) ? 'accepted' : 'REJECTED'}`];
  for (const v of verdicts) {
    lines.push(`    ${v.scope}: ${v.requirement}: ${v.accepted ? 'holds' : `fails: ${v.reason ?? 'not accepted'}`}`);
    for (const s of v.signatures) {
      lines.push(`      ${s.kind} by ${s.signer ?? 'an unknown signer'}: ${s.verified ? 'verified' : `not accepted: ${s.reason ?? ''}`}`);
    }
  }
  return lines;
}
