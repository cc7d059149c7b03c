/**
 * The entry assembler shared by the layer reader (reader.ts) and the archive index
 * (archive-index.ts): header blocks and the records before them (PAX 'x' and 'g', GNU 'L' and
 * 'K') to entries, with the size of each entry's body. It does no I/O: the caller reads what
 * each step asks for.
 *
 * Which entries there are and which have bodies follows Go's archive/tar (reader.go next,
 * handleRegularFile, handleSparseFile), as containerd, docker and umoci read layers. Where GNU
 * tar would see other entries in the same bytes, the archive is refused (TarFormatError), never
 * read one way silently (the TARmageddon class, CVE-2025-62518):
 * - a link, device or FIFO header with a non-zero size: Go reads no body after it, GNU tar skips
 *   one (a directory's size is ignored by both);
 * - an old-style regular file (NUL typeflag) named "x/" with a body: Go takes a directory and
 *   reads the body as headers, GNU tar a directory whose body it skips; with typeflag '0' or
 *   '7' such a name is a file to Go and a directory to GNU tar;
 * - a zero block followed by anything but a second one: Go fails, GNU tar stops there;
 * - a global PAX header ('g') setting what GNU tar applies to every later entry (path, size,
 *   owner, times, sparse and xattr records) but Go and containerd ignore;
 * - a second extended header of the same kind before one entry, or PAX and GNU long-name
 *   records mixed;
 * - GNU sparse records that Go would not expand the way GNU tar does (sparse.ts).
 * The end-of-archive marker (two zero blocks) ends the archive, as in Go and GNU tar; what
 * follows is not read as entries.
 */
import { TarFormatError, TarUnsupportedError } from './format-error.js';
import { decodeHeader, MAX_ID, TYPEFLAG, type TarHeader } from './header.js';
import { bytesToName } from './names.js';
import { parsePax, paxNumber, paxTime, type PaxRecords } from './pax.js';
import { checkSparseMap, SparseMapReader, sparseRecords } from './sparse.js';

/** PAX and GNU long-name records larger than this are refused (Go's limit since 1.19). */
const MAX_META_BYTES = 1024 * 1024;

/** What the caller does after TarParser.block. */
export const STEP = {
  /** The first zero block: read the next block (a second one ends the archive). */
  ZERO: 0,
  /** The end-of-archive marker: no more entries. */
  END: 1,
  /** A record: read `size` bytes of data (then its padding) and pass them to meta(). */
  META: 2,
  /** An entry: `header`, then `size` bytes of body (then its padding). */
  ENTRY: 3,
  /** A PAX 1.0 sparse file: feed its data blocks to sparseBlock() until it returns true. */
  SPARSE_MAP: 4,
} as const;
export type Step = (typeof STEP)[keyof typeof STEP];

/** Types Go reads no body for, whatever the size field says (reader.go isHeaderOnlyType). */
const HEADER_ONLY: ReadonlySet<string> = new Set(['link', 'symlink', 'character-device', 'block-device', 'directory', 'fifo']);

/** Global PAX records GNU tar applies to later entries and Go ignores: refused. */
const GLOBAL_REFUSED = /^(path|linkpath|size|uid|gid|uname|gname|mtime|atime|ctime|GNU\.sparse\.|SCHILY\.xattr\.|LIBARCHIVE\.xattr\.)/;

export class TarParser {
  /** The entry, after STEP.ENTRY (and after the SPARSE_MAP steps). */
  header: TarHeader | null = null;
  /** Bytes to read next: a record's data, or the entry's body (a sparse file's stored data only). */
  size = 0;
  private zeros = 0;
  private metaFlag = 0;
  private pax: PaxRecords | null = null;
  private longName: string | null = null;
  private longLink: string | null = null;
  private sparseMap: SparseMapReader | null = null;
  private sparseBody = 0;

  /** Takes the next header block. Throws TarFormatError where Go and GNU tar would disagree. */
  block(block: Buffer): Step {
    const h = decodeHeader(block);
    if (h === null) return ++this.zeros === 2 ? STEP.END : STEP.ZERO;
    if (this.zeros > 0) throw new TarFormatError('a single zero block inside the archive (Go stops with an error, GNU tar as at its end)');
    const flag = h.typeflag;
    if (flag === TYPEFLAG.PAX || flag === TYPEFLAG.PAX_GLOBAL || flag === TYPEFLAG.GNU_LONGNAME || flag === TYPEFLAG.GNU_LONGLINK) {
      this.startMeta(flag, h.size);
      return STEP.META;
    }
    if (flag === TYPEFLAG.GNU_SPARSE) {
      throw new TarUnsupportedError(
        `GNU sparse file (type S) ${JSON.stringify(this.longName ?? h.name)}: not supported (containerd, docker and umoci refuse it too)`,
      );
    }
    return this.entry(h);
  }

  /** Takes the data of the record announced by STEP.META. */
  meta(data: Buffer): void {
    const flag = this.metaFlag;
    this.metaFlag = 0;
    if (flag === TYPEFLAG.GNU_LONGNAME || flag === TYPEFLAG.GNU_LONGLINK) {
      const nul = data.indexOf(0);
      const name = bytesToName(nul < 0 ? data : data.subarray(0, nul));
      if (flag === TYPEFLAG.GNU_LONGNAME) this.longName = name;
      else this.longLink = name;
      return;
    }
    const records = parsePax(data);
    if (flag === TYPEFLAG.PAX) {
      this.pax = records;
      return;
    }
    for (const key in records.text) {
      if (GLOBAL_REFUSED.test(key))
        throw new TarFormatError(`a global PAX header sets ${key} (GNU tar applies it to every later entry, Go ignores it)`);
    }
  }

  /** Takes the next data block of a 1.0 sparse file's map; true once the entry is complete. */
  sparseBlock(block: Buffer): boolean {
    const reader = this.sparseMap!;
    if (reader.bytes + block.length > this.sparseBody) throw new TarFormatError('GNU sparse map runs past the entry');
    if (!reader.feed(block)) return false;
    const header = this.header!;
    header.sparse = reader.map();
    this.size = this.sparseBody - reader.bytes;
    checkSparseMap(header.sparse, header.size, this.size);
    this.sparseMap = null;
    return true;
  }

  private startMeta(flag: number, size: number): void {
    if (size < 0 || size > MAX_META_BYTES) throw new TarFormatError(`a ${size}-byte extended header (the limit is ${MAX_META_BYTES})`);
    const pending = this.pax !== null ? TYPEFLAG.PAX : this.longName !== null ? TYPEFLAG.GNU_LONGNAME : 0;
    const conflict =
      flag === TYPEFLAG.PAX_GLOBAL
        ? pending !== 0 || this.longLink !== null
        : flag === TYPEFLAG.PAX
          ? pending !== 0 || this.longLink !== null
          : this.pax !== null || (flag === TYPEFLAG.GNU_LONGNAME ? this.longName !== null : this.longLink !== null);
    if (conflict) throw new TarFormatError('extended headers that Go and GNU tar combine differently (repeated, or PAX mixed with GNU)');
    this.metaFlag = flag;
    this.size = size;
  }

  private entry(h: TarHeader): Step {
    const pax = this.pax;
    if (pax !== null) applyPax(h, pax);
    if (this.longName !== null && this.longName !== '') h.name = this.longName;
    if (this.longLink !== null && this.longLink !== '') h.linkname = this.longLink;
    this.pax = null;
    this.longName = null;
    this.longLink = null;
    if (h.size < 0 || h.mode < 0 || h.devmajor < 0 || h.devminor < 0) throw new TarFormatError('a negative size, mode or device number');
    const flag = h.typeflag;
    if (h.name.endsWith('/')) {
      if (flag === TYPEFLAG.AREG) {
        if (h.size !== 0) throw new TarFormatError('a directory entry (NUL typeflag, trailing slash) with a body');
        h.type = 'directory';
      } else if (flag === TYPEFLAG.REG || flag === TYPEFLAG.CONT) {
        throw new TarFormatError(`a file entry named with a trailing slash (a file to Go, a directory to GNU tar)`);
      }
    }
    const type = h.type;
    const headerOnly = type !== null && HEADER_ONLY.has(type);
    if (headerOnly && type !== 'directory' && h.size !== 0) {
      throw new TarFormatError(`a ${type} entry with a ${h.size}-byte body (Go reads none, GNU tar skips it)`);
    }
    this.header = h;
    this.size = headerOnly ? 0 : h.size;
    const sparse = pax === null ? null : sparseRecords(pax.text);
    if (sparse === null) return STEP.ENTRY;
    if (headerOnly) throw new TarFormatError(`GNU sparse records on a ${type} entry`);
    if (pax!.sparseName !== undefined && pax!.sparseName.length > 0) h.name = bytesToName(pax!.sparseName);
    const stored = this.size;
    if (sparse.realSize !== null) h.size = sparse.realSize;
    if (sparse.map !== null) {
      h.sparse = sparse.map;
      checkSparseMap(sparse.map, h.size, stored);
      return STEP.ENTRY;
    }
    this.sparseMap = new SparseMapReader();
    this.sparseBody = stored;
    return STEP.SPARSE_MAP;
  }
}

/** Merges an entry's PAX records into its header (Go's mergePAX; empty values keep the header's). */
function applyPax(h: TarHeader, pax: PaxRecords): void {
  const text = pax.text;
  h.pax = text;
  h.xattrs = pax.xattrs;
  if (pax.path !== undefined && pax.path.length > 0) h.name = bytesToName(pax.path);
  if (pax.linkpath !== undefined && pax.linkpath.length > 0) h.linkname = bytesToName(pax.linkpath);
  if (text['size']) h.size = paxNumber(text['size'], 'size');
  if (text['uid']) h.uid = paxId(text['uid'], 'uid');
  if (text['gid']) h.gid = paxId(text['gid'], 'gid');
  if (text['mtime']) h.mtime = paxTime(text['mtime'], 'mtime');
  if (text['atime']) h.atime = paxTime(text['atime'], 'atime');
}

function paxId(text: string, what: string): number {
  const id = paxNumber(text, what);
  if (id > MAX_ID) throw new TarFormatError(`${what} ${id} is not a valid id`);
  return id;
}
