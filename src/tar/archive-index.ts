/**
 * Random access to the members of an uncompressed tar file without extracting it: one pass
 * over the headers records each member's data offset and size, and reads are bounded byte
 * ranges of the file. Used for `oci-archive:` and `docker-archive:` images.
 *
 * Why index instead of extracting to a scratch dir: nothing is written, nothing needs cleaning
 * up after a crash, and a blob is streamed straight from the archive (never buffered whole).
 * The headers are read with the same entry assembler as layers (parser.ts): the members are the
 * entries Go's archive/tar sees, and an archive GNU tar would read otherwise is refused.
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { abortError, PullUnpackError } from '../errors.js';
import { TarFormatError, TarUnsupportedError } from './format-error.js';
import { BLOCK, type TarHeader } from './header.js';
import { STEP, TarParser, type Step } from './parser.js';

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

async function walkHeaders(handle: FileHandle, path: string, signal?: AbortSignal): Promise<Map<string, TarMember>> {
  const members = new Map<string, TarMember>();
  const fileSize = (await handle.stat()).size;
  const block = Buffer.alloc(BLOCK);
  const parser = new TarParser();
  let offset = 0;
  const next = async (): Promise<Buffer> => {
    if (offset + BLOCK > fileSize) throw truncated(path);
    await readExactly(handle, block, offset, path);
    offset += BLOCK;
    return block;
  };
  try {
    // Go accepts an archive that ends, at a block boundary, without its end-of-archive blocks.
    for (let step: Step = STEP.ZERO; step !== STEP.END && offset < fileSize;) {
      if (signal?.aborted) throw abortError(signal);
      if (offset === 0) checkNotCompressed(await next(), path);
      else await next();
      step = parser.block(block);
      if (step === STEP.META) {
        const data = await readMeta(handle, offset, parser.size, fileSize, path);
        offset += roundUp(parser.size);
        parser.meta(data);
      } else if (step === STEP.ENTRY || step === STEP.SPARSE_MAP) {
        while (step === STEP.SPARSE_MAP && !parser.sparseBlock(await next()));
        if (offset + parser.size > fileSize) throw truncated(path);
        addMember(members, parser.header!, offset, parser.size, path);
        offset += roundUp(parser.size);
      }
    }
  } catch (err) {
    if (err instanceof TarFormatError || err instanceof TarUnsupportedError) throw corrupt(path, offset, err.message);
    throw err;
  }
  return members;
}

function addMember(members: Map<string, TarMember>, header: TarHeader, offset: number, size: number, path: string): void {
  const name = normalizeName(header.name);
  if (name === undefined) return;
  if (members.size >= MAX_MEMBERS) {
    throw new PullUnpackError('TOO_LARGE', `${path} has more than ${MAX_MEMBERS} members`);
  }
  members.set(name, { type: memberType(header), offset, size, linkname: header.linkname ?? undefined });
}

/** A sparse file's data is not one byte range of the archive: it is no member to read. */
function memberType(header: TarHeader): TarMember['type'] {
  const type = header.type;
  if ((type === 'file' || type === 'contiguous-file') && header.sparse === null) return 'file';
  if (type === 'link') return 'hardlink';
  if (type === 'symlink') return 'symlink';
  if (type === 'directory') return 'directory';
  return 'other';
}

function roundUp(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
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

function checkNotCompressed(header: Buffer, path: string): void {
  const gzip = header[0] === 0x1f && header[1] === 0x8b;
  const zstd = header.readUInt32LE(0) === 0xfd2fb528;
  if (gzip || zstd) {
    throw new PullUnpackError('UNSUPPORTED_MEDIA_TYPE', `${path} is a ${gzip ? 'gzip' : 'zstd'}-compressed archive`, {
      hint: `decompress it first (e.g. ${gzip ? 'gunzip' : 'unzstd'} -k FILE) and name the plain .tar file`,
    });
  }
}

async function readMeta(handle: FileHandle, offset: number, size: number, fileSize: number, path: string): Promise<Buffer> {
  if (offset + size > fileSize) throw truncated(path);
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

function corrupt(path: string, offset: number, why: string): PullUnpackError {
  return new PullUnpackError('CORRUPT_LAYER', `${path} is not a valid tar archive (at byte ${offset}: ${why})`);
}

function truncated(path: string): PullUnpackError {
  return new PullUnpackError('CORRUPT_LAYER', `${path} is truncated`);
}
