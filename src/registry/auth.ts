/**
 * Registry authentication: WWW-Authenticate challenges, Basic credentials and bearer tokens
 * (distribution's token auth spec). Tokens are cached per scope and reused while valid.
 */
import { PullUnpackError } from '../errors.js';

/** One challenge from a WWW-Authenticate header: `Bearer realm="...",service="..."`. */
export interface Challenge {
  scheme: string; // lowercased: 'bearer', 'basic'
  params: Record<string, string>; // parameter names lowercased
}

/** Username/password or an identity (refresh) token for one registry. */
export interface Credentials {
  username?: string | undefined;
  password?: string | undefined;
  identityToken?: string | undefined;
}

/**
 * Parses a WWW-Authenticate header value into its challenges (RFC 7235), tolerating the
 * quirks registries send: unquoted values, commas inside quoted strings, several challenges.
 */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipSpace = (): void => {
    while (i < n && /[\s,]/.test(header[i]!)) i++;
  };
  while (i < n) {
    skipSpace();
    const schemeMatch = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(header.slice(i));
    if (!schemeMatch) break;
    const scheme = schemeMatch[0].toLowerCase();
    i += schemeMatch[0].length;
    const params: Record<string, string> = {};
    for (;;) {
      skipSpace();
      const m = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*/.exec(header.slice(i));
      if (!m) break;
      i += m[0].length;
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const v = /^[^,\s]*/.exec(header.slice(i))![0];
        value = v;
        i += v.length;
      }
      params[m[1]!.toLowerCase()] = value;
    }
    challenges.push({ scheme, params });
  }
  return challenges;
}

/** The `Authorization` value for Basic credentials. */
export function basicAuthorization(credentials: Credentials): string | undefined {
  if (credentials.username === undefined || credentials.password === undefined) return undefined;
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

/** The pull scope for a repository, as the token spec writes it. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

/** Default token lifetime when the server gives none (the token spec says 60 seconds). */
const DEFAULT_TOKEN_SECONDS = 60;
/** Renew this long before expiry so a token never lapses mid-request. */
const EXPIRY_MARGIN_MS = 5_000;

/**
 * The bearer tokens of one registry client, keyed by scope (a client talks to one registry, whose
 * challenges name its realm and service); reused until shortly before they expire.
 */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();

  get(key: string, now = Date.now()): string | undefined {
    const token = this.tokens.get(key);
    if (!token) return undefined;
    if (token.expiresAt - EXPIRY_MARGIN_MS <= now) {
      this.tokens.delete(key);
      return undefined;
    }
    return token.value;
  }

  set(key: string, value: string, expiresInSeconds: number | undefined, issuedAt?: string, now = Date.now()): void {
    const seconds = expiresInSeconds && expiresInSeconds > 0 ? expiresInSeconds : DEFAULT_TOKEN_SECONDS;
    const issued = issuedAt ? Date.parse(issuedAt) : NaN;
    const start = Number.isFinite(issued) && issued <= now ? issued : now;
    this.tokens.set(key, { value, expiresAt: start + seconds * 1000 });
  }

  delete(key: string): void {
    this.tokens.delete(key);
  }
}

/** Reads a token endpoint's JSON answer (`token` or `access_token`, `expires_in`, `issued_at`). */
export function parseTokenResponse(body: unknown, realm: string): { token: string; expiresIn?: number; issuedAt?: string } {
  const doc = body as Record<string, unknown> | null;
  const token = doc && (typeof doc['token'] === 'string' ? doc['token'] : doc['access_token']);
  if (typeof token !== 'string' || token === '') {
    throw new PullUnpackError('UNAUTHORIZED', `the token server ${realmHost(realm)} answered without a token`);
  }
  const expiresIn = typeof doc!['expires_in'] === 'number' ? doc!['expires_in'] : undefined;
  const issuedAt = typeof doc!['issued_at'] === 'string' ? doc!['issued_at'] : undefined;
  return { token, ...(expiresIn !== undefined && { expiresIn }), ...(issuedAt !== undefined && { issuedAt }) };
}

function realmHost(realm: string): string {
  try {
    return new URL(realm).host;
  } catch {
    return 'token realm';
  }
}
