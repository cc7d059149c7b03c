/**
 * The cache heals itself: a cached blob that no longer matches its digest (same size, other
 * bytes: a disk error, a stray write) is evicted with a warning and fetched again when online,
 * and named in a clear error offline. No output is made from a cached blob that was not
 * verified when used, including `--output oci`, which copies blobs as they are, and a damage
 * that decompression cannot see (a gzip header's mtime). The built CLI runs as a child process
 * against the test registry.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { spawnCli, unverifiedBlobs, type EventLine } from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';

let work: string;
let image: string;
let layerDigest: string;
let configDigest: string;
let manifestDigest: string;
let runs = 0;

const hexOf = (digest: string): string => digest.slice('sha256:'.length);

beforeAll(async () => {
  const registry = testRegistry();
  work = await mkdtemp(join(tmpdir(), 'pu-heal-'));
  const repo = uniqueRepo('heal');
  const pushed = await pushImage(registry.url, repo, 'v1', {
    layers: [{ tar: await tarLayer([{ name: 'data.bin', content: randomBytes(256 * 1024) }]) }],
  });
  layerDigest = pushed.layers[0]!.digest;
  configDigest = pushed.configDescriptor.digest;
  manifestDigest = pushed.descriptor.digest;
  image = `${registry.host}/${repo}:v1`;
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Runs `pull-unpack --json --cache-dir CACHE ...args`; resolves with its exit, events and stderr. */
async function pull(cache: string, args: string[]): Promise<{ code: number | null; events: EventLine[]; stderr: string }> {
  const run = spawnCli(['--json', '--cache-dir', cache, ...args]);
  const { code } = await run.exited;
  return { code, events: run.events, stderr: run.stderr() };
}

/** A fresh cache filled by one pull of the image. */
async function filledCache(): Promise<string> {
  const cache = join(work, `cache-${++runs}`);
  expect((await pull(cache, [image, join(work, `fill-${runs}`)])).code).toBe(0);
  return cache;
}

/** Changes the byte at `offset` of the cached blob, keeping its size. */
async function damage(cache: string, digest: string, offset: number): Promise<void> {
  const path = join(cache, 'blobs', 'sha256', hexOf(digest));
  const bytes = await readFile(path);
  bytes[offset] = bytes[offset]! ^ 0xff;
  await writeFile(path, bytes);
}

const warnings = (events: EventLine[]): string[] => events.filter((e) => e.type === 'warning').map((e) => String(e['message']));
const downloads = (events: EventLine[]): string[] => events.filter((e) => e.type === 'blob-start').map((e) => String(e['digest']));

describe('a damaged cached blob', () => {
  it('a layer damaged in place is evicted with a warning, downloaded again, and the pull succeeds', async () => {
    const cache = await filledCache();
    await damage(cache, layerDigest, 1000);
    const result = await pull(cache, [image, join(work, `dest-${runs}`)]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(warnings(result.events)).toEqual([
      expect.stringMatching(
        new RegExp(`layer 1/1 .*: the copy in the cache ${cache} was damaged \\(it hashes to sha256:[0-9a-f]{64}\\); removed it$`),
      ),
    ]);
    expect(downloads(result.events)).toEqual([layerDigest]);
    expect(await unverifiedBlobs(cache)).toEqual({ bad: [], count: 3 });
  });

  it('a damaged config is evicted and fetched again; a damaged manifest read by digest is replaced', async () => {
    const cache = await filledCache();
    await damage(cache, configDigest, 10);
    await damage(cache, manifestDigest, 10);
    const result = await pull(cache, [`${image.split(':v1')[0]}@${manifestDigest}`, join(work, `dest-${runs}`)]);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect(warnings(result.events)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/the copy in the cache .* was damaged/),
        expect.stringMatching(/replaced the damaged cached copy/),
      ]),
    );
    expect(await unverifiedBlobs(cache)).toEqual({ bad: [], count: 3 });
  });

  it('offline: one error naming the damaged blob and cache prune, nothing written; online, the next pull heals it', async () => {
    const cache = await filledCache();
    await damage(cache, layerDigest, 1000);
    const parent = join(work, `offline-${runs}`);
    await mkdir(parent);
    const offline = spawnCli(['--offline', '--cache-dir', cache, image, join(parent, 'rootfs')]);
    expect((await offline.exited).code).toBe(1);
    const lines = offline.stderr().split('\n');
    expect(lines[0]).toMatch(/^warning: layer 1\/1 .* was damaged/);
    expect(lines[1]).toMatch(new RegExp(`^pull-unpack: layer 1/1 .*\\(${layerDigest}\\): the copy in the cache ${cache} is damaged`));
    expect(lines[2]).toMatch(/^hint: pull once without --offline .*pull-unpack cache prune --all/);
    expect(lines).toHaveLength(4);
    expect(await readdir(parent)).toEqual([]);
    const online = await pull(cache, [image, join(work, `dest-${runs}`)]);
    expect(online.code).toBe(0);
    expect(downloads(online.events)).toEqual([layerDigest]);
    expect(await unverifiedBlobs(cache)).toEqual({ bad: [], count: 3 });
  });
});

describe('outputs made from the cache', () => {
  // A gzip header's mtime (bytes 4-7) is not covered by anything decompression checks: the
  // layer still decompresses to its DiffID, only the blob digest tells the damage.
  const GZIP_MTIME = 5;

  it('--output oci never writes a cached blob that does not match its digest', async () => {
    const cache = await filledCache();
    await damage(cache, layerDigest, GZIP_MTIME);
    const layout = join(work, `layout-${runs}`);
    const result = await pull(cache, ['--output', 'oci', image, layout]);
    expect(result.code).toBe(0);
    expect(warnings(result.events)).toEqual([expect.stringMatching(/was damaged/)]);
    const blobs = await readdir(join(layout, 'blobs', 'sha256'));
    for (const hex of blobs) {
      const bytes = await readFile(join(layout, 'blobs', 'sha256', hex));
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(hex);
    }
    expect(blobs).toContain(hexOf(layerDigest));
    expect((await unverifiedBlobs(cache)).bad).toEqual([]);
  });

  it('--output tar uses the cached layer only once verified, and the cache is healed', async () => {
    const cache = await filledCache();
    await damage(cache, layerDigest, GZIP_MTIME);
    const result = await pull(cache, ['--output', 'tar', image, join(work, `out-${runs}.tar`)]);
    expect(result.code).toBe(0);
    expect(warnings(result.events)).toEqual([expect.stringMatching(/was damaged/)]);
    expect(downloads(result.events)).toEqual([layerDigest]);
    expect((await unverifiedBlobs(cache)).bad).toEqual([]);
  });
});
