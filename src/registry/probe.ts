/**
 * The scheme probe for registries that may be reached over plain HTTP (loopback and
 * --insecure-registry ones), as docker does: TLS first, plain HTTP only when the server does
 * not speak TLS. A certificate that fails verification is an error unless the registry is
 * listed as insecure.
 *
 * A bare TLS handshake comes first: a plain-HTTP server answers its ClientHello with an HTTP
 * error, which is all the probe needs to know, and that handshake needs no CA store (the
 * HTTPS request below loads the system CAs and any CA bundle, ~0.1-0.2 s of CPU, issue 15).
 * Any other outcome runs the HTTPS request as before.
 */
import { connect } from 'node:tls';
import { isIP } from 'node:net';
import { Deadline } from './deadline.js';
import { USER_AGENT } from './exchange.js';
import { exchangeFailure, isNotTls, networkError } from './failures.js';
import type { Http } from './transport.js';

export interface ProbeContext {
  http: Http;
  /** The registry as named, for messages. */
  registry: string;
  /** Its host[:port]. */
  endpoint: string;
  /** --insecure-registry names it: say that its certificate is not verified. */
  insecure: boolean;
  documentTimeout: number;
  onNotice: (message: string) => void;
  /** docker's certs.d directory for the registry, for the client-certificate hint. */
  clientCertDir: string;
  /** Connections go straight to the registry (no proxy, no caller's dispatcher): the bare handshake may run. */
  direct: boolean;
}

/** 'https://HOST[:PORT]' when the registry speaks TLS on its port, else 'http://HOST[:PORT]'. */
export async function probeScheme(ctx: ProbeContext, signal: AbortSignal | undefined): Promise<string> {
  const https = new URL(`https://${ctx.endpoint}`);
  const dispatcher = ctx.http.dispatcherFor(https);
  const deadline = new Deadline(ctx.documentTimeout, signal);
  try {
    if (ctx.direct && (await answersTlsWithHttp(https, deadline.signal))) return `http://${ctx.endpoint}`;
    const res = await ctx.http.request(new URL('/v2/', https), {
      method: 'GET',
      dispatcher,
      signal: deadline.signal,
      headers: { 'user-agent': USER_AGENT },
    });
    await res.body.dump();
    if (ctx.insecure) ctx.onNotice(`${ctx.registry} is an insecure registry: its TLS certificate is not verified`);
    return https.origin;
  } catch (err) {
    if (deadline.signal.aborted) throw exchangeFailure(err, deadline, signal, ctx.endpoint, 'the registry API');
    if (!isNotTls(err)) throw networkError(err, ctx.registry, 'the registry API', tlsHint(err, ctx.clientCertDir));
    return `http://${ctx.endpoint}`;
  } finally {
    deadline.settle();
  }
}

/**
 * True when the server at `url` answers a TLS ClientHello the way a plain-HTTP server does.
 * Nothing is sent over a connection that does complete a handshake (it is closed at once), so
 * no certificate needs checking here; false for every outcome but that answer.
 */
function answersTlsWithHttp(url: URL, signal: AbortSignal): Promise<boolean> {
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(false);
      return;
    }
    // An empty CA list keeps Node from loading its root certificates for this connection.
    const socket = connect({
      host,
      port: Number(url.port || 443),
      servername: isIP(host) ? undefined : host,
      ca: [],
      rejectUnauthorized: false,
    });
    const settle = (plain: boolean): void => {
      signal.removeEventListener('abort', stop);
      socket.destroy();
      resolve(plain);
    };
    const stop = (): void => settle(false);
    signal.addEventListener('abort', stop, { once: true });
    socket.once('secureConnect', () => settle(false));
    socket.on('error', (err) => settle(isNotTls(err)));
    socket.once('close', () => settle(false));
  });
}

/**
 * A TLS server that closes the connection during or right after the handshake most often
 * wants a client certificate (TLS 1.3 clients only learn of the refusal on the first read).
 */
function tlsHint(err: unknown, clientCertDir: string): string | undefined {
  const e = err as { code?: string; message?: string };
  const closed =
    e.code === 'UND_ERR_SOCKET' ||
    e.code === 'ECONNRESET' ||
    /certificate required|handshake failure|bad certificate/i.test(e.message ?? '');
  if (!closed) return undefined;
  return `the registry closed the TLS connection: if it requires a client certificate, put it in ${clientCertDir}/ as NAME.cert with its key as NAME.key (docker's layout)`;
}
