/**
 * The layer applier: one uncompressed layer tar stream onto the rootfs being built, following OCI
 * image-spec layer.md "Applying Changesets" and, where it is silent, containerd
 * `pkg/archive/tar.go` (applyNaive) and umoci `oci/layer/tar_extract.go`.
 *
 * Every path goes through safe-path.ts: names are cleaned once (absolute or escaping names are
 * refused) and parents are resolved inside the root with lstat, so no symlink, from this layer or
 * a lower one, can make a write, chmod, link or removal land outside the root.
 *
 * Layers are applied strictly in order, one at a time, on one ApplyContext; finishApply runs once
 * after the last one (directory modes and mtimes are only final then).
 *
 * The per-entry syscalls (open, mkdir, symlink, link, chown, chmod, utimes, close) are synchronous
 * on purpose: entries are applied strictly one after another, each call takes microseconds, and a
 * thread-pool round trip for each made extraction about 4x slower than GNU tar. Large file bodies
 * are written asynchronously, so decompression overlaps the disk writes.
 */
import * as fs from 'node:fs';
import type { Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { execFile, spawn } from 'node:child_process';
import { finished } from 'node:stream';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import { extract as tarExtract } from 'tar-stream';
import type { Extract, Header as Headers } from 'tar-stream';
import { PullUnpackError, abortError, isPullUnpackError } from './errors.js';
import { cleanEntryName, lstatOrNull, resolveInRoot, unsafePath } from './safe-path.js';

/** layer.md: a whiteout is `.wh.` + the basename of the path to remove. */
export const WHITEOUT_PREFIX = '.wh.';
/** `.wh..wh.` names are aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`), not removals. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
/** layer.md "Opaque Whiteout": hides every lower-layer child of its directory. */
export const WHITEOUT_OPAQUE = '.wh..wh..opq';
const PAX_XATTR_PREFIX = 'SCHILY.xattr.';
/** File bodies are written in batches of this many bytes (one writev each, one in flight). */
const WRITE_BATCH_BYTES = 1 << 20;
const O_CREATE_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
const writevAsync = promisify(fs.writev);
/** Files whose xattrs are set by one `setfattr --restore` run. */
const XATTR_BATCH_FILES = 1000;
const MAX_XATTR_WARNINGS = 20;
/** Host-specific xattrs never set from a layer nor cleared (umoci's ignoreXattrs). */
const KEEP_XATTRS = new Set(['security.selinux', 'system.nfs4_acl']);
/** Paths per getfattr / setfattr -x command line. */
const XATTR_ARGS_PER_RUN = 256;

/** State of one pull's rootfs, created once and shared by every layer, in order. */
export interface ApplyContext {
  /** Absolute path of the rootfs being built (exists, empty before the first layer). */
  readonly root: string;
  /** Apply ownership and create device nodes (both need root). */
  readonly isRoot: boolean;
  readonly onWarning: (message: string) => void;
}

/** What one applyLayer call did. `entries` counts every tar entry, `bytes` the regular-file bytes. */
export interface LayerApplyStats {
  entries: number;
  files: number;
  bytes: number;
  whiteouts: number;
  skipped: number;
}

/** One tar entry: its header and a readable body (tar-stream's Source). */
type Entry = Extract extends AsyncIterable<infer T> ? T : never;

interface DeferredDir {
  mode: number;
  atime: number;
  mtime: number;
  /** Inode at the time; the record only applies to that same directory. */
  ino: number;
}

class ApplyState implements ApplyContext {
  /**
   * Relative directory name -> host path of a real directory inside root, reached through real
   * directories only (never through a symlink). Invalidated on every removal of a directory or
   * symlink, so a name can never resolve through a path the layers have since replaced.
   */
  readonly dirCache = new Map<string, string>();
  /** True when some cached name was reached through a symlink (a new symlink may change it). */
  cacheHasIndirect = false;
  /** Host directory path -> mode and times to restore in finishApply. */
  readonly deferredDirs = new Map<string, DeferredDir>();
  /** The process umask, to skip a chmod when the created mode is already right. */
  readonly umask = process.umask();
  skippedDevices = 0;
  skippedXattrs = 0;
  setfattrMissing = false;

  constructor(
    readonly root: string,
    readonly isRoot: boolean,
    readonly onWarning: (message: string) => void,
  ) {}
}

/** Creates the state for one pull onto `root` (an existing, empty directory). */
export function createApplyContext(root: string, options: { isRoot?: boolean | undefined; onWarning?: ((m: string) => void) | undefined } = {}): ApplyContext {
  const absolute = root === '/' ? root : root.replace(/\/+$/, '');
  if (!absolute.startsWith('/')) throw new PullUnpackError('DESTINATION_INVALID', `rootfs path must be absolute: ${root}`);
  return new ApplyState(absolute, options.isRoot ?? process.getuid?.() === 0, options.onWarning ?? (() => undefined));
}

interface LayerRun {
  readonly ctx: ApplyState;
  readonly stats: LayerApplyStats;
  /**
   * Host paths this layer created or merged, with all their ancestors (containerd's
   * unpackedPaths, umoci's upperPaths): whiteouts and opaque markers only remove what is NOT in
   * here, so they hide lower layers and keep this layer's entries whatever the entry order.
   */
  readonly layerPaths: Set<string>;
  /** Pending `setfattr --restore` input, and every host path pending xattr work names. */
  xattrText: string[];
  readonly xattrPaths: Set<string>;
  /** Existing directories a directory entry was merged over: their old xattrs go first. */
  readonly xattrClear: Set<string>;
}

/**
 * Applies one uncompressed layer tar stream onto ctx.root and resolves with its stats once the
 * stream has ended. Consumes `tar` fully, or destroys it on error or abort (rejecting with code
 * ABORTED when `signal` fired, UNSAFE_PATH for an entry that would escape the root, CORRUPT_LAYER
 * for a broken tar or inconsistent entries, DESTINATION_INVALID when the filesystem refuses).
 */
export async function applyLayer(
  ctx: ApplyContext,
  tar: NodeJS.ReadableStream | Readable,
  options: { signal?: AbortSignal | undefined; what?: string | undefined } = {},
): Promise<LayerApplyStats> {
  const state = asState(ctx);
  const { signal } = options;
  const what = options.what ?? 'layer';
  const source = tar as Readable;
  const ex = createExtract();
  const run: LayerRun = {
    ctx: state,
    stats: { entries: 0, files: 0, bytes: 0, whiteouts: 0, skipped: 0 },
    layerPaths: new Set([state.root]),
    xattrText: [],
    xattrPaths: new Set(),
    xattrClear: new Set(),
  };
  // Errors reach us through the iterator; this listener keeps a destroy() before the first
  // next() (an already-aborted signal) from becoming an uncaught 'error' event.
  ex.on('error', () => undefined);
  const stop = (err: Error): void => {
    ex.destroy(err);
    source.unpipe?.(ex as unknown as NodeJS.WritableStream);
    // Without an error: the caller owns the source's error handling and gets our rejection.
    source.destroy?.();
  };
  const onAbort = (): void => stop(abortError(signal));
  signal?.addEventListener('abort', onAbort, { once: true });
  const stopWatching = finished(source, { writable: false }, (err) => {
    if (err) ex.destroy(err);
  });
  try {
    if (signal?.aborted) throw abortError(signal);
    source.pipe(ex as unknown as NodeJS.WritableStream);
    for await (const entry of ex) {
      if (signal?.aborted) throw abortError(signal);
      await applyEntryInContext(run, entry, what);
    }
    await flushXattrs(run);
    return run.stats;
  } catch (err) {
    const error = signal?.aborted ? abortError(signal) : streamError(err, what);
    stop(error);
    throw error;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    stopWatching();
  }
}

/**
 * After the last layer: restores the deferred directory modes and mtimes, deepest first (so a
 * 0555 or 000 directory got its children before), then warns once for what was skipped.
 */
export async function finishApply(ctx: ApplyContext): Promise<void> {
  const state = asState(ctx);
  await restoreDirectories(state);
  if (state.skippedDevices > 0) {
    state.onWarning(`skipped ${state.skippedDevices} device node(s): creating device nodes needs root (outside a user namespace)`);
  }
  if (state.skippedXattrs > 0) {
    state.onWarning(`skipped ${state.skippedXattrs} extended attribute(s) outside user.*: setting them needs root`);
  }
}

function asState(ctx: ApplyContext): ApplyState {
  if (!(ctx instanceof ApplyState)) throw new TypeError('the ApplyContext must come from createApplyContext()');
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// Entries

async function applyEntryInContext(run: LayerRun, entry: Entry, what: string): Promise<void> {
  try {
    await applyEntry(run, entry);
  } catch (err) {
    throw entryError(err, `${what}: ${JSON.stringify(entry.header.name)}`);
  }
}

async function applyEntry(run: LayerRun, entry: Entry): Promise<void> {
  const { ctx, stats } = run;
  const header = entry.header;
  stats.entries++;
  const rel = cleanEntryName(header.name);
  // containerd ignores entries that resolve to the root: the rootfs directory is the caller's.
  if (rel === null) return drain(entry);
  const slash = rel.lastIndexOf('/');
  const parentRel = slash < 0 ? '' : rel.slice(0, slash);
  const base = rel.slice(slash + 1);
  if (base.startsWith(WHITEOUT_PREFIX)) {
    // By name, whatever the entry type (containerd does the same).
    await drain(entry);
    return applyWhiteout(run, parentRel, base);
  }
  const type = header.type;
  if ((type === 'character-device' || type === 'block-device') && !ctx.isRoot) {
    ctx.skippedDevices++;
    stats.skipped++;
    return drain(entry);
  }
  const host = joinHost(await ensureParentDir(ctx, parentRel), base);
  switch (type) {
    case 'file':
    case 'contiguous-file':
      await writeRegularFile(run, host, entry);
      break;
    case 'directory':
      await drain(entry);
      await makeDirectory(run, rel, host, header);
      break;
    case 'symlink':
      await drain(entry);
      await makeSymlink(run, host, header);
      break;
    case 'link':
      await drain(entry);
      await makeHardlink(run, host, header);
      break;
    case 'character-device':
    case 'block-device':
    case 'fifo':
      await drain(entry);
      if (!(await makeSpecialFile(run, host, header, type))) return;
      break;
    default:
      throw new PullUnpackError('UNSUPPORTED_ENTRY', `unsupported tar entry type ${String(type)}`);
  }
  markLayerPath(run, host);
}

async function writeRegularFile(run: LayerRun, host: string, entry: Entry): Promise<void> {
  const { ctx } = run;
  const header = entry.header;
  const mode = modeOf(header, 0o644);
  // O_EXCL: a new inode every time, so a lower-layer hardlink to the old file is left unchanged.
  const fd = await createReplacing(run, host, () => fs.openSync(host, O_CREATE_NEW, mode & 0o777));
  try {
    run.stats.bytes += await writeBody(fd, entry);
    // chown clears setuid/setgid, so ownership first, then the mode (as containerd and umoci).
    if (ctx.isRoot) fs.fchownSync(fd, header.uid ?? 0, header.gid ?? 0);
    if (needsChmod(ctx, mode)) fs.fchmodSync(fd, mode);
    const t = timesOf(header);
    fs.futimesSync(fd, t.atime, t.mtime);
  } finally {
    fs.closeSync(fd);
  }
  run.stats.files++;
  await queueXattrs(run, host, header);
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
      const chunk = data as Buffer;
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
async function makeDirectory(run: LayerRun, rel: string, host: string, header: Headers): Promise<void> {
  const { ctx } = run;
  const mode = modeOf(header, 0o755);
  const createMode = ctx.isRoot ? mode & 0o777 : (mode & 0o777) | 0o700;
  try {
    fs.mkdirSync(host, createMode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const existing = fs.lstatSync(host);
    if (existing.isDirectory()) {
      // layer.md: the existing directory's attributes MUST be replaced by the entry's, xattrs
      // included (as umoci does; containerd only adds).
      run.xattrClear.add(host);
      run.xattrPaths.add(host);
    } else {
      await removePath(run, host, existing);
      fs.mkdirSync(host, createMode);
    }
  }
  if (ctx.isRoot) fs.lchownSync(host, header.uid ?? 0, header.gid ?? 0);
  const st = fs.lstatSync(host);
  const t = timesOf(header);
  ctx.deferredDirs.set(host, { mode, atime: t.atime, mtime: t.mtime, ino: st.ino });
  cacheDir(ctx, rel, host);
  await queueXattrs(run, host, header);
}

/** A symlink is created as it is: its target is only ever read by resolveInRoot, re-rooted. */
async function makeSymlink(run: LayerRun, host: string, header: Headers): Promise<void> {
  const { ctx } = run;
  const target = header.linkname;
  if (!target) throw new PullUnpackError('CORRUPT_LAYER', 'symlink entry without a target');
  await createReplacing(run, host, () => fs.symlinkSync(target, host));
  noteNewSymlink(ctx);
  if (ctx.isRoot) fs.lchownSync(host, header.uid ?? 0, header.gid ?? 0);
  const t = timesOf(header);
  fs.lutimesSync(host, t.atime, t.mtime);
  await queueXattrs(run, host, header);
}

/**
 * A hardlink to a path inside the root (this layer or a lower one). Parents of the target are
 * resolved inside the root; its last component is not followed, so a link to a symlink links the
 * symlink itself (link(2) semantics) and never a host file outside the root. A hardlink has no
 * metadata of its own: the inode keeps its target's (GNU tar and umoci do not re-apply it).
 */
async function makeHardlink(run: LayerRun, host: string, header: Headers): Promise<void> {
  const { ctx } = run;
  const targetRel = cleanEntryName(header.linkname ?? '');
  if (targetRel === null) throw new PullUnpackError('CORRUPT_LAYER', 'hardlink to the root directory');
  const slash = targetRel.lastIndexOf('/');
  const targetDir = await lookupDir(ctx, slash < 0 ? '' : targetRel.slice(0, slash));
  const target = joinHost(targetDir, targetRel.slice(slash + 1));
  const st = await lstatOrNull(target);
  if (st === null) throw new PullUnpackError('CORRUPT_LAYER', `hardlink target ${JSON.stringify(header.linkname)} does not exist`);
  if (st.isDirectory()) throw new PullUnpackError('CORRUPT_LAYER', `hardlink target ${JSON.stringify(header.linkname)} is a directory`);
  if (target === host) return;
  await createReplacing(run, host, () => fs.linkSync(target, host));
  if (st.isSymbolicLink()) noteNewSymlink(ctx);
}

/** FIFOs and (as root) device nodes. Resolves false when mknod was refused (counted as skipped). */
async function makeSpecialFile(run: LayerRun, host: string, header: Headers, type: 'character-device' | 'block-device' | 'fifo'): Promise<boolean> {
  const { ctx } = run;
  const mode = modeOf(header, 0o644);
  await removePath(run, host);
  const perm = (mode & 0o777).toString(8);
  // Node has no mknod(2): coreutils does it. `host` is absolute, so never taken for an option.
  if (type === 'fifo') {
    await runTool('mkfifo', ['-m', perm, host]);
  } else {
    const kind = type === 'block-device' ? 'b' : 'c';
    try {
      await runTool('mknod', ['-m', perm, host, kind, String(header.devmajor ?? 0), String(header.devminor ?? 0)]);
    } catch (err) {
      if (!/Operation not permitted/i.test(String((err as Error).message))) throw err;
      ctx.skippedDevices++;
      run.stats.skipped++;
      return false;
    }
  }
  if (ctx.isRoot) await fsp.lchown(host, header.uid ?? 0, header.gid ?? 0);
  if ((mode & 0o7000) !== 0) await fsp.chmod(host, mode);
  const t = timesOf(header);
  await fsp.utimes(host, t.atime, t.mtime);
  await queueXattrs(run, host, header);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Whiteouts (layer.md "Whiteouts")

async function applyWhiteout(run: LayerRun, parentRel: string, base: string): Promise<void> {
  if (base === WHITEOUT_OPAQUE) {
    run.stats.whiteouts++;
    const dir = await existingDir(run.ctx, parentRel);
    if (dir === null) return;
    for (const name of await fsp.readdir(dir)) await pruneLower(run, joinHost(dir, name));
    return;
  }
  if (base.startsWith(WHITEOUT_META_PREFIX)) {
    run.stats.skipped++;
    return;
  }
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') throw unsafePath(`${parentRel}/${base}`, 'whiteout of . or ..');
  run.stats.whiteouts++;
  const dir = await existingDir(run.ctx, parentRel);
  if (dir === null) return;
  await pruneLower(run, joinHost(dir, name));
}

/**
 * Removes what lower layers put at `host`, keeping what this layer put there: a path this layer
 * did not touch is removed whole; one it touched is kept and, if a directory, pruned child by
 * child. This makes whiteouts and opaque markers work in any entry order (layer.md: whiteouts
 * only apply to lower layers).
 */
async function pruneLower(run: LayerRun, host: string): Promise<void> {
  const st = await lstatOrNull(host);
  if (st === null) return;
  if (!run.layerPaths.has(host)) return removePath(run, host, st);
  if (!st.isDirectory()) return;
  for (const name of await fsp.readdir(host)) await pruneLower(run, joinHost(host, name));
}

function markLayerPath(run: LayerRun, host: string): void {
  let p = host;
  while (p.length > 0 && !run.layerPaths.has(p)) {
    run.layerPaths.add(p);
    p = p.slice(0, p.lastIndexOf('/'));
  }
}

// ---------------------------------------------------------------------------------------------
// Paths inside the root

/** Host path of directory `rel`, creating missing directories (0755, as containerd's mkparent). */
async function ensureParentDir(ctx: ApplyState, rel: string): Promise<string> {
  if (rel === '') return ctx.root;
  const cached = ctx.dirCache.get(rel);
  if (cached !== undefined) return cached;
  const host = await resolveInRoot(ctx.root, rel, { followFinal: true });
  try {
    await fsp.mkdir(host, { recursive: true, mode: 0o755 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new PullUnpackError('CORRUPT_LAYER', `parent ${JSON.stringify(rel)} is not a directory`, { cause: err });
    }
    throw err;
  }
  cacheDir(ctx, rel, host);
  return host;
}

/** Host path that `rel` names inside the root, symlinks in it followed; nothing is created. */
async function lookupDir(ctx: ApplyState, rel: string): Promise<string> {
  if (rel === '') return ctx.root;
  return ctx.dirCache.get(rel) ?? (await resolveInRoot(ctx.root, rel, { followFinal: true }));
}

/** Like lookupDir, but null unless that is an existing directory. */
async function existingDir(ctx: ApplyState, rel: string): Promise<string | null> {
  const host = await lookupDir(ctx, rel);
  if (host === ctx.root) return host;
  const st = await lstatOrNull(host);
  if (st === null || !st.isDirectory()) return null;
  cacheDir(ctx, rel, host);
  return host;
}

function cacheDir(ctx: ApplyState, rel: string, host: string): void {
  ctx.dirCache.set(rel, host);
  if (host !== joinHost(ctx.root, rel)) ctx.cacheHasIndirect = true;
}

/** A new symlink cannot change a name resolved through real directories only, but may change one resolved through links. */
function noteNewSymlink(ctx: ApplyState): void {
  if (!ctx.cacheHasIndirect) return;
  ctx.dirCache.clear();
  ctx.cacheHasIndirect = false;
}

/** Runs `create` (which fails with EEXIST if the path exists); on EEXIST removes the path and runs it again. */
async function createReplacing<T>(run: LayerRun, host: string, create: () => T): Promise<T> {
  try {
    return create();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await removePath(run, host);
  return create();
}

/**
 * Removes `host` (recursively for a directory, never following symlinks). Pending xattrs for
 * paths at or below it are set first, and the directory cache and deferred directory records
 * below it are dropped, so nothing later acts through the replaced path.
 */
async function removePath(run: LayerRun, host: string, known?: Stats): Promise<void> {
  const { ctx } = run;
  const st = known ?? (await lstatOrNull(host));
  if (st === null) return;
  if (hasPendingXattrsAt(run, host)) await flushXattrs(run);
  if (st.isDirectory()) {
    await fsp.rm(host, { recursive: true, force: true });
    ctx.dirCache.clear();
    ctx.cacheHasIndirect = false;
    const prefix = `${host}/`;
    for (const p of ctx.deferredDirs.keys()) if (p === host || p.startsWith(prefix)) ctx.deferredDirs.delete(p);
    return;
  }
  await fsp.unlink(host);
  if (st.isSymbolicLink()) {
    ctx.dirCache.clear();
    ctx.cacheHasIndirect = false;
  }
}

function joinHost(dir: string, name: string): string {
  if (name === '') return dir;
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

// ---------------------------------------------------------------------------------------------
// Metadata

function modeOf(header: Headers, fallback: number): number {
  return (header.mode ?? fallback) & 0o7777;
}

/** False when creating with `mode & 0o777` under the umask already gave exactly `mode`. */
function needsChmod(ctx: ApplyState, mode: number): boolean {
  return mode !== (mode & 0o777 & ~ctx.umask);
}

function paxOf(header: Headers): Record<string, string> | undefined {
  return (header.pax ?? undefined) as Record<string, string> | undefined;
}

/** Seconds since the epoch; PAX `mtime`/`atime` keep sub-second precision (GNU tar writes them). */
function timesOf(header: Headers): { atime: number; mtime: number } {
  const pax = paxOf(header);
  const fromHeader = header.mtime instanceof Date ? header.mtime.getTime() / 1000 : Number.NaN;
  const mtime = paxTime(pax?.mtime) ?? (Number.isFinite(fromHeader) ? fromHeader : Date.now() / 1000);
  return { atime: paxTime(pax?.atime) ?? mtime, mtime };
}

function paxTime(value: string | undefined): number | undefined {
  if (value === undefined || !/^-?\d+(\.\d+)?$/.test(value)) return undefined;
  return Number(value);
}

async function restoreDirectories(ctx: ApplyState): Promise<void> {
  // Check every record first (parents before children): each component must still be a real
  // directory and the record's own directory the same inode, or the record is dropped.
  const valid = new Map<string, boolean>([[ctx.root, true]]);
  const todo: Array<{ host: string; meta: DeferredDir; mode: number }> = [];
  const records = [...ctx.deferredDirs].sort((a, b) => a[0].length - b[0].length);
  for (const [host, meta] of records) {
    if (!(await isRealDirChain(ctx.root, host.slice(0, host.lastIndexOf('/')), valid))) continue;
    const st = await lstatOrNull(host);
    valid.set(host, st !== null && st.isDirectory());
    if (st !== null && st.isDirectory() && st.ino === meta.ino) todo.push({ host, meta, mode: st.mode & 0o7777 });
  }
  ctx.deferredDirs.clear();
  todo.sort((a, b) => depth(b.host) - depth(a.host));
  for (const { host, meta, mode } of todo) {
    if (mode !== meta.mode) await fsp.chmod(host, meta.mode);
    await fsp.utimes(host, meta.atime, meta.mtime);
  }
}

async function isRealDirChain(root: string, host: string, memo: Map<string, boolean>): Promise<boolean> {
  const known = memo.get(host);
  if (known !== undefined) return known;
  if (!host.startsWith(root === '/' ? '/' : `${root}/`)) return false;
  const ok =
    (await isRealDirChain(root, host.slice(0, host.lastIndexOf('/')) || '/', memo)) &&
    (await lstatOrNull(host))?.isDirectory() === true;
  memo.set(host, ok);
  return ok;
}

function depth(host: string): number {
  let n = 0;
  for (let i = host.indexOf('/'); i >= 0; i = host.indexOf('/', i + 1)) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Extended attributes (PAX SCHILY.xattr.*), set with `setfattr` from Debian's attr package since
// Node has no xattr API. Values are binary (security.capability), so they go base64-encoded.

/** Raw (binary-safe) PAX xattrs of an entry header, captured before tar-stream decodes them as UTF-8. */
const rawXattrs = new WeakMap<Headers, Map<string, Buffer>>();
let rawPaxCapture = true;

interface ExtractInternals {
  /** The header being decoded; its `type` may also be a meta type such as 'pax-header'. */
  _header: (Omit<Headers, 'type'> & { type: string | null }) | null;
  _decodeLongHeader?: (this: ExtractInternals, buf: Buffer) => void;
  _applyLongHeaders?: (this: ExtractInternals) => void;
}

/**
 * A tar-stream extractor that also keeps PAX xattr values as bytes: tar-stream 3 decodes PAX
 * records as UTF-8, which corrupts binary values such as security.capability. It hooks two
 * internal methods of the pinned tar-stream 3.2.2; if they are gone, values fall back to the
 * decoded strings (and test/apply-layer.test.ts's binary capability test fails).
 */
function createExtract(): Extract {
  // allowUnknownFormat: pre-POSIX (v7) headers too; the header checksum is still verified.
  const ex = tarExtract({ allowUnknownFormat: true } as Parameters<typeof tarExtract>[0]);
  const internals = ex as unknown as ExtractInternals;
  const decode = internals._decodeLongHeader;
  const applyLong = internals._applyLongHeaders;
  if (typeof decode !== 'function' || typeof applyLong !== 'function') {
    rawPaxCapture = false;
    return ex;
  }
  let pending: Map<string, Buffer> | null = null;
  internals._decodeLongHeader = function (buf) {
    if (this._header?.type === 'pax-header') pending = parsePaxXattrs(buf);
    decode.call(this, buf);
  };
  internals._applyLongHeaders = function () {
    applyLong.call(this);
    if (this._header !== null && pending !== null) rawXattrs.set(this._header as Headers, pending);
    pending = null;
  };
  return ex;
}

/** PAX records are `LEN KEY=VALUE\n`, LEN counting the whole record; values are raw bytes. */
export function parsePaxXattrs(buf: Buffer): Map<string, Buffer> | null {
  let found: Map<string, Buffer> | null = null;
  let off = 0;
  while (off < buf.length) {
    const space = buf.indexOf(0x20, off);
    if (space < 0) break;
    const len = Number.parseInt(buf.toString('latin1', off, space), 10);
    if (!(len > 0) || off + len > buf.length) break;
    const record = buf.subarray(space + 1, off + len - 1);
    const eq = record.indexOf(0x3d);
    const key = eq < 0 ? '' : record.toString('utf8', 0, eq);
    if (key.startsWith(PAX_XATTR_PREFIX) && key.length > PAX_XATTR_PREFIX.length) {
      found ??= new Map();
      found.set(key.slice(PAX_XATTR_PREFIX.length), Buffer.from(record.subarray(eq + 1)));
    }
    off += len;
  }
  return found;
}

function xattrsOf(header: Headers): Map<string, Buffer> | null {
  const raw = rawXattrs.get(header);
  if (raw !== undefined || rawPaxCapture) return raw ?? null;
  const pax = paxOf(header);
  if (!pax) return null;
  let found: Map<string, Buffer> | null = null;
  for (const [key, value] of Object.entries(pax)) {
    if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
    found ??= new Map();
    found.set(key.slice(PAX_XATTR_PREFIX.length), Buffer.from(value, 'utf8'));
  }
  return found;
}

/** Queues the entry's xattrs, in `getfattr --dump` form, for the next setfattr run. */
async function queueXattrs(run: LayerRun, host: string, header: Headers): Promise<void> {
  const attrs = xattrsOf(header);
  if (attrs === null || run.ctx.setfattrMissing) return;
  const lines = [`# file: ${dumpEscape(host)}`];
  for (const [name, value] of attrs) {
    if (KEEP_XATTRS.has(name)) continue;
    // Other namespaces (security.*, trusted.*) need CAP_SYS_ADMIN / CAP_SETFCAP.
    if (!run.ctx.isRoot && !name.startsWith('user.')) {
      run.ctx.skippedXattrs++;
      continue;
    }
    lines.push(`${dumpEscape(name)}=${value.length === 0 ? '""' : `0s${value.toString('base64')}`}`);
  }
  if (lines.length === 1) return;
  run.xattrText.push(`${lines.join('\n')}\n\n`);
  run.xattrPaths.add(host);
  if (run.xattrPaths.size >= XATTR_BATCH_FILES) await flushXattrs(run);
}

function hasPendingXattrsAt(run: LayerRun, host: string): boolean {
  if (run.xattrPaths.size === 0) return false;
  const prefix = `${host}/`;
  for (const p of run.xattrPaths) if (p === host || p.startsWith(prefix)) return true;
  return false;
}

/**
 * Clears the old xattrs of merged directories, then sets the queued ones with one
 * `setfattr -h --restore=-` (-h: a symlink gets its own). Runs after each file was written and
 * chowned (chown and writes clear security.capability), and before any removal that could change
 * what a queued path names. Failures are warnings, as containerd and umoci treat ENOTSUP and
 * (rootless) EPERM.
 */
async function flushXattrs(run: LayerRun): Promise<void> {
  if (run.xattrPaths.size === 0) return;
  const input = run.xattrText.join('');
  const clear = [...run.xattrClear];
  run.xattrText = [];
  run.xattrPaths.clear();
  run.xattrClear.clear();
  const { ctx } = run;
  if (ctx.setfattrMissing) return;
  const failures: string[] = [];
  let found = await clearXattrs(ctx, clear, failures);
  if (found && input !== '') {
    const result = await runAttrTool('setfattr', ['-h', '--restore=-'], input);
    found = result !== null;
    if (result !== null && result.code !== 0) failures.push(result.stderr || `setfattr exited with ${result.code}`);
  }
  if (!found) {
    ctx.setfattrMissing = true;
    ctx.onWarning('setfattr/getfattr (Debian package "attr") were not found: extended attributes such as security.capability are not applied');
  }
  const lines = failures.join('\n').split('\n').filter((l) => l.trim() !== '');
  for (const line of lines.slice(0, MAX_XATTR_WARNINGS)) ctx.onWarning(`extended attribute not applied: ${line}`);
  if (lines.length > MAX_XATTR_WARNINGS) ctx.onWarning(`... and ${lines.length - MAX_XATTR_WARNINGS} more extended attribute failures`);
}

/** Removes every xattr of `paths` but KEEP_XATTRS (non-root: user.* only). False if getfattr is missing. */
async function clearXattrs(ctx: ApplyState, paths: string[], failures: string[]): Promise<boolean> {
  const byName = new Map<string, string[]>();
  for (let i = 0; i < paths.length; i += XATTR_ARGS_PER_RUN) {
    const args = ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', ...paths.slice(i, i + XATTR_ARGS_PER_RUN)];
    const result = await runAttrTool('getfattr', args);
    if (result === null) return false;
    if (result.code !== 0) failures.push(result.stderr);
    let current: string | null = null;
    for (const line of result.stdout.split('\n')) {
      if (line.startsWith('# file: ')) current = dumpUnescape(line.slice('# file: '.length));
      const eq = line.indexOf('=');
      if (current === null || line.startsWith('#') || eq <= 0) continue;
      const name = dumpUnescape(line.slice(0, eq));
      if (KEEP_XATTRS.has(name) || (!ctx.isRoot && !name.startsWith('user.'))) continue;
      byName.set(name, [...(byName.get(name) ?? []), current]);
    }
  }
  for (const [name, holders] of byName) {
    for (let i = 0; i < holders.length; i += XATTR_ARGS_PER_RUN) {
      const result = await runAttrTool('setfattr', ['-h', '-x', name, '--', ...holders.slice(i, i + XATTR_ARGS_PER_RUN)]);
      if (result === null) return false;
      if (result.code !== 0) failures.push(result.stderr);
    }
  }
  return true;
}

/** Runs getfattr or setfattr; null when it is not installed. */
function runAttrTool(command: string, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string } | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    // latin1: one char per byte, so getfattr's raw (non-ASCII) name bytes survive until dumpUnescape.
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('latin1').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 65536) stderr += d;
    });
    child.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve(null) : reject(err)));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr: stderr.trim() }));
    // EPIPE when the tool exits early: its exit status and stderr say why.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** `getfattr --dump` quoting: bytes outside printable ASCII, `\` and `=` as `\ooo`. */
function dumpEscape(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte <= 0x20 || byte >= 0x7f || byte === 0x5c || byte === 0x3d ? `\\${byte.toString(8).padStart(3, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/** Reverses dumpEscape on getfattr output read as latin1 (one char per byte). */
function dumpUnescape(text: string): string {
  const bytes = Buffer.from(text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))), 'latin1');
  return bytes.toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// Streams and errors

/** Reads and discards an entry body (tar-stream needs every body consumed to go on). */
async function drain(entry: Entry): Promise<void> {
  for await (const chunk of entry) void chunk;
}

function runTool(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, (err, _stdout, stderr) => {
      if (err) reject(new Error(`${command} failed: ${String(stderr).trim() || err.message}`, { cause: err }));
      else resolve();
    });
  });
}

/** Errors of one entry, with the layer and entry name in the message. */
function entryError(err: unknown, where: string): unknown {
  if (isPullUnpackError(err)) {
    if (err.code === 'ABORTED' || err.message.startsWith(where)) return err;
    return new PullUnpackError(err.code, `${where}: ${err.message}`, { hint: err.hint, cause: err.cause ?? err });
  }
  const e = err as NodeJS.ErrnoException;
  const message = e instanceof Error ? e.message : String(err);
  if (typeof e?.syscall === 'string') return new PullUnpackError('DESTINATION_INVALID', `${where}: ${message}`, { cause: err });
  return new PullUnpackError('CORRUPT_LAYER', `${where}: ${message}`, { cause: err });
}

/** Errors of the tar stream itself (source errors pass through when already typed). */
function streamError(err: unknown, what: string): PullUnpackError {
  if (isPullUnpackError(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.syscall === 'string') return new PullUnpackError('DESTINATION_INVALID', `${what}: ${message}`, { cause: err });
  return new PullUnpackError('CORRUPT_LAYER', `${what}: invalid tar stream: ${message}`, { cause: err });
}
