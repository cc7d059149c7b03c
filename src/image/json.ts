/**
 * The one JSON parser for documents from outside (manifests, indexes, configs, layout and
 * archive files, token answers, credential and config files, the cache index): it bounds the
 * nesting depth before parsing, so no input can later overflow the stack of a recursive walk
 * (V8's JSON.parse copes with any depth, but JSON.stringify throws RangeError at a few thousand
 * levels, and so would any recursive code reading the value).
 */
import { PullUnpackError, type ErrorCode } from '../errors.js';

/**
 * Deepest nesting of arrays and objects accepted. Real manifests, configs and credential files
 * nest under 10 levels; Go's encoding/json (the registry's parser) stops at 10,000, and
 * V8's JSON.stringify overflows at about 4,000.
 */
export const MAX_JSON_DEPTH = 100;

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * How deep `text` nests arrays and objects, counting brackets outside strings, in one pass
 * without recursion (string bodies are skipped with indexOf). Stops counting once `limit` is
 * passed (the result is then limit + 1). On malformed JSON the count is only an estimate;
 * JSON.parse reports the syntax error.
 */
export function jsonDepth(text: string, limit = Infinity): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i = closingQuote(text, i + 1);
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    }
  }
  return deepest;
}

/** The index of the quote that ends the string whose body starts at `from` (text.length if none). */
function closingQuote(text: string, from: number): number {
  for (let at = from; ;) {
    const quote = text.indexOf('"', at);
    if (quote === -1) return text.length;
    let backslashes = 0;
    while (quote - backslashes - 1 >= from && text.charCodeAt(quote - backslashes - 1) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote;
    at = quote + 1;
  }
}

export interface ParseJsonOptions {
  /** The error code for text that is not JSON or nests too deep (default INVALID_MANIFEST). */
  code?: ErrorCode | undefined;
  /** Added to the error, e.g. how to repair a damaged file. */
  hint?: string | undefined;
}

/**
 * Parses `text` (a string, or UTF-8 bytes) after checking its depth against MAX_JSON_DEPTH.
 * `what` names the document in the error ("the manifest of X is not JSON"). The parser's own
 * message is kept only as the `cause`: it may quote the text, which can hold secrets.
 */
export function parseJson(text: string | Uint8Array, what: string, options: ParseJsonOptions = {}): unknown {
  const code = options.code ?? 'INVALID_MANIFEST';
  const source = typeof text === 'string' ? text : Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString('utf8');
  if (jsonDepth(source, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) {
    throw new PullUnpackError(code, `${what} nests arrays or objects more than ${MAX_JSON_DEPTH} levels deep`, { hint: options.hint });
  }
  try {
    return JSON.parse(source) as unknown;
  } catch (cause) {
    throw new PullUnpackError(code, `${what} is not JSON`, { cause, hint: options.hint });
  }
}
