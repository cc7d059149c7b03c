/**
 * The error a call was expected to fail with, for assertions on its code, message and hint.
 */
import { PullUnpackError } from '../../src/errors.js';

/** The PullUnpackError `fn` throws; fails the test when it returns or throws anything else. */
export function thrown(fn: () => unknown): PullUnpackError {
  try {
    fn();
  } catch (err) {
    if (err instanceof PullUnpackError) return err;
    throw err;
  }
  throw new Error('expected an error');
}

/** The PullUnpackError `promise` rejects with; fails the test when it resolves or rejects with anything else. */
export async function failure(promise: Promise<unknown>): Promise<PullUnpackError> {
  const outcome = await promise.then(
    () => ({ resolved: true as const }),
    (err: unknown) => ({ resolved: false as const, err }),
  );
  if (outcome.resolved) throw new Error('expected a rejection');
  if (outcome.err instanceof PullUnpackError) return outcome.err;
  throw outcome.err;
}

/** Whatever `promise` rejects with (also a non-PullUnpackError); fails the test when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<Error> {
  const outcome = await promise.then(
    () => ({ resolved: true as const }),
    (err: unknown) => ({ resolved: false as const, err }),
  );
  if (outcome.resolved) throw new Error('expected a rejection');
  return outcome.err as Error;
}
