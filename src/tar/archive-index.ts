/**
 * Random access to the members of an uncompressed tar file without extracting it: one pass
 * over the headers records each member's data offset and size, and reads are bounded byte
 * ranges of the file. Used for `oci-archive:` and `docker-archive:` images.
 *
 * Why index instead of extracting to a scratch dir: nothing is written, nothing needs cleaning
 * up after a crash, and a blob is streamed straight from the archive (never buffered whole).
 * tar-stream cannot report offsets, so the headers are walked here: POSIX ustar (name prefix),
 * pax 'x' records (path, linkpath, size), GNU 'L'/'K' long names and base-256 sizes.
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { abortError, PullUnpackError } from '../errors.js';

const BLOCK = 512;
/** pax and GNU long-name records larger than this are refused (real ones are a few hundred bytes). */
const MAX_META_BYTES = 1024 * 1024;
/** Archives with more members than this are refused; image archives hold a few hundred. */
const MAX_MEMBERS = 200_000;
/** Symlink hops followed when looking a name up. */
const MAX_LINK_HOPS = 16;

/** One member of the archive. */
export interface TarMember {
  type: 'file' | 'symlink' | 'hardlink' | 'directory' | 'other';
  /** Offset of the member's data in the archive file. */
  offset: number;
  size: number;
  /** Target of a symlink or hard link, as stored. */
  linkname?: string | undefined;
}

/** An indexed tar file; `close()` releases the file handle (streams already open keep working until then). */
export class TarIndex {
  readonly path: string;
  private readonly handle: FileHandle;
  private readonly members: Map<string, TarMember>;
  private closing: Promise<void> | undefined;

  private constructor(path: string, handle: FileHandle, members: Map<string, TarMember>) {
    this.path = path;
    this.handle = handle;
    this.members = members;
  }

  /** Opens and indexes `path`. NOT_FOUND if it is missing; CORRUPT_LAYER if it is not a readable tar. */
  static async open(path: string, signal?: AbortSignal): Promise<TarIndex> {
    const handle = await openArchive(path);
    try {
      const members = await walkHeaders(handle, path, signal);
      return new TarIndex(path, handle, members);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Member names, normalized ('blobs/sha256/…', no './' prefix). */
  names(): string[] {
    return [...this.members.keys()];
  }

  /** The regular file `name` refers to after following in-archive links, or undefined. */
  lookup(name: string): TarMember | undefined {
    let current = normalizeName(name);
    for (let hop = 0; hop <= MAX_LINK_HOPS && current !== undefined; hop++) {
      const member = this.members.get(current);
      if (!member) return undefined;
      if (member.type === 'file') return member;
      if (member.type === 'hardlink') current = normalizeName(member.linkname ?? '');
      else if (member.type === 'symlink') current = resolveSymlink(current, member.linkname ?? '');
      else return undefined;
    }
    if (current === undefined) return undefined;
    throw new PullUnpackError('UNSAFE_PATH', `${this.path}: "${name}" is a chain of more than ${MAX_LINK_HOPS} links`);
  }

  /**
   * A stream of the member's bytes on a file descriptor of its own; the caller consumes or
   * destroys it. (A stream over the shared FileHandle would close it for everyone on destroy.)
   */
  stream(member: TarMember): Readable {
    if (member.size === 0) return Readable.from([]);
    return createReadStream(this.path, { start: member.offset, end: member.offset + member.size - 1, highWaterMark: 1 << 20 });
  }

  /** Reads a member into memory; the caller has checked its size against a cap. */
  async read(member: TarMember): Promise<Buffer> {
    const buf = Buffer.alloc(member.size);
    let done = 0;
    while (done < member.size) {
      const { bytesRead } = await this.handle.read(buf, done, member.size - done, member.offset + done);
      if (bytesRead === 0) throw truncated(this.path);
      done += bytesRead;
    }
    return buf;
  }

  /** Closes the file once; later calls return the same promise. */
  close(): Promise<void> {
    this.closing ??= this.handle.close();
    return this.closing;
  }
}

async function openArchive(path: string): Promise<FileHandle> {
  try {
    const handle = await open(path, 'r');
    const stat = await handle.stat();
    if (!stat.isFile()) {
      await handle.close();
      throw new PullUnpackError('NOT_FOUND', `${path} is not a file`, { hint: 'an archive reference names a tar file' });
    }
    return handle;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PullUnpackError('NOT_FOUND', `archive ${path} does not exist`, { cause: err });
    }
    throw err;
  }
}

/** Per-entry overrides collected from pax 'x' and GNU 'L'/'K' records for the next header. */
interface Pending {
  path?: string;
  linkpath?: string;
  size?: number;
}

async function walkHeaders(handle: FileHandle, path: string, signal?: AbortSignal): Promise<Map<string, TarMember>> {
  const members = new Map<string, TarMember>();
  const fileSize = (await handle.stat()).size;
  const header = Buffer.alloc(BLOCK);
  let offset = 0;
  let pending: Pending = {};
  while (offset + BLOCK <= fileSize) {
    if (signal?.aborted) throw abortError(signal);
    await readExactly(handle, header, offset, path);
    if (header.every((b) => b === 0)) break;
    if (offset === 0) checkNotCompressed(header, path);
    checkChecksum(header, path, offset);
    const typeflag = String.fromCharCode(header[156]!);
    const isMeta = typeflag === 'x' || typeflag === 'L' || typeflag === 'K';
    const stored = parseNumber(header.subarray(124, 136), path, offset);
    const size = isMeta ? stored : (pending.size ?? stored);
    const dataOffset = offset + BLOCK;
    if (dataOffset + size > fileSize) throw truncated(path);
    offset = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    if (isMeta) {
      const meta = await readMeta(handle, dataOffset, size, path);
      pending =
        typeflag === 'x'
          ? { ...pending, ...parsePax(meta, path) }
          : { ...pending, [typeflag === 'L' ? 'path' : 'linkpath']: cString(meta) };
      continue;
    }
    if (typeflag !== 'g') addMember(members, header, typeflag, pending, dataOffset, size, path);
    pending = {};
  }
  return members;
}

function addMember(
  members: Map<string, TarMember>,
  header: Buffer,
  typeflag: string,
  pending: Pending,
  offset: number,
  size: number,
  path: string,
): void {
  const name = normalizeName(pending.path ?? headerName(header));
  if (name === undefined) return;
  if (members.size >= MAX_MEMBERS) {
    throw new PullUnpackError('TOO_LARGE', `${path} has more than ${MAX_MEMBERS} members`);
  }
  const linkname = pending.linkpath ?? cString(header.subarray(157, 257));
  members.set(name, { type: memberType(typeflag), offset, size, linkname: linkname || undefined });
}

function memberType(typeflag: string): TarMember['type'] {
  if (typeflag === '0' || typeflag === '\0' || typeflag === '7') return 'file';
  if (typeflag === '1') return 'hardlink';
  if (typeflag === '2') return 'symlink';
  if (typeflag === '5') return 'directory';
  return 'other';
}

/** ustar splits long names into prefix + name; GNU tar uses the prefix field for other data. */
function headerName(header: Buffer): string {
  const name = cString(header.subarray(0, 100));
  const ustar = header.subarray(257, 263).toString('latin1') === 'ustar\0';
  const prefix = ustar ? cString(header.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

/** 'a/./b/' -> 'a/b'; undefined for the root and for names that climb out of it. */
export function normalizeName(name: string): string | undefined {
  const clean = posix.normalize(`/${name}`).slice(1).replace(/\/+$/, '');
  return clean === '' ? undefined : clean;
}

/** Resolves a symlink's target inside the archive; absolute targets are taken from its root. */
function resolveSymlink(from: string, target: string): string | undefined {
  if (target === '') return undefined;
  const joined = target.startsWith('/') ? target : posix.join(posix.dirname(from), target);
  // normalize('/' + x) clamps '..' at the root, which is what a chroot-style lookup does.
  return normalizeName(joined);
}

function parseNumber(field: Buffer, path: string, offset: number): number {
  // GNU base-256: the high bit of the first byte set, big-endian binary in the rest.
  if ((field[0]! & 0x80) !== 0) {
    let n = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    if (!Number.isSafeInteger(n)) throw corrupt(path, offset, 'a size is too large');
    return n;
  }
  const text = cString(field).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw corrupt(path, offset, `bad octal number "${text}"`);
  return parseInt(text, 8);
}

function checkChecksum(header: Buffer, path: string, offset: number): void {
  const stored = parseNumber(header.subarray(148, 156), path, offset);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  if (sum !== stored) throw corrupt(path, offset, 'header checksum mismatch');
}

function checkNotCompressed(header: Buffer, path: string): void {
  const gzip = header[0] === 0x1f && header[1] === 0x8b;
  const zstd = header.readUInt32LE(0) === 0xfd2fb528;
  if (gzip || zstd) {
    throw new PullUnpackError('UNSUPPORTED_MEDIA_TYPE', `${path} is a ${gzip ? 'gzip' : 'zstd'}-compressed archive`, {
      hint: `decompress it first (e.g. ${gzip ? 'gunzip' : 'unzstd'} -k FILE) and name the plain .tar file`,
    });
  }
}

/** pax records: "<len> <key>=<value>\n"; only path, linkpath and size matter here. */
function parsePax(meta: Buffer, path: string): Pending {
  const out: Pending = {};
  let pos = 0;
  while (pos < meta.length) {
    const space = meta.indexOf(0x20, pos);
    const length = Number(meta.subarray(pos, space).toString('latin1'));
    if (space < 0 || !Number.isSafeInteger(length) || length <= 0 || pos + length > meta.length) {
      throw corrupt(path, pos, 'malformed pax record');
    }
    const record = meta.subarray(space + 1, pos + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    if (key === 'path') out.path = value;
    else if (key === 'linkpath') out.linkpath = value;
    else if (key === 'size') {
      if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(Number(value))) throw corrupt(path, pos, `bad pax size "${value}"`);
      out.size = Number(value);
    }
    pos += length;
  }
  return out;
}

async function readMeta(handle: FileHandle, offset: number, size: number, path: string): Promise<Buffer> {
  if (size > MAX_META_BYTES) throw corrupt(path, offset, `a ${size}-byte extended header`);
  const buf = Buffer.alloc(size);
  await readExactly(handle, buf, offset, path);
  return buf;
}

async function readExactly(handle: FileHandle, buf: Buffer, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await handle.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw truncated(path);
    done += bytesRead;
  }
}

function cString(buf: Buffer): string {
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString('utf8');
}

function corrupt(path: string, offset: number, why: string): PullUnpackError {
  return new PullUnpackError('CORRUPT_LAYER', `${path} is not a valid tar archive (at byte ${offset}: ${why})`);
}

function truncated(path: string): PullUnpackError {
  return new PullUnpackError('CORRUPT_LAYER', `${path} is truncated`);
}
