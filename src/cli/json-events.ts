/**
 * `--json` output: one JSON event per line on stdout, each with its `type` and the `time` it
 * was written (RFC 3339, milliseconds, UTC), and an `error` event before a failing exit.
 * docs/events.schema.json documents every event and field.
 */
import { isPullUnpackError, redactSecrets } from '../errors.js';
import { toJson } from './escape.js';

/** The line `--json` writes for `event`: its type, the time, then its own fields. */
export function jsonEventLine(event: { type: string }, now: Date = new Date()): string {
  const { type, ...fields } = event;
  return `${toJson({ type, time: now.toISOString(), ...fields })}\n`;
}

/** The `error` event for a failure: its stable code, one-line message and hint, as stderr says them. */
export function errorEvent(err: unknown): { type: 'error'; code: string; message: string; hint?: string } {
  if (isPullUnpackError(err)) return { type: 'error', code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) };
  const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return { type: 'error', code: 'UNEXPECTED', message: redactSecrets(message) };
}

/**
 * Whether `argv` asks for --json output: the flag among the options, not in the bundle's
 * command after `--`. Read before parsing, so that a usage error is reported as an event too.
 */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}
