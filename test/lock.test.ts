/**
 * withFileLock: mutual exclusion inside one process and across processes, takeover of locks
 * left by dead holders (including by several waiters at once), and locks it must not break.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { watch } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPullUnpackError } from '../src/errors.js';
import { tryFileLock, withFileLock } from '../src/store/lock.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lock-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A pid that existed a moment ago and has exited and been reaped. */
function deadPid(): number {
  const child = spawnSync('true');
  if (!child.pid) throw new Error('could not spawn true');
  return child.pid;
}

/** A live process (not this one) that sleeps until killed. */
async function liveProcess(): Promise<ChildProcess> {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  await once(child, 'spawn');
  return child;
}

/**
 * Runs `n` withFileLock calls on `lock` at once, each holding it across a few awaits, and
 * returns the most holders seen inside at the same time (1 means mutual exclusion held) and
 * how many holders found their lock file gone or replaced while inside.
 */
async function contend(lock: string, n: number): Promise<{ maxInside: number; order: number[]; lost: number }> {
  let inside = 0;
  let lost = 0;
  let maxInside = 0;
  const order: number[] = [];
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      // Staggered starts, so that slower waiters read the lock while faster ones replace it.
      for (let k = 0; k < i; k++) await new Promise((r) => setImmediate(r));
      await withFileLock(lock, async () => {
        inside++;
        maxInside = Math.max(maxInside, inside);
        order.push(i);
        await sleep(5);
        // The lock file must still be ours while we hold it.
        const text = await readFile(lock, 'utf8').catch(() => '');
        if (text !== `${process.pid}\n${hostname()}\n`) lost++;
        await sleep(5);
        inside--;
      });
    }),
  );
  return { maxInside, order, lost };
}

describe('withFileLock', () => {
  it('lets one holder in at a time and removes the lock file afterwards', async () => {
    const lock = join(work, 'plain.lock');
    const { maxInside, order, lost } = await contend(lock, 6);
    expect(maxInside).toBe(1);
    expect(lost).toBe(0);
    expect(order.sort()).toEqual([0, 1, 2, 3, 4, 5]);
    await expect(stat(lock)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('writes the holder pid and host into the lock file while held', async () => {
    const lock = join(work, 'content.lock');
    const text = await withFileLock(lock, () => readFile(lock, 'utf8'));
    const [pid, host] = text.split('\n');
    expect(Number(pid)).toBe(process.pid);
    expect(host).toBe(hostname());
  });

  it('releases the lock when the function throws', async () => {
    const lock = join(work, 'throws.lock');
    await expect(withFileLock(lock, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(stat(lock)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await withFileLock(lock, async () => 'again')).toBe('again');
  });

  it('takes over a lock left by a dead process of this host', async () => {
    const lock = join(work, 'stale.lock');
    await writeFile(lock, `${deadPid()}\n${hostname()}\n`);
    let waited = false;
    const text = await withFileLock(lock, () => readFile(lock, 'utf8'), { onWait: () => (waited = true) });
    expect(Number(text.split('\n')[0])).toBe(process.pid);
    expect(waited).toBe(false);
  });

  it('lets exactly one of several waiters take over a stale lock at a time', async () => {
    // Each waiter sees the dead holder; breaking the stale lock must not also break the lock a
    // faster waiter has just taken in its place.
    for (let round = 0; round < 3; round++) {
      const lock = join(work, `stale-race-${round}.lock`);
      await writeFile(lock, `${deadPid()}\n${hostname()}\n`);
      const { maxInside, lost } = await contend(lock, 8);
      expect({ round, maxInside, lost }).toEqual({ round, maxInside: 1, lost: 0 });
    }
  });

  it('waits for a lock held by a live process and takes it once released', async () => {
    const lock = join(work, 'live.lock');
    const holder = await liveProcess();
    try {
      await writeFile(lock, `${holder.pid}\n${hostname()}\n`);
      let waits = 0;
      let acquired = false;
      let waiting!: () => void;
      const waited = new Promise<void>((resolve) => (waiting = resolve));
      const onWait = (): void => {
        waits++;
        waiting();
      };
      const pending = withFileLock(lock, async () => (acquired = true), { onWait });
      await waited;
      expect(acquired).toBe(false);
      expect(waits).toBe(1);
      expect(await readFile(lock, 'utf8')).toBe(`${holder.pid}\n${hostname()}\n`);
      await rm(lock);
      await pending;
      expect(acquired).toBe(true);
      expect(waits).toBe(1);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  it('does not break a lock that names another host, even with a dead-looking pid', async () => {
    const lock = join(work, 'other-host.lock');
    await writeFile(lock, `${deadPid()}\nsome-other-host.invalid\n`);
    // The lock is looked at, found held and waited for: give up then (every later look decides the same).
    const controller = new AbortController();
    const onWait = (): void => controller.abort();
    const err = await withFileLock(lock, async () => 'entered', { signal: controller.signal, onWait }).catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'ABORTED')).toBe(true);
    expect(await readFile(lock, 'utf8')).toContain('some-other-host.invalid');
  });

  it('treats a fresh empty lock file as held (its holder is still writing it)', async () => {
    const lock = join(work, 'empty-fresh.lock');
    await writeFile(lock, '');
    // The lock is looked at, found held and waited for: give up then (every later look decides the same).
    const controller = new AbortController();
    const onWait = (): void => controller.abort();
    const err = await withFileLock(lock, async () => 'entered', { signal: controller.signal, onWait }).catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'ABORTED')).toBe(true);
    await expect(stat(lock)).resolves.toBeDefined();
  });

  it('takes over an empty lock file that has stayed empty for long (its holder died creating it)', async () => {
    const lock = join(work, 'empty-old.lock');
    await writeFile(lock, '');
    const past = new Date(Date.now() - 60_000);
    await utimes(lock, past, past);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 5_000);
    try {
      expect(await withFileLock(lock, async () => 'entered', { signal: controller.signal })).toBe('entered');
    } finally {
      clearTimeout(timer);
    }
  });

  it('stops waiting with ABORTED when the signal fires, leaving the holder its lock', async () => {
    const lock = join(work, 'abort.lock');
    const holder = await liveProcess();
    try {
      await writeFile(lock, `${holder.pid}\n${hostname()}\n`);
      const controller = new AbortController();
      let waiting!: () => void;
      const waited = new Promise<void>((resolve) => (waiting = resolve));
      const pending = withFileLock(lock, async () => 'entered', { signal: controller.signal, onWait: () => waiting() });
      await waited;
      controller.abort();
      await expect(pending).rejects.toMatchObject({ code: 'ABORTED' });
      expect(await readFile(lock, 'utf8')).toBe(`${holder.pid}\n${hostname()}\n`);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('stale locks on other hosts and reused pids', () => {
  const past = (ms: number): Date => new Date(Date.now() - ms);

  it('says who holds a busy lock, once: the pid, the host, and how long ago the lock was refreshed', async () => {
    const lock = join(work, 'who.lock');
    await writeFile(lock, `4242\nbuild-7.invalid\n`);
    await utimes(lock, past(3_000), past(3_000));
    const holders: Array<{ description: string; ageMs: number }> = [];
    const controller = new AbortController();
    const pending = withFileLock(lock, async () => 'entered', {
      signal: controller.signal,
      onWait: (holder) => {
        holders.push(holder);
        controller.abort();
      },
    });
    await expect(pending).rejects.toMatchObject({ code: 'ABORTED' });
    expect(holders).toEqual([{ description: 'process 4242 on host build-7.invalid', ageMs: expect.any(Number) as number }]);
    expect(holders[0]!.ageMs).toBeGreaterThanOrEqual(3_000);
  });

  it('takes over a lock of another host that has not been refreshed for the timeout, saying so', async () => {
    const lock = join(work, 'other-host-stale.lock');
    await writeFile(lock, `4242\nbuild-7.invalid\n`);
    await utimes(lock, past(120_000), past(120_000));
    const takeovers: string[] = [];
    const text = await withFileLock(lock, () => readFile(lock, 'utf8'), { onTakeover: (h) => takeovers.push(h.description) });
    expect(text).toBe(`${process.pid}\n${hostname()}\n`);
    expect(takeovers).toEqual(['process 4242 on host build-7.invalid']);
  });

  it('takes over a lock naming a live process of this host (a reused pid) once it has not been refreshed for the timeout', async () => {
    const lock = join(work, 'reused-pid.lock');
    const unrelated = await liveProcess();
    try {
      await writeFile(lock, `${unrelated.pid}\n${hostname()}\n`);
      await utimes(lock, past(5_000), past(5_000));
      const takeovers: string[] = [];
      expect(await withFileLock(lock, async () => 'entered', { timeoutMs: 4_000, onTakeover: (h) => takeovers.push(h.description) })).toBe(
        'entered',
      );
      expect(takeovers).toEqual([`process ${unrelated.pid} on host ${hostname()} (this host)`]);
    } finally {
      unrelated.kill('SIGKILL');
    }
  });

  it('never takes over from a holder that keeps refreshing its lock, however long it holds it', async () => {
    const lock = join(work, 'refreshed.lock');
    const refreshes = watch(work);
    let changes = 0;
    let enoughRefreshes!: () => void;
    const refreshedLongEnough = new Promise<void>((resolve) => (enoughRefreshes = resolve));
    refreshes.on('change', (_type, name) => {
      // Ten refreshes 50 ms apart: the holder keeps the lock for twice the waiter's timeout.
      if (name === 'refreshed.lock' && ++changes === 10) enoughRefreshes();
    });
    const order: string[] = [];
    let waiting!: () => void;
    const waiterWaits = new Promise<void>((resolve) => (waiting = resolve));
    const holder = withFileLock(
      lock,
      async () => {
        const waiter = withFileLock(lock, async () => void order.push('waiter'), { timeoutMs: 250, onWait: () => waiting() });
        await waiterWaits;
        await refreshedLongEnough;
        order.push('holder done');
        // Wrapped: returning the promise itself would make the holder wait for its waiter.
        return { waiter };
      },
      { refreshMs: 50 },
    );
    await (
      await holder
    ).waiter;
    refreshes.close();
    expect(order).toEqual(['holder done', 'waiter']);
  });

  it("a holder that lost its lock to a takeover does not remove its successor's lock", async () => {
    const lock = join(work, 'successor.lock');
    await withFileLock(lock, async () => {
      // What a waiter does when it takes over: the old file goes, its own takes its place.
      await rm(lock);
      await writeFile(lock, `4242\nbuild-7.invalid\n`);
    });
    expect(await readFile(lock, 'utf8')).toBe(`4242\nbuild-7.invalid\n`);
  });
});

describe('tryFileLock', () => {
  it('runs the function when the lock is free, or held by a dead process, and releases it', async () => {
    const lock = join(work, 'try-free.lock');
    expect(await tryFileLock(lock, async () => readFile(lock, 'utf8'))).toEqual({ locked: true, value: `${process.pid}\n${hostname()}\n` });
    await expect(stat(lock)).rejects.toMatchObject({ code: 'ENOENT' });
    await writeFile(lock, `${deadPid()}\n${hostname()}\n`);
    expect(await tryFileLock(lock, async () => 'taken over')).toEqual({ locked: true, value: 'taken over' });
    await expect(stat(lock)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('does not wait for, or run the function under, a lock a live process holds', async () => {
    const lock = join(work, 'try-busy.lock');
    const holder = await liveProcess();
    try {
      await writeFile(lock, `${holder.pid}\n${hostname()}\n`);
      let ran = false;
      const started = Date.now();
      expect(await tryFileLock(lock, async () => (ran = true))).toEqual({ locked: false });
      expect(ran).toBe(false);
      expect(Date.now() - started).toBeLessThan(1_000);
      expect(await readFile(lock, 'utf8')).toBe(`${holder.pid}\n${hostname()}\n`);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});
