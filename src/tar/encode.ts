/**
 * The encoding half of the tar header codec (header.ts decodes): POSIX pax, a ustar header
 * preceded by an extended header only for what ustar cannot hold, which GNU tar, Go and
 * tar-stream read back the same way. Used by `--output tar` (outputs/tar.ts).
 */
import { BLOCK, TYPEFLAG, type TarEntryType } from './header.js';
import { paxRecord, paxTimeText } from './pax.js';

/** Largest values of the ustar octal fields: 7 digits (mode, ids, devices) and 11 (size, mtime). */
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

/** One member's metadata for encodeHeader. Names are bytes, so non-UTF-8 names survive. */
export interface HeaderFields {
  /** Relative path without a leading './'; a directory's ends with '/'. */
  name: Buffer;
  type: Exclude<TarEntryType, 'contiguous-file'>;
  /** Permission bits incl. setuid, setgid and sticky (the file type bits are ignored). */
  mode: number;
  uid: number;
  gid: number;
  /** Body length; 0 for everything but 'file'. */
  size: number;
  mtimeNs: bigint;
  /** Symlink target, or for 'link' the earlier member's name. */
  linkname?: Buffer | undefined;
  devmajor?: number | undefined;
  devminor?: number | undefined;
  /** Extended attributes, written as binary-safe `SCHILY.xattr.NAME` PAX records. */
  xattrs?: Map<string, Buffer> | undefined;
}

const TYPEFLAG_OF: Record<HeaderFields['type'], number> = {
  file: TYPEFLAG.REG,
  link: TYPEFLAG.LINK,
  symlink: TYPEFLAG.SYMLINK,
  'character-device': TYPEFLAG.CHAR,
  'block-device': TYPEFLAG.BLOCK,
  directory: TYPEFLAG.DIR,
  fifo: TYPEFLAG.FIFO,
};

/**
 * The header blocks of one member: a PAX extended header when ustar cannot hold the name, link
 * name, ids, size, mtime or xattrs, then the ustar header. The body is not included.
 */
export function encodeHeader(h: HeaderFields): Buffer {
  const records: Buffer[] = [];
  const split = splitUstarName(h.name);
  const longLink = h.linkname !== undefined && (h.linkname.length > 100 || !isPortable(h.linkname));
  // Names are raw bytes, UTF-8 or not, as GNU tar writes them: no hdrcharset record, which
  // GNU tar 1.34 does not know and warns about.
  if (split === null) records.push(paxRecord('path', h.name));
  if (longLink) records.push(paxRecord('linkpath', h.linkname!));
  if (h.uid > MAX_OCTAL_7) records.push(paxRecord('uid', String(h.uid)));
  if (h.gid > MAX_OCTAL_7) records.push(paxRecord('gid', String(h.gid)));
  if (h.size > MAX_OCTAL_11) records.push(paxRecord('size', String(h.size)));
  const seconds = floorDiv(h.mtimeNs, 1_000_000_000n);
  const nanos = h.mtimeNs - seconds * 1_000_000_000n;
  if (nanos !== 0n || seconds < 0n || seconds > BigInt(MAX_OCTAL_11)) records.push(paxRecord('mtime', paxTimeText(seconds, nanos)));
  for (const [name, value] of h.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${name}`, value));
  const ustar = ustarBlock(h, TYPEFLAG_OF[h.type], split ?? { name: h.name.subarray(0, 100), prefix: Buffer.alloc(0) }, seconds);
  if (records.length === 0) return ustar;
  const data = Buffer.concat(records);
  const paxName = { name: Buffer.from('././@PaxHeader'), prefix: Buffer.alloc(0) };
  const paxHeader = ustarBlock({ ...h, mode: 0o644, size: data.length, linkname: undefined }, TYPEFLAG.PAX, paxName, seconds);
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return Buffer.concat([paxHeader, data, Buffer.alloc(pad), ustar]);
}

function ustarBlock(h: HeaderFields, typeflag: number, where: { name: Buffer; prefix: Buffer }, seconds: bigint): Buffer {
  const b = Buffer.alloc(BLOCK);
  where.name.copy(b, 0);
  octal(b, 100, 8, h.mode & 0o7777);
  numeric(b, 108, 8, h.uid);
  numeric(b, 116, 8, h.gid);
  numeric(b, 124, 12, h.size);
  octal(b, 136, 12, seconds < 0n || seconds > BigInt(MAX_OCTAL_11) ? 0 : Number(seconds));
  b[156] = typeflag;
  if (h.linkname !== undefined) h.linkname.subarray(0, 100).copy(b, 157);
  b.write('ustar\u000000', 257, 'latin1');
  octal(b, 329, 8, h.devmajor ?? 0);
  octal(b, 337, 8, h.devminor ?? 0);
  where.prefix.copy(b, 345);
  writeChecksum(b);
  return b;
}

/** ustar's name/prefix split, or null when the name needs a PAX path (too long or not portable). */
function splitUstarName(name: Buffer): { name: Buffer; prefix: Buffer } | null {
  if (!isPortable(name)) return null;
  if (name.length <= 100) return { name, prefix: Buffer.alloc(0) };
  // The prefix ends at a '/' and must leave at most 100 bytes (a trailing '/' included) for the name.
  for (let i = name.indexOf(0x2f, name.length - 101); i >= 0 && i <= 155; i = name.indexOf(0x2f, i + 1)) {
    if (i > 0 && i < name.length - 1) return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
  }
  return null;
}

/** Printable ASCII only: anything else goes in a PAX record, as GNU tar's posix format does. */
function isPortable(bytes: Buffer): boolean {
  for (const byte of bytes) if (byte < 0x20 || byte > 0x7e) return false;
  return true;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n ? q - 1n : q;
}

/** A zero-padded octal field with a NUL terminator. */
function octal(b: Buffer, offset: number, width: number, value: number): void {
  b.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
}

/**
 * Octal when it fits, else GNU base-256 (read by GNU tar, Go, tar-stream), negative numbers
 * included; the writer also puts large values in PAX records.
 */
export function numeric(b: Buffer, offset: number, width: number, value: number): void {
  if (value >= 0 && value.toString(8).length < width) return octal(b, offset, width, value);
  let v = BigInt(value);
  for (let i = offset + width - 1; i > offset; i--, v >>= 8n) b[i] = Number(v & 0xffn);
  b[offset] = value < 0 ? 0xff : 0x80;
}

function writeChecksum(b: Buffer): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
}
