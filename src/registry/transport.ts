/**
 * HTTP transport settings for one registry: trusted CAs, client certificates (docker's
 * /etc/docker/certs.d layout), unverified TLS for --insecure-registry, proxies and timeouts.
 * Builds the undici dispatcher the registry client uses; reads only the files it is told of.
 * Also classifies connection failures: certificate, plain HTTP where TLS was tried, other.
 */
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import type { Dispatcher } from 'undici';
import { PullUnpackError, isPullUnpackError, redactSecrets } from '../errors.js';

export interface ProxySettings {
  httpProxy?: string | undefined;
  httpsProxy?: string | undefined;
  noProxy?: string | undefined;
}

export interface TransportOptions {
  /** Extra CA bundles (PEM files): --cacert, SSL_CERT_FILE, NODE_EXTRA_CA_CERTS. */
  caFiles?: readonly string[] | undefined;
  /** docker's per-registry certificate directory root; default /etc/docker/certs.d. */
  certsDir?: string | undefined;
  /** Proxy URLs, as the CLI read them from HTTPS_PROXY, HTTP_PROXY and NO_PROXY. */
  proxy?: ProxySettings | undefined;
  /** Milliseconds to wait for a TCP+TLS connection (default 30 s). */
  connectTimeout?: number | undefined;
  /** Milliseconds without a byte before a response is abandoned (default 60 s). */
  idleTimeout?: number | undefined;
}

export const DEFAULT_CERTS_DIR = '/etc/docker/certs.d';

/** TLS material for one registry host. */
interface TlsMaterial {
  ca: string[];
  cert?: string;
  key?: string;
}

/** undici's request function and a dispatcher to pass it. */
export interface Http {
  request: typeof import('undici').request;
  dispatcher: Dispatcher;
}

/**
 * undici and the dispatcher for `endpoint` (host[:port]), loaded on first use: undici takes
 * ~0.15 s to load, which a pull from the cache or a local layout never needs. `dispatcher`
 * (from a caller) replaces the one built from `options`.
 */
export async function loadHttp(
  endpoint: string,
  insecure: boolean,
  options: TransportOptions = {},
  dispatcher?: Dispatcher,
): Promise<Http> {
  const undici = await import('undici');
  return { request: undici.request, dispatcher: dispatcher ?? createDispatcher(undici, endpoint, insecure, options) };
}

/**
 * The dispatcher for `endpoint` (host[:port]). `insecure` accepts any certificate for this
 * host only. A missing or unreadable file named by the user is an error here; the certificates
 * themselves are read on the first TLS connection (a plain-HTTP registry never needs the ~0.1 s
 * that the system CAs and a CA bundle take to load).
 */
function createDispatcher(undici: typeof import('undici'), endpoint: string, insecure: boolean, options: TransportOptions): Dispatcher {
  const { Agent, EnvHttpProxyAgent, buildConnector } = undici;
  const timeout = options.connectTimeout ?? 30_000;
  const tlsOptions = (): buildConnectorOptions => {
    const tls = tlsMaterial(endpoint, options);
    return { timeout, ca: tls.ca, ...(tls.cert && tls.key && { cert: tls.cert, key: tls.key }), rejectUnauthorized: !insecure };
  };
  const idle = options.idleTimeout ?? 60_000;
  const common = { connections: 16, headersTimeout: idle, bodyTimeout: idle, keepAliveTimeout: 4_000 };
  const proxy = options.proxy;
  if (proxy && (proxy.httpProxy || proxy.httpsProxy)) {
    const connect = tlsOptions();
    // Every field is passed explicitly so undici does not read process.env itself.
    return new EnvHttpProxyAgent({
      ...common,
      connect,
      requestTls: connect,
      httpProxy: proxy.httpProxy ?? '',
      // As curl and Go: HTTP_PROXY is for plain-HTTP requests only, HTTPS_PROXY for TLS ones.
      httpsProxy: proxy.httpsProxy ?? '',
      noProxy: proxy.noProxy ?? '',
    });
  }
  checkTlsFiles(endpoint, options);
  let plain: ReturnType<typeof buildConnector> | undefined;
  let secure: ReturnType<typeof buildConnector> | undefined;
  const connect: ReturnType<typeof buildConnector> = (opts, callback) => {
    if (opts.protocol === 'https:') {
      try {
        secure ??= buildConnector(tlsOptions());
      } catch (err) {
        callback(err as Error, null);
        return;
      }
      secure(opts, callback);
      return;
    }
    plain ??= buildConnector({ timeout });
    plain(opts, callback);
  };
  return new Agent({ ...common, connect });
}

type buildConnectorOptions = Parameters<typeof import('undici').buildConnector>[0];

/** Fails now (USAGE) when a certificate file tlsMaterial will read is missing or unreadable. */
function checkTlsFiles(endpoint: string, options: TransportOptions): void {
  const { ca, cert, key } = tlsFiles(endpoint, options);
  for (const file of [...ca, ...(cert && key ? [cert, key] : [])]) checkReadable(file);
}

/** docker's certificate directory for `endpoint`: CERTS_DIR/HOST[:PORT], without a :443 port. */
export function certsDirFor(endpoint: string, options: TransportOptions = {}): string {
  return join(options.certsDir ?? DEFAULT_CERTS_DIR, endpoint.replace(/:443$/, ''));
}

/** A certificate file and what it is, for messages. */
interface TlsFile {
  path: string;
  what: string;
}

/**
 * The files tlsMaterial reads for `endpoint`: the --cacert bundles, then docker's
 * CERTS_DIR/HOST[:PORT]/*.crt (CAs) and *.cert with the *.key beside it (a client pair).
 */
function tlsFiles(endpoint: string, options: TransportOptions): { ca: TlsFile[]; cert?: TlsFile; key?: TlsFile } {
  const ca = (options.caFiles ?? []).map((path) => ({ path, what: 'CA bundle' }));
  const dir = certsDirFor(endpoint, options);
  let names: string[];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return { ca };
  }
  const files: { ca: TlsFile[]; cert?: TlsFile; key?: TlsFile } = { ca };
  for (const name of names) {
    if (name.endsWith('.crt')) ca.push({ path: join(dir, name), what: 'CA certificate' });
    else if (name.endsWith('.cert')) {
      files.cert = { path: join(dir, name), what: 'client certificate' };
      files.key = {
        path: join(dir, `${name.slice(0, -'.cert'.length)}.key`),
        what: 'client key (it must sit beside the .cert with the same name)',
      };
    }
  }
  return files;
}

function tlsMaterial(endpoint: string, options: TransportOptions): TlsMaterial {
  const { ca, cert, key } = tlsFiles(endpoint, options);
  const material: TlsMaterial = { ca: [...rootCertificates, ...ca.map(readPem)] };
  if (cert && key) {
    material.cert = readPem(cert);
    material.key = readPem(key);
  }
  return material;
}

function checkReadable(file: TlsFile): void {
  try {
    accessSync(file.path, constants.R_OK);
  } catch (cause) {
    throw unreadable(file, cause);
  }
}

function readPem(file: TlsFile): string {
  try {
    return readFileSync(file.path, 'utf8');
  } catch (cause) {
    throw unreadable(file, cause);
  }
}

function unreadable(file: TlsFile, cause: unknown): PullUnpackError {
  return new PullUnpackError('USAGE', `cannot read the ${file.what} ${file.path}: ${(cause as Error).message}`, { cause });
}

/** A TLS failure because the server certificate did not verify (untrusted CA, wrong name, expired). */
export function isCertificateError(err: unknown): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test((err as { code?: string }).code ?? '');
}

/** A connection failure as a NETWORK error naming the host and what was being fetched; `hint` replaces the generic one. */
export function networkError(err: unknown, host: string, what: string, hint?: string): PullUnpackError {
  const e = err as { code?: string; message?: string };
  const code = e.code ? ` (${e.code})` : '';
  return new PullUnpackError('NETWORK', `cannot reach ${host} for ${what}: ${redactSecrets(e.message ?? String(err))}${code}`, {
    cause: err,
    hint: isCertificateError(err)
      ? 'the server certificate is not trusted: add its CA with --cacert, or use --insecure-registry for a test registry'
      : (hint ?? 'check the registry address and your network or proxy settings'),
  });
}

/** A NETWORK error worth another attempt: anything but a certificate that failed verification. */
export function isRetryableNetworkError(err: unknown): boolean {
  return isPullUnpackError(err, 'NETWORK') && !isCertificateError(err.cause);
}

/** True when a TLS handshake failed because the server speaks plain HTTP. */
export function isNotTls(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return (
    e.code === 'ERR_SSL_WRONG_VERSION_NUMBER' ||
    e.code === 'EPROTO' ||
    /wrong version number|packet length too long|unknown protocol/i.test(e.message ?? '')
  );
}
