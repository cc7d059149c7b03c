/**
 * Asking a token realm for a bearer token (distribution's token auth spec, and oauth.md for
 * identity tokens), with the same deadline and retries as registry requests. Credentials go
 * only to a realm the origin policy allows: over TLS, or to an insecure or local origin.
 */
import type { Dispatcher } from 'undici';
import { PullUnpackError, RegistryError } from '../errors.js';
import { basicAuthorization, parseTokenResponse, type Credentials } from './auth.js';
import { withRetries, exchange, type RequestInit, type Step } from './exchange.js';
import type { OriginPolicy } from './origins.js';
import { CREDENTIALS_REFUSED_HINT, errorFromResponse, LOGIN_HINT, readCapped } from './responses.js';
import { isRetryableStatus, type Retry } from './retry.js';
import type { Http } from './transport.js';
import { parseJson } from '../image/json.js';

/** Token answers are read up to this many bytes (a JWT with a certificate chain fits easily). */
const MAX_TOKEN_BYTES = 1024 * 1024;

export interface TokenContext {
  http: Http;
  registry: string;
  /** The registry's origin as reached (scheme, host, port). */
  base: URL;
  policy: OriginPolicy;
  retry: Retry;
  documentTimeout: number;
  signal: AbortSignal | undefined;
}

export interface TokenAnswer {
  token: string;
  expiresIn?: number;
  issuedAt?: string;
}

/** A token for `scope` from the realm of a Bearer challenge's `params`; UNAUTHORIZED when refused. */
export async function requestToken(
  ctx: TokenContext,
  params: Record<string, string>,
  scope: string,
  credentials: Credentials | undefined,
): Promise<TokenAnswer> {
  const realm = parseRealm(params['realm'] ?? '', ctx.registry);
  const secret = credentials && (credentials.identityToken || basicAuthorization(credentials)) ? credentials : undefined;
  if (secret && !ctx.policy.maySendSecrets(realm, ctx.base)) throw insecureRealm(realm, ctx);
  const { url, init } = tokenRequest(realm, params, scope, secret);
  const sent = secret !== undefined;
  return withRetries({ ...ctx, host: () => url.host, what: 'the token answer' }, async (deadline): Promise<Step<TokenAnswer>> => {
    const res = await exchange(ctx.http, url, init, deadline, ctx.signal, 'the token server');
    if (res.statusCode === 401 || res.statusCode === 403) throw await refused(res, url, scope, sent, ctx.registry);
    if (isRetryableStatus(res.statusCode) && ctx.retry.allows()) {
      await res.body.dump();
      return { retry: `the token server ${url.host}: HTTP ${res.statusCode}` };
    }
    if (res.statusCode !== 200) throw await errorFromResponse(res, `a token for ${scope}`, ctx.registry);
    const body = await readCapped(res.body, MAX_TOKEN_BYTES, res.headers['content-length'], 'the token answer', 'TOO_LARGE');
    const doc = parseJson(body, `the answer of the token server ${url.host}`, { code: 'UNAUTHORIZED' });
    return { done: parseTokenResponse(doc, url.toString()) };
  });
}

function parseRealm(text: string, registry: string): URL {
  let realm: URL | undefined;
  try {
    realm = new URL(text);
  } catch {
    realm = undefined;
  }
  if (!realm || (realm.protocol !== 'https:' && realm.protocol !== 'http:')) {
    throw new PullUnpackError('UNAUTHORIZED', `${registry} named a token realm that is not an http(s) URL`);
  }
  return realm;
}

/** The request for a token: a refresh-token POST for an identity token, else a GET with Basic credentials if any. */
function tokenRequest(
  realm: URL,
  params: Record<string, string>,
  scope: string,
  credentials: Credentials | undefined,
): { url: URL; init: RequestInit } {
  const url = new URL(realm);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (credentials?.identityToken) {
    // An identity token is an OAuth2 refresh token: POST it as a form (distribution's oauth.md).
    const form = new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: credentials.identityToken,
      client_id: 'pull-unpack',
      scope,
    });
    if (params['service']) form.set('service', params['service']);
    headers['content-type'] = 'application/x-www-form-urlencoded';
    return { url, init: { method: 'POST', headers, body: form.toString() } };
  }
  if (params['service']) url.searchParams.set('service', params['service']);
  url.searchParams.set('scope', scope);
  const basic = credentials && basicAuthorization(credentials);
  if (basic) headers['authorization'] = basic;
  return { url, init: { method: 'GET', headers } };
}

/** Credentials would travel in clear text to `realm`: refuse before sending anything (issue 11). */
function insecureRealm(realm: URL, ctx: TokenContext): PullUnpackError {
  return new PullUnpackError(
    'UNAUTHORIZED',
    `${ctx.registry} sends for tokens to ${realm.origin}, plain HTTP: credentials are not sent there in clear text`,
    {
      hint: `the registry's token service must use HTTPS; only for a test setup, name ${realm.host} with --insecure-registry`,
    },
  );
}

async function refused(res: Dispatcher.ResponseData, url: URL, scope: string, sent: boolean, registry: string): Promise<RegistryError> {
  const said = await errorFromResponse(res, `a token for ${scope}`, registry);
  return new RegistryError(
    'UNAUTHORIZED',
    `the token server ${url.host} refused ${sent ? 'the credentials' : 'an anonymous token'} for ${scope} (HTTP ${res.statusCode})`,
    said,
    { hint: sent ? CREDENTIALS_REFUSED_HINT : LOGIN_HINT },
  );
}
