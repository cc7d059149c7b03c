/**
 * FIFOs planted where pull-unpack expects a regular file. A plain open() of a FIFO waits for a
 * writer forever (and Ctrl-C cannot end a read stuck in the thread pool), so every such file is
 * opened without blocking and checked before it is read: a local layout's files are refused, a
 * staging directory with such an owner file is left alone, and the cache's own files (a partial
 * download, a lock, a cached manifest, index.json) are replaced. The built CLI runs as a child
 * process; a hang fails the test by its timeout.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cp, lstat, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { finished, spawnCli, stagingDirs, unverifiedBlobs } from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';

let work: string;
let image: string;
let layout: string;
let manifestDigest: string;
let layerDigest: string;

const mkfifo = (path: string): void => void execFileSync('mkfifo', [path]);
const hexOf = (digest: string): string => digest.slice('sha256:'.length);

beforeAll(async () => {
  const registry = testRegistry();
  work = await mkdtemp(join(tmpdir(), 'pu-fifo-'));
  const repo = uniqueRepo('fifo');
  const pushed = await pushImage(registry.url, repo, 'v1', {
    layers: [
      {
        tar: await tarLayer([
          { name: 'etc/', type: 'directory' },
          { name: 'etc/hostname', content: randomBytes(8).toString('hex') },
        ]),
      },
    ],
  });
  layerDigest = pushed.layers[0]!.digest;
  image = `${registry.host}/${repo}:v1`;
  layout = join(work, 'layout');
  const run = spawnCli(['--json', '--cache-dir', join(work, 'layout-cache'), '--output', 'oci', image, layout]);
  expect((await run.exited).code).toBe(0);
  manifestDigest = String(run.events.at(-1)?.['manifestDigest']);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('an OCI layout with a FIFO where a file belongs', () => {
  for (const [what, file] of [
    ['index.json', () => 'index.json'],
    ['oci-layout', () => 'oci-layout'],
    ['the manifest blob', () => `blobs/sha256/${hexOf(manifestDigest)}`],
    ['a layer blob', () => `blobs/sha256/${hexOf(layerDigest)}`],
  ] as const) {
    it(`refuses ${what} that is a FIFO, at once and without blocking, naming it; DIR is not created`, async () => {
      const copy = join(work, `layout-${file().replace(/\W/g, '-')}`);
      await cp(layout, copy, { recursive: true });
      await rm(join(copy, file()));
      mkfifo(join(copy, file()));
      const parent = join(work, `dest-${file().replace(/\W/g, '-')}`);
      await mkdir(parent);
      const run = spawnCli([`oci:${copy}:v1`, join(parent, 'rootfs')]);
      expect(await finished(run)).toEqual({ code: 1, signal: null });
      expect(run.stderr()).toMatch(new RegExp(`^pull-unpack: .*${join(copy, file())} is not a regular file\\n$`));
      expect(await readdir(parent)).toEqual([]);
    });
  }
});

describe('FIFOs in the staging area and the cache', () => {
  it('leaves alone (and does not block on) a staging directory whose owner file is a FIFO, and pulls', async () => {
    const parent = join(work, 'planted-owner');
    const planted = join(parent, '.rootfs.pull-unpack-planted');
    await mkdir(planted, { recursive: true });
    mkfifo(join(planted, 'owner'));
    const run = spawnCli(['--json', '--cache-dir', join(work, 'planted-owner-cache'), image, join(parent, 'rootfs')]);
    expect({ exit: await finished(run), stderr: run.stderr() }).toEqual({ exit: { code: 0, signal: null }, stderr: '' });
    expect(await stagingDirs(join(parent, 'rootfs'))).toEqual([planted]);
    expect((await lstat(join(planted, 'owner'))).isFIFO()).toBe(true);
  });

  it('replaces FIFOs planted in the cache as a partial download, a blob lock, a cached manifest and index.json, and pulls', async () => {
    const cache = join(work, 'fifo-cache');
    const first = spawnCli(['--json', '--cache-dir', cache, image, join(work, 'fifo-cache-first')]);
    expect((await finished(first)).code).toBe(0);
    await rm(join(cache, 'blobs', 'sha256', hexOf(layerDigest)));
    mkfifo(join(cache, 'ingest', `${hexOf(layerDigest)}.partial`));
    mkfifo(join(cache, 'ingest', `${hexOf(layerDigest)}.lock`));
    await rm(join(cache, 'blobs', 'sha256', hexOf(manifestDigest)));
    mkfifo(join(cache, 'blobs', 'sha256', hexOf(manifestDigest)));
    await rm(join(cache, 'index.json'));
    mkfifo(join(cache, 'index.json'));

    const run = spawnCli(['--json', '--cache-dir', cache, image, join(work, 'fifo-cache-second')]);
    expect({ exit: await finished(run), stderr: run.stderr() }).toEqual({ exit: { code: 0, signal: null }, stderr: '' });
    const warnings = run.events.filter((e) => e.type === 'warning').map((e) => String(e['message']));
    expect(warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/took over the lock .* from nobody \(the lock is a FIFO\)/),
        expect.stringMatching(/index\.json .* is damaged: replacing it/),
      ]),
    );
    expect(await readdir(join(cache, 'ingest'))).toEqual([]);
    expect(await unverifiedBlobs(cache)).toEqual({ bad: [], count: 3 });
    expect(JSON.parse(await readFile(join(cache, 'index.json'), 'utf8'))).toMatchObject({ manifests: [{ digest: manifestDigest }] });
  });
});
