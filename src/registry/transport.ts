/**
 * HTTP transport settings for one registry: trusted CAs, client certificates (docker's
 * /etc/docker/certs.d layout), unverified TLS for --insecure-registry, proxies and timeouts.
 * Builds the undici dispatchers the registry client uses, one per host; reads only the files it
 * is told of.
 */
import { accessSync, constants, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import type { Dispatcher } from 'undici';
import { loadUndici, type UndiciParts } from './undici.js';
import { PullUnpackError } from '../errors.js';

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
  /**
   * Milliseconds from a request to its response headers, and to the last byte of a document
   * (manifest, index, token answer, image config), however steadily bytes trickle in (default
   * 60 s). Layers have only the idle timeout.
   */
  documentTimeout?: number | undefined;
}

const DEFAULT_CERTS_DIR = '/etc/docker/certs.d';

/** TLS material for one registry host. */
interface TlsMaterial {
  ca: string[];
  cert?: string;
  key?: string;
}

/** undici's request function and the dispatcher for each origin. */
export interface Http {
  request: typeof import('undici').request;
  /** The dispatcher for requests to `url`'s host: its own TLS settings, made on first use. */
  dispatcherFor(url: URL): Dispatcher;
}

/**
 * undici and per-host dispatchers, loaded on first use: undici takes ~0.15 s to load, which a
 * pull from the cache or a local layout never needs. `insecure(url)` says which hosts accept any
 * certificate: one dispatcher for all URLs would extend --insecure-registry to a token realm or
 * a blob redirect on another host (issue 11). `dispatcher` (from a caller) replaces them all.
 */
export async function loadHttp(insecure: (url: URL) => boolean, options: TransportOptions = {}, dispatcher?: Dispatcher): Promise<Http> {
  const undici = loadUndici();
  const byHost = new Map<string, Dispatcher>();
  return {
    request: undici.request,
    dispatcherFor(url) {
      if (dispatcher) return dispatcher;
      let made = byHost.get(url.host);
      if (!made) {
        made = createDispatcher(undici, url.host, insecure(url), options);
        byHost.set(url.host, made);
      }
      return made;
    },
  };
}

/**
 * The dispatcher for `endpoint` (host[:port]). `insecure` accepts any certificate for this
 * host only. A missing or unreadable file named by the user is an error here; the certificates
 * themselves are read on the first TLS connection (a plain-HTTP registry never needs the ~0.1 s
 * that the system CAs and a CA bundle take to load).
 */
function createDispatcher(undici: UndiciParts, endpoint: string, insecure: boolean, options: TransportOptions): Dispatcher {
  const { Agent, EnvHttpProxyAgent, buildConnector } = undici;
  const timeout = options.connectTimeout ?? 30_000;
  const tlsOptions = (tls = tlsMaterial(endpoint, options)): buildConnectorOptions => {
    return { timeout, ca: tls.ca, ...(tls.cert && tls.key && { cert: tls.cert, key: tls.key }), rejectUnauthorized: !insecure };
  };
  const idle = options.idleTimeout ?? 60_000;
  const common = { connections: 16, headersTimeout: idle, bodyTimeout: idle, keepAliveTimeout: 4_000 };
  const proxy = options.proxy;
  if (proxy && (proxy.httpProxy || proxy.httpsProxy)) {
    const tls = tlsMaterial(endpoint, options);
    // Every field is passed explicitly so undici does not read process.env itself. The proxy's
    // own certificate is always verified; `insecure` is about this host only.
    return new EnvHttpProxyAgent({
      ...common,
      connect: { timeout, ca: tls.ca },
      requestTls: tlsOptions(tls),
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
