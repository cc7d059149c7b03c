/**
 * JSON for security configuration, read the way containers/image reads policy.json and
 * simple-signing payloads (signature/internal/json.go, ParanoidUnmarshalJSONObject): a key that
 * appears twice in one object is an error, where JSON.parse would silently keep the last one.
 * Also a small reader for objects whose keys are checked one by one (unknown key = error).
 */

/** Parses `text` as JSON; throws an Error naming the first duplicated key (or the syntax error). */
export function parseStrictJson(text: string): unknown {
  // JSON.parse finds syntax errors with good messages; the walk below only looks for duplicates.
  const value: unknown = JSON.parse(text);
  const scanner = new DuplicateScanner(text);
  scanner.value();
  return value;
}

/**
 * The members of a JSON object, each key checked against `known` (c/image: "Unknown key").
 * `required` keys must all be present (ParanoidUnmarshalJSONObjectExactFields).
 */
export function objectFields(
  value: unknown,
  what: string,
  known: readonly string[],
  required: readonly string[] = [],
): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${what} must be a JSON object`);
  const fields = value as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!known.includes(key)) throw new Error(`${what}: unknown key "${key}"`);
  }
  for (const key of required) {
    if (!(key in fields)) throw new Error(`${what}: key "${key}" is missing`);
  }
  return fields;
}

/** A string member, or undefined when absent; any other JSON type is an error. */
export function optionalString(fields: Record<string, unknown>, key: string, what: string): string | undefined {
  const value = fields[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new Error(`${what}: "${key}" must be a string`);
  return value;
}

/** Walks JSON text (already known to be valid) and throws on the first duplicated object key. */
class DuplicateScanner {
  private at = 0;

  constructor(private readonly text: string) {}

  value(): void {
    this.space();
    const c = this.text[this.at];
    if (c === '{') this.object();
    else if (c === '[') this.array();
    else if (c === '"') this.string();
    else this.scalar();
  }

  private object(): void {
    this.at++;
    const seen = new Set<string>();
    this.space();
    if (this.text[this.at] === '}') {
      this.at++;
      return;
    }
    for (;;) {
      this.space();
      const key = this.string();
      if (seen.has(key)) throw new Error(`duplicate key "${key}"`);
      seen.add(key);
      this.space();
      this.at++; // ':'
      this.value();
      this.space();
      if (this.text[this.at++] === '}') return;
    }
  }

  private array(): void {
    this.at++;
    this.space();
    if (this.text[this.at] === ']') {
      this.at++;
      return;
    }
    for (;;) {
      this.value();
      this.space();
      if (this.text[this.at++] === ']') return;
    }
  }

  private string(): string {
    const start = this.at;
    this.at++;
    while (this.text[this.at] !== '"') this.at += this.text[this.at] === '\\' ? 2 : 1;
    this.at++;
    return JSON.parse(this.text.slice(start, this.at)) as string;
  }

  private scalar(): void {
    while (this.at < this.text.length && !/[\s,\]}]/.test(this.text[this.at]!)) this.at++;
  }

  private space(): void {
    while (this.at < this.text.length && /\s/.test(this.text[this.at]!)) this.at++;
  }
}
