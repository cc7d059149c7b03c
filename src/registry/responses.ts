/**
 * HTTP helpers of the registry client: error responses to typed errors, capped body reads,
 * resumed-range checks. Pure functions of a response; no state.
 */
import type { Dispatcher } from 'undici';
import { PullUnpackError, redactValue, RegistryError } from '../errors.js';
import { parseJson } from '../image/json.js';
import { rateLimitSummary } from './retry.js';

/** Error bodies are read up to this many bytes; the rest is discarded. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** The typed error for an HTTP error response, read from its (capped) body; a 429 with the rate limit in words. */
export async function errorFromResponse(res: Dispatcher.ResponseData, what: string, registry: string): Promise<RegistryError> {
  let body: Buffer;
  try {
    body = await readCapped(res.body, MAX_ERROR_BODY_BYTES, undefined, 'error body', 'TOO_LARGE', true);
  } catch {
    body = Buffer.alloc(0);
  }
  const error = registryErrorFrom(res.statusCode, body, headerValue(res.headers['content-type']), what, registry);
  if (res.statusCode !== 429) return error;
  const limits = rateLimitSummary(headerValue(res.headers['ratelimit-limit']), headerValue(res.headers['ratelimit-remaining']));
  const after = headerValue(res.headers['retry-after']);
  return new RegistryError('REGISTRY_ERROR', `${error.message}${limits ? ` (${limits})` : ''}`, error, {
    hint: `the registry is rate limiting pulls${after ? `; it asks to wait ${after}${/^\d+$/.test(after) ? ' s' : ''}` : ''}. Log in to raise the limit, or use a mirror (--mirror)`,
  });
}

/** Maps an HTTP error response to a typed error, using the registry's JSON error body when it has one. */
function registryErrorFrom(status: number, body: Buffer, contentType: string, what: string, registry: string): RegistryError {
  let first: { code?: string; message?: string; detail?: unknown } | undefined;
  try {
    const doc = parseJson(body, 'the error body') as { errors?: Array<{ code?: string; message?: string; detail?: unknown }> };
    first = Array.isArray(doc.errors) ? doc.errors[0] : undefined;
  } catch {
    first = undefined;
  }
  const registryCode = typeof first?.code === 'string' ? first.code : undefined;
  const said = first?.message ? `: ${first.message}` : contentType.includes('html') ? ' (the server answered an HTML page)' : '';
  // Registries may echo the request (Authorization included) in `detail`.
  const info = { status, registryCode, detail: redactValue(first?.detail) };
  const label = registryCode ? ` ${registryCode}` : '';
  if (status === 404) {
    return new RegistryError('NOT_FOUND', `${what} not found (HTTP 404${label}${said})`, info, {
      hint: 'check the repository name and tag; private images also answer 404 without credentials',
    });
  }
  if (status === 401 || status === 403) {
    return new RegistryError('UNAUTHORIZED', `${registry} refused access to ${what} (HTTP ${status}${label}${said})`, info, {
      hint: 'log in (docker login) or check that the repository exists and you may pull it',
    });
  }
  return new RegistryError('REGISTRY_ERROR', `${registry} failed to serve ${what}: HTTP ${status}${label}${said}`, info);
}

export const CREDENTIALS_REFUSED_HINT = 'the credentials were refused or do not grant pull access to this repository';
export const LOGIN_HINT = 'log in with docker login, or pass --username and --password-stdin';

export function unauthorized(registry: string, what: string, hadCredentials: boolean, registryCode?: string): RegistryError {
  const why = registryCode === 'insufficient_scope' ? ' (insufficient_scope: the token does not allow pulling it)' : '';
  return new RegistryError(
    'UNAUTHORIZED',
    `${registry} requires authentication for ${what}${why}`,
    { status: 401, registryCode },
    {
      hint: hadCredentials ? CREDENTIALS_REFUSED_HINT : LOGIN_HINT,
    },
  );
}

/** Checks a resumed blob response: 206 from `offset`, or 200 (range ignored) whose prefix to skip. */
export function checkRange(
  res: Dispatcher.ResponseData,
  offset: number,
  what: string,
): { body: Dispatcher.ResponseData['body']; skip: number } {
  if (res.statusCode === 200) return { body: res.body, skip: offset };
  const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(headerValue(res.headers['content-range']));
  if (res.statusCode !== 206 || !range || Number(range[1]) !== offset) {
    res.body.destroy();
    throw new PullUnpackError('NETWORK', `${what}: the registry answered a resume from byte ${offset} with an unusable range`, {
      hint: 'try again; the registry or a proxy mangles Range requests',
    });
  }
  return { body: res.body, skip: 0 };
}

export function headerValue(value: string | string[] | undefined): string {
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

/** Reads a whole body into memory, refusing more than `cap` bytes (checked before and while reading). */
export async function readCapped(
  body: Dispatcher.ResponseData['body'],
  cap: number,
  contentLength: string | string[] | undefined,
  what: string,
  code: 'TOO_LARGE',
  truncate = false,
): Promise<Buffer> {
  const declared = Number(headerValue(contentLength));
  if (!truncate && Number.isFinite(declared) && declared > cap) {
    body.destroy();
    throw new PullUnpackError(code, `${what} is ${declared} bytes, over the ${cap}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += (chunk as Buffer).length;
    if (total > cap) {
      body.destroy();
      if (truncate) break;
      throw new PullUnpackError(code, `${what} is over the ${cap}-byte limit`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
