/**
 * One base error with a stable `code`, an optional user-facing `hint` and the original `cause`.
 * The CLI prints `message` (and `hint`) on one line each; library callers switch on `code`.
 */

/** Stable machine-readable error codes. Never renamed once released. */
export type ErrorCode =
  | 'INVALID_REFERENCE'
  | 'INVALID_DIGEST'
  | 'UNSUPPORTED_DIGEST_ALGORITHM'
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'DIFFID_MISMATCH'
  | 'TOO_LARGE'
  | 'INVALID_MANIFEST'
  | 'INVALID_CONFIG'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'UNSUPPORTED_SCHEMA1'
  | 'INVALID_PLATFORM'
  | 'NO_MATCHING_PLATFORM'
  | 'REGISTRY_ERROR'
  | 'UNAUTHORIZED'
  | 'NOT_FOUND'
  | 'NETWORK'
  | 'COMPRESSION_MISMATCH'
  | 'CORRUPT_LAYER'
  | 'UNSAFE_PATH'
  | 'UNSUPPORTED_ENTRY'
  | 'DESTINATION_NOT_EMPTY'
  | 'DESTINATION_INVALID'
  | 'USER_NOT_FOUND'
  | 'GROUP_NOT_FOUND'
  | 'INVALID_CONFIG_OVERRIDE'
  | 'ABORTED'
  /** The cache or the destination cannot be written: full, over quota, read-only, permission denied. */
  | 'STORAGE_ERROR'
  | 'INVALID_POLICY'
  | 'SIGNATURE_REJECTED'
  | 'ID_NOT_MAPPED'
  | 'USAGE';

export interface PullUnpackErrorOptions {
  hint?: string | undefined;
  cause?: unknown;
}

/** Base class of every error the library throws on purpose. */
export class PullUnpackError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: PullUnpackErrorOptions = {}) {
    super(redactSecrets(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PullUnpackError';
    this.code = code;
    this.hint = options.hint === undefined ? undefined : redactSecrets(options.hint);
  }
}

/** The registry answered with an HTTP error; `registryCode` is the first code of its JSON error body. */
export class RegistryError extends PullUnpackError {
  readonly status: number;
  readonly registryCode: string | undefined;
  readonly detail: unknown;

  constructor(
    code: ErrorCode,
    message: string,
    info: { status: number; registryCode?: string | undefined; detail?: unknown },
    options: PullUnpackErrorOptions = {},
  ) {
    super(code, message, options);
    this.name = 'RegistryError';
    this.status = info.status;
    this.registryCode = info.registryCode;
    this.detail = info.detail;
  }
}

/** True when `err` is a PullUnpackError, optionally with the given code. */
export function isPullUnpackError(err: unknown, code?: ErrorCode): err is PullUnpackError {
  return err instanceof PullUnpackError && (code === undefined || err.code === code);
}

/** The error to throw when an AbortSignal fired; keeps the signal's reason as `cause`. */
export function abortError(signal: AbortSignal | undefined): PullUnpackError {
  return new PullUnpackError('ABORTED', 'the operation was aborted', { cause: signal?.reason });
}

const SECRET_PATTERNS: Array<[RegExp, string]> = [
  // Authorization header values and bearer tokens quoted in messages.
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g, '$1 [REDACTED]'],
  // user:password@ in URLs.
  [/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s:@]+:[^/\s@]+@/gi, '$1[REDACTED]@'],
  // token=..., access_token=..., password=..., refresh_token=... in query strings or forms.
  [/\b(access_token|refresh_token|token|password|identitytoken|secret)=([^&\s"']+)/gi, '$1=[REDACTED]'],
  // JSON fields holding secrets.
  [/"(access_token|refresh_token|token|password|identitytoken|auth|secret)"\s*:\s*"[^"]*"/gi, '"$1":"[REDACTED]"'],
];

/** Removes tokens, passwords and Authorization values from text meant for humans or logs. */
export function redactSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/** A copy of a JSON-able value (a registry's error `detail`) with secrets redacted. */
export function redactValue(value: unknown): unknown {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(redactSecrets(JSON.stringify(value))) as unknown;
  } catch {
    return '[unreadable detail]';
  }
}
