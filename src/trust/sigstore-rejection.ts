/**
 * Why one signature does not satisfy a requirement, and how far its verification got: when no
 * signature is accepted, the error names the one that came closest (a valid signature for
 * another image says more than a payload that does not parse).
 */

/** How far a signature's verification got before it failed, in the order the checks run. */
export const Progress = {
  /** The signature could not be read: missing annotation, unreadable or oversized payload. */
  Unusable: 0,
  /** It was read, but no trusted key, certificate or log entry vouches for it. */
  Untrusted: 1,
  /** Cryptographically valid, but over another digest. */
  OtherDigest: 2,
  /** Valid and for this digest, but the identity it claims is not accepted. */
  OtherIdentity: 3,
} as const;
export type Progress = (typeof Progress)[keyof typeof Progress];

/** A signature that does not satisfy the requirement, with the reason shown to the user. */
export class SignatureRejection extends Error {
  readonly progress: Progress;
  /** Who signed, when known by then (a key fingerprint or a certificate identity). */
  signer: string | undefined;

  constructor(progress: Progress, reason: string, signer?: string) {
    super(reason);
    this.name = 'SignatureRejection';
    this.progress = progress;
    this.signer = signer;
  }
}

/** Runs `check`, turning a plain Error (from a parser) into an Unusable or Untrusted rejection. */
export function rejectOnError<T>(progress: Progress, what: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof SignatureRejection) throw err;
    throw new SignatureRejection(progress, `${what}: ${(err as Error).message}`);
  }
}
