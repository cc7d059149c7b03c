/**
 * Names are bytes, on Linux and in tar, and need not be UTF-8 (Latin-1 names exist in real
 * images; umoci keeps their bytes). In pull-unpack a name is a JS string: valid UTF-8 decodes as
 * usual, and each byte that is not part of valid UTF-8 becomes the lone surrogate U+DC00+byte
 * (Python's "surrogateescape", PEP 383). That mapping is one-to-one, keeps every ASCII byte (so
 * `/`, `.` and NUL mean what they mean to the kernel), and lets valid names pass through
 * unchanged; nameToBytes turns an escaped string back into its bytes at each filesystem call.
 *
 * The tar codec (header.ts) decodes every name and link target with bytesToName; the applier
 * (apply/safe-path.ts) turns them back into bytes.
 */
import { isUtf8 } from 'node:buffer';

/** Byte b (0x80-0xff) that is not part of valid UTF-8 is the char ESCAPE_BASE + b in a name. */
const ESCAPE_BASE = 0xdc00;
/** An escaped byte: a low surrogate U+DC80-U+DCFF that is not the second half of a pair. */
const ESCAPED_BYTE = /(?<![\ud800-\udbff])[\udc80-\udcff]/;

/** The name string for the bytes of a name: their UTF-8 text when valid. */
export function bytesToName(bytes: Buffer): string {
  if (isUtf8(bytes)) return bytes.toString('utf8');
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i] as number;
    const n = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
    // isUtf8 on the one sequence rejects overlongs, surrogates and truncation (RFC 3629).
    if (n > 0 && i + n <= bytes.length && isUtf8(bytes.subarray(i, i + n))) {
      out += bytes.toString('utf8', i, i + n);
      i += n;
    } else {
      out += String.fromCharCode(ESCAPE_BASE + lead);
      i++;
    }
  }
  return out;
}

/** Whether a name string holds escaped bytes (so it is not valid UTF-8 as bytes). */
export function hasEscapedBytes(name: string): boolean {
  return ESCAPED_BYTE.test(name);
}

/** The bytes of a name string: the inverse of bytesToName. */
export function nameToBytes(name: string): Buffer {
  if (!ESCAPED_BYTE.test(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < ESCAPE_BASE + 0x80 || c > ESCAPE_BASE + 0xff || isHighSurrogate(name.charCodeAt(i - 1))) continue;
    parts.push(Buffer.from(name.slice(start, i), 'utf8'), Buffer.of(c - ESCAPE_BASE));
    start = i + 1;
  }
  parts.push(Buffer.from(name.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}
