/**
 * `--output tar`: the unpacked root filesystem (whiteouts already applied) as ONE POSIX tar
 * stream, like `crane export` but keeping what a layer can hold: hardlinks, devices, fifos,
 * setuid/setgid/sticky bits, numeric owners, mtimes and every extended attribute.
 *
 * Headers are encoded by the project's tar codec (tar/header.ts) rather than with tar-stream's
 * `pack`, which cannot write what a faithful export needs: its PAX records are JS strings
 * (binary security.capability values and non-UTF-8 names are corrupted), uids/gids above 262143
 * are silently written as 777777, mode 0 becomes 0644, and sub-second mtimes are dropped. The
 * format is pax (POSIX.1-2001): a ustar header, preceded by an extended header ('x') only for
 * what ustar cannot hold.
 */
import { KEEP_XATTRS, runAttrTool } from '../apply/xattrs.js';
import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { abortError } from '../errors.js';
import { encodeHeader, type HeaderFields } from '../tar/encode.js';
import { BLOCK } from '../tar/header.js';

const ZEROS = Buffer.alloc(64 * 1024);
/** The most of the tree's `getfattr --dump` kept in memory (it must fit in one string to be parsed). */
const MAX_XATTR_DUMP_BYTES = 256 * 1024 * 1024;
const MAX_WARNINGS = 20;

/** One archive member's metadata (names are bytes, so non-UTF-8 names survive). */
type TarHeader = HeaderFields;

export interface WriteTreeOptions {
  signal?: AbortSignal | undefined;
  /** Sockets skipped, files that changed size while read, xattrs not readable. */
  onWarning?: ((message: string) => void) | undefined;
}

/**
 * Writes the tree at `root` as one tar stream to `out` through stream.pipeline(): `out` is ended
 * when the archive is complete and destroyed on failure (pipeline never ends or destroys
 * process.stdout, so `-` works; an EPIPE from a closed reader rejects). Members are depth-first
 * with siblings sorted by name bytes, so parents precede children and the first name of a
 * hardlinked inode is the 'file' member, later names 'link' members pointing to it. Names are
 * relative with no './' prefix and the root itself has no member, as `crane export` writes.
 * Sockets cannot be archived and are skipped with a warning. Resolves with the member count
 * and the bytes written; rejects with ABORTED when `signal` fires.
 */
export async function writeTreeAsTar(
  root: string,
  out: NodeJS.WritableStream,
  options: WriteTreeOptions = {},
): Promise<{ entries: number; bytes: number }> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const warnings = warningSink(options.onWarning);
  const top = resolve(root);
  const walk: Walk = {
    xattrs: await readTreeXattrs(top, warnings, signal),
    inodes: new Map(),
    warn: warnings,
    signal,
    entries: 0,
    bytes: 0,
  };
  const counted = async function* (): AsyncGenerator<Buffer> {
    for await (const chunk of members(walk, Buffer.from(top), null)) {
      walk.bytes += chunk.length;
      yield chunk;
    }
    walk.bytes += 2 * BLOCK;
    yield Buffer.alloc(2 * BLOCK);
  };
  try {
    await pipeline(Readable.from(counted(), { objectMode: false }), out, signal === undefined ? {} : { signal });
  } catch (err) {
    if (signal?.aborted) throw abortError(signal);
    throw err;
  }
  return { entries: walk.entries, bytes: walk.bytes };
}

interface Walk {
  /** Relative path (bytes as latin1) -> its xattrs. */
  xattrs: Map<string, Map<string, Buffer>>;
  /** `dev:ino` of a multiply-linked non-directory -> the name it was first archived under. */
  inodes: Map<string, Buffer>;
  warn: (message: string) => void;
  signal: AbortSignal | undefined;
  entries: number;
  bytes: number;
}

/** The members below directory `host` (named `rel` in the archive; null for the root), in order. */
async function* members(walk: Walk, host: Buffer, rel: Buffer | null): AsyncGenerator<Buffer> {
  const names = (await readdir(host, { encoding: 'buffer' })).sort((a, b) => Buffer.compare(a, b));
  for (const name of names) {
    if (walk.signal?.aborted) throw abortError(walk.signal);
    const childHost = Buffer.concat([host, Buffer.from('/'), name]);
    const childRel = rel === null ? name : Buffer.concat([rel, Buffer.from('/'), name]);
    const st = await lstat(childHost, { bigint: true });
    if (st.isSocket()) {
      walk.warn(`socket not archived: ${childRel.toString('utf8')}`);
      continue;
    }
    const header = await headerOf(walk, childHost, childRel, st);
    walk.entries++;
    yield encodeHeader(header);
    if (header.type === 'file') yield* fileBody(walk, childHost, header.size, childRel);
    if (header.type === 'directory') yield* members(walk, childHost, childRel);
  }
}

async function headerOf(walk: Walk, host: Buffer, rel: Buffer, st: BigIntStats): Promise<TarHeader> {
  const header: TarHeader = {
    name: rel,
    type: typeOf(st),
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: 0,
    mtimeNs: st.mtimeNs,
  };
  const xattrs = walk.xattrs.get(rel.toString('latin1'));
  if (xattrs !== undefined) header.xattrs = xattrs;
  if (header.type === 'directory') header.name = Buffer.concat([rel, Buffer.from('/')]);
  if (header.type === 'symlink') header.linkname = await readlink(host, { encoding: 'buffer' });
  if (header.type === 'character-device' || header.type === 'block-device') {
    // Linux's dev_t layout (glibc gnu_dev_major / gnu_dev_minor).
    header.devmajor = Number(((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn));
    header.devminor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn));
  }
  if (header.type !== 'file') return header;
  const key = `${st.dev}:${st.ino}`;
  const first = st.nlink > 1n ? walk.inodes.get(key) : undefined;
  if (first !== undefined) {
    // The inode's data and xattrs travel with its first name.
    delete header.xattrs;
    return { ...header, type: 'link', linkname: first };
  }
  if (st.nlink > 1n) walk.inodes.set(key, rel);
  header.size = Number(st.size);
  return header;
}

function typeOf(st: BigIntStats): TarHeader['type'] {
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'character-device';
  if (st.isBlockDevice()) return 'block-device';
  if (st.isFIFO()) return 'fifo';
  return 'file';
}

/**
 * Streams exactly `size` bytes of the file plus the padding to a block: the header already
 * promised `size`, so a file that shrank meanwhile is padded with zeros (as GNU tar does) and
 * bytes past `size` are not read.
 */
async function* fileBody(walk: Walk, host: Buffer, size: number, rel: Buffer): AsyncGenerator<Buffer> {
  let sent = 0;
  if (size > 0) {
    // O_NOFOLLOW: the member is the file that was lstat'ed, never a symlink swapped in since.
    const handle = await open(host, constants.O_RDONLY | constants.O_NOFOLLOW);
    // The stream closes the handle when it ends or is destroyed.
    const stream = handle.createReadStream({ end: size - 1 });
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      sent += chunk.length;
      yield chunk;
    }
  }
  if (sent < size) walk.warn(`${rel.toString('utf8')}: file shrank by ${size - sent} bytes while archived; padded with zeros`);
  yield* zeros(size - sent + ((BLOCK - (size % BLOCK)) % BLOCK));
}

function* zeros(count: number): Generator<Buffer> {
  for (let left = count; left > 0; left -= ZEROS.length) yield ZEROS.subarray(0, Math.min(left, ZEROS.length));
}

/**
 * Every xattr below `root` from ONE `getfattr -R -d -m - -h -e base64 --absolute-names` run:
 * relative path (its bytes as latin1) -> name -> value. Node has no xattr API; without getfattr
 * (Debian package "attr") the archive has no xattrs and a warning says so.
 */
async function readTreeXattrs(
  root: string,
  warn: (message: string) => void,
  signal: AbortSignal | undefined,
): Promise<Map<string, Map<string, Buffer>>> {
  const args = ['-R', '-d', '-m', '-', '-h', '-e', 'base64', '--absolute-names', '--', root];
  const result = await runAttrTool('getfattr', args, { signal, maxStdout: MAX_XATTR_DUMP_BYTES });
  if (result === null) {
    warn('getfattr (Debian package "attr") was not found: extended attributes such as security.capability are not archived');
    return new Map();
  }
  for (const line of result.stderr.split('\n')) if (line.trim() !== '') warn(`extended attributes not read: ${line}`);
  if (result.truncated) warn(`extended attributes not read: getfattr printed more than ${MAX_XATTR_DUMP_BYTES} bytes`);
  return parseXattrDump(result.stdout, root, warn);
}

/** Parses `getfattr --dump -e base64`: `# file: PATH` then `NAME=0sBASE64` lines, blocks split by blank lines. */
function parseXattrDump(dump: Buffer, root: string, warn: (message: string) => void): Map<string, Map<string, Buffer>> {
  const out = new Map<string, Map<string, Buffer>>();
  const prefix = Buffer.from(root.endsWith('/') ? root : `${root}/`);
  let current: Map<string, Buffer> | null = null;
  // latin1: one char per byte; getfattr prints name bytes >= 0x80 raw and escapes others as \ooo.
  for (const line of dump.toString('latin1').split('\n')) {
    if (line.startsWith('# file: ')) {
      const path = unescapeDump(line.slice('# file: '.length));
      const inside = path.length > prefix.length && path.subarray(0, prefix.length).equals(prefix);
      current = inside ? new Map() : null;
      if (inside) out.set(path.subarray(prefix.length).toString('latin1'), current!);
      continue;
    }
    const eq = line.indexOf('=');
    if (current === null || eq <= 0 || line.startsWith('#')) continue;
    const name = unescapeDump(line.slice(0, eq)).toString('utf8');
    const value = line.slice(eq + 1);
    // Labels the host put on the staging tree, never an image's (the applier does not set them).
    if (KEEP_XATTRS.has(name)) continue;
    // A PAX keyword ends at the first '=', so such a name cannot be archived.
    if (name.includes('=')) warn(`extended attribute ${JSON.stringify(name)} not archived: its name holds '='`);
    else current.set(name, value.startsWith('0s') ? Buffer.from(value.slice(2), 'base64') : Buffer.alloc(0));
  }
  return out;
}

function unescapeDump(text: string): Buffer {
  return Buffer.from(
    text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))),
    'latin1',
  );
}

function warningSink(onWarning: ((m: string) => void) | undefined): (message: string) => void {
  let count = 0;
  return (message) => {
    count++;
    if (count <= MAX_WARNINGS) onWarning?.(message);
    else if (count === MAX_WARNINGS + 1) onWarning?.('... further warnings about the tar output are not shown');
  };
}
