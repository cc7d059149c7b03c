/**
 * The tar header codec, decoding half: one 512-byte header block to its fields (encode.ts is
 * the other half). The layer reader (reader.ts) and the archive index (archive-index.ts) decode
 * with it, through the entry assembler (parser.ts).
 *
 * Decoding follows Go's archive/tar (reader.go readHeader, strconv.go, format.go), which
 * containerd, docker and umoci use, and is stricter where GNU tar would read the same block
 * differently: a block either decodes to what both read, or throws TarFormatError (the caller
 * refuses the layer, CORRUPT_LAYER). So numbers are octal (leading and trailing spaces and NULs
 * allowed, nothing else) or GNU base-256 (first byte 0x80, or 0xff for a negative number, the
 * only two GNU tar reads); the checksum may be the unsigned or the signed sum; the ustar prefix is
 * read only under the POSIX magic, as both do. Names and link targets are name strings
 * (names.ts): their bytes survive whatever the encoding.
 */
import { TarFormatError } from './format-error.js';
import { bytesToName } from './names.js';

export const BLOCK = 512;

/** Typeflags (the byte at offset 156). */
export const TYPEFLAG = {
  /** Pre-POSIX regular file (Go's TypeRegA); a directory when the name ends in '/'. */
  AREG: 0x00,
  REG: 0x30,
  LINK: 0x31,
  SYMLINK: 0x32,
  CHAR: 0x33,
  BLOCK: 0x34,
  DIR: 0x35,
  FIFO: 0x36,
  CONT: 0x37,
  PAX: 0x78,
  PAX_GLOBAL: 0x67,
  GNU_LONGNAME: 0x4c,
  GNU_LONGLINK: 0x4b,
  GNU_SPARSE: 0x53,
} as const;

export type TarEntryType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo' | 'contiguous-file';

const ENTRY_TYPES: ReadonlyMap<number, TarEntryType> = new Map([
  [TYPEFLAG.AREG, 'file'],
  [TYPEFLAG.REG, 'file'],
  [TYPEFLAG.LINK, 'link'],
  [TYPEFLAG.SYMLINK, 'symlink'],
  [TYPEFLAG.CHAR, 'character-device'],
  [TYPEFLAG.BLOCK, 'block-device'],
  [TYPEFLAG.DIR, 'directory'],
  [TYPEFLAG.FIFO, 'fifo'],
  [TYPEFLAG.CONT, 'contiguous-file'],
]);

/** A data fragment of a sparse file: `length` bytes of the archive's data at `offset`; the rest is holes. */
export interface SparseFragment {
  offset: number;
  length: number;
}

/** One entry's header, the PAX and GNU records before it already merged in. */
export interface TarHeader {
  /** A name string (names.ts). */
  name: string;
  /** Target of a symlink or hardlink; null when empty. */
  linkname: string | null;
  /** null for a typeflag that is not one of these (GNU 'V', 'D', vendor types ...). */
  type: TarEntryType | null;
  /** The raw typeflag byte. */
  typeflag: number;
  mode: number;
  uid: number;
  gid: number;
  /** The file's size; for a sparse file the expanded size (holes included). */
  size: number;
  /** Seconds since the epoch, fractional from PAX records, negative before 1970. */
  mtime: number;
  /** PAX `atime` in seconds, or null. */
  atime: number | null;
  devmajor: number;
  devminor: number;
  /** The entry's PAX records as UTF-8 text, or null. */
  pax: Record<string, string> | null;
  /** `SCHILY.xattr.*` PAX records: name -> raw value bytes; or null. */
  xattrs: Map<string, Buffer> | null;
  /** The data fragments of a GNU sparse file (PAX sparse 0.0, 0.1 or 1.0), or null. */
  sparse: SparseFragment[] | null;
}

/** Largest uid or gid: (uid_t)-1 means "leave unchanged" to chown(2), so it is no owner. */
export const MAX_ID = 0xfffffffe;

/** The entry type of a typeflag, or null. */
function entryType(typeflag: number): TarEntryType | null {
  return ENTRY_TYPES.get(typeflag) ?? null;
}

/**
 * Decodes a header block: null for an all-zero block (an end-of-archive block). The name is the
 * ustar prefix + name; PAX and GNU records are not applied here (parser.ts does). Throws
 * TarFormatError for a checksum mismatch or a field Go would refuse.
 */
export function decodeHeader(block: Buffer): TarHeader | null {
  // The unsigned and the signed sum, the checksum field counted as spaces (no object per block).
  let unsigned = 0;
  let signed = 0;
  let any = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = block[i]!;
    any |= b;
    const c = i >= 148 && i < 156 ? 0x20 : b;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  if (any === 0) return null;
  const stored = octalAt(block, 148, 8, 'checksum');
  if (stored !== unsigned && stored !== signed)
    throw new TarFormatError('header checksum mismatch (not a tar archive, or a compressed one?)');
  const format = formatOf(block);
  const typeflag = block[156]!;
  let name = stringAt(block, 0, 100);
  const prefix = format === 'ustar' || format === 'star' ? prefixOf(block, format) : '';
  if (prefix !== '') name = `${prefix}/${name}`;
  if (format === 'gnu') checkGnuTimes(block);
  const linkname = stringAt(block, 157, 100);
  const extended = format !== 'v7';
  return {
    name,
    linkname: linkname === '' ? null : linkname,
    type: entryType(typeflag),
    typeflag,
    mode: numberAt(block, 100, 8, 'mode'),
    uid: idAt(block, 108, 'uid'),
    gid: idAt(block, 116, 'gid'),
    size: numberAt(block, 124, 12, 'size'),
    mtime: numberAt(block, 136, 12, 'mtime'),
    atime: null,
    // Go reads device numbers of ustar and GNU headers only.
    devmajor: extended ? numberAt(block, 329, 8, 'devmajor') : 0,
    devminor: extended ? numberAt(block, 337, 8, 'devminor') : 0,
    pax: null,
    xattrs: null,
    sparse: null,
  };
}

/** Go's format guess (format.go GetFormat): which fields the block has. */
function formatOf(block: Buffer): 'ustar' | 'star' | 'gnu' | 'v7' {
  if (block.compare(USTAR, 0, 5, 257, 262) !== 0) return 'v7';
  if (block[262] === 0) return block.compare(STAR_TRAILER, 0, 4, 508, 512) === 0 ? 'star' : 'ustar';
  if (block[262] === 0x20 && block[263] === 0x20 && block[264] === 0) return 'gnu';
  return 'v7';
}

const USTAR = Buffer.from('ustar');
const STAR_TRAILER = Buffer.from('tar\0', 'latin1');

/**
 * The ustar name prefix (155 bytes). Go reads only 131 of them when the block ends in star's
 * "tar\0" trailer, where star keeps times: such a block whose prefix is longer is refused.
 */
function prefixOf(block: Buffer, format: 'ustar' | 'star'): string {
  if (format === 'star') {
    const nul = block.indexOf(0, 345);
    if (nul < 0 || nul > 345 + 130) throw new TarFormatError('a star header whose name prefix Go and GNU tar read differently');
  }
  return stringAt(block, 345, 155);
}

/**
 * Old GNU headers keep atime and ctime where ustar has its prefix. Go takes those bytes as a
 * prefix after all when they do not parse as numbers (golang.org/issue/12594), GNU tar never.
 */
function checkGnuTimes(block: Buffer): void {
  for (const offset of [345, 357]) {
    if (block[offset] !== 0 && !isNumber(block, offset, 12))
      throw new TarFormatError('an old GNU header with a broken atime or ctime field');
  }
}

/** The bytes up to the first NUL of a field, as a name string. */
function stringAt(block: Buffer, offset: number, length: number): string {
  let end = offset;
  const limit = offset + length;
  while (end < limit && block[end] !== 0) end++;
  return end === offset ? '' : bytesToName(block.subarray(offset, end));
}

function idAt(block: Buffer, offset: number, what: string): number {
  const id = numberAt(block, offset, 8, what);
  if (id < 0 || id > MAX_ID) throw new TarFormatError(`${what} ${id} is not a valid id`);
  return id;
}

function isNumber(block: Buffer, offset: number, length: number): boolean {
  try {
    numberAt(block, offset, length, 'field');
    return true;
  } catch {
    return false;
  }
}

/** A numeric field: octal, or GNU base-256 (first byte 0x80, or 0xff for a negative number). */
export function numberAt(block: Buffer, offset: number, length: number, what: string): number {
  const first = block[offset]!;
  if ((first & 0x80) === 0) return octalAt(block, offset, length, what);
  // Go reads any first byte with the high bit as base-256; GNU tar only these two.
  if (first !== 0x80 && first !== 0xff) throw new TarFormatError(`bad ${what} field`);
  const negative = first === 0xff;
  let value = 0;
  for (let i = offset + 1; i < offset + length; i++) value = value * 256 + (negative ? 0xff - block[i]! : block[i]!);
  if (!Number.isSafeInteger(value)) throw new TarFormatError(`${what} is too large`);
  // Two's complement: the inverted bits are -n - 1.
  return negative ? -value - 1 : value;
}

/**
 * An octal field as Go reads it: leading and trailing spaces and NULs trimmed, cut at a NUL,
 * then digits only ("644", " 644 ", "0000644\0" are 420; "6 44" is an error).
 */
function octalAt(block: Buffer, offset: number, length: number, what: string): number {
  const end = offset + length;
  let i = offset;
  while (i < end && (block[i] === 0x20 || block[i] === 0)) i++;
  let value = 0;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c < 0x30 || c > 0x37) break;
    value = value * 8 + (c - 0x30);
  }
  if (i < end && block[i] !== 0) {
    // Only spaces and NULs may follow the digits (a NUL ends the field for Go).
    for (; i < end && block[i] !== 0; i++) if (block[i] !== 0x20) throw new TarFormatError(`bad ${what} field`);
  }
  return value;
}
