/**
 * A blob body that survives broken connections: when one breaks (or closes early), the blob is
 * asked for again from the byte reached, and the caller sees one continuous, still unverified
 * stream. A body cut by its document deadline (a JSON blob sent too slowly) is not resumed.
 */
import type { Dispatcher } from 'undici';
import { abortError } from '../errors.js';
import { DeadlineExpired, tooSlowError } from './deadline.js';
import { brokenBodyError, isBrokenBody, networkError } from './failures.js';
import { Retry, type RetryPolicy } from './retry.js';

/** A blob body and how many of its first bytes to skip (a server that ignored the Range and sent it all). */
export interface ResumedBody {
  body: Dispatcher.ResponseData['body'];
  skip: number;
}

export interface ResumeContext {
  /** The registry, for messages. */
  registry: string;
  /** What the blob is, for messages. */
  what: string;
  signal: AbortSignal | undefined;
  retry: RetryPolicy;
}

/**
 * The bytes of a `size`-byte blob from byte `start`, starting with `first` and calling
 * `reopen(offset)` after each break, up to the policy's attempts, with a notice for each resume.
 */
export async function* resumableBody(
  first: ResumedBody,
  reopen: (offset: number) => Promise<ResumedBody>,
  size: number,
  start: number,
  context: ResumeContext,
): AsyncGenerator<Buffer> {
  const { registry, what, signal } = context;
  const retry = new Retry(context.retry);
  let offset = start;
  let { body, skip } = first;
  for (;;) {
    let failure: unknown;
    try {
      for await (const raw of body) {
        let chunk = raw as Buffer;
        if (skip > 0) {
          const dropped = Math.min(skip, chunk.length);
          skip -= dropped;
          chunk = chunk.subarray(dropped);
          if (chunk.length === 0) continue;
        }
        offset += chunk.length;
        yield chunk;
      }
      if (offset >= size) return;
      failure = new Error(`the connection closed after ${offset} of ${size} bytes`);
    } catch (err) {
      failure = err;
    }
    body.destroy();
    if (signal?.aborted) throw abortError(signal);
    if (failure instanceof DeadlineExpired) throw tooSlowError(registry, what, failure);
    if (!retry.allows()) {
      throw isBrokenBody(failure) ? brokenBodyError(failure, registry, what) : networkError(failure, registry, what);
    }
    await retry.pause(`${what}: connection lost at byte ${offset} of ${size}`, signal, { action: 'resuming' });
    ({ body, skip } = await reopen(offset));
  }
}
