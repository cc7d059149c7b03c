import { describe, expect, it } from 'vitest';
import { basicAuthorization, parseChallenges, parseTokenResponse, pullScope, TokenCache } from '../src/registry/auth.js';

describe('parseChallenges', () => {
  it('parses a Docker Hub bearer challenge', () => {
    expect(
      parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'),
    ).toEqual([
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
      },
    ]);
  });
  it('parses a Basic challenge', () => {
    expect(parseChallenges('Basic realm="Registry Realm"')).toEqual([{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  });
  it('lowercases schemes and parameter names', () => {
    expect(parseChallenges('BEARER Realm="r",SERVICE="s"')).toEqual([{ scheme: 'bearer', params: { realm: 'r', service: 's' } }]);
  });
  it('keeps commas inside quoted values (multi-scope)', () => {
    const [c] = parseChallenges('Bearer realm="https://t/x",scope="repository:a:pull,push repository:b:pull"');
    expect(c?.params['scope']).toBe('repository:a:pull,push repository:b:pull');
  });
  it('accepts unquoted values and spaces around =', () => {
    expect(parseChallenges('Bearer realm = https://t/token , service=reg')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://t/token', service: 'reg' } },
    ]);
  });
  it('unescapes quoted-pair characters', () => {
    expect(parseChallenges('Bearer realm="a\\"b"')[0]?.params['realm']).toBe('a"b');
  });
  it('parses several challenges in one header', () => {
    const list = parseChallenges('Basic realm="basic", Bearer realm="https://t/token",service="s"');
    expect(list.map((c) => c.scheme)).toEqual(['basic', 'bearer']);
    expect(list[1]?.params).toEqual({ realm: 'https://t/token', service: 's' });
  });
  it('reads the insufficient_scope error parameter', () => {
    const [c] = parseChallenges('Bearer realm="https://t",service="s",scope="repository:x:pull",error="insufficient_scope"');
    expect(c?.params['error']).toBe('insufficient_scope');
  });
  it('returns nothing for an empty header', () => {
    expect(parseChallenges('')).toEqual([]);
  });
  it('parses a scheme with no parameters', () => {
    expect(parseChallenges('Negotiate')).toEqual([{ scheme: 'negotiate', params: {} }]);
  });
});

describe('credentials and tokens', () => {
  it('encodes Basic credentials', () => {
    expect(basicAuthorization({ username: 'u', password: 'p:w' })).toBe(`Basic ${Buffer.from('u:p:w').toString('base64')}`);
    expect(basicAuthorization({ identityToken: 'x' })).toBeUndefined();
  });
  it('builds the pull scope', () => {
    expect(pullScope('library/alpine')).toBe('repository:library/alpine:pull');
  });
  it('reads token and access_token answers', () => {
    expect(parseTokenResponse({ token: 't', expires_in: 300 }, 'https://a/b')).toEqual({ token: 't', expiresIn: 300 });
    expect(parseTokenResponse({ access_token: 'a' }, 'https://a/b').token).toBe('a');
    expect(() => parseTokenResponse({}, 'https://a/b')).toThrow(expect.objectContaining({ code: 'UNAUTHORIZED' }));
  });
  it('reuses tokens while valid and drops them before they expire', () => {
    const cache = new TokenCache();
    cache.set('k', 'tok', 60, undefined, 1_000_000);
    expect(cache.get('k', 1_000_000 + 30_000)).toBe('tok');
    expect(cache.get('k', 1_000_000 + 56_000)).toBeUndefined();
  });
  it('defaults to 60 seconds and honours issued_at', () => {
    const cache = new TokenCache();
    const now = Date.parse('2026-01-01T00:01:00Z');
    cache.set('k', 'tok', undefined, '2026-01-01T00:00:30Z', now);
    expect(cache.get('k', now + 20_000)).toBe('tok');
    expect(cache.get('k', now + 26_000)).toBeUndefined();
  });
});
