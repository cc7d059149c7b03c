/**
 * The Docker Registry HTTP API v2 / OCI distribution-spec client, on undici.
 * One client talks to one registry; it owns scheme selection, authentication and error mapping.
 */
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { basicAuthorization, parseChallenges, pullScope, TokenCache, type Credentials } from './auth.js';
import { digestMismatch, digestOf, parseDigest } from '../image/digest.js';
import { PullUnpackError, RegistryError } from '../errors.js';
import { DEFAULT_LIMITS } from '../limits.js';
import { MANIFEST_ACCEPT, MediaType, type Descriptor, type FetchedManifest } from '../image/oci.js';
import { registryEndpoint } from '../image/reference.js';
import { resumableBody, type ResumedBody } from './blob-body.js';
import { Deadline, DEFAULT_DOCUMENT_TIMEOUT_MS } from './deadline.js';
import { exchange, withRetries, type Step } from './exchange.js';
import { attemptsFor } from './failures.js';
import { probeScheme } from './probe.js';
import { isLoopbackRegistry, OriginPolicy } from './origins.js';
import { checkRange, errorFromResponse, headerValue, readCapped, unauthorized } from './responses.js';
import { isRetryableStatus, Retry, retryAfterMs, retrying, type RetryPolicy } from './retry.js';
import { MAX_TAG_LIST_BYTES, parseTagList, type TagPage } from './tag-list.js';
import { requestToken } from './token-request.js';
import { certsDirFor, loadHttp, type Http, type TransportOptions } from './transport.js';

export { isLoopbackRegistry };

const MAX_REDIRECTS = 5;
/** A Retry-After longer than this is not waited for: the error says when to come back. */
const MAX_RETRY_AFTER_MS = 60_000;
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

interface SendOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal | undefined;
  repository: string;
  /** For messages: what is being fetched. */
  what: string;
}

/** Reads a 2xx response under its deadline (and may hand the deadline over to a streamed body). */
type BodyReader<T> = (res: Dispatcher.ResponseData, deadline: Deadline) => Promise<T>;

/** The authorization state of one request: the scope asked for, the header to send, whether a 401 was answered. */
interface AuthState {
  scope: string;
  authorization: string | undefined;
  answered: boolean;
}

/**
 * Blobs that are JSON documents (image configs, signature payloads, sigstore bundles) get the
 * document deadline; layers stream with the idle timeout only. Parameters do not count: older
 * sigstore bundles are `application/vnd.dev.sigstore.bundle+json;version=0.1`.
 */
function isDocumentBlob(descriptor: Descriptor): boolean {
  return /[+/]json$/.test(descriptor.mediaType.split(';')[0]!.trim());
}

/** A client for one registry. Safe for concurrent use; tokens are shared across requests. */
export class RegistryClient {
  readonly registry: string;
  private readonly endpoint: string;
  private readonly policy: OriginPolicy;
  private readonly transportOptions: TransportOptions | undefined;
  private readonly givenDispatcher: Dispatcher | undefined;
  private httpReady: Promise<Http> | undefined;
  private readonly maxManifestBytes: number;
  private readonly retryPolicy: RetryPolicy;
  private readonly documentTimeout: number;
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
    this.policy = new OriginPolicy({
      registry: options.registry,
      endpoint: this.endpoint,
      insecureRegistries: options.insecureRegistries ?? [],
    });
    this.transportOptions = options.transport;
    this.givenDispatcher = options.dispatcher;
    this.maxManifestBytes = options.maxManifestBytes ?? DEFAULT_LIMITS.maxManifestBytes;
    this.retryPolicy = {
      attempts: Math.max(1, options.attempts ?? DEFAULT_ATTEMPTS),
      backoffMs: options.backoffMs ?? 500,
      onNotice: options.onNotice ?? (() => undefined),
    };
    this.documentTimeout = options.transport?.documentTimeout ?? DEFAULT_DOCUMENT_TIMEOUT_MS;
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

  /** baseUrl(), retried with backoff while the registry cannot be reached (failures.ts attemptsFor). */
  private baseUrlWithRetry(signal: AbortSignal | undefined, retry: Retry): Promise<URL> {
    return retrying(retry, signal, async () => new URL(await this.baseUrl(signal)), attemptsFor);
  }

  /**
   * Fetches a manifest or index by tag or digest. When `reference` is a digest the bytes must
   * hash to it; otherwise the locally computed sha256 is returned as the digest.
   */
  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const byDigest = reference.includes(':');
    const expected = byDigest ? parseDigest(reference) : undefined;
    const what = `${this.registry}/${repository}${byDigest ? '@' : ':'}${reference}`;
    const headers = { accept: [...MANIFEST_ACCEPT, MediaType.DockerSchema1Signed + ';q=0.1'].join(', ') };
    const { bytes, contentType } = await this.send(
      `/v2/${repository}/manifests/${reference}`,
      { repository, what, signal, headers },
      async (res) => ({
        bytes: await readCapped(res.body, this.maxManifestBytes, res.headers['content-length'], `the manifest of ${what}`, 'TOO_LARGE'),
        contentType: headerValue(res.headers['content-type']).split(';')[0]!.trim(),
      }),
    );
    const digest = digestOf(bytes, expected?.algorithm ?? 'sha256');
    if (expected && digest !== reference) throw digestMismatch(`the manifest served for ${what}`, reference, digest);
    return { bytes, contentType, digest };
  }

  /** The first page of `repository`'s tags (at most `n`, at most MAX_TAG_LIST_BYTES), and whether the registry has more. */
  async listTags(repository: string, n: number, signal?: AbortSignal): Promise<TagPage> {
    const what = `the tags of ${this.registry}/${repository}`;
    return this.send(`/v2/${repository}/tags/list?n=${n}`, { repository, what, signal }, async (res) => ({
      tags: parseTagList(await readCapped(res.body, MAX_TAG_LIST_BYTES, res.headers['content-length'], what, 'TOO_LARGE'), what),
      more: headerValue(res.headers['link']) !== '',
    }));
  }

  /**
   * The referrers index of `digest` (distribution-spec v1.1 "Listing Referrers": GET
   * /v2/<name>/referrers/<digest>), its first page; undefined when the registry answers 404,
   * which a registry with the API never does, so the caller reads the `<alg>-<hex>` tag instead.
   */
  async getReferrers(repository: string, digest: string, signal?: AbortSignal): Promise<FetchedManifest | undefined> {
    parseDigest(digest);
    const what = `the referrers of ${this.registry}/${repository}@${digest}`;
    let found: { bytes: Buffer; contentType: string };
    try {
      found = await this.send(
        `/v2/${repository}/referrers/${digest}`,
        { repository, what, signal, headers: { accept: MediaType.OciIndex } },
        async (res) => ({
          bytes: await readCapped(res.body, this.maxManifestBytes, res.headers['content-length'], what, 'TOO_LARGE'),
          contentType: headerValue(res.headers['content-type']).split(';')[0]!.trim(),
        }),
      );
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) return undefined;
      throw err;
    }
    return { ...found, digest: digestOf(found.bytes) };
  }

  /**
   * Opens a blob for reading, following redirects (without Authorization to another origin).
   * A connection that breaks mid-blob is resumed with a Range request from the byte reached
   * (or restarted and the known prefix skipped when the server ignores ranges), so the caller
   * sees one continuous, still unverified stream, which it verifies and consumes or destroys.
   * A JSON blob (an image config) must arrive whole within the document deadline.
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
    const document = isDocumentBlob(descriptor);
    const first = await this.openBlob(path, options, offset, document);
    const reopen = (from: number): Promise<ResumedBody> => this.openBlob(path, options, from, document);
    const context = { registry: this.registry, what, signal, retry: this.retryPolicy };
    return Readable.from(resumableBody(first, reopen, descriptor.size, offset, context), { objectMode: false, highWaterMark: 1 << 20 });
  }

  /** The blob's body from byte `offset` (with how many bytes of it to skip), its deadline handed over to it. */
  private openBlob(path: string, options: SendOptions, offset: number, document: boolean): Promise<ResumedBody> {
    // From byte `offset`: resuming an earlier partial download (kept in the cache) or a broken connection.
    const headers = offset > 0 ? { range: `bytes=${offset}-` } : undefined;
    return this.send(path, { ...options, headers }, (res, deadline) => {
      const resumed = offset > 0 ? checkRange(res, offset, options.what) : { body: res.body, skip: 0 };
      deadline.handOver(res.body, document);
      return Promise.resolve(resumed);
    });
  }

  /** undici and the dispatchers for this registry and the hosts it sends us to (transport.ts). */
  private http(): Promise<Http> {
    this.httpReady ??= loadHttp((url) => this.policy.isInsecure(url), this.transportOptions, this.givenDispatcher);
    return this.httpReady;
  }

  private newRetry(): Retry {
    return new Retry(this.retryPolicy);
  }

  private async probeOrigin(signal: AbortSignal | undefined): Promise<string> {
    if (!this.policy.registryMayUseHttp) return `https://${this.endpoint}`;
    return probeScheme(
      {
        http: await this.http(),
        registry: this.registry,
        endpoint: this.endpoint,
        insecure: this.policy.registryInsecure,
        documentTimeout: this.documentTimeout,
        onNotice: this.retryPolicy.onNotice,
        clientCertDir: this.clientCertDir,
        direct: this.givenDispatcher === undefined && !this.transportOptions?.proxy?.httpProxy && !this.transportOptions?.proxy?.httpsProxy,
      },
      signal,
    );
  }

  /**
   * A registry request with authentication, redirects, retries and error mapping; `read` reads
   * the 2xx response. Connection failures, retryable statuses and bodies that break off while
   * `read` runs share one budget of attempts.
   */
  private async send<T>(path: string, options: SendOptions, read: BodyReader<T>): Promise<T> {
    const retry = this.newRetry();
    const base = await this.baseUrlWithRetry(options.signal, retry);
    const scope = pullScope(options.repository);
    const auth: AuthState = { scope, authorization: this.authorizationFor(scope), answered: false };
    let url = new URL(path, base);
    let redirects = 0;
    const loop = { retry, documentTimeout: this.documentTimeout, signal: options.signal, host: () => url.host, what: options.what };
    return withRetries(loop, async (deadline): Promise<Step<T>> => {
      const sameOrigin = url.origin === base.origin;
      const headers: Record<string, string> = { ...options.headers };
      // Credentials go to the registry's own origin only: never to a blob CDN behind a redirect,
      // nor to the same host over another scheme or port (issue 11).
      if (auth.authorization && sameOrigin) headers['authorization'] = auth.authorization;
      const res = await exchange(await this.http(), url, { method: 'GET', headers }, deadline, options.signal, options.what);
      if (res.statusCode === 401 && sameOrigin && !auth.answered) {
        auth.answered = true;
        await res.body.dump();
        const challenge = headerValue(res.headers['www-authenticate']);
        return { again: true, before: () => this.answerChallenge(challenge, auth, base, options, retry) };
      }
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers['location']) {
        await res.body.dump();
        if (++redirects > MAX_REDIRECTS) {
          throw new RegistryError('REGISTRY_ERROR', `${options.what}: too many redirects`, { status: res.statusCode });
        }
        url = new URL(headerValue(res.headers['location']), url);
        return { again: true };
      }
      if (res.statusCode >= 200 && res.statusCode < 300) return { done: await read(res, deadline) };
      if ((res.statusCode === 401 || res.statusCode === 403) && sameOrigin) await this.checkRefusal(res, options.what);
      const wait = retryAfterMs(headerValue(res.headers['retry-after']));
      if (isRetryableStatus(res.statusCode) && retry.allows() && (wait === undefined || wait <= MAX_RETRY_AFTER_MS)) {
        await res.body.dump();
        return { retry: `${options.what}: HTTP ${res.statusCode}`, retryAfter: wait };
      }
      throw await errorFromResponse(res, options.what, this.registry);
    });
  }

  /**
   * A refusal after authenticating: the credentials were wrong, or (`insufficient_scope`) the
   * token we got does not grant the pull. Other 403s are reported from their body.
   */
  private async checkRefusal(res: Dispatcher.ResponseData, what: string): Promise<void> {
    const challenge = parseChallenges(headerValue(res.headers['www-authenticate'])).find((c) => c.scheme === 'bearer');
    const scopeError = challenge?.params['error'] === 'insufficient_scope';
    if (res.statusCode !== 401 && !scopeError) return;
    await res.body.dump();
    throw unauthorized(this.registry, what, (await this.getCredentials()) !== undefined, scopeError ? 'insufficient_scope' : undefined);
  }

  private authorizationFor(scope: string): string | undefined {
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
   * scope the challenge names (or the pull scope). Nothing goes to a registry origin that may
   * not receive secrets (a plain-HTTP mirror that is neither loopback nor listed as insecure).
   */
  private async answerChallenge(header: string, auth: AuthState, base: URL, options: SendOptions, retry: Retry): Promise<void> {
    if (!this.policy.maySendSecrets(base, base)) {
      throw new PullUnpackError(
        'UNAUTHORIZED',
        `${this.registry} asks for credentials over plain HTTP (${base.origin}): none are sent in clear text`,
        {
          hint: `use the registry over HTTPS; only for a test registry, name ${base.host} with --insecure-registry`,
        },
      );
    }
    if (auth.authorization) this.tokens.delete(auth.scope);
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const credentials = await this.getCredentials();
    if (bearer?.params['realm']) {
      const scope = bearer.params['scope'] || auth.scope;
      const context = {
        http: await this.http(),
        registry: this.registry,
        base,
        policy: this.policy,
        retry,
        documentTimeout: this.documentTimeout,
        signal: options.signal,
      };
      const { token, expiresIn, issuedAt } = await requestToken(context, bearer.params, scope, credentials);
      this.tokens.set(scope, token, expiresIn, issuedAt);
      auth.scope = scope;
      auth.authorization = `Bearer ${token}`;
      return;
    }
    const basicValue = challenges.some((c) => c.scheme === 'basic') && credentials ? basicAuthorization(credentials) : undefined;
    if (!basicValue) throw unauthorized(this.registry, options.what, credentials !== undefined);
    auth.authorization = basicValue;
  }
}
