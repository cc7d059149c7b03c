import { describe, expect, it } from 'vitest';
import { backoffDelay, isRetryableStatus, rateLimitSummary, retryAfterMs } from '../src/registry/retry.js';

describe('retry policy', () => {
  it('retries 429, 408 and 5xx but not 501, 505 or 4xx', () => {
    for (const s of [429, 408, 500, 502, 503, 504]) expect(isRetryableStatus(s)).toBe(true);
    for (const s of [400, 401, 403, 404, 501, 505]) expect(isRetryableStatus(s)).toBe(false);
  });
  it('backs off exponentially with jitter, capped at 10 s', () => {
    expect(backoffDelay(1, 500, () => 0)).toBe(250);
    expect(backoffDelay(1, 500, () => 1)).toBe(500);
    expect(backoffDelay(3, 500, () => 1)).toBe(2000);
    expect(backoffDelay(20, 500, () => 1)).toBe(10_000);
  });
  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs('Wed, 21 Oct 2026 07:28:10 GMT', Date.parse('Wed, 21 Oct 2026 07:28:00 GMT'))).toBe(10_000);
    expect(retryAfterMs('')).toBeUndefined();
    expect(retryAfterMs('soon')).toBeUndefined();
  });
  it("summarizes Docker Hub's RateLimit headers", () => {
    expect(rateLimitSummary('100;w=21600', '0;w=21600')).toBe('rate limit: 0 of 100 pulls left per 6 h');
    expect(rateLimitSummary('', '')).toBeUndefined();
  });
});
