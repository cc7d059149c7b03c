/**
 * Per-entry creation on the rootfs: regular files, directories, symlinks, hardlinks, FIFOs and
 * device nodes, each with its ownership, mode, times and xattrs. Callers pass a host path whose
 * parent is already resolved inside the root (apply-state.ts); an existing path is replaced.
 *
 * The per-entry syscalls (open, mkdir, symlink, link, chown, chmod, utimes, close) are synchronous
 * on purpose: entries are applied strictly one after another, each call takes microseconds, and a
 * thread-pool round trip for each made extraction about 4x slower than GNU tar. Large file bodies
 * are written asynchronously, so decompression overlaps the disk writes.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import type { SparseFragment, TarHeader } from '../tar/reader.js';
import { PullUnpackError } from '../errors.js';
import { runProgram, whyFailed } from '../programs.js';
import { cleanEntryName, fsPath, lstatOrNull } from './safe-path.js';
import {
  cacheDir,
  createReplacing,
  joinHost,
  lookupDir,
  noteNewSymlink,
  removePath,
  type ApplyState,
  type Entry,
  type LayerRun,
} from './state.js';

/** File bodies are written in batches of this many bytes (one writev each, one in flight). */
const WRITE_BATCH_BYTES = 1 << 20;
const O_CREATE_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
const writevAsync = promisify(fs.writev);

/** A regular file, always a new inode, its body streamed from the entry. */
export async function writeRegularFile(run: LayerRun, host: string, entry: Entry): Promise<void> {
  const { ctx } = run;
  const header = entry.header;
  const mode = modeOf(header, 0o644);
  // O_EXCL: a new inode every time, so a lower-layer hardlink to the old file is left unchanged.
  const path = fsPath(host);
  const fd = await createReplacing(run, host, () => fs.openSync(path, O_CREATE_NEW, mode & 0o777));
  try {
    run.stats.bytes += header.sparse === null ? await writeBody(fd, entry) : await writeSparseBody(fd, entry, header.sparse, header.size);
    // chown clears setuid/setgid, so ownership first, then the mode (as containerd and umoci).
    if (needsChown(ctx, header)) fs.fchownSync(fd, header.uid ?? 0, header.gid ?? 0);
    if (needsChmod(ctx, mode)) fs.fchmodSync(fd, mode);
    const t = timesOf(header);
    fs.futimesSync(fd, fsTime(t.atime), fsTime(t.mtime));
  } finally {
    fs.closeSync(fd);
  }
  run.stats.files++;
  await run.xattrs.add(host, header);
}

/**
 * Streams an entry body to `fd` in writev batches of WRITE_BATCH_BYTES, each written in the
 * background while the next one is read; the last (or only) batch is written synchronously.
 */
async function writeBody(fd: number, entry: Entry): Promise<number> {
  let total = 0;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let inFlight: Promise<void> | null = null;
  try {
    for await (const data of entry) {
      const chunk = data;
      batch.push(chunk);
      batchBytes += chunk.length;
      total += chunk.length;
      if (batchBytes < WRITE_BATCH_BYTES) continue;
      if (inFlight !== null) await inFlight;
      inFlight = writeAllAsync(fd, batch, batchBytes);
      // Awaited on the next batch or below; this only keeps an early failure from being "unhandled".
      inFlight.catch(() => undefined);
      batch = [];
      batchBytes = 0;
    }
    if (inFlight !== null) await inFlight;
  } finally {
    // Also on error or abort: the caller closes `fd`, and a write still in flight could then
    // land in whatever file reuses that descriptor number.
    if (inFlight !== null) await inFlight.catch(() => undefined);
  }
  if (batchBytes > 0) writeAllSync(fd, batch, batchBytes, fs.writevSync(fd, batch));
  return total;
}

/**
 * Writes a sparse file's data fragments (the entry body holds them back to back) at their
 * offsets and sets its size: the holes between them are never written, so they stay holes.
 * The parser checked the map (in order, inside the size, exactly the body's length).
 */
async function writeSparseBody(fd: number, entry: Entry, map: SparseFragment[], size: number): Promise<number> {
  let index = -1;
  let position = 0;
  let left = 0;
  let total = 0;
  for await (const chunk of entry) {
    for (let off = 0; off < chunk.length;) {
      while (left === 0) {
        const fragment = map[++index]!;
        position = fragment.offset;
        left = fragment.length;
      }
      const n = Math.min(left, chunk.length - off);
      for (let done = 0; done < n;) done += fs.writeSync(fd, chunk, off + done, n - done, position + done);
      position += n;
      left -= n;
      off += n;
      total += n;
    }
  }
  fs.ftruncateSync(fd, size);
  return total;
}

async function writeAllAsync(fd: number, buffers: Buffer[], size: number): Promise<void> {
  writeAllSync(fd, buffers, size, (await writevAsync(fd, buffers)).bytesWritten);
}

/** Finishes a short writev (rare on regular files) by writing what is left. */
function writeAllSync(fd: number, buffers: Buffer[], size: number, written: number): void {
  if (written === size) return;
  let rest = Buffer.concat(buffers).subarray(written);
  while (rest.length > 0) rest = rest.subarray(fs.writeSync(fd, rest));
}

/**
 * A directory over an existing directory keeps its contents and takes the entry's metadata
 * (layer.md "Changeset over existing files"); over anything else, the old path is removed first.
 * Mode and times are deferred to finishApply; until then the owner can always write into it.
 */
export async function makeDirectory(run: LayerRun, rel: string, host: string, header: TarHeader): Promise<void> {
  const { ctx } = run;
  const mode = modeOf(header, 0o755);
  const createMode = ctx.isRoot ? mode & 0o777 : (mode & 0o777) | 0o700;
  const path = fsPath(host);
  let merged = false;
  try {
    fs.mkdirSync(path, createMode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const existing = fs.lstatSync(path);
    if (existing.isDirectory()) {
      // layer.md: the existing directory's attributes MUST be replaced by the entry's, xattrs
      // included (as umoci does; containerd only adds).
      merged = true;
      run.xattrs.clearMerged(host);
    } else {
      await removePath(run, host, existing);
      fs.mkdirSync(path, createMode);
    }
  }
  if (ctx.isRoot && (merged || needsChown(ctx, header))) fs.lchownSync(path, header.uid ?? 0, header.gid ?? 0);
  const st = fs.lstatSync(path);
  const t = timesOf(header);
  ctx.deferredDirs.set(host, { mode, atime: t.atime, mtime: t.mtime, ino: st.ino });
  cacheDir(ctx, rel, host);
  await run.xattrs.add(host, header);
}

/** A symlink is created as it is: its target is only ever read by resolveInRoot, re-rooted. */
export async function makeSymlink(run: LayerRun, host: string, header: TarHeader): Promise<void> {
  const { ctx } = run;
  const target = header.linkname;
  if (!target) throw new PullUnpackError('CORRUPT_LAYER', 'symlink entry without a target');
  const path = fsPath(host);
  await createReplacing(run, host, () => fs.symlinkSync(fsPath(target), path));
  noteNewSymlink(ctx);
  if (needsChown(ctx, header)) fs.lchownSync(path, header.uid ?? 0, header.gid ?? 0);
  const t = timesOf(header);
  fs.lutimesSync(path, fsTime(t.atime), fsTime(t.mtime));
  await run.xattrs.add(host, header);
}

/**
 * A hardlink to a path inside the root (this layer or a lower one). Parents of the target are
 * resolved inside the root; its last component is not followed, so a link to a symlink links the
 * symlink itself (link(2) semantics) and never a host file outside the root. A hardlink has no
 * metadata of its own: the inode keeps its target's (GNU tar and umoci do not re-apply it).
 */
export async function makeHardlink(run: LayerRun, host: string, header: TarHeader): Promise<void> {
  const { ctx } = run;
  const targetRel = cleanEntryName(header.linkname ?? '');
  if (targetRel === null) throw new PullUnpackError('CORRUPT_LAYER', 'hardlink to the root directory');
  const slash = targetRel.lastIndexOf('/');
  const targetDir = await lookupDir(ctx, slash < 0 ? '' : targetRel.slice(0, slash));
  const target = joinHost(targetDir, targetRel.slice(slash + 1));
  const st = lstatOrNull(target);
  if (st === null) throw new PullUnpackError('CORRUPT_LAYER', `hardlink target ${JSON.stringify(header.linkname)} does not exist`);
  if (st.isDirectory()) throw new PullUnpackError('CORRUPT_LAYER', `hardlink target ${JSON.stringify(header.linkname)} is a directory`);
  if (target === host) return;
  // Replacing `host` would remove the target with it (a directory holding it): link(2) would then
  // fail with ENOENT, which reads like a filesystem problem instead of a broken layer.
  if (target.startsWith(`${host}/`))
    throw new PullUnpackError('CORRUPT_LAYER', `hardlink target ${JSON.stringify(header.linkname)} lies inside the path it replaces`);
  await createReplacing(run, host, () => fs.linkSync(fsPath(target), fsPath(host)));
  if (st.isSymbolicLink()) noteNewSymlink(ctx);
}

/** FIFOs and (as root) device nodes. Resolves false when mknod was refused (counted as skipped). */
export async function makeSpecialFile(
  run: LayerRun,
  host: string,
  header: TarHeader,
  type: 'character-device' | 'block-device' | 'fifo',
): Promise<boolean> {
  const { ctx } = run;
  const mode = modeOf(header, 0o644);
  await removePath(run, host);
  const perm = (mode & 0o777).toString(8);
  const kind = type === 'block-device' ? 'b' : 'c';
  const major = String(header.devmajor ?? 0);
  const minor = String(header.devminor ?? 0);
  // Node has no mknod(2): coreutils does it. The path is absolute, so never taken for an option.
  const make = (at: string): Promise<void> =>
    type === 'fifo' ? runTool('mkfifo', ['-m', perm, at]) : runTool('mknod', ['-m', perm, at, kind, major, minor]);
  try {
    await makeNode(ctx, host, make);
  } catch (err) {
    if (type === 'fifo' || !/Operation not permitted/i.test(String((err as Error).message))) throw err;
    ctx.skippedDevices++;
    run.stats.skipped++;
    return false;
  }
  const path = fsPath(host);
  if (ctx.isRoot) await fsp.lchown(path, header.uid ?? 0, header.gid ?? 0);
  if ((mode & 0o7000) !== 0) await fsp.chmod(path, mode);
  const t = timesOf(header);
  await fsp.utimes(path, fsTime(t.atime), fsTime(t.mtime));
  await run.xattrs.add(host, header);
  return true;
}

/**
 * Runs `make` (mkfifo or mknod) on `host`; when `host` is not valid UTF-8, which argv cannot
 * carry, on a fresh temporary name in the root, then renamed to `host`.
 */
async function makeNode(ctx: ApplyState, host: string, make: (at: string) => Promise<void>): Promise<void> {
  const path = fsPath(host);
  if (typeof path === 'string') return make(path);
  const temp = joinHost(ctx.root, `.pull-unpack-node-${randomUUID()}`);
  await make(temp);
  try {
    await fsp.rename(temp, path);
  } catch (err) {
    await fsp.rm(temp, { force: true });
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Metadata

function modeOf(header: TarHeader, fallback: number): number {
  return (header.mode ?? fallback) & 0o7777;
}

/**
 * Whether a path this process just created needs a chown to get the entry's owner: only as root,
 * and not when it already has it (a new inode belongs to the process, see ownerOfNewFiles).
 */
function needsChown(ctx: ApplyState, header: TarHeader): boolean {
  if (!ctx.isRoot) return false;
  const owner = ctx.ownerOfNewFiles;
  return owner === undefined || owner.uid !== (header.uid ?? 0) || owner.gid !== (header.gid ?? 0);
}

/** False when creating with `mode & 0o777` under the umask already gave exactly `mode`. */
function needsChmod(ctx: ApplyState, mode: number): boolean {
  return mode !== (mode & 0o777 & ~ctx.umask);
}

/** Seconds since the epoch; PAX `mtime`/`atime` keep sub-second precision (GNU tar writes them). */
function timesOf(header: TarHeader): { atime: number; mtime: number } {
  return { atime: header.atime ?? header.mtime, mtime: header.mtime };
}

/**
 * A time in seconds as Node's utimes family should get it. Node takes a negative number of
 * seconds for "now" (lib/internal/fs/utils.js toUnixTimestamp), so a time before 1970 goes as a
 * numeric string, which Node converts as it is, to the microsecond.
 */
export function fsTime(seconds: number): number | string {
  return seconds < 0 ? String(seconds) : seconds;
}

/** Runs a coreutils command; rejects with its stderr in the message. */
async function runTool(command: string, args: string[]): Promise<void> {
  const why = whyFailed(await runProgram(command, args));
  if (why !== undefined) throw new Error(`${command} failed: ${why}`);
}
