/**
 * Cross-process lock files for the shared cache: `open(path, 'wx')` creates the lock or fails
 * if another holder has it. A lock whose holder died (SIGKILL, power loss) on this host is
 * taken over; one held by a live process is waited for.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { abortError } from './errors.js';

const POLL_MS = 50;
const MAX_POLL_MS = 500;

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

async function acquire(path: string, options: LockOptions): Promise<void> {
  let waited = false;
  for (let delay = POLL_MS; ; delay = Math.min(delay * 2, MAX_POLL_MS)) {
    if (options.signal?.aborted) throw abortError(options.signal);
    try {
      const handle = await open(path, 'wx', 0o644);
      await handle.writeFile(`${process.pid}\n${hostname()}\n`);
      await handle.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await holderIsGone(path)) {
      await rm(path, { force: true });
      continue;
    }
    if (!waited) options.onWait?.();
    waited = true;
    try {
      await sleep(delay, undefined, { signal: options.signal });
    } catch {
      throw abortError(options.signal);
    }
  }
}

/** True when the lock names a process of this host that no longer exists. */
async function holderIsGone(path: string): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
  const [pidText, host] = text.split('\n');
  const pid = Number(pidText);
  // A lock being written right now may still be empty: treat it as held.
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
