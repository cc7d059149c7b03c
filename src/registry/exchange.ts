/**
 * One HTTP exchange under a deadline, and the retry loop around exchanges: every registry and
 * token request goes through here, so connection failures, bodies that break off, slow
 * documents and retryable statuses are handled the same way everywhere.
 */
import type { Dispatcher } from 'undici';
import { Deadline } from './deadline.js';
import { attemptsFor, exchangeFailure, networkError } from './failures.js';
import type { Retry } from './retry.js';
import type { Http } from './transport.js';

export const USER_AGENT = 'pull-unpack/0.1';

export interface RequestInit {
  method: 'GET' | 'HEAD' | 'POST';
  headers: Record<string, string>;
  body?: string | undefined;
}

/**
 * Sends one request with `deadline`'s signal and resolves at its response headers. Failures
 * are typed: ABORTED, too slow (the deadline), or NETWORK naming `url`'s host.
 */
export async function exchange(
  http: Http,
  url: URL,
  init: RequestInit,
  deadline: Deadline,
  signal: AbortSignal | undefined,
  what: string,
): Promise<Dispatcher.ResponseData> {
  // Outside the try: an unreadable certificate file named by the user is a USAGE error, not NETWORK.
  const dispatcher = http.dispatcherFor(url);
  try {
    return await http.request(url, {
      method: init.method,
      headers: { 'user-agent': USER_AGENT, ...init.headers },
      body: init.body,
      signal: deadline.signal,
      dispatcher,
    });
  } catch (err) {
    if (deadline.signal.aborted) throw exchangeFailure(err, deadline, signal, url.host, what);
    throw networkError(err, url.host, what);
  }
}

/** What one attempt came to. */
export type Step<T> =
  | { done: T }
  /** Go round again at once, after `before` (a token request) has run outside this attempt's deadline. */
  | { again: true; before?: () => Promise<void> }
  /** Wait (Retry-After, else the backoff), then try again; the attempt checked that the budget allows it. */
  | { retry: string; retryAfter?: number | undefined };

export interface RetryLoop {
  retry: Retry;
  /** Milliseconds each attempt's deadline allows (transport.documentTimeout). */
  documentTimeout: number;
  signal: AbortSignal | undefined;
  /** The host the current attempt talks to, and what it fetches: for messages. */
  host(): string;
  what: string;
}

/**
 * Runs `attempt` under a fresh deadline until it is done. A failure it throws is typed
 * (exchangeFailure) and tried again while `loop.retry` and attemptsFor allow, else thrown.
 */
export async function withRetries<T>(loop: RetryLoop, attempt: (deadline: Deadline) => Promise<Step<T>>): Promise<T> {
  for (;;) {
    const deadline = new Deadline(loop.documentTimeout, loop.signal);
    let step: Step<T>;
    let limit: number | undefined;
    try {
      step = await attempt(deadline);
    } catch (err) {
      const failure = exchangeFailure(err, deadline, loop.signal, loop.host(), loop.what);
      limit = attemptsFor(failure);
      if (!loop.retry.allows(limit)) throw failure;
      step = { retry: (failure as Error).message };
    } finally {
      deadline.settle();
    }
    if ('done' in step) return step.done;
    if ('again' in step) {
      await step.before?.();
      continue;
    }
    await loop.retry.pause(step.retry, loop.signal, { retryAfter: step.retryAfter, ...(limit !== undefined && { limit }) });
  }
}
