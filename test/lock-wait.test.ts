/**
 * A pull that meets a cache lock it cannot check: held by another host sharing the cache, or
 * naming a pid of this host that now belongs to an unrelated process. The built CLI runs as a
 * child process without a TTY: it says on stderr what it waits for, and takes the lock over once
 * its holder has stopped refreshing it for `--lock-timeout`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { finished, spawnCli, unverifiedBlobs, type SpawnedCli } from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';

let work: string;
let image: string;
let layerHex: string;
let runs = 0;

beforeAll(async () => {
  const registry = testRegistry();
  work = await mkdtemp(join(tmpdir(), 'pu-lockwait-'));
  const repo = uniqueRepo('lockwait');
  const pushed = await pushImage(registry.url, repo, 'v1', {
    layers: [{ tar: await tarLayer([{ name: 'data.bin', content: randomBytes(64 * 1024) }]) }],
  });
  layerHex = pushed.layers[0]!.digest.slice('sha256:'.length);
  image = `${registry.host}/${repo}:v1`;
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** A cache whose layer lock is held by `holder` (pid and host), last refreshed `ageMs` ago. */
async function cacheWithLock(holder: string, ageMs: number): Promise<{ cache: string; lock: string }> {
  const cache = join(work, `cache-${++runs}`);
  await mkdir(join(cache, 'ingest'), { recursive: true });
  const lock = join(cache, 'ingest', `${layerHex}.lock`);
  await writeFile(lock, holder);
  const then = new Date(Date.now() - ageMs);
  await utimes(lock, then, then);
  return { cache, lock };
}

/**
 * The holder "dies" only once the pull has said that it waits for it: the lock's time is then
 * set two minutes back, as if its holder had stopped refreshing it that long ago.
 */
function stopRefreshingOnceWaitedFor(run: SpawnedCli, lock: string): void {
  let stale = false;
  run.child.stderr!.on('data', () => {
    if (!stale && /waiting for/.test(run.stderr())) {
      stale = true;
      const then = new Date(Date.now() - 120_000);
      void utimes(lock, then, then);
    }
  });
}

describe('--lock-timeout', () => {
  it('says on stderr (no TTY) what it waits for, then takes the lock of another host over once it is no longer refreshed', async () => {
    const { cache, lock } = await cacheWithLock('4242\nbuild-7.invalid\n', 0);
    const run = spawnCli(['--lock-timeout', '30s', '--cache-dir', cache, image, join(work, `dest-${runs}`)]);
    stopRefreshingOnceWaitedFor(run, lock);
    expect((await finished(run)).code).toBe(0);
    const lines = run.stderr().split('\n');
    expect(lines[0]).toMatch(
      new RegExp(
        `^warning: layer 1/1 of .*: waiting for process 4242 on host build-7\\.invalid, which holds its lock in ${cache} \\(refreshed \\d+ s ago; taken over if not refreshed for 30 s \\(--lock-timeout\\)\\)$`,
      ),
    );
    expect(lines[1]).toMatch(
      new RegExp(
        `^warning: layer 1/1 of .*: took over the lock in ${cache} from process 4242 on host build-7\\.invalid \\(not refreshed for 1[12]\\d s\\)$`,
      ),
    );
    expect((await unverifiedBlobs(cache)).bad).toEqual([]);
  });

  it('takes over at once, with a warning, a lock naming a live process of this host that stopped refreshing it (a reused pid)', async () => {
    // pid 1 always runs, but it is not a pull: the lock has not been refreshed for two minutes.
    const { cache } = await cacheWithLock(`1\n${hostname()}\n`, 120_000);
    const run = spawnCli(['--cache-dir', cache, image, join(work, `dest-${runs}`)]);
    expect((await finished(run)).code).toBe(0);
    expect(run.stderr()).toMatch(
      new RegExp(
        `^warning: layer 1/1 of .*: took over the lock in ${cache} from process 1 on host .* \\(this host\\) \\(not refreshed for 1[12]\\d s\\)\\n$`,
      ),
    );
  });

  it('cache prune says what it waits for too (the cache index lock of another host), and takes it over once stale', async () => {
    const cache = join(work, `cache-${++runs}`);
    await mkdir(cache);
    const lock = join(cache, 'index.json.lock');
    await writeFile(lock, '4242\nbuild-7.invalid\n');
    const run = spawnCli(['cache', 'prune', '--all', '--cache-dir', cache]);
    stopRefreshingOnceWaitedFor(run, lock);
    expect((await finished(run)).code).toBe(0);
    expect(run.stderr().split('\n')).toEqual([
      expect.stringMatching(/^warning: cache prune: waiting for process 4242 on host build-7\.invalid, which holds its lock in /),
      expect.stringMatching(/^warning: cache prune: took over the lock in .* from process 4242 on host build-7\.invalid/),
      '',
    ]);
  });

  it('refuses a timeout shorter than the 10 s live holders need (usage error, exit 2)', async () => {
    const run = spawnCli(['--lock-timeout', '5s', '--cache-dir', join(work, 'unused-cache'), image, join(work, 'unused-dest')]);
    expect((await finished(run)).code).toBe(2);
    expect(run.stderr()).toMatch(/^pull-unpack: the lock timeout must be at least 10 s/);
  });
});
