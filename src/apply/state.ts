/**
 * The applier's shared state: the ApplyContext of one pull, the LayerRun of one layer, and the
 * directory cache through which entry parents are resolved inside the root. Every removal of a
 * path goes through removePath here, so the cache, the deferred directory records and pending
 * xattr work never act through a path the layers have since replaced.
 */
import * as fs from 'node:fs';
import type { Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { PullUnpackError } from '../errors.js';
import type { Limits } from '../limits.js';
import { fsPath, lstatOrNull, resolveInRoot } from './safe-path.js';
import type { XattrQueue } from './xattrs.js';
import type { TarEntry } from '../tar/reader.js';
import type { OwnerRecord } from './owners.js';

/** The resource limits the applier enforces itself (limits.ts documents each). */
export type ApplyLimits = Pick<Limits, 'maxEntries' | 'maxPathDepth' | 'maxNameLength'>;

/** Mode of the parent directories a layer does not list (containerd, umoci). */
const IMPLICIT_DIR_MODE = 0o755;

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

/** One tar entry: its header and its body. */
export type Entry = TarEntry;

/** A directory's mode and times from its entry, restored by finishApply. */
export interface DeferredDir {
  mode: number;
  atime: number;
  mtime: number;
  /** Inode at the time; the record only applies to that same directory. */
  ino: number;
}

/** The ApplyContext createApplyContext returns, with the state every layer shares. */
export class ApplyState implements ApplyContext {
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
  /**
   * Whether directories mkdir creates with mode 0755 need a chmod to get it (the umask masks
   * bits of 0755), and, as root, a chown to 0:0 (the process group is not root's).
   */
  readonly fixImplicitDirs: { chmod: boolean; chown: boolean };
  /**
   * The owner a new file gets without a chown: the process's own ids, unless the root is setgid
   * (then new files take its group). Directories are created without setgid until finishApply,
   * so inside the root only the root itself can hand its group down.
   */
  readonly ownerOfNewFiles: { uid: number; gid: number } | undefined;
  /** Tar entries applied so far, all layers together (checked against limits.maxEntries). */
  entriesApplied = 0;
  skippedDevices = 0;
  skippedXattrs = 0;
  /** Where owners go instead of chown(2), for rootless bundles with subordinate ids (owners.ts). */
  owners: OwnerRecord | undefined;
  setfattrMissing = false;

  constructor(
    readonly root: string,
    readonly isRoot: boolean,
    readonly onWarning: (message: string) => void,
    readonly limits: Readonly<ApplyLimits>,
  ) {
    this.fixImplicitDirs = { chmod: (IMPLICIT_DIR_MODE & this.umask) !== 0, chown: isRoot && process.getegid?.() !== 0 };
    const rootSetgid = (fs.statSync(fsPath(root)).mode & 0o2000) !== 0;
    const uid = process.geteuid?.();
    const gid = process.getegid?.();
    this.ownerOfNewFiles = rootSetgid || uid === undefined || gid === undefined ? undefined : { uid, gid };
  }
}

/** State of one applyLayer call: its stats, what it unpacked, and its pending xattr work. */
export interface LayerRun {
  readonly ctx: ApplyState;
  readonly stats: LayerApplyStats;
  /**
   * Host paths this layer created or merged, with all their ancestors (containerd's
   * unpackedPaths, umoci's upperPaths): whiteouts and opaque markers only remove what is NOT in
   * here, so they hide lower layers and keep this layer's entries whatever the entry order.
   */
  readonly layerPaths: Set<string>;
  /** The layer's pending xattr work (setfattr runs in batches). */
  readonly xattrs: XattrQueue;
}

// ---------------------------------------------------------------------------------------------
// Paths inside the root

/**
 * Host path of directory `rel`, creating missing directories: exactly 0755 and (as root) owned by
 * 0:0 whatever the umask, as containerd's mkparent and umoci's MkdirAll make a parent that the
 * layer does not list.
 */
export async function ensureParentDir(ctx: ApplyState, rel: string): Promise<string> {
  if (rel === '') return ctx.root;
  const cached = ctx.dirCache.get(rel);
  if (cached !== undefined) return cached;
  const host = resolveInRoot(ctx.root, rel, { followFinal: true });
  try {
    const first = fs.mkdirSync(fsPath(host), { recursive: true, mode: IMPLICIT_DIR_MODE });
    if (first !== undefined && (ctx.fixImplicitDirs.chmod || ctx.fixImplicitDirs.chown)) fixCreatedDirs(ctx, host, first);
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

/**
 * Gives the directories mkdir -p created (`first`, the first one it made, down to `host`) mode
 * 0755 and, as root, owner 0:0. Only `first`'s number of components is used: mkdir returns it
 * decoded from bytes, so it may not spell an escaped name the way `host` does.
 */
function fixCreatedDirs(ctx: ApplyState, host: string, first: string): void {
  const firstSlashes = first.split('/').length - 1;
  const ends: number[] = [];
  for (let i = host.indexOf('/'), seen = 1; i >= 0; i = host.indexOf('/', i + 1), seen++) if (seen > firstSlashes) ends.push(i);
  ends.push(host.length);
  for (const end of ends) {
    const dir = fsPath(host.slice(0, end));
    if (ctx.fixImplicitDirs.chown) fs.lchownSync(dir, 0, 0);
    if (ctx.fixImplicitDirs.chmod) fs.chmodSync(dir, IMPLICIT_DIR_MODE);
  }
}

/** Host path that `rel` names inside the root, symlinks in it followed; nothing is created. */
export async function lookupDir(ctx: ApplyState, rel: string): Promise<string> {
  if (rel === '') return ctx.root;
  return ctx.dirCache.get(rel) ?? resolveInRoot(ctx.root, rel, { followFinal: true });
}

/** Like lookupDir, but null unless that is an existing directory. */
export async function existingDir(ctx: ApplyState, rel: string): Promise<string | null> {
  const host = await lookupDir(ctx, rel);
  if (host === ctx.root) return host;
  const st = lstatOrNull(host);
  if (st === null || !st.isDirectory()) return null;
  cacheDir(ctx, rel, host);
  return host;
}

/** Records that `rel` names the real directory `host`, noting when a symlink led there. */
export function cacheDir(ctx: ApplyState, rel: string, host: string): void {
  ctx.dirCache.set(rel, host);
  if (host !== joinHost(ctx.root, rel)) ctx.cacheHasIndirect = true;
}

/** A new symlink cannot change a name resolved through real directories only, but may change one resolved through links. */
export function noteNewSymlink(ctx: ApplyState): void {
  if (!ctx.cacheHasIndirect) return;
  ctx.dirCache.clear();
  ctx.cacheHasIndirect = false;
}

/** Runs `create` (which fails with EEXIST if the path exists); on EEXIST removes the path and runs it again. */
export async function createReplacing<T>(run: LayerRun, host: string, create: () => T): Promise<T> {
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
export async function removePath(run: LayerRun, host: string, known?: Stats): Promise<void> {
  const { ctx } = run;
  const st = known ?? lstatOrNull(host);
  if (st === null) return;
  ctx.owners?.removed(host);
  if (run.xattrs.pendingAt(host)) await run.xattrs.flush();
  if (st.isDirectory()) {
    await fsp.rm(fsPath(host), { recursive: true, force: true });
    ctx.dirCache.clear();
    ctx.cacheHasIndirect = false;
    const prefix = `${host}/`;
    for (const p of ctx.deferredDirs.keys()) if (p === host || p.startsWith(prefix)) ctx.deferredDirs.delete(p);
    return;
  }
  fs.unlinkSync(fsPath(host));
  if (st.isSymbolicLink()) {
    ctx.dirCache.clear();
    ctx.cacheHasIndirect = false;
  }
}

/** `dir`/`name` as a host path (`dir` itself for an empty name). */
export function joinHost(dir: string, name: string): string {
  if (name === '') return dir;
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
