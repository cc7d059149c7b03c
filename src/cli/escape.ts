/**
 * Text that reaches the terminal. Messages, hints and inspect fields carry strings a registry
 * controls (error messages, platform fields, realms); printed raw, ESC, BEL and CR sequences
 * move the cursor, retitle the window or forge a `hint:` line (issue 11). Every human line and
 * every JSON document the CLI prints goes through one of these two functions.
 */

/**
 * C0 controls (newline included), DEL, C1 controls, the Unicode line and paragraph separators,
 * and the bidirectional overrides and isolates that reorder what a line appears to say.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
/** The same without C0: JSON.stringify escapes those in strings, and the only raw ones left are its own indentation. */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

/** `text` with every control character written as an escape (`\x1b`, `\n`, `\u202e`): one line, inert. */
export function escapeControl(text: string): string {
  return text.replace(UNSAFE, escapeChar);
}

/**
 * JSON.stringify, with the characters it leaves raw (DEL, C1 controls, separators, bidi
 * controls; it escapes only U+0000 to U+001F) written as \u escapes: the same JSON value.
 */
export function toJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(UNSAFE_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** An unexpected error for the terminal: `Name: message` escaped as one line, then the stack's `at` frames, each on its own. */
export function escapeStack(err: unknown): string {
  const e = err as Partial<Error> | undefined;
  const head = e instanceof Error ? `${e.name}: ${e.message}` : String(err);
  const stack = typeof e?.stack === 'string' ? e.stack : head;
  const rest = stack.startsWith(head) ? stack.slice(head.length) : stack;
  const frames = rest.split('\n').filter((line) => /^\s+at /.test(line));
  return [head, ...frames].map(escapeControl).join('\n');
}
