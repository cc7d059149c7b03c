/**
 * Retry policy for registry requests: which answers are worth another try, how long to wait,
 * and what the user is told while waiting.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { abortError } from '../errors.js';

/** 429 and 5xx except 501 (not implemented) and 505 (version not supported) are transient. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 408 || (status >= 500 && status !== 501 && status !== 505);
}

/** Exponential backoff with full jitter: a random delay in [base*2^(n-1)/2, base*2^(n-1)], capped at 10 s. */
export function backoffDelay(attempt: number, baseMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(baseMs * 2 ** Math.max(0, attempt - 1), 10_000);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Milliseconds a Retry-After header asks for (delta-seconds or an HTTP date); undefined if absent or invalid. */
export function retryAfterMs(value: string, now: number = Date.now()): number | undefined {
  const text = value.trim();
  if (text === '') return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isFinite(date) ? Math.max(0, date - now) : undefined;
}

/** Docker Hub's `RateLimit-Limit: 100;w=21600` and `RateLimit-Remaining: 0;w=21600`, said in words. */
export function rateLimitSummary(limit: string, remaining: string): string | undefined {
  const parse = (v: string): { count: string; window?: string } | undefined => {
    const m = /^\s*(\d+)\s*(?:;\s*w=(\d+))?/.exec(v);
    return m ? { count: m[1]!, ...(m[2] && { window: m[2] }) } : undefined;
  };
  const l = parse(limit);
  const r = parse(remaining);
  if (!l && !r) return undefined;
  const window = l?.window ?? r?.window;
  const per = window ? ` per ${Number(window) >= 3600 ? `${Number(window) / 3600} h` : `${window} s`}` : '';
  return `rate limit: ${r ? `${r.count} of ` : ''}${l ? l.count : '?'} pulls left${per}`;
}

export interface RetryPolicy {
  /** Attempts per request, the first included. */
  attempts: number;
  /** Base of the exponential backoff in milliseconds. */
  backoffMs: number;
  onNotice: (message: string) => void;
}

/**
 * The attempts of one request: connection, status and body failures count against one budget,
 * and the user gets one notice per distinct reason, not one per attempt (issue 11: four
 * identical warnings for a registry that was not there).
 */
export class Retry {
  /** The attempt under way, from 1. */
  attempt = 1;
  private readonly policy: RetryPolicy;
  private readonly said = new Set<string>();

  constructor(policy: RetryPolicy) {
    this.policy = policy;
  }

  /** True when a failure that allows `limit` attempts in all (never more than the policy's) may be tried again. */
  allows(limit = Infinity): boolean {
    return this.attempt < Math.min(limit, this.policy.attempts);
  }

  /**
   * Says why (once per reason: '<why>; retrying in 1.0 s (attempt 2 of 5)', or 'resuming' for
   * `action`) and waits before the next attempt; ABORTED if `signal` fires first.
   */
  async pause(
    why: string,
    signal: AbortSignal | undefined,
    options: { retryAfter?: number | undefined; limit?: number; action?: string } = {},
  ): Promise<void> {
    const delay = options.retryAfter ?? backoffDelay(this.attempt, this.policy.backoffMs);
    this.attempt++;
    if (!this.said.has(why)) {
      this.said.add(why);
      const of = Math.min(options.limit ?? Infinity, this.policy.attempts);
      const action = options.action ?? 'retrying';
      this.policy.onNotice(`${why}; ${action} in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempt} of ${of})`);
    }
    try {
      await sleep(delay, undefined, { signal });
    } catch {
      throw abortError(signal);
    }
  }
}

/**
 * Runs `attempt` until it succeeds. A failure is tried again, after `retry` said why and waited,
 * while `retry` allows the attempts `limitOf(failure)` gives that kind of failure; otherwise (or
 * once `signal` fired) it is thrown.
 */
export async function retrying<T>(
  retry: Retry,
  signal: AbortSignal | undefined,
  attempt: () => Promise<T>,
  limitOf: (failure: unknown) => number,
): Promise<T> {
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      const limit = limitOf(err);
      if (signal?.aborted || !retry.allows(limit)) throw err;
      await retry.pause((err as Error).message, signal, { limit });
    }
  }
}
