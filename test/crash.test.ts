/**
 * Crash safety of `pull-unpack --json --cache-dir C IMAGE DIR` run as a real process against
 * the test registry, with blob bodies trickled through a proxy so that kills land in the middle
 * of downloads, applies and commits. SIGKILL at random points (seeded): DIR is as before, absent,
 * or the complete image, never anything in between; every blob in C verifies; the next pull
 * succeeds with the full tree and sweeps the killed run's staging directory. Ctrl-C: exit 130,
 * staging removed, DIR untouched.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import {
  seededRandom,
  spawnCli,
  stagingDirs,
  startTrickleProxy,
  unverifiedBlobs,
  type EventLine,
  type TrickleProxy,
} from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import { diffTrees, snapshotTree, type TreeEntry } from './helpers/tree.js';

const SEED = 0xc0ffee;
const RUNS = 8;
const MiB = 1024 * 1024;

let work: string;
let proxy: TrickleProxy;
let image: string;
let bigDigest: string;
let reference: Map<string, TreeEntry>;
/** Events and milliseconds of a whole pull through the proxy: the range kills are drawn from. */
let calibration: { events: number; ms: number };
const observations: string[] = [];

beforeAll(async () => {
  const registry = testRegistry();
  work = await mkdtemp(join(tmpdir(), 'pu-crash-'));
  const repo = uniqueRepo('crash');
  const pushed = await pushImage(registry.url, repo, 'v1', {
    layers: [
      {
        tar: await tarLayer([
          { name: 'etc/', type: 'directory' },
          { name: 'etc/os-release', content: 'ID=crash\n' },
          { name: 'etc/old.conf', content: 'old\n' },
          { name: 'usr/', type: 'directory' },
          { name: 'usr/bin/', type: 'directory' },
          { name: 'usr/bin/tool', mode: 0o755, content: '#!/bin/sh\necho tool\n' },
          { name: 'usr/bin/alias', type: 'symlink', linkname: 'tool' },
          { name: 'usr/bin/tool2', type: 'link', linkname: 'usr/bin/tool' },
          { name: 'var/', type: 'directory' },
          { name: 'var/cache/', type: 'directory' },
          { name: 'var/cache/stale', content: 'stale\n' },
        ]),
      },
      { tar: await tarLayer([{ name: 'big.bin', content: randomBytes(8 * MiB) }]) },
      { tar: await tarLayer([{ name: 'medium.bin', content: randomBytes(MiB) }, { name: 'etc/.wh.old.conf' }]), compression: 'none' },
      {
        tar: await tarLayer([
          { name: 'etc/motd', content: 'welcome\n' },
          { name: 'var/cache/', type: 'directory' },
          { name: 'var/cache/.wh..wh..opq' },
          { name: 'var/cache/new', content: 'new\n' },
        ]),
        compression: 'zstd',
      },
    ],
  });
  bigDigest = pushed.layers[1]!.digest;
  // 64 KiB every 8 ms: the 8 MiB layer takes over a second, so kills land mid-download.
  proxy = await startTrickleProxy(registry.url, { chunkBytes: 64 * 1024, intervalMs: 8 });
  image = `${proxy.host}/${repo}:v1`;

  const dir = join(work, 'reference');
  const started = Date.now();
  const run = spawnCli(['--json', '--cache-dir', join(work, 'reference-cache'), image, dir]);
  const exit = await run.exited;
  expect({ exit, stderr: run.stderr() }).toEqual({ exit: { code: 0, signal: null }, stderr: '' });
  calibration = { events: run.events.length, ms: Date.now() - started };
  reference = await snapshotTree(dir);
  expect([...reference.keys()].sort()).toEqual(
    [
      '.',
      'big.bin',
      'etc',
      'etc/motd',
      'etc/os-release',
      'medium.bin',
      'usr',
      'usr/bin',
      'usr/bin/alias',
      'usr/bin/tool',
      'usr/bin/tool2',
      'var',
      'var/cache',
      'var/cache/new',
    ].sort(),
  );
});

afterAll(async () => {
  console.info(`crash runs (calibration: ${JSON.stringify(calibration)}):\n  ${observations.join('\n  ')}`);
  await proxy?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Fills DIR with content a --force pull must replace atomically, or leave exactly as it was. */
async function populate(dir: string): Promise<void> {
  await mkdir(join(dir, 'home', 'user'), { recursive: true });
  await writeFile(join(dir, 'home', 'user', 'notes.txt'), 'precious\n');
  await symlink('home/user', join(dir, 'me'));
}

type DirState = 'absent' | 'as before' | 'complete' | `partial: ${string}`;

/** What DIR is now: missing, unchanged, the complete image, or (a failure) something else. */
async function stateOf(dir: string, before: Map<string, TreeEntry> | undefined): Promise<DirState> {
  if (!(await readdir(join(dir, '..'))).includes('rootfs')) return 'absent';
  const now = await snapshotTree(dir);
  if (before && diffTrees(before, now).length === 0) return 'as before';
  const diff = diffTrees(reference, now, { ignoreDirMtime: true });
  return diff.length === 0 ? 'complete' : `partial: ${diff.slice(0, 5).join('; ')}`;
}

/** A staging directory summarized: its top-level entries and what its rootfs holds so far. */
async function describeStaging(path: string): Promise<string> {
  const top = (await readdir(path)).sort();
  const out = top.includes('out') ? ` out/ has ${(await readdir(join(path, 'out'))).length} entries` : '';
  return `[${top.join(',')}]${out}`;
}

/**
 * Where run `strategy` kills the pull: after a random event, after a random time, after the
 * k-th layer was applied (so during the next apply, or finishing and committing after the
 * last), or after the k-th blob was verified.
 */
function killPoint(
  strategy: number,
  random: () => number,
): { what: string; when?: (e: EventLine, all: EventLine[]) => boolean; afterMs?: number } {
  const count = (all: EventLine[], type: string): number => all.filter((e) => e.type === type).length;
  switch (strategy) {
    case 0: {
      const n = 1 + Math.floor(random() * calibration.events);
      return { what: `after event ${n}`, when: (_e, all) => all.length === n };
    }
    case 1: {
      const ms = Math.floor(random() * calibration.ms);
      return { what: `after ${ms} ms`, afterMs: ms };
    }
    case 2: {
      const k = 1 + Math.floor(random() * 4);
      return { what: `after layer-applied #${k}`, when: (e, all) => e.type === 'layer-applied' && count(all, 'layer-applied') === k };
    }
    default: {
      const k = 1 + Math.floor(random() * 4);
      return { what: `after blob-verified #${k}`, when: (e, all) => e.type === 'blob-verified' && count(all, 'blob-verified') === k };
    }
  }
}

describe('SIGKILL at random points', () => {
  for (let i = 0; i < RUNS; i++) {
    it(`run ${i + 1}/${RUNS} (seed ${SEED + i}): DIR is as before, absent or complete; the cache verifies; the next pull succeeds`, async () => {
      const random = seededRandom(SEED + i);
      const prepopulated = i % 2 === 0;
      const parent = join(work, `run-${i}`);
      const dir = join(parent, 'rootfs');
      const cache = join(work, `cache-${i}`);
      await mkdir(parent);
      if (prepopulated) await populate(dir);
      const before = prepopulated ? await snapshotTree(dir) : undefined;
      const force = prepopulated ? ['--force'] : [];
      const kill = killPoint(Math.floor(i / 2) % 4, random);
      const killed = spawnCli(['--json', '--cache-dir', cache, image, dir, ...force], kill.when ? { killWhen: kill.when } : {});
      const timer = kill.afterMs === undefined ? undefined : setTimeout(() => killed.child.kill('SIGKILL'), kill.afterMs);
      const exit = await killed.exited;
      clearTimeout(timer);

      const state = await stateOf(dir, before);
      const staging = await stagingDirs(dir);
      const stagingText = await Promise.all(staging.map(describeStaging));
      observations.push(
        `run ${i + 1}: ${prepopulated ? 'populated DIR, --force' : 'no DIR'}; SIGKILL ${kill.what} (${killed.events.length} events seen, last ${killed.events.at(-1)?.type ?? 'none'}); ` +
          `exit ${exit.signal ?? exit.code}; DIR ${state}; staging left: ${staging.length === 0 ? 'none' : stagingText.join(' ')}`,
      );
      // All or nothing: never a partly written DIR, and never the staging layout in its place.
      expect(['absent', 'as before', 'complete']).toContain(state);
      if (!prepopulated) expect(state).not.toBe('as before');
      if (state === 'complete') expect(exit.signal === 'SIGKILL' || exit.code === 0).toBe(true);
      if (prepopulated && state === 'absent') {
        // Killed between moving DIR aside and renaming the new tree in: the old tree must still be whole.
        const previous = staging.map((s) => join(s, 'previous'));
        const kept = await Promise.all(
          previous.map(
            async (p) =>
              (await readdir(p).then(
                () => true,
                () => false,
              )) && diffTrees(before!, await snapshotTree(p)).length === 0,
          ),
        );
        expect(kept).toContain(true);
      }
      expect(exit.code === 0 ? staging : []).toEqual([]);
      const blobs = await unverifiedBlobs(cache);
      expect(blobs.bad).toEqual([]);

      // Killed right after mkdtemp, a staging directory has no owner file yet: nobody can tell it is stale.
      const unowned = staging.filter((s) => !existsSync(join(s, 'owner')));
      const next = spawnCli(['--json', '--cache-dir', cache, image, dir, '--force']);
      const nextExit = await next.exited;
      expect({ exit: nextExit, stderr: next.stderr() }).toEqual({ exit: { code: 0, signal: null }, stderr: '' });
      expect(next.events.at(-1)?.type).toBe('done');
      expect(diffTrees(reference, await snapshotTree(dir), { ignoreDirMtime: true })).toEqual([]);
      // The next pull removed its own staging directory and swept the killed run's, saying so;
      // only one killed before it wrote its owner file (right after mkdtemp) can stay.
      expect(await stagingDirs(dir)).toEqual(unowned);
      const swept = next.events.filter((e) => e.type === 'warning' && /left by an interrupted pull/.test(String(e['message'])));
      expect(swept.map((e) => String(e['message']))).toEqual(
        staging.filter((s) => !unowned.includes(s)).map((s) => expect.stringContaining(s)),
      );
      const after = await unverifiedBlobs(cache);
      expect(after.bad).toEqual([]);
      expect(after.count).toBe(6);
    });
  }
});

describe('Ctrl-C', () => {
  it('SIGINT during a download: exit 130, staging removed, DIR untouched, cache consistent; the next pull resumes', async () => {
    const parent = join(work, 'sigint');
    const dir = join(parent, 'rootfs');
    const cache = join(work, 'cache-sigint');
    await mkdir(parent);
    await populate(dir);
    const before = await snapshotTree(dir);
    const run = spawnCli(['--json', '--cache-dir', cache, image, dir, '--force']);
    await run.until((e) => e.type === 'blob-progress' && e['digest'] === bigDigest && (e['bytes'] as number) < (e['size'] as number));
    const sentAt = Date.now();
    run.child.kill('SIGINT');
    const exit = await run.exited;
    expect(Date.now() - sentAt).toBeLessThan(10_000);
    expect(exit).toEqual({ code: 130, signal: null });
    expect(run.stderr()).toMatch(/abort/i);
    expect(run.events.some((e) => e.type === 'done')).toBe(false);
    expect(await stagingDirs(dir)).toEqual([]);
    expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
    expect((await unverifiedBlobs(cache)).bad).toEqual([]);
    // The interrupted blob is not in blobs/, its partial download is kept, and no lock is left.
    const ingest = await readdir(join(cache, 'ingest'));
    const bigHex = bigDigest.slice('sha256:'.length);
    expect(await readdir(join(cache, 'blobs', 'sha256'))).not.toContain(bigHex);
    expect(ingest.filter((n) => n.endsWith('.lock'))).toEqual([]);
    expect(ingest).toContain(`${bigHex}.partial`);

    const requestsBefore = proxy.blobRequests.length;
    const next = spawnCli(['--json', '--cache-dir', cache, image, dir, '--force']);
    expect((await next.exited).code).toBe(0);
    expect(diffTrees(reference, await snapshotTree(dir), { ignoreDirMtime: true })).toEqual([]);
    expect(proxy.blobRequests.slice(requestsBefore).filter((r) => r.startsWith(`GET ${bigDigest}`))).toEqual([
      expect.stringMatching(/ bytes=[1-9]\d*-$/),
    ]);
  });
});
