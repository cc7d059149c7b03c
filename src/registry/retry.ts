/**
 * Retry policy for registry requests: which answers are worth another try, and how long to wait.
 */

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
