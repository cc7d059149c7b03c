/**
 * The scheme probe for registries that may be reached over plain HTTP (loopback and
 * --insecure-registry ones), as docker does: TLS first, plain HTTP only when the server does
 * not speak TLS. A certificate that fails verification is an error unless the registry is
 * listed as insecure.
 */
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
}

/** 'https://HOST[:PORT]' when the registry speaks TLS on its port, else 'http://HOST[:PORT]'. */
export async function probeScheme(ctx: ProbeContext, signal: AbortSignal | undefined): Promise<string> {
  const https = new URL(`https://${ctx.endpoint}`);
  const dispatcher = ctx.http.dispatcherFor(https);
  const deadline = new Deadline(ctx.documentTimeout, signal);
  try {
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
