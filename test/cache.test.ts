/**
 * The blob cache. Unit tests of the store on its own (verified ingest, resumed partial
 * downloads, one download per blob for concurrent callers, lock takeover, waiting for another
 * process, index/listing/pruning), then pulls against a real registry: --offline with the
 * registry gone, a second pull downloading nothing, two processes pulling through one cache at
 * once, a pull SIGKILLed mid-blob and resumed, `cache ls/prune`, and the --json event stream.
 */
import { spawnCli } from './helpers/crash-fixtures.js';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobStore, type BlobOpener } from '../src/store/blob-store.js';
import { listCache, parseDuration, pruneCache, readRefs, recordRef } from '../src/store/cache-index.js';
import { isPullUnpackError } from '../src/errors.js';
import type { Descriptor } from '../src/image/oci.js';
import { pushImage, pushIndex, tarLayer, type PushedImage } from '../testdata/lib/image-builder.mjs';
import { startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import { startRegistryProxy } from './helpers/proxy.js';
import { runCli, uniqueRepo } from './helpers/registry.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';

const CHUNK = 64 * 1024;

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'cache-test-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function freshStore(): Promise<BlobStore> {
  return new BlobStore(await mkdtemp(join(work, 'store-')));
}

function descriptorOf(bytes: Buffer): Descriptor {
  return {
    mediaType: 'application/octet-stream',
    digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
    size: bytes.length,
  };
}

function hexOf(d: Descriptor): string {
  return d.digest.slice('sha256:'.length);
}

interface RecordingOpener {
  open: BlobOpener;
  /** The offset of every call. */
  offsets: number[];
  /** Bytes handed out across all calls. */
  served: number;
}

/**
 * Serves `bytes` from the offset asked for, in 64 KiB chunks. With `cutAfter`, the stream
 * fails (like a reset connection) once that many bytes of the blob have been served.
 */
function opener(bytes: Buffer, options: { cutAfter?: number; endEarlyAt?: number } = {}): RecordingOpener {
  const rec: RecordingOpener = { offsets: [], served: 0, open: async () => Readable.from([]) };
  rec.open = async (offset) => {
    rec.offsets.push(offset);
    async function* body(): AsyncGenerator<Buffer> {
      const end = options.endEarlyAt ?? bytes.length;
      for (let at = offset; at < end; at += CHUNK) {
        const stop = Math.min(at + CHUNK, end, options.cutAfter ?? Infinity);
        if (stop > at) {
          rec.served += stop - at;
          yield bytes.subarray(at, stop);
        }
        if (options.cutAfter !== undefined && stop >= options.cutAfter) throw new Error('connection reset by peer');
        await new Promise((r) => setImmediate(r));
      }
    }
    return Readable.from(body(), { objectMode: false });
  };
  return rec;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function ls(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).sort();
}

describe('BlobStore.ingest', () => {
  it('stores a blob under blobs/sha256/<hex> once its bytes verify, leaving nothing in ingest/', async () => {
    const store = await freshStore();
    const bytes = randomBytes(300_000);
    const d = descriptorOf(bytes);
    const src = opener(bytes);
    const progress: number[] = [];
    const result = await store.ingest(d, src.open, 'test blob', { onBytes: (n) => progress.push(n) });
    expect(result).toEqual({ path: join(store.root, 'blobs', 'sha256', hexOf(d)), fetched: bytes.length, resumed: 0 });
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
    expect(src.offsets).toEqual([0]);
    expect(progress.at(-1)).toBe(bytes.length);
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
    expect(JSON.parse(await readFile(join(store.root, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    expect(await store.has(d)).toBe(true);
  });

  it('refuses wrong bytes with DIGEST_MISMATCH: nothing in blobs/, no partial left', async () => {
    const store = await freshStore();
    const bytes = randomBytes(200_000);
    const d = descriptorOf(bytes);
    const wrong = Buffer.from(bytes);
    wrong[100_000] = wrong[100_000]! ^ 0xff;
    const err = await store.ingest(d, opener(wrong).open, 'tampered blob').catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain('tampered blob');
    expect(await ls(join(store.root, 'blobs', 'sha256'))).toEqual([]);
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
    expect(await store.has(d)).toBe(false);
  });

  it('refuses more bytes than the descriptor declares with SIZE_MISMATCH, keeping nothing', async () => {
    const store = await freshStore();
    const bytes = randomBytes(100_000);
    const d = descriptorOf(bytes);
    const err = await store.ingest(d, opener(Buffer.concat([bytes, Buffer.from('extra')])).open, 'long blob').catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'SIZE_MISMATCH')).toBe(true);
    expect(await ls(join(store.root, 'blobs', 'sha256'))).toEqual([]);
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
  });

  it('keeps the partial file of a transfer cut short, and the next ingest resumes it from its length', async () => {
    const store = await freshStore();
    const bytes = randomBytes(1_000_000);
    const d = descriptorOf(bytes);
    const cut = 5 * CHUNK + 1234;
    const first = opener(bytes, { cutAfter: cut });
    await expect(store.ingest(d, first.open, 'cut blob')).rejects.toThrow('connection reset by peer');
    // Every byte received before the failure is in the file.
    const partial = join(store.root, 'ingest', `${hexOf(d)}.partial`);
    const kept = (await stat(partial)).size;
    expect(kept).toBe(cut);
    expect((await readFile(partial)).equals(bytes.subarray(0, kept))).toBe(true);
    expect(await ls(join(store.root, 'blobs', 'sha256'))).toEqual([]);
    // The lock was released although the transfer failed.
    expect(await ls(join(store.root, 'ingest'))).toEqual([`${hexOf(d)}.partial`]);

    const second = opener(bytes);
    const progress: number[] = [];
    const result = await store.ingest(d, second.open, 'cut blob', { onBytes: (n) => progress.push(n) });
    expect(second.offsets).toEqual([kept]);
    expect(second.served).toBe(bytes.length - kept);
    expect(result).toMatchObject({ fetched: bytes.length - kept, resumed: kept });
    expect(progress[0]).toBeGreaterThan(kept);
    expect(progress.at(-1)).toBe(bytes.length);
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
  });

  it('keeps the partial of a body that ended early (NETWORK) and resumes it', async () => {
    const store = await freshStore();
    const bytes = randomBytes(400_000);
    const d = descriptorOf(bytes);
    const err = await store.ingest(d, opener(bytes, { endEarlyAt: 150_000 }).open, 'short blob').catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'NETWORK')).toBe(true);
    expect((await stat(join(store.root, 'ingest', `${hexOf(d)}.partial`))).size).toBe(150_000);
    const again = opener(bytes);
    const result = await store.ingest(d, again.open, 'short blob');
    expect(again.offsets).toEqual([150_000]);
    expect(result).toMatchObject({ fetched: 250_000, resumed: 150_000 });
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
  });

  it('discards a partial file longer than the blob and downloads from byte 0', async () => {
    const store = await freshStore();
    const bytes = randomBytes(100_000);
    const d = descriptorOf(bytes);
    await store.putBytes(descriptorOf(Buffer.from('x')), Buffer.from('x'), 'skeleton');
    await writeFile(join(store.root, 'ingest', `${hexOf(d)}.partial`), randomBytes(150_000));
    const src = opener(bytes);
    const result = await store.ingest(d, src.open, 'blob');
    expect(src.offsets).toEqual([0]);
    expect(result).toMatchObject({ fetched: bytes.length, resumed: 0 });
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
  });

  it('finishes a complete partial file (killed before the rename) without downloading', async () => {
    const store = await freshStore();
    const bytes = randomBytes(100_000);
    const d = descriptorOf(bytes);
    await store.putBytes(descriptorOf(Buffer.from('x')), Buffer.from('x'), 'skeleton');
    await writeFile(join(store.root, 'ingest', `${hexOf(d)}.partial`), bytes);
    const src = opener(bytes);
    const result = await store.ingest(d, src.open, 'blob');
    expect(src.offsets).toEqual([]);
    expect(result).toMatchObject({ fetched: 0, resumed: bytes.length });
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
  });

  it('starts over from byte 0 once when the bytes of an earlier partial turn out wrong', async () => {
    const store = await freshStore();
    const bytes = randomBytes(300_000);
    const d = descriptorOf(bytes);
    await store.putBytes(descriptorOf(Buffer.from('x')), Buffer.from('x'), 'skeleton');
    // An earlier transfer left 100 000 bytes that are not the blob's.
    await writeFile(join(store.root, 'ingest', `${hexOf(d)}.partial`), randomBytes(100_000));
    const src = opener(bytes);
    const result = await store.ingest(d, src.open, 'blob');
    expect(src.offsets).toEqual([100_000, 0]);
    expect(result).toMatchObject({ fetched: bytes.length, resumed: 0 });
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
  });

  it('still fails with DIGEST_MISMATCH when the fresh download is wrong too, keeping nothing', async () => {
    const store = await freshStore();
    const bytes = randomBytes(300_000);
    const d = descriptorOf(bytes);
    await store.putBytes(descriptorOf(Buffer.from('x')), Buffer.from('x'), 'skeleton');
    await writeFile(join(store.root, 'ingest', `${hexOf(d)}.partial`), bytes.subarray(0, 100_000));
    const wrong = Buffer.from(bytes);
    wrong[200_000] = wrong[200_000]! ^ 1;
    const src = opener(wrong);
    const err = await store.ingest(d, src.open, 'blob').catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(src.offsets).toEqual([100_000, 0]);
    expect(await ls(join(store.root, 'blobs', 'sha256'))).toEqual([descriptorOf(Buffer.from('x')).digest.slice(7)]);
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
  });

  it('calls the opener once when the same blob is ingested twice at the same time in one process', async () => {
    const store = await freshStore();
    const bytes = randomBytes(2_000_000);
    const d = descriptorOf(bytes);
    const src = opener(bytes);
    let waits = 0;
    const [a, b] = await Promise.all([
      store.ingest(d, src.open, 'blob', { onWait: () => waits++ }),
      store.ingest(d, src.open, 'blob', { onWait: () => waits++ }),
    ]);
    expect(src.offsets).toEqual([0]);
    expect(src.served).toBe(bytes.length);
    expect(a.path).toBe(b.path);
    expect([a.fetched, b.fetched].sort((x, y) => x - y)).toEqual([0, bytes.length]);
    expect(waits).toBe(1);
    expect(sha256(await readFile(a.path))).toBe(hexOf(d));
  });

  it('takes over a lock file left by a dead process and downloads the blob', async () => {
    const store = await freshStore();
    const bytes = randomBytes(50_000);
    const d = descriptorOf(bytes);
    await store.putBytes(descriptorOf(Buffer.from('x')), Buffer.from('x'), 'skeleton');
    const dead = spawn('true');
    await once(dead, 'exit');
    const lock = join(store.root, 'ingest', `${hexOf(d)}.lock`);
    await writeFile(lock, `${dead.pid}\n${hostname()}\n`);
    const src = opener(bytes);
    let waited = false;
    const result = await store.ingest(d, src.open, 'blob', { onWait: () => (waited = true) });
    expect(waited).toBe(false);
    expect(src.offsets).toEqual([0]);
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
    await expect(stat(lock)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('waits for a lock held by another live process and returns the blob it stored, without opening', async () => {
    const store = await freshStore();
    const bytes = randomBytes(80_000);
    const d = descriptorOf(bytes);
    await store.putBytes(descriptorOf(Buffer.from('x')), Buffer.from('x'), 'skeleton');
    const lock = join(store.root, 'ingest', `${hexOf(d)}.lock`);
    const staged = join(store.root, 'ingest', 'holder.tmp');
    await writeFile(staged, bytes);
    // Another process holds the blob's lock (pid + host, as withFileLock writes it) and, when
    // told to, stores the verified blob and releases the lock.
    const holderScript = `
      const fs = require('node:fs'), os = require('node:os');
      const [lock, staged, dest] = process.argv.slice(1);
      fs.writeFileSync(lock, process.pid + '\\n' + os.hostname() + '\\n', { flag: 'wx' });
      process.stdout.write('locked\\n');
      process.stdin.once('data', () => { fs.renameSync(staged, dest); fs.rmSync(lock); process.exit(0); });`;
    const holder = spawn(process.execPath, ['-e', holderScript, lock, staged, store.path(d.digest)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    try {
      const [line] = (await once(holder.stdout, 'data')) as [Buffer];
      expect(line.toString()).toBe('locked\n');
      const src = opener(bytes);
      let waits = 0;
      let settled = false;
      let waiting!: () => void;
      const waited = new Promise<void>((resolve) => (waiting = resolve));
      const onWait = (): void => {
        waits++;
        waiting();
      };
      const pending = store.ingest(d, src.open, 'blob', { onWait }).finally(() => (settled = true));
      await waited;
      expect(settled).toBe(false);
      expect(waits).toBe(1);
      holder.stdin.write('go\n');
      const result = await pending;
      expect(src.offsets).toEqual([]);
      expect(result).toEqual({ path: store.path(d.digest), fetched: 0, resumed: 0 });
      expect(sha256(await readFile(result.path))).toBe(hexOf(d));
    } finally {
      if (holder.exitCode === null) holder.kill('SIGKILL');
    }
  });

  it('stops with ABORTED when the signal fires mid-transfer and keeps the partial for later', async () => {
    const store = await freshStore();
    const bytes = randomBytes(2_000_000);
    const d = descriptorOf(bytes);
    const controller = new AbortController();
    const src = opener(bytes);
    const err = await store
      .ingest(d, src.open, 'blob', {
        signal: controller.signal,
        onBytes: (n) => {
          if (n >= 10 * CHUNK) controller.abort();
        },
      })
      .catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'ABORTED')).toBe(true);
    const kept = (await stat(join(store.root, 'ingest', `${hexOf(d)}.partial`))).size;
    expect(kept).toBeGreaterThanOrEqual(10 * CHUNK);
    expect(kept).toBeLessThan(bytes.length);
    expect(await store.has(d)).toBe(false);
    const again = opener(bytes);
    const result = await store.ingest(d, again.open, 'blob');
    expect(again.offsets).toEqual([kept]);
    expect(sha256(await readFile(result.path))).toBe(hexOf(d));
  });
});

describe('BlobStore.putBytes', () => {
  it('stores verified bytes and refuses bytes that do not match their digest', async () => {
    const store = await freshStore();
    const bytes = Buffer.from('{"schemaVersion":2}');
    const d = descriptorOf(bytes);
    expect(await store.putBytes(d, bytes, 'manifest')).toBe(store.path(d.digest));
    expect(await readFile(store.path(d.digest), 'utf8')).toBe('{"schemaVersion":2}');
    const other = Buffer.from('{"schemaVersion":3}');
    const err = await store.putBytes(descriptorOf(other), bytes, 'manifest').catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(await store.has(descriptorOf(other))).toBe(false);
    expect(await ls(join(store.root, 'ingest'))).toEqual([]);
  });

  it('marks a blob it already has as used now (prune --older-than goes by that time)', async () => {
    const store = await freshStore();
    const bytes = Buffer.from('config bytes');
    const d = descriptorOf(bytes);
    await store.putBytes(d, bytes, 'config');
    const past = new Date(Date.now() - 3 * 86_400_000);
    await utimes(store.path(d.digest), past, past);
    await store.putBytes(d, bytes, 'config');
    expect(Date.now() - (await stat(store.path(d.digest))).mtimeMs).toBeLessThan(60_000);
  });
});

describe('cache index, listing and pruning', () => {
  it('records references in index.json with the ref.name annotation, one entry per reference', async () => {
    const store = await freshStore();
    const a = descriptorOf(Buffer.from('manifest a'));
    const b = descriptorOf(Buffer.from('manifest b'));
    await recordRef(store, 'example.com/app:1', { ...a, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    await recordRef(store, 'example.com/app:2', { ...a, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    await recordRef(store, 'example.com/app:1', { ...b, mediaType: 'application/vnd.oci.image.manifest.v1+json' });
    const index = JSON.parse(await readFile(join(store.root, 'index.json'), 'utf8')) as { schemaVersion: number; manifests: Descriptor[] };
    expect(index.schemaVersion).toBe(2);
    expect(index.manifests.map((m) => [m.annotations?.['org.opencontainers.image.ref.name'], m.digest])).toEqual([
      ['example.com/app:2', a.digest],
      ['example.com/app:1', b.digest],
    ]);
    expect((await readRefs(store)).map((r) => r.reference)).toEqual(['example.com/app:2', 'example.com/app:1']);
  });

  it('lists blobs and partial downloads; prune removes partials, old blobs, and references to removed manifests', async () => {
    const store = await freshStore();
    const manifest = Buffer.from('{"manifest":1}');
    const layer = randomBytes(10_000);
    const md = { ...descriptorOf(manifest), mediaType: 'application/vnd.oci.image.manifest.v1+json' };
    await store.putBytes(md, manifest, 'manifest');
    await store.putBytes(descriptorOf(layer), layer, 'layer');
    await recordRef(store, 'example.com/app:1', md);
    const partialOf = descriptorOf(randomBytes(10));
    await writeFile(join(store.root, 'ingest', `${hexOf(partialOf)}.partial`), 'abc');

    const listing = await listCache(store);
    expect(listing.blobs.map((b) => b.digest).sort()).toEqual([md.digest, descriptorOf(layer).digest].sort());
    expect(listing.partial).toEqual([{ digest: partialOf.digest, size: 3 }]);
    expect(listing.totalSize).toBe(manifest.length + layer.length + 3);
    expect(listing.refs).toEqual([{ reference: 'example.com/app:1', descriptor: md }]);

    expect(await pruneCache(store, { olderThanMs: parseDuration('1d') })).toEqual({ removed: 1, freed: 3 });
    expect((await listCache(store)).blobs).toHaveLength(2);
    const past = new Date(Date.now() - 2 * 86_400_000);
    await utimes(store.path(md.digest), past, past);
    expect(await pruneCache(store, { olderThanMs: parseDuration('1d') })).toEqual({ removed: 1, freed: manifest.length });
    const after = await listCache(store);
    expect(after.blobs.map((b) => b.digest)).toEqual([descriptorOf(layer).digest]);
    expect(after.refs).toEqual([]);
    expect(await pruneCache(store, { all: true })).toEqual({ removed: 1, freed: layer.length });
    expect((await listCache(store)).totalSize).toBe(0);
  });

  it('leaves the partial download of a transfer in progress (its lock is held) alone', async () => {
    const store = await freshStore();
    const bytes = randomBytes(1_000_000);
    const d = descriptorOf(bytes);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let pruned: { removed: number; freed: number } | undefined;
    const result = store.ingest(
      d,
      async (offset) => {
        async function* body(): AsyncGenerator<Buffer> {
          yield bytes.subarray(offset, offset + 300_000);
          await gate;
          yield bytes.subarray(offset + 300_000);
        }
        return Readable.from(body());
      },
      'blob',
      {
        // Prune once the first bytes are in the partial file.
        onWritten: (_partial, length) => {
          if (length === 300_000) {
            void (async () => {
              try {
                pruned = await pruneCache(store, { all: true });
              } finally {
                release();
              }
            })();
          }
        },
      },
    );
    const done = await result;
    expect(pruned).toEqual({ removed: 0, freed: 0 });
    expect(sha256(await readFile(done.path))).toBe(hexOf(d));
  });

  it('parses durations and refuses anything else with USAGE', () => {
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('1d')).toBe(86_400_000);
    expect(parseDuration('2w')).toBe(1_209_600_000);
    expect(parseDuration('1.5h')).toBe(5_400_000);
    for (const bad of ['', '7', 'd', '-1d', '1y', '1 day']) {
      let caught: unknown;
      try {
        parseDuration(bad);
      } catch (e) {
        caught = e;
      }
      expect(isPullUnpackError(caught, 'USAGE')).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Pulls through the cache against a real registry.

const BUILT_CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const MiB = 1 << 20;
const BLOB_PATH = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/;

interface PullEventLine {
  type: string;
  [key: string]: unknown;
}

interface Summary {
  type: 'done';
  reference: string;
  digest: string;
  indexDigest?: string;
  manifestDigest: string;
  platform?: string;
  configDigest: string;
  layers: Array<{ digest: string; size: number; mediaType: string; diffId: string }>;
  path: string;
  bytesFetched: number;
  bytesFromCache: number;
  cacheDir?: string;
}

/** Every stdout line of a --json pull, parsed (a line that is not JSON fails the test). */
function jsonLines(stdout: string): PullEventLine[] {
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as PullEventLine);
}

function summaryOf(stdout: string): Summary {
  const last = jsonLines(stdout).at(-1);
  expect(last?.type).toBe('done');
  return last as unknown as Summary;
}

function totalSize(image: PushedImage): number {
  return image.layers.reduce((n, l) => n + l.size, 0);
}

/** Checks that every file in `cache`/blobs/<alg>/ hashes to its own name; returns their digests. */
async function verifiedBlobs(cache: string): Promise<string[]> {
  const found: string[] = [];
  for (const algorithm of ['sha256', 'sha512']) {
    for (const name of await ls(join(cache, 'blobs', algorithm))) {
      const actual = createHash(algorithm)
        .update(await readFile(join(cache, 'blobs', algorithm, name)))
        .digest('hex');
      expect(actual, `${algorithm}:${name} in the cache`).toBe(name);
      found.push(`${algorithm}:${name}`);
    }
  }
  return found.sort();
}

/**
 * Differences between the trees at `a` and `b`, every property and mtime compared except the
 * mtime of the root itself (no layer has an entry for it: it is when the pull ran).
 */
async function treeDiff(a: string, b: string): Promise<string[]> {
  const [x, y] = await Promise.all([snapshotTree(a), snapshotTree(b)]);
  for (const tree of [x, y]) tree.get('.')!.mtimeNs = '0';
  return diffTrees(x, y);
}

/** Staging directories (`.DIR.pull-unpack-*`) in `parent`. */
async function stagingDirs(parent: string): Promise<string[]> {
  return (await ls(parent)).filter((name) => name.includes('.pull-unpack-'));
}

/** Three layers (gzip, zstd, uncompressed) with a whiteout, random content so digests are unique. */
async function pushLayered(url: string, repo: string, tag: string | null): Promise<PushedImage> {
  return pushImage(url, repo, tag, {
    layers: [
      {
        tar: await tarLayer([
          { name: 'etc', type: 'directory' },
          { name: 'etc/hostname', content: 'one\n' },
          { name: 'bin', type: 'directory' },
          { name: 'bin/tool', content: randomBytes(200_000), mode: 0o755 },
        ]),
        compression: 'gzip',
      },
      {
        tar: await tarLayer([
          { name: 'etc/hostname', content: 'two\n' },
          { name: 'var', type: 'directory' },
          { name: 'var/data', content: randomBytes(300_000) },
        ]),
        compression: 'zstd',
      },
      {
        tar: await tarLayer([{ name: 'bin/.wh.tool' }, { name: 'usr', type: 'directory' }, { name: 'usr/three.txt', content: 'three\n' }]),
        compression: 'none',
      },
    ],
  });
}

/** The built CLI as a separate process (test/helpers/crash-fixtures.ts), with its exit code as `closed`. */
function spawnPull(args: string[]) {
  const spawned = spawnCli(args);
  return { ...spawned, closed: spawned.exited.then((e) => e.code) };
}

interface ProxiedRequest {
  method: string;
  /** Set for blob GETs. */
  digest: string | undefined;
  range: string | undefined;
  status: number;
  /** Body bytes passed on to the client. */
  bytesSent: number;
}

interface ThrottlingProxy {
  host: string;
  readonly requests: ProxiedRequest[];
  /** While set, blob bodies trickle out `bytes` at a time, one piece every `everyMs`. */
  throttle: { bytes: number; everyMs: number } | undefined;
  close(): Promise<void>;
}

/**
 * A streaming loopback proxy in front of the registry that logs every request's Range header
 * and the bytes it passed on, and can slow blob bodies down (so a pull can be killed mid-blob).
 */
async function startThrottlingProxy(target: string): Promise<ThrottlingProxy> {
  const [targetHost, targetPort] = target.split(':') as [string, string];
  const requests: ProxiedRequest[] = [];
  // eslint-disable-next-line prefer-const -- assigned below, once the proxy object it serves exists
  let server!: Server;
  const proxy: ThrottlingProxy = {
    host: '',
    requests,
    throttle: undefined,
    close: () =>
      new Promise((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
  const trickle = (entry: ProxiedRequest) =>
    async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const chunk of source) {
        for (let at = 0; at < chunk.length;) {
          const slow = entry.digest ? proxy.throttle : undefined;
          const piece = chunk.subarray(at, slow ? at + slow.bytes : chunk.length);
          if (slow) await sleep(slow.everyMs);
          at += piece.length;
          entry.bytesSent += piece.length;
          yield piece;
        }
      }
    };
  server = createServer((req, res) => {
    const entry: ProxiedRequest = {
      method: req.method ?? '',
      digest: req.method === 'GET' ? BLOB_PATH.exec(req.url ?? '')?.[1] : undefined,
      range: req.headers.range,
      status: 0,
      bytesSent: 0,
    };
    requests.push(entry);
    const upstream = httpRequest(
      { host: targetHost, port: Number(targetPort), path: req.url, method: req.method, headers: { ...req.headers, host: target } },
      (up: IncomingMessage) => {
        entry.status = up.statusCode ?? 0;
        res.writeHead(entry.status, up.headers);
        // A client killed mid-body ends this pipeline with an error: nothing to do about it.
        pipeline(up, trickle(entry), res).catch(() => undefined);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxy.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

describe('pulls through the cache', () => {
  let registry: RunningRegistry;

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('the cache pull tests unpack as root (owners, trees compared entry by entry)');
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
  });

  async function freshCase(): Promise<{ cache: string; parent: string }> {
    const base = await mkdtemp(join(work, 'pull-'));
    const cache = join(base, 'cache');
    const parent = join(base, 'out');
    await mkdir(parent);
    return { cache, parent };
  }

  it('pulls --offline from the cache alone once the registry is gone, and names exactly the blob that is missing', async () => {
    const own = await startRegistry();
    const repo = uniqueRepo('cache-offline');
    const { cache, parent } = await freshCase();
    let image: PushedImage;
    try {
      image = await pushLayered(own.url, repo, 'v1');
      const online = await runCli(['--json', '--cache-dir', cache, `${own.host}/${repo}:v1`, join(parent, 'online')]);
      expect(online.code, online.stderr).toBe(0);
      expect(summaryOf(online.stdout)).toMatchObject({ bytesFetched: totalSize(image), bytesFromCache: 0, cacheDir: cache });
    } finally {
      await own.stop();
    }
    await expect(fetch(`${own.url}/v2/`)).rejects.toThrow();
    const ref = `${own.host}/${repo}:v1`;

    const offline = await runCli(['--json', '--offline', '--cache-dir', cache, ref, join(parent, 'offline')]);
    expect(offline.code, offline.stderr).toBe(0);
    expect(summaryOf(offline.stdout)).toMatchObject({
      reference: ref,
      manifestDigest: image.descriptor.digest,
      bytesFetched: 0,
      bytesFromCache: totalSize(image),
      cacheDir: cache,
    });
    expect(await treeDiff(join(parent, 'online'), join(parent, 'offline'))).toEqual([]);
    expect([...(await snapshotTree(join(parent, 'online'))).keys()].sort()).toEqual(
      ['.', 'etc', 'etc/hostname', 'usr', 'usr/three.txt', 'var', 'var/data', 'bin'].sort(),
    );

    // By digest too: the manifest is in the cache under its digest.
    const byDigest = await runCli([
      '--offline',
      '--cache-dir',
      cache,
      `${own.host}/${repo}@${image.descriptor.digest}`,
      join(parent, 'by-digest'),
    ]);
    expect(byDigest.code, byDigest.stderr).toBe(0);

    const [first, missing, third] = image.layers as [Descriptor, Descriptor, Descriptor];
    await rm(join(cache, 'blobs', 'sha256', hexOf(missing)));
    const dest = join(parent, 'kept');
    await mkdir(dest);
    await writeFile(join(dest, 'precious.txt'), 'do not touch\n');
    const before = await snapshotTree(dest);
    const failed = await runCli(['--offline', '--force', '--cache-dir', cache, ref, dest]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain(missing.digest);
    expect(failed.stderr).not.toContain(first.digest);
    expect(failed.stderr).not.toContain(third.digest);
    expect(diffTrees(before, await snapshotTree(dest))).toEqual([]);
    expect(await stagingDirs(parent)).toEqual([]);

    const never = await runCli(['--offline', '--cache-dir', cache, `${own.host}/${repo}:never-pulled`, join(parent, 'never')]);
    expect(never.code).toBe(1);
    expect(never.stderr).toContain(`${own.host}/${repo}:never-pulled`);
    expect(never.stderr).toContain('never pulled');
  });

  it('downloads no blob on a second online pull with the same cache', async () => {
    const repo = uniqueRepo('cache-again');
    const image = await pushLayered(registry.url, repo, 'v1');
    const proxy = await startRegistryProxy(registry.url);
    const { cache, parent } = await freshCase();
    try {
      const ref = `${proxy.host}/${repo}:v1`;
      const first = await runCli(['--json', '--cache-dir', cache, ref, join(parent, 'one')]);
      expect(first.code, first.stderr).toBe(0);
      for (const layer of image.layers) expect(proxy.blobRequests.filter((d) => d === layer.digest)).toHaveLength(1);
      const seen = proxy.blobRequests.length;

      const second = await runCli(['--json', '--cache-dir', cache, ref, join(parent, 'two')]);
      expect(second.code, second.stderr).toBe(0);
      expect(proxy.blobRequests.slice(seen)).toEqual([]);
      const events = jsonLines(second.stdout);
      expect(events.filter((e) => e.type === 'blob-start')).toEqual([]);
      const verified = events.filter((e) => e.type === 'blob-verified').map((e) => [e.digest, e.fromCache, e.fetched]);
      expect(verified.sort()).toEqual(image.layers.map((l) => [l.digest, true, 0]).sort());
      expect(summaryOf(second.stdout)).toMatchObject({ bytesFetched: 0, bytesFromCache: totalSize(image) });
      expect(await treeDiff(join(parent, 'one'), join(parent, 'two'))).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('lets two processes share one cache at the same time: each layer is downloaded once', async () => {
    expect(existsSync(BUILT_CLI), 'dist/ is missing: run npm run build first').toBe(true);
    const repo = uniqueRepo('cache-2proc');
    const image = await pushLayered(registry.url, repo, 'v1');
    // Every blob answer is held back, so that the two pulls overlap on every layer.
    const proxy = await startRegistryProxy(registry.url, { delayMs: 2_000 });
    const { cache, parent } = await freshCase();
    try {
      const ref = `${proxy.host}/${repo}:v1`;
      const pulls = [
        spawnPull(['--json', '--cache-dir', cache, ref, join(parent, 'a')]),
        spawnPull(['--json', '--cache-dir', cache, ref, join(parent, 'b')]),
      ];
      const codes = await Promise.all(pulls.map((p) => p.closed));
      expect(codes, pulls.map((p) => p.stderr()).join('\n')).toEqual([0, 0]);

      expect(await treeDiff(join(parent, 'a'), join(parent, 'b'))).toEqual([]);
      const blobs = await verifiedBlobs(cache);
      for (const layer of image.layers) {
        expect(blobs).toContain(layer.digest);
        expect(
          proxy.blobRequests.filter((d) => d === layer.digest),
          layer.digest,
        ).toHaveLength(1);
      }
      const summaries = pulls.map((p) => summaryOf(p.stdout()));
      expect(summaries[0]!.bytesFetched + summaries[1]!.bytesFetched).toBe(totalSize(image));
      for (const s of summaries) expect(s.bytesFetched + s.bytesFromCache).toBe(totalSize(image));
      // The process that did not download a layer waited for the one that did.
      const waits = pulls.flatMap((p) => jsonLines(p.stdout()).filter((e) => e.type === 'blob-wait'));
      expect(waits.length).toBeGreaterThan(0);
      expect(await ls(join(cache, 'ingest'))).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('keeps the cache sound when a pull is SIGKILLed mid-blob, and the next pull resumes with a Range request', async () => {
    expect(existsSync(BUILT_CLI), 'dist/ is missing: run npm run build first').toBe(true);
    const repo = uniqueRepo('cache-kill');
    const big = randomBytes(16 * MiB);
    const image = await pushImage(registry.url, repo, 'v1', {
      layers: [{ tar: await tarLayer([{ name: 'big.bin', content: big }]), compression: 'none' }],
    });
    const layer = image.layers[0]!;
    const proxy = await startThrottlingProxy(registry.host);
    const { cache, parent } = await freshCase();
    const dir = join(parent, 'rootfs');
    const ref = `${proxy.host}/${repo}:v1`;
    try {
      // About 3 MiB/s: the 16 MiB blob takes five seconds.
      proxy.throttle = { bytes: 128 * 1024, everyMs: 40 };
      const killed = spawnPull(['--json', '--cache-dir', cache, ref, dir]);
      await killed.until((e) => e.type === 'blob-progress' && e.digest === layer.digest && (e.bytes as number) >= 2 * MiB);
      killed.child.kill('SIGKILL');
      await killed.closed;
      expect(killed.child.signalCode).toBe('SIGKILL');

      // Only verified blobs are in blobs/; the layer is a partial download; its lock names the dead pid.
      expect(await verifiedBlobs(cache)).not.toContain(layer.digest);
      const ingest = join(cache, 'ingest');
      const kept = (await stat(join(ingest, `${hexOf(layer)}.partial`))).size;
      expect(kept).toBeGreaterThanOrEqual(MiB);
      expect(kept).toBeLessThan(layer.size);
      expect((await readFile(join(ingest, `${hexOf(layer)}.lock`), 'utf8')).split('\n')[0]).toBe(String(killed.child.pid));
      expect(existsSync(dir)).toBe(false);
      const leftFromKilled = await stagingDirs(parent);

      proxy.throttle = undefined;
      const seen = proxy.requests.length;
      const next = await runCli(['--json', '--cache-dir', cache, ref, dir]);
      expect(next.code, next.stderr).toBe(0);
      const layerGets = proxy.requests.slice(seen).filter((r) => r.digest === layer.digest);
      expect(layerGets).toEqual([
        { method: 'GET', digest: layer.digest, range: `bytes=${kept}-`, status: 206, bytesSent: layer.size - kept },
      ]);
      expect(layer.size - kept).toBeLessThan(layer.size - MiB);
      expect(summaryOf(next.stdout)).toMatchObject({ bytesFetched: layer.size - kept, bytesFromCache: kept });
      expect(sha256(await readFile(join(dir, 'big.bin')))).toBe(sha256(big));
      expect(await verifiedBlobs(cache)).toContain(layer.digest);
      expect(await ls(ingest)).toEqual([]);
      // The next pull sweeps the killed run's staging directory and leaves none of its own.
      expect(leftFromKilled.length).toBeGreaterThan(0);
      expect(await stagingDirs(parent)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });

  it('cache ls shows the reference, blobs and total size; cache prune removes old blobs or everything', async () => {
    const repo = uniqueRepo('cache-ls');
    const image = await pushLayered(registry.url, repo, 'v1');
    const { cache, parent } = await freshCase();
    const ref = `${registry.host}/${repo}:v1`;
    const pulled = await runCli(['--cache-dir', cache, ref, join(parent, 'rootfs')]);
    expect(pulled.code, pulled.stderr).toBe(0);
    const expected = [image.descriptor, image.configDescriptor, ...image.layers];
    const total = expected.reduce((n, d) => n + d.size, 0);

    const text = await runCli(['cache', 'ls', '--cache-dir', cache]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`${ref}  ${image.descriptor.digest}`);
    expect(text.stdout).toContain(`in ${expected.length} blobs`);
    for (const d of expected) expect(text.stdout).toContain(d.digest);

    const listing = async (): Promise<{
      refs: Array<{ reference: string; descriptor: Descriptor }>;
      blobs: Array<{ digest: string; size: number }>;
      partial: unknown[];
      totalSize: number;
    }> => {
      const run = await runCli(['cache', 'ls', '--json', '--cache-dir', cache]);
      expect(run.code, run.stderr).toBe(0);
      return JSON.parse(run.stdout);
    };
    const json = await listing();
    expect(json.refs).toEqual([
      {
        reference: ref,
        descriptor: { mediaType: image.descriptor.mediaType, digest: image.descriptor.digest, size: image.descriptor.size },
      },
    ]);
    expect(json.blobs.map((b) => [b.digest, b.size]).sort()).toEqual(expected.map((d) => [d.digest, d.size]).sort());
    expect(json.partial).toEqual([]);
    expect(json.totalSize).toBe(total);

    const fresh = await runCli(['cache', 'prune', '--older-than', '1d', '--cache-dir', cache]);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stdout).toMatch(/^removed 0 blobs/);
    expect((await listing()).blobs).toHaveLength(expected.length);

    const old = image.layers[1]!;
    const past = new Date(Date.now() - 3 * 86_400_000);
    await utimes(join(cache, 'blobs', 'sha256', hexOf(old)), past, past);
    const aged = await runCli(['cache', 'prune', '--older-than', '1d', '--cache-dir', cache]);
    expect(aged.code, aged.stderr).toBe(0);
    expect(aged.stdout).toMatch(/^removed 1 blobs/);
    const afterAged = await listing();
    expect(afterAged.blobs.map((b) => b.digest).sort()).toEqual(
      expected
        .filter((d) => d !== old)
        .map((d) => d.digest)
        .sort(),
    );
    expect(afterAged.refs.map((r) => r.reference)).toEqual([ref]);
    expect(afterAged.totalSize).toBe(total - old.size);

    const all = await runCli(['cache', 'prune', '--all', '--cache-dir', cache]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(new RegExp(`^removed ${expected.length - 1} blobs`));
    expect(await listing()).toMatchObject({ refs: [], blobs: [], partial: [], totalSize: 0 });

    const noFlag = await runCli(['cache', 'prune', '--cache-dir', cache]);
    expect(noFlag.code).toBe(2);
    expect(noFlag.stderr).toContain('--all or --older-than');
    expect((await runCli(['cache', 'prune', '--older-than', '1y', '--cache-dir', cache])).code).toBe(2);
    expect((await runCli(['cache', 'tidy', '--cache-dir', cache])).code).toBe(2);
  });

  it('a pull marks every blob it uses as used now, so prune --older-than keeps an image still pulled', async () => {
    const repo = uniqueRepo('cache-touch');
    const image = await pushLayered(registry.url, repo, 'v1');
    const { cache, parent } = await freshCase();
    const ref = `${registry.host}/${repo}:v1`;
    const backdateAll = async (): Promise<void> => {
      const past = new Date(Date.now() - 3 * 86_400_000);
      for (const name of await ls(join(cache, 'blobs', 'sha256'))) await utimes(join(cache, 'blobs', 'sha256', name), past, past);
    };
    const prune = async (): Promise<string> => {
      const run = await runCli(['cache', 'prune', '--older-than', '1d', '--cache-dir', cache]);
      expect(run.code, run.stderr).toBe(0);
      return run.stdout;
    };
    expect((await runCli(['--cache-dir', cache, ref, join(parent, 'first')])).code).toBe(0);
    const blobs = await verifiedBlobs(cache);
    expect(blobs).toHaveLength(2 + image.layers.length);

    // Pulled again (online, by tag) after three days: manifest, config and layers are in use.
    await backdateAll();
    expect((await runCli(['--cache-dir', cache, ref, join(parent, 'online')])).code).toBe(0);
    expect(await prune()).toMatch(/^removed 0 blobs/);
    expect(await verifiedBlobs(cache)).toEqual(blobs);

    // The same for an --offline pull.
    await backdateAll();
    const offline = await runCli(['--offline', '--cache-dir', cache, ref, join(parent, 'offline')]);
    expect(offline.code, offline.stderr).toBe(0);
    expect(await prune()).toMatch(/^removed 0 blobs/);
    expect(await verifiedBlobs(cache)).toEqual(blobs);
    expect((await readRefs(new BlobStore(cache))).map((r) => r.reference)).toEqual([ref]);
  });

  it('--json prints one event per line: resolved, config, blob events, layers in order, then the summary', async () => {
    const repo = uniqueRepo('cache-json');
    const amd = await pushLayered(registry.url, repo, null);
    const arm = await pushImage(registry.url, repo, null, {
      layers: [{ tar: await tarLayer([{ name: 'arm.txt', content: 'arm64\n' }]) }],
      config: { architecture: 'arm64', os: 'linux' },
    });
    await pushIndex(registry.url, repo, 'multi', [
      { descriptor: arm.descriptor, platform: { os: 'linux', architecture: 'arm64' } },
      { descriptor: amd.descriptor, platform: { os: 'linux', architecture: 'amd64' } },
    ]);
    const { cache, parent } = await freshCase();
    const dir = join(parent, 'rootfs');
    const ref = `${registry.host}/${repo}:multi`;
    const run = await runCli(['--json', '--platform', 'linux/amd64', '--cache-dir', cache, ref, dir]);
    expect(run.code, run.stderr).toBe(0);
    const events = jsonLines(run.stdout);

    const indexBytes = Buffer.from(
      await (
        await fetch(`${registry.url}/v2/${repo}/manifests/multi`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } })
      ).arrayBuffer(),
    );
    const manifestBytes = Buffer.from(
      await (
        await fetch(`${registry.url}/v2/${repo}/manifests/${amd.descriptor.digest}`, { headers: { accept: amd.descriptor.mediaType } })
      ).arrayBuffer(),
    );
    const indexDigest = `sha256:${sha256(indexBytes)}`;
    const manifestDigest = `sha256:${sha256(manifestBytes)}`;
    expect(manifestDigest).toBe(amd.descriptor.digest);

    expect(events[0]).toMatchObject({ type: 'resolved', reference: ref, digest: indexDigest, manifestDigest, platform: 'linux/amd64' });
    expect(events[1]).toEqual({
      type: 'config',
      time: expect.any(String) as unknown,
      digest: amd.configDescriptor.digest,
      layers: 3,
      totalSize: totalSize(amd),
    });
    const middle = events.slice(2, -1);
    expect([...new Set(middle.map((e) => e.type))].sort()).toEqual(['blob-progress', 'blob-start', 'blob-verified', 'layer-applied']);
    const applied = middle.filter((e) => e.type === 'layer-applied');
    expect(applied.map((e) => [e.index, e.digest, e.diffId])).toEqual(amd.layers.map((l, i) => [i, l.digest, amd.diffIds[i]]));
    for (const [i, layer] of amd.layers.entries()) {
      const at = (type: string): number[] => middle.flatMap((e, n) => (e.type === type && e.digest === layer.digest ? [n] : []));
      const [start] = at('blob-start');
      const progress = at('blob-progress');
      const [verified] = at('blob-verified');
      expect(start).toBeDefined();
      expect(progress.length).toBeGreaterThan(0);
      expect(Math.min(...progress)).toBeGreaterThan(start!);
      expect(Math.max(...progress)).toBeLessThan(verified!);
      expect(verified!).toBeLessThan(middle.indexOf(applied[i]!));
      expect(middle[verified!]).toEqual({
        type: 'blob-verified',
        time: expect.any(String) as unknown,
        index: i,
        digest: layer.digest,
        size: layer.size,
        fromCache: false,
        fetched: layer.size,
      });
    }

    const summary = summaryOf(run.stdout);
    expect(summary).toMatchObject({
      type: 'done',
      reference: ref,
      digest: indexDigest,
      indexDigest,
      manifestDigest,
      platform: 'linux/amd64',
      configDigest: amd.configDescriptor.digest,
      layers: amd.layers.map((l, i) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: amd.diffIds[i] })),
      path: resolve(dir),
      bytesFetched: totalSize(amd),
      bytesFromCache: 0,
      cacheDir: cache,
    });
    expect(summary).not.toHaveProperty('config');
    expect(await readFile(join(dir, 'etc', 'hostname'), 'utf8')).toBe('two\n');
    expect(existsSync(join(dir, 'bin', 'tool'))).toBe(false);
  });
});
