/**
 * The Docker Registry HTTP API v2 / OCI distribution-spec client, on undici.
 * One client talks to one registry; it owns scheme selection, authentication and error mapping.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Dispatcher } from 'undici';
import { basicAuthorization, parseChallenges, parseTokenResponse, pullScope, TokenCache, type Credentials } from './auth.js';
import { digestOf, parseDigest } from '../image/digest.js';
import { PullUnpackError, RegistryError, abortError } from '../errors.js';
import { MANIFEST_ACCEPT, MediaType, type Descriptor } from '../image/oci.js';
import { registryEndpoint } from '../image/reference.js';
import { checkRange, CREDENTIALS_REFUSED_HINT, headerValue, LOGIN_HINT, readCapped, registryErrorFrom, unauthorized } from './responses.js';
import { backoffDelay, isRetryableStatus, retryAfterMs, rateLimitSummary } from './retry.js';
import { certsDirFor, loadHttp, isNotTls, isRetryableNetworkError, networkError, type Http, type TransportOptions } from './transport.js';

/** Manifests and indexes larger than this are refused (containerd and the distribution registry use 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Error bodies are read up to this many bytes; the rest is discarded. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;
const MAX_REDIRECTS = 5;
/** A Retry-After longer than this is not waited for: the error says when to come back. */
const MAX_RETRY_AFTER_MS = 60_000;
const USER_AGENT = 'pull-unpack/0.1';
/** Attempts per request (first try included) on connection errors, 5xx and 429. */
export const DEFAULT_ATTEMPTS = 5;

export interface RegistryClientOptions {
  /** The registry as named in the reference: 'docker.io', 'ghcr.io', '127.0.0.1:5000'. */
  registry: string;
  /** Hosts (host or host:port) that may be reached over plain HTTP or with an unverified certificate. */
  insecureRegistries?: readonly string[] | undefined;
  /** Credentials for this registry, or a function that finds them when the registry first asks. */
  credentials?: Credentials | (() => Promise<Credentials | undefined>) | undefined;
  /** CAs, client certificates, proxies and timeouts; ignored when `dispatcher` is given. */
  transport?: TransportOptions | undefined;
  /** Overrides the HTTP dispatcher built from `transport`. */
  dispatcher?: Dispatcher | undefined;
  maxManifestBytes?: number | undefined;
  /** Attempts per request on connection errors, 5xx and 429 (default 5). */
  attempts?: number | undefined;
  /** Base of the exponential backoff in milliseconds (default 500). */
  backoffMs?: number | undefined;
  /** One-line notices for the user: retries, insecure TLS. */
  onNotice?: ((message: string) => void) | undefined;
  /**
   * 'https://host[:port]' or 'http://host[:port]': talk to exactly this origin instead of
   * probing for the scheme (a mirror named by URL). Default: probe as docker does.
   */
  origin?: string | undefined;
}

/** Manifest bytes exactly as served, with the digest computed locally. */
export interface FetchedManifest {
  bytes: Buffer;
  /** The Content-Type header, without parameters; may be empty. */
  contentType: string;
  /** sha256 (or the requested algorithm) of `bytes`: the digest to report. */
  digest: string;
}

interface SendOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  signal?: AbortSignal | undefined;
  repository: string;
  /** For messages: what is being fetched. */
  what: string;
}

/** True for hosts docker reaches without TLS by default: localhost, 127.0.0.0/8, ::1. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = hostOnly(registry);
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

function hostOnly(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const colon = registry.lastIndexOf(':');
  return colon === -1 ? registry : registry.slice(0, colon);
}

/** A client for one registry. Safe for concurrent use; tokens are shared across requests. */
export class RegistryClient {
  readonly registry: string;
  private readonly endpoint: string;
  private readonly insecure: boolean;
  private readonly mayUseHttp: boolean;
  private readonly transportOptions: TransportOptions | undefined;
  private readonly givenDispatcher: Dispatcher | undefined;
  private httpReady: Promise<Http> | undefined;
  private readonly maxManifestBytes: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly onNotice: (message: string) => void;
  private readonly tokens = new TokenCache();
  private readonly credentialSource: RegistryClientOptions['credentials'];
  private readonly clientCertDir: string;
  private credentials: Promise<Credentials | undefined> | undefined;
  private origin: Promise<string> | undefined;

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    const fixed = options.origin === undefined ? undefined : new URL(options.origin);
    this.endpoint = fixed?.host ?? registryEndpoint(options.registry);
    if (fixed) this.origin = Promise.resolve(fixed.origin);
    const listed = (options.insecureRegistries ?? []).some(
      (h) => h === options.registry || h === this.endpoint || h === hostOnly(this.endpoint),
    );
    this.insecure = listed;
    this.mayUseHttp = listed || isLoopbackRegistry(this.endpoint);
    this.transportOptions = options.transport;
    this.givenDispatcher = options.dispatcher;
    this.maxManifestBytes = options.maxManifestBytes ?? MAX_MANIFEST_BYTES;
    this.attempts = Math.max(1, options.attempts ?? DEFAULT_ATTEMPTS);
    this.backoffMs = options.backoffMs ?? 500;
    this.onNotice = options.onNotice ?? (() => undefined);
    this.credentialSource = options.credentials;
    this.clientCertDir = certsDirFor(this.endpoint, options.transport);
  }

  /**
   * The scheme and host requests go to, e.g. 'https://registry-1.docker.io'. Probed once; a
   * probe that failed is forgotten, so the next request probes again.
   */
  baseUrl(signal?: AbortSignal): Promise<string> {
    this.origin ??= this.probeOrigin(signal).catch((err: unknown) => {
      this.origin = undefined;
      throw err;
    });
    return this.origin;
  }

  /** baseUrl(), retried with backoff while the registry cannot be reached (not for certificate errors). */
  private async baseUrlWithRetry(options: SendOptions): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.baseUrl(options.signal);
      } catch (err) {
        if (options.signal?.aborted || !isRetryableNetworkError(err) || attempt >= this.attempts) throw err;
        await this.pause(attempt, undefined, (err as Error).message, options.signal);
      }
    }
  }

  /** GET /v2/: checks that the registry answers the v2 API (a 401 counts as an answer). */
  async ping(signal?: AbortSignal): Promise<void> {
    const base = await this.baseUrl(signal);
    const res = await this.raw('GET', `${base}/v2/`, {}, signal, 'the registry API');
    await res.body.dump();
    if (res.statusCode !== 200 && res.statusCode !== 401) {
      throw new RegistryError('REGISTRY_ERROR', `${this.registry} does not answer the registry v2 API (HTTP ${res.statusCode})`, {
        status: res.statusCode,
      });
    }
  }

  /**
   * Fetches a manifest or index by tag or digest. When `reference` is a digest the bytes must
   * hash to it; otherwise the locally computed sha256 is returned as the digest.
   */
  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const byDigest = reference.includes(':');
    const expected = byDigest ? parseDigest(reference) : undefined;
    const what = `${this.registry}/${repository}${byDigest ? '@' : ':'}${reference}`;
    const res = await this.send(`/v2/${repository}/manifests/${reference}`, {
      repository,
      what,
      signal,
      headers: { accept: [...MANIFEST_ACCEPT, MediaType.DockerSchema1Signed + ';q=0.1'].join(', ') },
    });
    const bytes = await readCapped(res.body, this.maxManifestBytes, res.headers['content-length'], `the manifest of ${what}`, 'TOO_LARGE');
    const contentType = headerValue(res.headers['content-type']).split(';')[0]!.trim();
    const digest = digestOf(bytes, expected?.algorithm ?? 'sha256');
    if (expected && digest !== reference) {
      throw new PullUnpackError('DIGEST_MISMATCH', `the manifest served for ${what} hashes to ${digest}`, {
        hint: 'the registry or something between it and you altered the manifest; nothing was used',
      });
    }
    return { bytes, contentType, digest };
  }

  /**
   * The referrers index of `digest` (distribution-spec v1.1 "Listing Referrers": GET
   * /v2/<name>/referrers/<digest>), its first page; undefined when the registry answers 404,
   * which a registry with the API never does, so the caller reads the `<alg>-<hex>` tag instead.
   */
  async getReferrers(repository: string, digest: string, signal?: AbortSignal): Promise<FetchedManifest | undefined> {
    parseDigest(digest);
    const what = `the referrers of ${this.registry}/${repository}@${digest}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await this.send(`/v2/${repository}/referrers/${digest}`, { repository, what, signal, headers: { accept: MediaType.OciIndex } });
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) return undefined;
      throw err;
    }
    const bytes = await readCapped(res.body, this.maxManifestBytes, res.headers['content-length'], what, 'TOO_LARGE');
    return { bytes, contentType: headerValue(res.headers['content-type']).split(';')[0]!.trim(), digest: digestOf(bytes) };
  }

  /**
   * Opens a blob for reading, following redirects (without Authorization to other hosts).
   * A connection that breaks mid-blob is resumed with a Range request from the byte reached
   * (or restarted and the known prefix skipped when the server ignores ranges), so the caller
   * sees one continuous, still unverified stream, which it verifies and consumes or destroys.
   */
  async fetchBlob(
    repository: string,
    descriptor: Descriptor,
    signal?: AbortSignal,
    what = `blob ${descriptor.digest}`,
    offset = 0,
  ): Promise<Readable> {
    parseDigest(descriptor.digest);
    const path = `/v2/${repository}/blobs/${descriptor.digest}`;
    const options = { repository, what, signal };
    let first: { body: Dispatcher.ResponseData['body']; skip: number };
    if (offset > 0) {
      // Resuming an earlier partial download (kept in the cache) from byte `offset`.
      first = checkRange(await this.send(path, { ...options, headers: { range: `bytes=${offset}-` } }), offset, what);
    } else {
      first = { body: (await this.send(path, options)).body, skip: 0 };
    }
    return Readable.from(this.resumableBody(first, path, descriptor.size, offset, options), {
      objectMode: false,
      highWaterMark: 1 << 20,
    });
  }

  private async *resumableBody(
    first: { body: Dispatcher.ResponseData['body']; skip: number },
    path: string,
    size: number,
    start: number,
    options: SendOptions,
  ): AsyncGenerator<Buffer> {
    let offset = start;
    let { body, skip } = first;
    for (let attempt = 1; ; attempt++) {
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
      if (options.signal?.aborted) throw abortError(options.signal);
      if (attempt >= this.attempts) throw networkError(failure, this.registry, options.what);
      this.onNotice(`${options.what}: connection lost at byte ${offset} of ${size}; resuming (attempt ${attempt + 1} of ${this.attempts})`);
      await sleep(backoffDelay(attempt, this.backoffMs), undefined, { signal: options.signal }).catch(() => undefined);
      const res = await this.send(path, { ...options, headers: { range: `bytes=${offset}-` } });
      ({ body, skip } = checkRange(res, offset, options.what));
    }
  }

  /** undici and this registry's dispatcher, loaded on the first request (transport.ts). */
  private http(): Promise<Http> {
    this.httpReady ??= loadHttp(this.endpoint, this.insecure, this.transportOptions, this.givenDispatcher);
    return this.httpReady;
  }

  private async probeOrigin(signal: AbortSignal | undefined): Promise<string> {
    const https = `https://${this.endpoint}`;
    if (!this.mayUseHttp) return https;
    const { request, dispatcher } = await this.http();
    // As docker does for insecure and loopback registries: try TLS first, fall back to plain HTTP
    // only when the server does not speak TLS. A certificate that fails verification is an error
    // unless the user listed the host with --insecure-registry.
    try {
      const res = await request(`${https}/v2/`, { method: 'GET', dispatcher, signal, headers: { 'user-agent': USER_AGENT } });
      await res.body.dump();
      if (this.insecure) this.onNotice(`${this.registry} is an insecure registry: its TLS certificate is not verified`);
      return https;
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      if (!isNotTls(err)) throw networkError(err, this.registry, 'the registry API', this.tlsHint(err));
      return `http://${this.endpoint}`;
    }
  }

  /**
   * A TLS server that closes the connection during or right after the handshake most often
   * wants a client certificate (TLS 1.3 clients only learn of the refusal on the first read).
   */
  private tlsHint(err: unknown): string | undefined {
    const e = err as { code?: string; message?: string };
    const closed =
      e.code === 'UND_ERR_SOCKET' ||
      e.code === 'ECONNRESET' ||
      /certificate required|handshake failure|bad certificate/i.test(e.message ?? '');
    if (!closed) return undefined;
    return `the registry closed the TLS connection: if it requires a client certificate, put it in ${this.clientCertDir}/ as NAME.cert with its key as NAME.key (docker's layout)`;
  }

  /** A registry request with authentication, redirects, retries and error mapping. */
  private async send(path: string, options: SendOptions): Promise<Dispatcher.ResponseData> {
    const base = await this.baseUrlWithRetry(options);
    let scope = pullScope(options.repository);
    let url = `${base}${path}`;
    let authorization = await this.authorizationFor(scope);
    let retriedAuth = false;
    for (let redirects = 0, attempt = 1; ;) {
      const sameHost = new URL(url).host === new URL(base).host;
      const headers: Record<string, string> = { ...options.headers };
      // Never forward credentials to another host (a blob CDN behind a redirect).
      if (authorization && sameHost) headers['authorization'] = authorization;
      let res: Dispatcher.ResponseData;
      try {
        res = await this.raw(options.method ?? 'GET', url, headers, options.signal, options.what);
      } catch (err) {
        if (options.signal?.aborted || !isRetryableNetworkError(err) || attempt >= this.attempts) throw err;
        await this.pause(attempt++, undefined, `${options.what}: ${(err as Error).message}`, options.signal);
        continue;
      }
      if (res.statusCode === 401 && sameHost && !retriedAuth) {
        retriedAuth = true;
        const challenge = headerValue(res.headers['www-authenticate']);
        await res.body.dump();
        if (authorization) this.tokens.delete(scope);
        ({ authorization, scope } = await this.authenticate(challenge, scope, options));
        continue;
      }
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers['location']) {
        await res.body.dump();
        if (++redirects > MAX_REDIRECTS) {
          throw new RegistryError('REGISTRY_ERROR', `${options.what}: too many redirects`, { status: res.statusCode });
        }
        url = new URL(headerValue(res.headers['location']), url).toString();
        continue;
      }
      if (res.statusCode >= 200 && res.statusCode < 300) return res;
      if ((res.statusCode === 401 || res.statusCode === 403) && sameHost) {
        // A refusal after authenticating: the credentials were wrong, or (`insufficient_scope`)
        // the token we got does not grant the pull.
        const challenge = parseChallenges(headerValue(res.headers['www-authenticate'])).find((c) => c.scheme === 'bearer');
        const scopeError = challenge?.params['error'] === 'insufficient_scope';
        if (res.statusCode === 401 || scopeError) {
          await res.body.dump();
          throw unauthorized(
            this.registry,
            options.what,
            (await this.getCredentials()) !== undefined,
            scopeError ? 'insufficient_scope' : undefined,
          );
        }
      }
      const wait = retryAfterMs(headerValue(res.headers['retry-after']));
      if (isRetryableStatus(res.statusCode) && attempt < this.attempts && (wait === undefined || wait <= MAX_RETRY_AFTER_MS)) {
        await res.body.dump();
        await this.pause(attempt++, wait, `${options.what}: HTTP ${res.statusCode}`, options.signal);
        continue;
      }
      throw await this.responseError(res, options.what);
    }
  }

  private async pause(attempt: number, retryAfter: number | undefined, why: string, signal: AbortSignal | undefined): Promise<void> {
    const delay = retryAfter ?? backoffDelay(attempt, this.backoffMs);
    this.onNotice(`${why}; retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempt + 1} of ${this.attempts})`);
    try {
      await sleep(delay, undefined, { signal });
    } catch {
      throw abortError(signal);
    }
  }

  private async raw(
    method: 'GET' | 'HEAD',
    url: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<Dispatcher.ResponseData> {
    const { request, dispatcher } = await this.http();
    try {
      return await request(url, { method, headers: { 'user-agent': USER_AGENT, ...headers }, signal, dispatcher });
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      throw networkError(err, new URL(url).host, what);
    }
  }

  private async authorizationFor(scope: string): Promise<string | undefined> {
    const token = this.tokens.get(scope);
    return token ? `Bearer ${token}` : undefined;
  }

  private getCredentials(): Promise<Credentials | undefined> {
    const source = this.credentialSource;
    this.credentials ??= typeof source === 'function' ? source() : Promise.resolve(source);
    return this.credentials;
  }

  /**
   * Answers a 401 challenge: Basic with credentials, or a bearer token from the realm for the
   * scope the challenge names (or the pull scope).
   */
  private async authenticate(header: string, scope: string, options: SendOptions): Promise<{ authorization: string; scope: string }> {
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const credentials = await this.getCredentials();
    if (bearer?.params['realm']) {
      const wanted = bearer.params['scope'] || scope;
      const token = await this.fetchToken(bearer.params, wanted, credentials, options.signal);
      return { authorization: `Bearer ${token}`, scope: wanted };
    }
    const basic = challenges.find((c) => c.scheme === 'basic');
    const basicValue = credentials && basicAuthorization(credentials);
    if (basic && basicValue) return { authorization: basicValue, scope };
    throw unauthorized(this.registry, options.what, credentials !== undefined);
  }

  private async fetchToken(
    params: Record<string, string>,
    scope: string,
    credentials: Credentials | undefined,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const realm = new URL(params['realm']!);
    const base = new URL(await this.baseUrl(signal));
    // Secrets travel to the realm over TLS, to the registry's own host, or between loopback
    // addresses; never in clear text to another machine.
    const mayCarrySecrets =
      realm.protocol === 'https:' || realm.host === base.host || (isLoopbackRegistry(base.host) && isLoopbackRegistry(realm.host));
    const url = new URL(realm);
    const headers: Record<string, string> = { 'user-agent': USER_AGENT, accept: 'application/json' };
    const { request, dispatcher } = await this.http();
    const identityToken = mayCarrySecrets ? credentials?.identityToken : undefined;
    let form: string | undefined;
    if (identityToken) {
      // An identity token is an OAuth2 refresh token: POST it as a form (distribution's oauth.md).
      const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: identityToken, client_id: 'pull-unpack', scope });
      if (params['service']) body.set('service', params['service']);
      form = body.toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else {
      if (params['service']) url.searchParams.set('service', params['service']);
      url.searchParams.set('scope', scope);
      const basicValue = credentials && mayCarrySecrets ? basicAuthorization(credentials) : undefined;
      if (basicValue) headers['authorization'] = basicValue;
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: form ? 'POST' : 'GET', headers, signal, dispatcher, body: form });
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      throw networkError(err, url.host, 'the token server');
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      const sent = identityToken !== undefined || headers['authorization'] !== undefined;
      const said = await this.responseError(res, `a token for ${scope}`);
      throw new RegistryError(
        'UNAUTHORIZED',
        `the token server ${url.host} refused ${sent ? 'the credentials' : 'an anonymous token'} for ${scope} (HTTP ${res.statusCode})`,
        said,
        {
          hint: sent ? CREDENTIALS_REFUSED_HINT : LOGIN_HINT,
        },
      );
    }
    if (res.statusCode !== 200) throw await this.responseError(res, `a token for ${scope}`);
    const body = await readCapped(res.body, MAX_ERROR_BODY_BYTES * 16, res.headers['content-length'], 'the token response', 'TOO_LARGE');
    let doc: unknown;
    try {
      doc = JSON.parse(body.toString('utf8'));
    } catch (cause) {
      throw new PullUnpackError('UNAUTHORIZED', `the token server ${url.host} did not answer JSON`, { cause });
    }
    const { token, expiresIn, issuedAt } = parseTokenResponse(doc, url.toString());
    this.tokens.set(scope, token, expiresIn, issuedAt);
    return token;
  }

  private async responseError(res: Dispatcher.ResponseData, what: string): Promise<RegistryError> {
    let body: Buffer;
    try {
      body = await readCapped(res.body, MAX_ERROR_BODY_BYTES, undefined, 'error body', 'TOO_LARGE', true);
    } catch {
      body = Buffer.alloc(0);
    }
    const error = registryErrorFrom(res.statusCode, body, headerValue(res.headers['content-type']), what, this.registry);
    if (res.statusCode !== 429) return error;
    const limits = rateLimitSummary(headerValue(res.headers['ratelimit-limit']), headerValue(res.headers['ratelimit-remaining']));
    const after = headerValue(res.headers['retry-after']);
    return new RegistryError('REGISTRY_ERROR', `${error.message}${limits ? ` (${limits})` : ''}`, error, {
      hint: `the registry is rate limiting pulls${after ? `; it asks to wait ${after}${/^\d+$/.test(after) ? ' s' : ''}` : ''}. Log in to raise the limit, or use a mirror (--mirror)`,
    });
  }
}
