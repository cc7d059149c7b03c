/**
 * Cross-process lock files for the shared cache: `open(path, 'wx')` creates the lock or fails
 * if another holder has it. The file names its holder (pid and host), and the holder refreshes
 * its modification time every LOCK_REFRESH_MS for as long as it holds it.
 *
 * A waiter takes a lock over when its holder is a process of this host that no longer runs, or
 * when the lock has not been refreshed for `timeoutMs` (default DEFAULT_LOCK_TIMEOUT_MS): the
 * holder died on another host sharing the cache, or its pid was reused by an unrelated process,
 * or it hangs. A live holder on any host keeps its lock for as long as it runs. Waiting is
 * reported once through `onWait`, naming the holder, so a wait is never silent.
 */
import type { Stats } from 'node:fs';
import { lstat, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { abortError, PullUnpackError } from '../errors.js';
import { NotRegularFileError, openRegularFile } from './regular-file.js';

const POLL_MS = 50;
const MAX_POLL_MS = 500;
/** How often a holder refreshes its lock's modification time. */
const LOCK_REFRESH_MS = 5_000;
/** A lock not refreshed for this long is taken over (`--lock-timeout`). */
export const DEFAULT_LOCK_TIMEOUT_MS = 60_000;
/** Shorter timeouts would take locks from live holders between two refreshes. */
const MIN_LOCK_TIMEOUT_MS = 2 * LOCK_REFRESH_MS;
/**
 * A lock file is written right after it is created; one still empty after this long belongs to
 * a holder that died in between. So does a takeover guard this old (it is held for a few ms).
 */
const ABANDONED_MS = 10_000;
/** Lock files hold a pid and a host name. */
const MAX_LOCK_BYTES = 4096;

/** Who holds a busy lock, as far as its file tells. */
export interface LockHolder {
  /** e.g. 'process 1234 on host build-7', or what the file is when it names nobody. */
  description: string;
  /** Milliseconds since the holder last refreshed the lock. */
  ageMs: number;
}

export interface LockOptions {
  signal?: AbortSignal | undefined;
  /** Called once when the lock is busy and the caller starts waiting. */
  onWait?: ((holder: LockHolder) => void) | undefined;
  /** Called when a lock whose holder died or stopped refreshing it is taken over. */
  onTakeover?: ((holder: LockHolder) => void) | undefined;
  /** Take over a lock not refreshed for this long (default DEFAULT_LOCK_TIMEOUT_MS). */
  timeoutMs?: number | undefined;
  /** How often this holder refreshes the lock (default LOCK_REFRESH_MS; tests shorten it). */
  refreshMs?: number | undefined;
}

/** USAGE unless `timeoutMs` is a lock timeout that live holders can honour. */
export function checkLockTimeout(timeoutMs: number): number {
  if (!Number.isFinite(timeoutMs) || timeoutMs < MIN_LOCK_TIMEOUT_MS) {
    throw new PullUnpackError('USAGE', `the lock timeout must be at least ${MIN_LOCK_TIMEOUT_MS / 1000} s (got ${timeoutMs} ms)`, {
      hint: `holders refresh their locks every ${LOCK_REFRESH_MS / 1000} s; a shorter timeout would take locks from live pulls`,
    });
  }
  return timeoutMs;
}

/** Runs `fn` holding the lock file at `path`; the lock is released however `fn` ends. */
export async function withFileLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  return holding(path, await acquire(path, options), fn, options.refreshMs);
}

/**
 * Runs `fn` holding the lock file at `path` if it can be had without waiting (a stale lock is
 * taken over); resolves to `{locked: false}` without running `fn` when a live holder has it.
 */
export async function tryFileLock<T>(
  path: string,
  fn: () => Promise<T>,
  options: LockOptions = {},
): Promise<{ locked: true; value: T } | { locked: false }> {
  const handle = await tryAcquire(path, options);
  if (handle === undefined) return { locked: false };
  return { locked: true, value: await holding(path, handle, fn, options.refreshMs) };
}

/** Runs `fn` while refreshing the lock, then removes the lock file if it is still this holder's. */
async function holding<T>(path: string, handle: FileHandle, fn: () => Promise<T>, refreshMs = LOCK_REFRESH_MS): Promise<T> {
  // Refreshing through the open handle touches this holder's file only, never a successor's.
  const refresh = setInterval(() => {
    const now = new Date();
    handle.utimes(now, now).catch(() => undefined);
  }, refreshMs);
  refresh.unref();
  try {
    return await fn();
  } finally {
    clearInterval(refresh);
    // A holder that stopped refreshing (stopped, suspended) may have lost the lock to another:
    // remove the file only if it is still the one this holder created.
    const [mine, now] = await Promise.all([handle.stat(), lstat(path).catch(() => undefined)]);
    if (now !== undefined && sameFile(mine, now)) await rm(path, { force: true });
    await handle.close();
  }
}

/** Creates the lock, taking over a stale one; undefined when a live holder has it. */
async function tryAcquire(path: string, options: LockOptions, seen?: (holder: LockHolder) => void): Promise<FileHandle | undefined> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
  for (;;) {
    const handle = await tryCreate(path);
    if (handle) return handle;
    const holder = await readHolder(path);
    // Released between our attempt and the read: try again at once.
    if (holder === undefined) continue;
    seen?.(describe(holder));
    const stale = await staleness(holder, timeoutMs);
    if (stale === undefined || !(await breakStale(path, timeoutMs))) return undefined;
    // A lock left by a process of this host that has exited is tidied silently (a killed pull);
    // taking one over on the timeout (another host, a reused pid) or a planted file is said.
    if (stale !== 'holder-exited') options.onTakeover?.(describe(holder));
  }
}

async function acquire(path: string, options: LockOptions): Promise<FileHandle> {
  let waiting = false;
  let last: LockHolder | undefined;
  for (let delay = POLL_MS; ; delay = Math.min(delay * 2, MAX_POLL_MS)) {
    if (options.signal?.aborted) throw abortError(options.signal);
    const handle = await tryAcquire(path, options, (holder) => (last = holder));
    if (handle) return handle;
    if (!waiting && last) options.onWait?.(last);
    waiting = true;
    try {
      await sleep(delay, undefined, { signal: options.signal });
    } catch {
      throw abortError(options.signal);
    }
  }
}

/** Creates the lock naming this process and keeps it open; undefined when someone else holds it. */
async function tryCreate(path: string): Promise<FileHandle | undefined> {
  let handle;
  try {
    handle = await open(path, 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw err;
  }
  try {
    await handle.write(ownerMark(), 0);
  } catch (err) {
    await handle.close();
    await rm(path, { force: true });
    throw err;
  }
  return handle;
}

interface Holder {
  text: string;
  mtimeMs: number;
  /** Set when the lock path is not a regular file (a FIFO planted there names nobody). */
  kind?: string;
}

/** The lock's content and age, both from the same file (it may be replaced meanwhile). */
async function readHolder(path: string): Promise<Holder | undefined> {
  let handle;
  try {
    handle = await openRegularFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if (!(err instanceof NotRegularFileError)) throw err;
    const info = await lstat(path).catch(() => undefined);
    return info && { text: '', mtimeMs: info.mtimeMs, kind: err.kind };
  }
  try {
    const info = await handle.stat();
    const buffer = Buffer.alloc(Math.min(info.size, MAX_LOCK_BYTES));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return { text: buffer.subarray(0, bytesRead).toString('utf8'), mtimeMs: info.mtimeMs };
  } finally {
    await handle.close();
  }
}

function describe(holder: Holder): LockHolder {
  const ageMs = Math.max(0, Date.now() - holder.mtimeMs);
  const [pid, host] = holder.text.split('\n');
  if (holder.kind) return { description: `nobody (the lock is ${holder.kind})`, ageMs };
  if (!pid || !host) return { description: 'a process that has not written its name yet', ageMs };
  return { description: `process ${pid} on host ${host}${host === hostname() ? ' (this host)' : ''}`, ageMs };
}

/**
 * Removes the lock at `path` if it is (still) stale; false when another waiter is doing so.
 * Waiters that all saw the same dead holder must not each delete "the" lock: the first one's
 * delete-then-create would be undone by a slower one deleting the lock just created. So the
 * takeover happens under a guard file, and the lock is re-read under it.
 */
async function breakStale(path: string, timeoutMs: number): Promise<boolean> {
  const guard = `${path}.break`;
  const handle = await tryCreate(guard);
  if (!handle) {
    const info = await lstat(guard).catch(() => undefined);
    if (info && Date.now() - info.mtimeMs > ABANDONED_MS) await rm(guard, { force: true });
    return false;
  }
  try {
    const holder = await readHolder(path);
    if (holder !== undefined && (await staleness(holder, timeoutMs)) !== undefined) await rm(path, { force: true });
    return true;
  } finally {
    await handle.close();
    await rm(guard, { force: true });
  }
}

/**
 * Why the lock's holder is gone, or undefined while it holds the lock: a process of this host that
 * no longer exists, a lock never written (or not a regular file), or a lock not refreshed for
 * `timeoutMs` (whoever it names).
 */
async function staleness(holder: Holder, timeoutMs: number): Promise<'not-a-lock' | 'timed-out' | 'holder-exited' | undefined> {
  // A FIFO or directory where the lock should be was never written by a holder.
  if (holder.kind !== undefined) return 'not-a-lock';
  const age = Date.now() - holder.mtimeMs;
  if (age > timeoutMs) return 'timed-out';
  // A lock being written right now may still be empty: it is held unless it stayed empty.
  if (holder.text === '') return age > ABANDONED_MS ? 'not-a-lock' : undefined;
  return (await ownerIsGone(holder.text)) ? 'holder-exited' : undefined;
}

function sameFile(a: Stats, b: Stats): boolean {
  return a.ino === b.ino && a.dev === b.dev;
}

/** What a lock or a staging directory records of its owner: pid and host name. */
export function ownerMark(): string {
  return `${process.pid}\n${hostname()}\n`;
}

/** True when `mark` (from ownerMark) names a process of this host that no longer exists. */
export async function ownerIsGone(mark: string): Promise<boolean> {
  const [pidText, host] = mark.split('\n');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0 || host !== hostname()) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  return isZombie(pid);
}

/** A killed process nobody reaped (e.g. under a PID 1 that does not reap) still answers kill(0). */
async function isZombie(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}
