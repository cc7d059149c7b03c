/**
 * What went wrong on the wire, and what deserves another attempt: connection failures (a
 * certificate, a name that does not resolve, a refusal, plain HTTP where TLS was tried) and
 * bodies that broke off, as typed NETWORK errors naming the host.
 */
import { abortError, isPullUnpackError, PullUnpackError, redactSecrets } from '../errors.js';
import { DeadlineExpired, tooSlowError, type Deadline } from './deadline.js';

/** A TLS failure because the server certificate did not verify (untrusted CA, wrong name, expired). */
function isCertificateError(err: unknown): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test((err as { code?: string }).code ?? '');
}

/** A connection failure as a NETWORK error naming the host and what was being fetched; `hint` replaces the generic one. */
export function networkError(err: unknown, host: string, what: string, hint?: string): PullUnpackError {
  const e = err as { code?: string; message?: string };
  const code = e.code ? ` (${e.code})` : '';
  const resolve = RESOLVE_ERRORS.has(codeOf(err) ?? '');
  return new PullUnpackError('NETWORK', `cannot reach ${host} for ${what}: ${redactSecrets(e.message ?? String(err))}${code}`, {
    cause: err,
    hint: isCertificateError(err)
      ? 'the server certificate is not trusted: add its CA with --cacert, or use --insecure-registry for a test registry'
      : resolve
        ? `the name ${host.replace(/:\d+$/, '')} does not resolve: check it for a typo, and your DNS settings`
        : (hint ?? 'check the registry address and your network or proxy settings'),
  });
}

/** A body that broke off (isBrokenBody) as a NETWORK error naming the host and what was being read. */
export function brokenBodyError(err: unknown, host: string, what: string): PullUnpackError {
  const e = err as { code?: string; message?: string };
  return new PullUnpackError(
    'NETWORK',
    `${host} broke off ${what}: ${redactSecrets(e.message ?? String(err))} (${codeOf(err) ?? 'closed'})`,
    {
      cause: err,
      hint: 'the server or the network dropped the connection; try again later',
    },
  );
}

/**
 * The typed error for a failed exchange (a request and the reading of its response): ABORTED
 * when the caller's signal fired, too slow when the deadline passed, a broken body as NETWORK;
 * anything else unchanged.
 */
export function exchangeFailure(err: unknown, deadline: Deadline, signal: AbortSignal | undefined, host: string, what: string): unknown {
  if (signal?.aborted) return abortError(signal);
  const reason: unknown = deadline.signal.reason;
  if (reason instanceof DeadlineExpired) return tooSlowError(host, what, reason);
  if (isPullUnpackError(err) || !isBrokenBody(err)) return err;
  return brokenBodyError(err, host, what);
}

/** Attempts in all that a failure deserves: networkAttempts for NETWORK errors, none for anything else. */
export function attemptsFor(err: unknown): number {
  return isPullUnpackError(err, 'NETWORK') ? networkAttempts(err) : 0;
}

/** The code of a connection failure, also when it comes wrapped (happy eyeballs' AggregateError). */
function codeOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; errors?: unknown[] } | undefined;
  if (typeof e?.code === 'string') return e.code;
  return Array.isArray(e?.errors) ? codeOf(e.errors[0]) : undefined;
}

/** Name resolution failures: the host does not exist (or DNS is down); trying again will not help soon. */
const RESOLVE_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA']);

/**
 * How many attempts in all a NETWORK error deserves: one for a certificate that did not verify,
 * a host that does not resolve or a response too slow for its deadline; two for a refused
 * connection (a registry that is restarting); otherwise as many as the policy allows. Fail
 * fast when nothing is there (issue 11).
 */
function networkAttempts(err: PullUnpackError): number {
  const cause = err.cause;
  if (isCertificateError(cause) || cause instanceof DeadlineExpired) return 1;
  const code = codeOf(cause);
  if (code !== undefined && RESOLVE_ERRORS.has(code)) return 1;
  return code === 'ECONNREFUSED' ? 2 : Infinity;
}

/**
 * A body that broke off: the connection closed or reset, the idle timeout passed, or fewer
 * bytes than announced. Worth reading again from a new request.
 */
export function isBrokenBody(err: unknown): boolean {
  const code = codeOf(err);
  return (
    code === 'UND_ERR_SOCKET' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' ||
    code === 'UND_ERR_CLOSED' ||
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE'
  );
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
