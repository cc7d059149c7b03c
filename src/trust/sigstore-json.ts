/**
 * Strict JSON for signed and signature-carrying documents. JSON.parse keeps the last of two
 * equal keys where Go's decoder (cosign, containers/image) may see another value, so two
 * verifiers could read different claims from the same bytes: a document that repeats a key,
 * or that is not valid UTF-8, is refused (c/image's "paranoid" unmarshalling does the same).
 */

/** The parsed document; throws an Error naming `what` when it is not strict JSON. */
export function parseStrictJson(bytes: Uint8Array | string, what: string): unknown {
  let text: string;
  try {
    text = typeof bytes === 'string' ? bytes : new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${what} is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error(`${what} is not valid JSON`);
  }
  const repeated = repeatedKey(text);
  if (repeated !== undefined) throw new Error(`${what} repeats the key ${JSON.stringify(repeated)}`);
  return value;
}

/** The first key that an object in `text` (already known to be valid JSON) repeats. */
function repeatedKey(text: string): string | undefined {
  const objects: Array<Set<string> | undefined> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const end = stringEnd(text, i);
      if (expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        const keys = objects[objects.length - 1]!;
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === '{') {
      objects.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      objects.push(undefined);
    } else if (c === '}' || c === ']') {
      objects.pop();
    } else if (c === ',') {
      expectKey = objects[objects.length - 1] !== undefined;
    }
  }
  return undefined;
}

function stringEnd(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return text.length;
}

/** `value` as a plain object, or an Error naming `what`. */
export function objectOf(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}

/** `value` as an object with exactly the keys `keys` (c/image's ParanoidUnmarshalJSONObjectExactFields). */
export function exactObject(value: unknown, keys: readonly string[], what: string): Record<string, unknown> {
  const object = objectOf(value, what);
  const extra = Object.keys(object).find((k) => !keys.includes(k));
  if (extra !== undefined) throw new Error(`${what} has an unexpected field ${JSON.stringify(extra)}`);
  const missing = keys.find((k) => !(k in object));
  if (missing !== undefined) throw new Error(`${what} lacks the field ${JSON.stringify(missing)}`);
  return object;
}

/** `value` as a string, or an Error naming `what`. */
export function stringOf(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new Error(`${what} is not a string`);
  return value;
}
