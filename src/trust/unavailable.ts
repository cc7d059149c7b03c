/**
 * Errors that say signatures could not be read, not that they are wanting: the registry or a
 * lookaside could not be reached or failed to answer (NETWORK, REGISTRY_ERROR), refused the
 * credentials (UNAUTHORIZED), the cache could not be written (STORAGE_ERROR), or the user
 * aborted. These fail the operation with their own code, as a registry that is down fails a
 * pull, instead of passing as a verdict on the image (SIGNATURE_REJECTED): trying again may
 * succeed, and "rejected" would send the user looking for a signing problem that is not there.
 * containers/image likewise returns such errors from policy evaluation rather than a
 * PolicyRequirementError.
 */
import { isPullUnpackError, PullUnpackError, type ErrorCode } from '../errors.js';

const UNAVAILABLE: ReadonlySet<ErrorCode> = new Set(['ABORTED', 'NETWORK', 'REGISTRY_ERROR', 'UNAUTHORIZED', 'STORAGE_ERROR']);

/** True when `err` means that signature material could not be read (see above). */
export function isUnavailable(err: unknown): err is PullUnpackError {
  return isPullUnpackError(err) && UNAVAILABLE.has(err.code);
}

/**
 * `err` (isUnavailable) with what was being checked in front of its message; its code, hint
 * and cause kept. An abort is returned as it is.
 */
export function whileChecking(err: PullUnpackError, what: string): PullUnpackError {
  if (err.code === 'ABORTED') return err;
  return new PullUnpackError(err.code, `cannot check ${what}: ${err.message}`, { cause: err, hint: err.hint });
}
