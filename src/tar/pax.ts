/**
 * PAX extended header records (POSIX.1-2001 pax, "LEN KEY=VALUE\n"): parsed as Go's archive/tar
 * parses them (reader.go parsePAX, strconv.go parsePAXRecord / parsePAXTime), which is how
 * containerd, docker and umoci read them, and encoded for `--output tar`. A record that Go
 * refuses, or that GNU tar would read differently, throws TarFormatError.
 */
import { TarFormatError } from './format-error.js';
import { bytesToName } from './names.js';

const XATTR_PREFIX = 'SCHILY.xattr.';
/** GNU sparse format 0.0 keeps its map as repeated offset / numbytes records (Go joins them). */
const SPARSE_OFFSET = 'GNU.sparse.offset';
const SPARSE_NUMBYTES = 'GNU.sparse.numbytes';
export const SPARSE_MAP = 'GNU.sparse.map';
const SPARSE_NAME = 'GNU.sparse.name';

/** The records of one extended header. */
export interface PaxRecords {
  /** Every record's value as UTF-8 text (the 0.0 sparse pairs joined into GNU.sparse.map). */
  text: Record<string, string>;
  /** path, linkpath and GNU.sparse.name as bytes (names need not be UTF-8). */
  path?: Buffer;
  linkpath?: Buffer;
  sparseName?: Buffer;
  /** `SCHILY.xattr.*` records: name -> raw value bytes; or null. */
  xattrs: Map<string, Buffer> | null;
}

/** Parses the data of a PAX 'x' or 'g' header. */
export function parsePax(data: Buffer): PaxRecords {
  const found: PaxRecords = { text: {}, xattrs: null };
  let sparsePairs: string[] | null = null;
  let off = 0;
  while (off < data.length) {
    const space = data.indexOf(0x20, off);
    const len = space < 0 ? Number.NaN : decimalAt(data, off, space);
    // At least "5 k=\n"... Go's minimum; the record must end inside the data with a newline.
    if (!(len >= 5) || off + len > data.length || data[off + len - 1] !== 0x0a) throw new TarFormatError('malformed PAX record');
    const eq = data.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= off + len - 1 || eq === space + 1) throw new TarFormatError('malformed PAX record');
    const keyBytes = data.subarray(space + 1, eq);
    const value = data.subarray(eq + 1, off + len - 1);
    off += len;
    const key = keyBytes.toString('utf8');
    const nulInKey = keyBytes.includes(0);
    const nulInValue = value.includes(0);
    // Go: a NUL in a path, linkpath, uname or gname value, or in any key, is an error.
    if (nulInKey || (nulInValue && (key === 'path' || key === 'linkpath' || key === 'uname' || key === 'gname'))) {
      throw new TarFormatError(`PAX record ${JSON.stringify(key)} holds a NUL byte`);
    }
    if (key === SPARSE_OFFSET || key === SPARSE_NUMBYTES) {
      sparsePairs ??= [];
      // Go: the pairs alternate, offset first, and hold no comma.
      const expected = sparsePairs.length % 2 === 0 ? SPARSE_OFFSET : SPARSE_NUMBYTES;
      if (key !== expected || value.includes(0x2c)) throw new TarFormatError('malformed GNU sparse 0.0 map');
      sparsePairs.push(value.toString('latin1'));
      continue;
    }
    found.text[key] = value.toString('utf8');
    if (key === 'path' || key === 'linkpath') found[key] = Buffer.from(value);
    else if (key === SPARSE_NAME) found.sparseName = Buffer.from(value);
    else if (key.startsWith(XATTR_PREFIX) && key.length > XATTR_PREFIX.length) {
      found.xattrs ??= new Map();
      // The xattr name is the key's bytes after the prefix (any bytes but '=' and NUL).
      found.xattrs.set(bytesToName(keyBytes.subarray(XATTR_PREFIX.length)), Buffer.from(value));
    }
  }
  if (sparsePairs !== null) {
    if (found.text[SPARSE_MAP] !== undefined) throw new TarFormatError('both GNU sparse 0.0 and 0.1 maps');
    found.text[SPARSE_MAP] = sparsePairs.join(',');
  }
  return found;
}

/** The `SCHILY.xattr.*` records of PAX data: name -> raw value bytes; null when there are none. */
export function parsePaxXattrs(data: Buffer): Map<string, Buffer> | null {
  return parsePax(data).xattrs;
}

/** A non-negative decimal number of digits only (no sign, no spaces), or NaN. */
function decimalAt(bytes: Buffer, start: number, end: number): number {
  if (end <= start || end - start > 15) return Number.NaN;
  let value = 0;
  for (let i = start; i < end; i++) {
    const c = bytes[i]!;
    if (c < 0x30 || c > 0x39) return Number.NaN;
    value = value * 10 + (c - 0x30);
  }
  return value;
}

/** A PAX decimal record value (size, uid, gid, sparse numbers): digits only, a safe integer. */
export function paxNumber(text: string, what: string): number {
  if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(Number(text))) throw new TarFormatError(`bad PAX ${what} ${JSON.stringify(text)}`);
  return Number(text);
}

/**
 * A PAX time ("SECONDS[.FRACTION]", SECONDS maybe negative) in seconds. As Go's parsePAXTime,
 * the fraction has the sign of the whole: "-1.5" is one and a half seconds before the epoch.
 */
export function paxTime(text: string, what: string): number {
  const match = /^(-?)(\d{1,15})(?:\.(\d+))?$/.exec(text);
  if (match === null) throw new TarFormatError(`bad PAX ${what} ${JSON.stringify(text)}`);
  const fraction = match[3] === undefined ? 0 : Number(`0.${match[3].slice(0, 9)}`);
  const seconds = Number(match[2]) + fraction;
  return match[1] === '-' ? -seconds : seconds;
}

/** A PAX record `LEN KEY=VALUE\n`, LEN counting the whole record including its own digits. */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([
    Buffer.from(` ${key}=`, 'utf8'),
    Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8'),
    Buffer.from('\n'),
  ]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), body]);
}

/** The PAX text of a time `seconds` (floored) + `nanos` (0 <= nanos < 1e9), as paxTime reads it. */
export function paxTimeText(seconds: bigint, nanos: bigint): string {
  if (nanos === 0n) return String(seconds);
  // A negative time is seconds + fraction with seconds floored: -1.5 s is "-1.5" (POSIX pax).
  const [whole, frac] = seconds < 0n ? [seconds + 1n, 1_000_000_000n - nanos] : [seconds, nanos];
  const sign = seconds < 0n && whole === 0n ? '-' : '';
  return `${sign}${whole}.${frac.toString().padStart(9, '0').replace(/0+$/, '')}`;
}
