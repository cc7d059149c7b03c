/**
 * Cross-process lock files for the shared cache: `open(path, 'wx')` creates the lock or fails
 * if another holder has it. A lock whose holder died (SIGKILL, power loss) on this host is
 * taken over; one held by a live process is waited for.
 */
import { open, readFile, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { abortError } from '../errors.js';

const POLL_MS = 50;
const MAX_POLL_MS = 500;
/**
 * A lock file is written right after it is created; one still empty after this long belongs to
 * a holder that died in between. So does a takeover guard this old (it is held for a few ms).
 */
const ABANDONED_MS = 10_000;

export interface LockOptions {
  signal?: AbortSignal | undefined;
  /** Called once when the lock is busy and the caller starts waiting. */
  onWait?: (() => void) | undefined;
}

/** Runs `fn` holding the lock file at `path`; the lock is released however `fn` ends. */
export async function withFileLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  await acquire(path, options);
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}

/**
 * Runs `fn` holding the lock file at `path` if it can be had without waiting (a stale lock is
 * taken over); resolves to `{locked: false}` without running `fn` when a live holder has it.
 */
export async function tryFileLock<T>(path: string, fn: () => Promise<T>): Promise<{ locked: true; value: T } | { locked: false }> {
  if (!(await tryAcquire(path))) return { locked: false };
  try {
    return { locked: true, value: await fn() };
  } finally {
    await rm(path, { force: true });
  }
}

/** Creates the lock, taking over a stale one; false when a live holder has it. */
async function tryAcquire(path: string): Promise<boolean> {
  for (;;) {
    if (await tryCreate(path)) return true;
    const holder = await readHolder(path);
    // Released between our attempt and the read: try again at once.
    if (holder === undefined) continue;
    if (!(await isStale(holder)) || !(await breakStale(path))) return false;
  }
}

async function acquire(path: string, options: LockOptions): Promise<void> {
  let waited = false;
  for (let delay = POLL_MS; ; delay = Math.min(delay * 2, MAX_POLL_MS)) {
    if (options.signal?.aborted) throw abortError(options.signal);
    if (await tryAcquire(path)) return;
    if (!waited) options.onWait?.();
    waited = true;
    try {
      await sleep(delay, undefined, { signal: options.signal });
    } catch {
      throw abortError(options.signal);
    }
  }
}

/** Creates the lock naming this process; false when someone else holds it. */
async function tryCreate(path: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(path, 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await handle.writeFile(ownerMark());
  } finally {
    await handle.close();
  }
  return true;
}

interface Holder {
  text: string;
  mtimeMs: number;
}

/** The lock's content and age, both from the same file (it may be replaced meanwhile). */
async function readHolder(path: string): Promise<Holder | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const info = await handle.stat();
    return { text: await handle.readFile('utf8'), mtimeMs: info.mtimeMs };
  } finally {
    await handle.close();
  }
}

/**
 * Removes the lock at `path` if it is (still) stale; false when another waiter is doing so.
 * Waiters that all saw the same dead holder must not each delete "the" lock: the first one's
 * delete-then-create would be undone by a slower one deleting the lock just created. So the
 * takeover happens under a guard file, and the lock is re-read under it.
 */
async function breakStale(path: string): Promise<boolean> {
  const guard = `${path}.break`;
  if (!(await tryCreate(guard))) {
    const info = await stat(guard).catch(() => undefined);
    if (info && Date.now() - info.mtimeMs > ABANDONED_MS) await rm(guard, { force: true });
    return false;
  }
  try {
    const holder = await readHolder(path);
    if (holder !== undefined && (await isStale(holder))) await rm(path, { force: true });
    return true;
  } finally {
    await rm(guard, { force: true });
  }
}

/** True when the lock names a process of this host that no longer exists, or was never written. */
async function isStale(holder: Holder): Promise<boolean> {
  // A lock being written right now may still be empty: it is held unless it stayed empty.
  if (holder.text === '') return Date.now() - holder.mtimeMs > ABANDONED_MS;
  return ownerIsGone(holder.text);
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
