/**
 * A sigstoreSigned requirement's key material, parsed once per verification: the signing keys,
 * or the Fulcio trust for keyless signatures, and the Rekor log keys. The combinations follow
 * containers/image (signature/policy_eval_sigstore.go): keys or Fulcio, never both; keyless
 * needs a Rekor key, whose signed entry timestamp dates the short-lived certificate.
 */
import { PullUnpackError } from '../errors.js';
import { fulcioTrust, type FulcioTrust } from './sigstore-certificates.js';
import { publicKeyFromPem, type TrustedKey } from './sigstore-keys.js';
import type { SigstoreRequirement } from './types.js';

export interface PreparedTrust {
  /** Signing keys (key-based requirement); empty for keyless. */
  keys: TrustedKey[];
  fulcio: FulcioTrust | undefined;
  /** Rekor log keys; signatures must carry a log entry signed by one when not empty. */
  rekor: TrustedKey[];
  /** Whether a signature that names no image identity may be accepted on its digest alone. */
  acceptDigestOnly: boolean;
}

/** The parsed trust of `requirement`; INVALID_POLICY when it is inconsistent or a key does not parse. */
export function prepareTrust(requirement: SigstoreRequirement): PreparedTrust {
  const { publicKeys, fulcio, rekorPublicKeys } = requirement;
  if (publicKeys.length > 0 && fulcio) throw invalid('it lists both public keys and a Fulcio CA; use one or the other');
  if (publicKeys.length === 0 && !fulcio) throw invalid('it lists neither public keys nor a Fulcio CA');
  if (fulcio && rekorPublicKeys.length === 0) throw invalid('keyless (Fulcio) verification needs a Rekor public key');
  return {
    keys: publicKeys.map((pem, i) => parsed(() => publicKeyFromPem(pem, `public key ${i + 1}`))),
    fulcio: fulcio ? parsed(() => fulcioTrust(fulcio)) : undefined,
    rekor: rekorPublicKeys.map((pem, i) => parsed(() => publicKeyFromPem(pem, `Rekor public key ${i + 1}`))),
    acceptDigestOnly: requirement.acceptDigestOnlySignatures === true,
  };
}

function parsed<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw invalid((err as Error).message);
  }
}

function invalid(why: string): PullUnpackError {
  return new PullUnpackError('INVALID_POLICY', `invalid sigstoreSigned requirement: ${why}`);
}
