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
 * The work is split by concern: state.ts (shared state, lookups inside the root, removal),
 * entries.ts (creating each entry type), whiteouts.ts and xattrs.ts (extended attributes); the
 * entries come from the tar reader (tar/reader.ts). This file holds the public API, the
 * per-layer loop and the final directory restore.
 */
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { PullUnpackError, abortError, isPullUnpackError } from '../errors.js';
import { limitError, resolveLimits } from '../limits.js';
import { cleanEntryName, fsPath, lstatOrNull } from './safe-path.js';
import { nameToBytes } from '../tar/names.js';
import {
  ApplyState,
  type ApplyLimits,
  ensureParentDir,
  joinHost,
  type ApplyContext,
  type DeferredDir,
  type Entry,
  type LayerApplyStats,
  type LayerRun,
} from './state.js';
import { fsTime, makeDirectory, makeHardlink, makeSpecialFile, makeSymlink, writeRegularFile } from './entries.js';
import { applyWhiteout, markLayerPath, WHITEOUT_PREFIX } from './whiteouts.js';
import { XattrQueue } from './xattrs.js';
import { TarReader } from '../tar/reader.js';
import { TarUnsupportedError } from '../tar/format-error.js';
import type { OwnerRecord } from './owners.js';

export type { ApplyContext, ApplyLimits, LayerApplyStats } from './state.js';
export { WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteouts.js';
export { parsePaxXattrs } from '../tar/reader.js';

/** What applyLayer reports and obeys besides the stream. */
export interface ApplyLayerOptions {
  signal?: AbortSignal | undefined;
  /** Names the layer in messages, e.g. 'layer 2/5 of …'. */
  what?: string | undefined;
  /** Called with the entries applied so far, every ENTRIES_PER_CALLBACK entries (cheap enough to leave on). */
  onEntries?: ((entries: number) => void) | undefined;
}

/** How often applyLayer calls onEntries (a power of two: the check is one mask). */
const ENTRIES_PER_CALLBACK = 32;

/**
 * Creates the state for one pull onto `root` (an existing, empty directory). `limits` (defaults
 * in DEFAULT_LIMITS) hold for all the layers applied on this context together.
 */
export function createApplyContext(
  root: string,
  options: {
    isRoot?: boolean | undefined;
    onWarning?: ((m: string) => void) | undefined;
    limits?: Partial<ApplyLimits> | undefined;
    /** Record owners here instead of applying them (implies isRoot false; see owners.ts). */
    owners?: OwnerRecord | undefined;
  } = {},
): ApplyContext {
  const absolute = root === '/' ? root : root.replace(/\/+$/, '');
  if (!absolute.startsWith('/')) throw new PullUnpackError('DESTINATION_INVALID', `rootfs path must be absolute: ${root}`);
  const { maxEntries, maxPathDepth, maxNameLength } = resolveLimits(options.limits);
  const limits = { maxEntries, maxPathDepth, maxNameLength };
  const isRoot = options.owners ? false : (options.isRoot ?? process.getuid?.() === 0);
  const state = new ApplyState(absolute, isRoot, options.onWarning ?? (() => undefined), limits);
  state.owners = options.owners;
  return state;
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
  options: ApplyLayerOptions = {},
): Promise<LayerApplyStats> {
  const state = asState(ctx);
  const { signal } = options;
  const what = options.what ?? 'layer';
  const source = tar as Readable;
  const run: LayerRun = {
    ctx: state,
    stats: { entries: 0, files: 0, bytes: 0, whiteouts: 0, skipped: 0 },
    layerPaths: new Set([state.root]),
    xattrs: new XattrQueue(state),
  };
  // An abort ends the source, which ends whatever read is waiting on it; the caller owns the
  // source's error handling and gets our rejection (ABORTED) instead.
  const onAbort = (): void => void source.destroy?.();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (signal?.aborted) throw abortError(signal);
    for await (const entry of new TarReader(source)) {
      if (signal?.aborted) throw abortError(signal);
      await applyEntryInContext(run, entry, what);
      if (options.onEntries && (run.stats.entries & (ENTRIES_PER_CALLBACK - 1)) === 0) options.onEntries(run.stats.entries);
    }
    await run.xattrs.flush();
    return run.stats;
  } catch (err) {
    const error = signal?.aborted ? abortError(signal) : streamError(err, what);
    source.destroy?.();
    throw error;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * After the last layer: restores the deferred directory modes and mtimes, deepest first (so a
 * 0555 or 000 directory got its children before), then warns once for what was skipped.
 */
export async function finishApply(ctx: ApplyContext): Promise<void> {
  const state = asState(ctx);
  restoreDirectories(state);
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
    throw entryError(err, `${what}: ${quoteName(entry.header.name)}`);
  }
}

async function applyEntry(run: LayerRun, entry: Entry): Promise<void> {
  const { ctx, stats } = run;
  const header = entry.header;
  stats.entries++;
  checkNameLimits(ctx, header.name, header.linkname);
  const rel = cleanEntryName(header.name);
  // containerd ignores entries that resolve to the root: the rootfs directory is the caller's.
  if (rel === null) return drain(entry);
  checkDepth(ctx.limits.maxPathDepth, rel);
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
      throw new PullUnpackError('UNSUPPORTED_ENTRY', `unsupported tar entry type ${describeTypeflag(header.typeflag)}`);
  }
  markLayerPath(run, host);
  ctx.owners?.set(host, header.uid ?? 0, header.gid ?? 0);
}

/**
 * The entry-count and name-length limits (limits.ts), checked before an entry touches the disk.
 * Cheap on purpose: a name of at most limit/3 UTF-16 units cannot exceed `limit` UTF-8 bytes, so
 * only longer names are measured.
 */
function checkNameLimits(ctx: ApplyState, name: string, linkname: string | null | undefined): void {
  const { maxEntries, maxNameLength } = ctx.limits;
  if (++ctx.entriesApplied > maxEntries) throw limitError('tar entries, all layers together', maxEntries, '--max-entries');
  for (const [kind, text] of [
    ['entry name', name],
    ['link target', linkname],
  ] as const) {
    if (!text || text.length * 3 <= maxNameLength) continue;
    const bytes = nameToBytes(text).length;
    if (bytes > maxNameLength) throw limitError(`${kind} of ${bytes} bytes`, maxNameLength, '--max-name-length');
  }
}

/** The path-depth limit on a cleaned name; a name shorter than 2 * limit bytes cannot exceed it. */
function checkDepth(maxPathDepth: number, rel: string): void {
  if (rel.length < 2 * maxPathDepth) return;
  let components = 1;
  for (let i = rel.indexOf('/'); i >= 0; i = rel.indexOf('/', i + 1)) components++;
  if (components > maxPathDepth) throw limitError(`path of ${components} components`, maxPathDepth, '--max-path-depth');
}

/** A typeflag for a message: `'V' (0x56)`. */
function describeTypeflag(flag: number): string {
  const hex = `0x${flag.toString(16).padStart(2, '0')}`;
  return flag > 0x20 && flag < 0x7f ? `'${String.fromCharCode(flag)}' (${hex})` : hex;
}

/** An entry name for a message, its middle elided when it is very long (a hostile name may be KBs). */
function quoteName(name: string): string {
  return JSON.stringify(name.length <= 200 ? name : `${name.slice(0, 100)}…${name.slice(-60)}`);
}

// ---------------------------------------------------------------------------------------------
// Directory restore

function restoreDirectories(ctx: ApplyState): void {
  // Check every record first (parents before children): each component must still be a real
  // directory and the record's own directory the same inode, or the record is dropped.
  const valid = new Map<string, boolean>([[ctx.root, true]]);
  const todo: Array<{ host: string; meta: DeferredDir; mode: number }> = [];
  const records = [...ctx.deferredDirs].sort((a, b) => a[0].length - b[0].length);
  for (const [host, meta] of records) {
    if (!isRealDirChain(ctx.root, host.slice(0, host.lastIndexOf('/')), valid)) continue;
    const st = lstatOrNull(host);
    valid.set(host, st !== null && st.isDirectory());
    if (st !== null && st.isDirectory() && st.ino === meta.ino) todo.push({ host, meta, mode: st.mode & 0o7777 });
  }
  ctx.deferredDirs.clear();
  todo.sort((a, b) => depth(b.host) - depth(a.host));
  // Synchronous, like the per-entry calls: one thread-pool round trip per directory cost more
  // than the calls themselves.
  for (const { host, meta, mode } of todo) {
    const path = fsPath(host);
    if (mode !== meta.mode) fs.chmodSync(path, meta.mode);
    fs.utimesSync(path, fsTime(meta.atime), fsTime(meta.mtime));
  }
}

function isRealDirChain(root: string, host: string, memo: Map<string, boolean>): boolean {
  const known = memo.get(host);
  if (known !== undefined) return known;
  if (!host.startsWith(root === '/' ? '/' : `${root}/`)) return false;
  const ok = isRealDirChain(root, host.slice(0, host.lastIndexOf('/')) || '/', memo) && lstatOrNull(host)?.isDirectory() === true;
  memo.set(host, ok);
  return ok;
}

function depth(host: string): number {
  let n = 0;
  for (let i = host.indexOf('/'); i >= 0; i = host.indexOf('/', i + 1)) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Streams and errors

/** Reads and discards an entry body (the reader would skip it too; this keeps the order plain). */
async function drain(entry: Entry): Promise<void> {
  for await (const chunk of entry) void chunk;
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
  if (err instanceof TarUnsupportedError) return new PullUnpackError('UNSUPPORTED_ENTRY', `${what}: ${err.message}`, { cause: err });
  const message = err instanceof Error ? err.message : String(err);
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.syscall === 'string') return new PullUnpackError('DESTINATION_INVALID', `${what}: ${message}`, { cause: err });
  return new PullUnpackError('CORRUPT_LAYER', `${what}: invalid tar stream: ${message}`, { cause: err });
}
