/**
 * `pull-unpack IMAGE DIR` end to end against the real distribution registry started by
 * `make test`: a feature-rich three-layer image checked entry by entry, Docker and index
 * variants, the CLI options, every failure leaving DIR exactly as it was, and a chroot.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { pull, type ErrorCode, type PullEvent } from '../src/index.js';
import { compressLayer, pushImage, pushIndex, tarLayer } from '../testdata/lib/image-builder.mjs';
import {
  CAP_NET_RAW_EP_BASE64,
  EXPECTED,
  EXPECTED_HARDLINK_GROUPS,
  IMAGE_MTIME_NS,
  bigContent,
  pushFeatureImage,
} from './helpers/feature-image.js';
import { startRegistryProxy, type ProxyOptions, type RegistryProxy } from './helpers/proxy.js';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';

const run = promisify(execFile);
const { host, url } = testRegistry();
const sha256hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

let work: string;
let featureRef: string;
let featureRepo: string;
let dockerRef: string;
let indexRef: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('test/pull.test.ts needs root (owners, device nodes, security.* xattrs, chroot)');
  work = await mkdtemp(join(tmpdir(), 'pull-test-'));
  featureRepo = uniqueRepo('pull-feature');
  await pushFeatureImage(url, featureRepo, 'v1');
  featureRef = `${host}/${featureRepo}:v1`;

  const dockerRepo = uniqueRepo('pull-docker');
  await pushFeatureImage(url, dockerRepo, 'v1', { format: 'docker' });
  dockerRef = `${host}/${dockerRepo}:v1`;

  const indexRepo = uniqueRepo('pull-index');
  const amd = await pushFeatureImage(url, indexRepo, null);
  const arm = await pushImage(url, indexRepo, null, {
    layers: [{ tar: await tarLayer([{ name: 'arm.txt', content: 'arm64\n' }]) }],
    config: { architecture: 'arm64', os: 'linux' },
  });
  await pushIndex(url, indexRepo, 'multi', [
    { descriptor: arm.descriptor, platform: { os: 'linux', architecture: 'arm64' } },
    { descriptor: amd.descriptor, platform: { os: 'linux', architecture: 'amd64' } },
  ]);
  indexRef = `${host}/${indexRepo}:multi`;
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** A fresh empty parent directory; DIR is `<parent>/rootfs` and does not exist yet. */
async function freshDir(): Promise<{ parent: string; dir: string }> {
  const parent = await mkdtemp(join(work, 'case-'));
  return { parent, dir: join(parent, 'rootfs') };
}

/** Checks that `dir` holds exactly the feature image's final tree. */
async function expectFeatureTree(dir: string): Promise<void> {
  const tree = await snapshotTree(dir);
  const paths = [...tree.keys()].filter((p) => p !== '.').sort();
  expect(paths).toEqual(Object.keys(EXPECTED).sort());
  expect(paths.filter((p) => p.split('/').some((part) => part.startsWith('.wh.')))).toEqual([]);
  expect(tree.get('.')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0 });
  const problems: string[] = [];
  for (const [path, want] of Object.entries(EXPECTED)) {
    const got = tree.get(path)!;
    const actual = {
      type: got.type,
      mode: `0${got.mode.toString(8)}`,
      owner: `${got.uid}:${got.gid}`,
      sha256: got.sha256,
      linkTarget: got.linkTarget,
      rdev: got.rdev,
      xattrs: got.xattrs,
      nlink: want.type === 'directory' ? undefined : got.nlink,
      mtime: got.mtimeNs,
    };
    const expected = {
      type: want.type,
      mode: `0${want.mode.toString(8)}`,
      owner: `${want.uid ?? 0}:${want.gid ?? 0}`,
      sha256: want.content === undefined ? undefined : sha256hex(want.content),
      linkTarget: want.linkTarget,
      rdev: want.rdev,
      xattrs: want.xattrs ?? {},
      nlink: want.type === 'directory' ? undefined : (want.nlink ?? 1),
      mtime: IMAGE_MTIME_NS,
    };
    if (JSON.stringify(actual) !== JSON.stringify(expected))
      problems.push(`${path}: got ${JSON.stringify(actual)}, want ${JSON.stringify(expected)}`);
  }
  expect(problems).toEqual([]);
  const groups = new Set([...tree.values()].filter((e) => e.hardlinks).map((e) => JSON.stringify(e.hardlinks)));
  expect([...groups].map((g) => JSON.parse(g) as string[])).toEqual(EXPECTED_HARDLINK_GROUPS);
}

describe('pull-unpack IMAGE DIR: the feature image', () => {
  it('unpacks gzip, zstd and uncompressed layers with every outcome exactly right', async () => {
    const { dir } = await freshDir();
    const r = await runCli([featureRef, dir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`${featureRepo}.* sha256:[0-9a-f]{64} -> ${dir} \\(3 layers, `));
    await expectFeatureTree(dir);
  });

  it('keeps the capability and user xattrs as getfattr (and getcap) report them', async () => {
    const { dir } = await freshDir();
    expect((await runCli([featureRef, dir, '--quiet'])).code).toBe(0);
    const cap = await run('getfattr', ['-n', 'security.capability', '-e', 'base64', '--absolute-names', join(dir, 'usr/bin/ping')]);
    expect(cap.stdout).toContain(`security.capability=0s${CAP_NET_RAW_EP_BASE64}`);
    const getcap = await run('getcap', [join(dir, 'usr/bin/ping')]).catch(() => run('/usr/sbin/getcap', [join(dir, 'usr/bin/ping')]));
    expect(getcap.stdout).toMatch(/cap_net_raw[=+]ep/);
    const user = await run('getfattr', ['-d', '-e', 'text', '--absolute-names', join(dir, 'etc/userattr.txt')]);
    expect(user.stdout).toContain('user.comment="hello xattr"');
    // A whiteout never reaches the disk, in any namespace or name form.
    const found = await run('find', [dir, '-name', '.wh.*']);
    expect(found.stdout).toBe('');
  });

  it('unpacks the same image in Docker schema 2 format', async () => {
    const { dir } = await freshDir();
    const r = await runCli([dockerRef, dir, '--json']);
    expect(r.code).toBe(0);
    const resolved = parseEvents(r.stdout).find((e) => e.type === 'resolved');
    expect(resolved).toMatchObject({ mediaType: 'application/vnd.docker.distribution.manifest.v2+json' });
    await expectFeatureTree(dir);
  });

  it('picks the image of --platform from a multi-platform index', async () => {
    const amd = await freshDir();
    const r = await runCli([indexRef, amd.dir, '--platform', 'linux/amd64', '--json']);
    expect(r.code).toBe(0);
    expect(parseEvents(r.stdout)[0]).toMatchObject({
      type: 'resolved',
      platform: 'linux/amd64',
      mediaType: 'application/vnd.oci.image.index.v1+json',
    });
    await expectFeatureTree(amd.dir);

    const arm = await freshDir();
    expect((await runCli([indexRef, arm.dir, '--platform', 'linux/arm64', '-q'])).code).toBe(0);
    expect(await readdir(arm.dir)).toEqual(['arm.txt']);
    expect(await readFile(join(arm.dir, 'arm.txt'), 'utf8')).toBe('arm64\n');
  });
});

describe('pull-unpack options', () => {
  it('--concurrency bounds the parallel layer downloads', async () => {
    for (const [concurrency, expected] of [
      [1, 1],
      [2, 2],
      [3, 3],
    ] as const) {
      const proxy = await startRegistryProxy(url, { delayMs: 300 });
      try {
        const { dir } = await freshDir();
        const r = await runCli([`${proxy.host}/${featureRepo}:v1`, dir, '--concurrency', String(concurrency), '-q']);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        // The config blob plus the three layers.
        expect(proxy.blobRequests).toHaveLength(4);
        expect(proxy.maxInFlight).toBe(expected);
        await expectFeatureTree(dir);
      } finally {
        await proxy.close();
      }
    }
  });

  it('rejects a --concurrency that is not a whole number from 1 to 64 (usage, exit 2)', async () => {
    for (const bad of ['0', '65', '1.5', 'x']) {
      const { parent, dir } = await freshDir();
      const r = await runCli([featureRef, dir, '--concurrency', bad]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/--concurrency/);
      expect(await readdir(parent)).toEqual([]);
    }
  });

  it('refuses a non-empty DIR without --force and leaves it untouched', async () => {
    const { parent, dir } = await freshDir();
    await populate(dir);
    const before = await snapshotTree(dir);
    const r = await runCli([featureRef, dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not empty/);
    expect(r.stderr).toMatch(/--force/);
    expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
    expect(await readdir(parent)).toEqual(['rootfs']);
  });

  it('--force replaces a non-empty DIR: the old content is gone, the image is there', async () => {
    const { parent, dir } = await freshDir();
    await populate(dir);
    const r = await runCli([featureRef, dir, '--force', '-q']);
    expect(r.code).toBe(0);
    await expectFeatureTree(dir);
    expect(await readdir(parent)).toEqual(['rootfs']);
  });

  it('gives the same tree whatever the umask of the process', async () => {
    const { dir } = await freshDir();
    const old = process.umask(0o077);
    try {
      expect((await runCli([featureRef, dir, '-q'])).code).toBe(0);
    } finally {
      process.umask(old);
    }
    await expectFeatureTree(dir);
  });

  it('unpacks into an existing empty DIR', async () => {
    const { parent, dir } = await freshDir();
    await mkdir(dir);
    expect((await runCli([featureRef, dir, '-q'])).code).toBe(0);
    await expectFeatureTree(dir);
    expect(await readdir(parent)).toEqual(['rootfs']);
  });

  it('--json prints events in order: resolved, downloads, layers in index order, done last', async () => {
    const { dir } = await freshDir();
    const r = await runCli([featureRef, dir, '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const events = parseEvents(r.stdout);
    const types = events.map((e) => e.type);
    expect(types[0]).toBe('resolved');
    expect(types.at(-1)).toBe('done');
    expect(types.filter((t) => t === 'done')).toHaveLength(1);
    const config = events.findIndex((e) => e.type === 'config');
    expect(events[config]).toMatchObject({ layers: 3 });
    expect(config).toBeLessThan(types.indexOf('blob-start'));
    const applied = events.filter((e) => e.type === 'layer-applied');
    expect(applied.map((e) => e.index)).toEqual([0, 1, 2]);
    const done = events.at(-1)!;
    const layers = done.layers as Array<{ digest: string }>;
    expect(layers).toHaveLength(3);
    for (const [i, layer] of layers.entries()) {
      const start = events.findIndex((e) => e.type === 'blob-start' && e.digest === layer.digest);
      const verified = events.findIndex((e) => e.type === 'blob-verified' && e.digest === layer.digest);
      const appliedAt = events.findIndex((e) => e.type === 'layer-applied' && e.index === i);
      expect(start).toBeGreaterThan(0);
      expect(verified).toBeGreaterThan(start);
      expect(appliedAt).toBeGreaterThan(verified);
      expect(events[appliedAt]).toMatchObject({ digest: layer.digest });
    }
    expect(done).toMatchObject({ type: 'done', path: dir, manifestDigest: expect.stringMatching(/^sha256:/) });
    expect(done.bytesFetched).toBe(layers.reduce((n, l) => n + (l as unknown as { size: number }).size, 0));
    await expectFeatureTree(dir);
  });

  it('--quiet prints nothing at all', async () => {
    const { dir } = await freshDir();
    const r = await runCli([featureRef, dir, '--quiet']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('');
    await expectFeatureTree(dir);
  });
});

describe('pull-unpack layer lists', () => {
  it('applies a layer listed twice each time, in order (A, B removes, A restores)', async () => {
    const repo = uniqueRepo('pull-dup');
    const a = await tarLayer([{ name: 'x.txt', content: 'from A\n' }]);
    const b = await tarLayer([{ name: '.wh.x.txt' }, { name: 'b.txt', content: 'from B\n' }]);
    const pushed = await pushImage(url, repo, 'v1', { layers: [{ tar: a }, { tar: b }, { tar: a }] });
    expect(pushed.layers[0]!.digest).toBe(pushed.layers[2]!.digest);
    const { dir } = await freshDir();
    const r = await runCli([`${host}/${repo}:v1`, dir, '--json']);
    expect(r.code).toBe(0);
    expect(
      parseEvents(r.stdout)
        .filter((e) => e.type === 'layer-applied')
        .map((e) => e.index),
    ).toEqual([0, 1, 2]);
    expect((await readdir(dir)).sort()).toEqual(['b.txt', 'x.txt']);
    expect(await readFile(join(dir, 'x.txt'), 'utf8')).toBe('from A\n');
  });

  it('an image without layers gives an empty DIR', async () => {
    const repo = uniqueRepo('pull-nolayers');
    await pushImage(url, repo, 'v1', { layers: [] });
    const { parent, dir } = await freshDir();
    expect((await runCli([`${host}/${repo}:v1`, dir, '-q'])).code).toBe(0);
    expect(await readdir(dir)).toEqual([]);
    expect(await readdir(parent)).toEqual(['rootfs']);
  });

  it('creates parents a layer does not list as 0755 root:root directories, whatever the umask', async () => {
    const repo = uniqueRepo('pull-implicit');
    await pushImage(url, repo, 'v1', { layers: [{ tar: await tarLayer([{ name: 'a/b/c/file', content: 'deep\n', uid: 7, gid: 8 }]) }] });
    const { dir } = await freshDir();
    const old = process.umask(0o077);
    try {
      expect((await runCli([`${host}/${repo}:v1`, dir, '-q'])).code).toBe(0);
    } finally {
      process.umask(old);
    }
    expect((await snapshotTree(dir)).get('.')).toMatchObject({ mode: 0o755 });
    const tree = await snapshotTree(dir);
    for (const p of ['a', 'a/b', 'a/b/c']) expect(tree.get(p)).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0 });
    expect(tree.get('a/b/c/file')).toMatchObject({ type: 'file', mode: 0o644, uid: 7, gid: 8, sha256: sha256hex('deep\n') });
  });
});

describe('pull-unpack destinations it refuses', () => {
  it('a DIR that is a file, even with --force: exit 1, the file untouched', async () => {
    const { parent, dir } = await freshDir();
    await writeFile(dir, 'a file\n');
    const r = await runCli([featureRef, dir, '--force']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not a directory/);
    expect(await readFile(dir, 'utf8')).toBe('a file\n');
    expect(await readdir(parent)).toEqual(['rootfs']);
  });
});

describe('pull-unpack on a terminal', () => {
  it('draws "resolving", then the layers and a total line on stderr, erases it all, and prints the result line', async () => {
    const { dir } = await freshDir();
    const stdout = new PassThrough();
    const stderr = Object.assign(new PassThrough(), { isTTY: true, columns: 100, rows: 30 });
    let out = '';
    let err = '';
    stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const code = await main([featureRef, dir], { stdout, stderr, env: { ...process.env, NO_COLOR: '1' } });
    expect(code).toBe(0);
    expect(out).toMatch(/-> .*rootfs \(3 layers, [\d.]+ [kM]?B\)\n$/);
    // Each drawing starts by going back over the previous one; the output ends with the erase.
    const drawings = err.split(/\r\x1b\[\d+A\x1b\[J/);
    expect(drawings[0]).toBe(`resolving ${featureRef} ...\n`);
    expect(drawings.at(-1)).toBe('');
    const last = drawings.at(-2)!.split('\n').filter(Boolean);
    expect(last).toHaveLength(5);
    expect(last[0]).toContain(featureRepo);
    expect(last.slice(1, 4).every((l) => /^ {2}[0-9a-f]{12} {2}\S/.test(l))).toBe(true);
    expect(last[4]).toMatch(/^ {2}total {2}[\d.]+ [kM]?B \/ [\d.]+ [kM]?B {2}\d+%/);
    // Drawings are at most ten a second, but the last state is drawn before the erase, however quick the pull.
    expect(last.slice(1, 4).every((l) => /^ {2}[0-9a-f]{12} {2}done {2}[\d.]+ [kM]?B, \d+ files$/.test(l))).toBe(true);
    // Erased exactly: the last erase goes up over the 5 lines drawn.
    expect(err.endsWith('\r\x1b[5A\x1b[J')).toBe(true);
    expect(stderr.listenerCount('resize')).toBe(0);
  });
});

/** DIR with a little tree of its own, to prove it is untouched or replaced. */
async function populate(dir: string): Promise<void> {
  await mkdir(join(dir, 'sub'), { recursive: true });
  await writeFile(join(dir, 'sentinel'), 'keep me\n');
  await writeFile(join(dir, 'sub/nested'), 'nested\n');
}

function parseEvents(stdout: string): Array<Record<string, unknown> & { type: string }> {
  return stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown> & { type: string });
}

/**
 * The failure contract: non-zero exit with a clear one-line message; a pre-existing DIR (with
 * --force) exactly as before; a DIR that did not exist still missing; no staging left beside it.
 */
async function expectPullFails(
  image: string,
  code: ErrorCode,
  message: RegExp,
  options: { noDownloads?: boolean; attempts?: number; platform?: string } = {},
): Promise<void> {
  const existing = await freshDir();
  await populate(existing.dir);
  const before = await snapshotTree(existing.dir);
  const r = await runCli([image, existing.dir, '--force', ...(options.platform ? ['--platform', options.platform] : [])]);
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/unexpected error|\n\s+at /);
  expect(diffTrees(before, await snapshotTree(existing.dir))).toEqual([]);
  expect(await readdir(existing.parent)).toEqual(['rootfs']);

  const missing = await freshDir();
  const events: PullEvent[] = [];
  await expect(
    pull(image, missing.dir, { attempts: options.attempts, platform: options.platform, onEvent: (e) => events.push(e) }),
  ).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
  expect(await readdir(missing.parent)).toEqual([]);
  if (options.noDownloads) expect(events.filter((e) => e.type.startsWith('blob-'))).toEqual([]);
}

describe('failures leave DIR exactly as it was', () => {
  const goodLayer = async () => ({
    tar: await tarLayer([
      { name: 'good/', type: 'directory' as const },
      { name: 'good/file', content: 'good\n' },
    ]),
  });
  const payload = async () => tarLayer([{ name: 'payload.bin', content: bigContent().subarray(0, 256 * 1024) }]);

  it('a layer whose DiffID does not match the config', async () => {
    const repo = uniqueRepo('pull-diffid');
    await pushImage(url, repo, 'v1', { layers: [await goodLayer(), { tar: await payload(), diffId: `sha256:${'ab'.repeat(32)}` }] });
    await expectPullFails(`${host}/${repo}:v1`, 'DIFFID_MISMATCH', /layer 2\/2.*DiffID/);
  });

  it('a truncated gzip layer (digest correct for the truncated bytes)', async () => {
    const repo = uniqueRepo('pull-truncated');
    const tar = await payload();
    const gz = await compressLayer(tar, 'gzip');
    await pushImage(url, repo, 'v1', { layers: [await goodLayer(), { tar, blob: gz.subarray(0, Math.floor(gz.length / 2)) }] });
    await expectPullFails(`${host}/${repo}:v1`, 'CORRUPT_LAYER', /layer 2\/2/);
  });

  it('a layer declared gzip that holds zstd bytes', async () => {
    const repo = uniqueRepo('pull-mismatch');
    const tar = await payload();
    await pushImage(url, repo, 'v1', {
      layers: [
        await goodLayer(),
        { tar, blob: await compressLayer(tar, 'zstd'), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' },
      ],
    });
    await expectPullFails(`${host}/${repo}:v1`, 'COMPRESSION_MISMATCH', /zstd/);
  });

  it('an unknown layer media type, before anything is downloaded', async () => {
    const repo = uniqueRepo('pull-unknown');
    await pushImage(url, repo, 'v1', {
      layers: [await goodLayer(), { tar: await payload(), mediaType: 'application/vnd.example.layer.v1.squashfs' }],
    });
    await expectPullFails(`${host}/${repo}:v1`, 'UNSUPPORTED_MEDIA_TYPE', /application\/vnd\.example\.layer\.v1\.squashfs/, {
      noDownloads: true,
    });
  });

  it('an index without the wanted platform', async () => {
    await expectPullFails(indexRef, 'NO_MATCHING_PLATFORM', /linux\/s390x/, { platform: 'linux/s390x', noDownloads: true });
  });

  it('a tag the registry does not have', async () => {
    await expectPullFails(`${host}/${uniqueRepo('pull-none')}:nope`, 'NOT_FOUND', /nope|not found|unknown/i, { noDownloads: true });
  });

  describe('through a misbehaving proxy', () => {
    let repo: string;
    let payloadDigest: string;
    let goodDigest: string;
    beforeAll(async () => {
      repo = uniqueRepo('pull-proxy');
      const pushed = await pushImage(url, repo, 'v1', { layers: [await goodLayer(), { tar: await payload(), compression: 'none' }] });
      goodDigest = pushed.layers[0]!.digest;
      payloadDigest = pushed.layers[1]!.digest;
    });
    const withProxy = async (options: ProxyOptions, body: (proxy: RegistryProxy) => Promise<void>): Promise<void> => {
      const proxy = await startRegistryProxy(url, { only: (d) => d === payloadDigest, ...options });
      try {
        await body(proxy);
      } finally {
        await proxy.close();
      }
    };

    it('a blob whose bytes do not match its digest', async () => {
      await withProxy({ blobs: 'flip-byte' }, async (proxy) => {
        await expectPullFails(`${proxy.host}/${repo}:v1`, 'DIGEST_MISMATCH', /layer 2\/2.*hashes to/);
      });
    });

    it('a connection dropped in the middle of a blob on every attempt', async () => {
      await withProxy({ blobs: 'drop-half' }, async (proxy) => {
        await expectPullFails(`${proxy.host}/${repo}:v1`, 'NETWORK', /layer 2\/2/, { attempts: 2 });
      });
    });

    it('a connection dropped once is resumed from the byte reached, with a warning', async () => {
      await withProxy({ blobs: 'drop-half', times: 1 }, async (proxy) => {
        const { dir } = await freshDir();
        const r = await runCli([`${proxy.host}/${repo}:v1`, dir]);
        expect(r.code).toBe(0);
        expect(r.stderr.match(/^warning: layer 2\/2 .*connection lost at byte \d+ .*resuming.*$/gm)).toHaveLength(1);
        expect(proxy.blobRequests.filter((d) => d === payloadDigest)).toHaveLength(2);
        expect(await readFile(join(dir, 'payload.bin'))).toEqual(bigContent().subarray(0, 256 * 1024));
        expect(await readFile(join(dir, 'good/file'), 'utf8')).toBe('good\n');
      });
    });

    it('Ctrl-C during a download: exit 130, DIR untouched, no staging left', async () => {
      await withProxy({ blobs: 'stall-half' }, async (proxy) => {
        const image = `${proxy.host}/${repo}:v1`;
        const { parent, dir } = await freshDir();
        await populate(dir);
        const before = await snapshotTree(dir);
        const controller = new AbortController();
        const stdout = new PassThrough();
        const stderr = new PassThrough();
        const lines: string[] = [];
        let err = '';
        stdout.setEncoding('utf8').on('data', (chunk: string) => {
          lines.push(...chunk.split('\n').filter(Boolean));
          if (chunk.includes('"type":"blob-progress"')) controller.abort();
        });
        stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
        const started = Date.now();
        const code = await main([image, dir, '--force', '--json', '--no-cache'], {
          stdout,
          stderr,
          env: process.env,
          signal: controller.signal,
        });
        expect(controller.signal.aborted).toBe(true);
        expect(code).toBe(130);
        expect(err).toMatch(/abort/i);
        expect(Date.now() - started).toBeLessThan(10_000);
        expect(lines.some((l) => l.includes('"type":"done"'))).toBe(false);
        expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
        expect(await readdir(parent)).toEqual(['rootfs']);
      });
    });

    it('a failed download stops a stalled earlier one at once and is the error reported', async () => {
      const only = (d: string): boolean => d === payloadDigest || d === goodDigest;
      await withProxy({ blobs: (d) => (d === payloadDigest ? 'flip-byte' : 'stall-half'), only }, async (proxy) => {
        const { parent, dir } = await freshDir();
        const started = Date.now();
        await expect(pull(`${proxy.host}/${repo}:v1`, dir, { concurrency: 2 })).rejects.toMatchObject({
          code: 'DIGEST_MISMATCH',
          message: expect.stringMatching(/layer 2\/2/),
        });
        expect(Date.now() - started).toBeLessThan(10_000);
        expect(await readdir(parent)).toEqual([]);
      });
    });

    it('after a failed download, queued downloads never start', async () => {
      const queuedRepo = uniqueRepo('pull-queued');
      const layers = await Promise.all(
        ['one', 'two', 'three'].map(async (n) => ({ tar: await tarLayer([{ name: `${n}.txt`, content: `${n}\n` }]) })),
      );
      const pushed = await pushImage(url, queuedRepo, 'v1', { layers });
      const [first, ...rest] = pushed.layers.map((l) => l.digest);
      const proxy = await startRegistryProxy(url, { blobs: 'flip-byte', only: (d) => d === first });
      try {
        const { parent, dir } = await freshDir();
        const events: PullEvent[] = [];
        await expect(pull(`${proxy.host}/${queuedRepo}:v1`, dir, { concurrency: 1, onEvent: (e) => events.push(e) })).rejects.toMatchObject(
          {
            code: 'DIGEST_MISMATCH',
          },
        );
        expect(events.filter((e) => e.type === 'blob-start').map((e) => (e as { digest: string }).digest)).toEqual([first]);
        expect(proxy.blobRequests.filter((d) => rest.includes(d))).toEqual([]);
        expect(await readdir(parent)).toEqual([]);
      } finally {
        await proxy.close();
      }
    });

    it('an aborted library pull() rejects with ABORTED and creates nothing', async () => {
      await withProxy({ blobs: 'stall-half' }, async (proxy) => {
        const { parent, dir } = await freshDir();
        const controller = new AbortController();
        const pulling = pull(`${proxy.host}/${repo}:v1`, dir, {
          signal: controller.signal,
          onEvent: (e) => {
            if (e.type === 'blob-progress') controller.abort();
          },
        });
        await expect(pulling).rejects.toMatchObject({ code: 'ABORTED' });
        expect(await readdir(parent)).toEqual([]);
      });
    });
  });
});

describe('abort while layers are being applied', () => {
  it('stops between layers: ABORTED, the existing DIR untouched, no staging left', async () => {
    const { parent, dir } = await freshDir();
    await populate(dir);
    const before = await snapshotTree(dir);
    const controller = new AbortController();
    const events: PullEvent[] = [];
    const pulling = pull(featureRef, dir, {
      force: true,
      signal: controller.signal,
      onEvent: (e) => {
        events.push(e);
        if (e.type === 'layer-applied') controller.abort();
      },
    });
    await expect(pulling).rejects.toMatchObject({ code: 'ABORTED' });
    expect(events.filter((e) => e.type === 'layer-applied')).toHaveLength(1);
    expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
    expect(await readdir(parent)).toEqual(['rootfs']);
  });
});

describe('the unpacked root filesystem runs', () => {
  it('chroot DIR /bin/sh runs a static busybox from the image', async () => {
    const busybox = await readFile('/bin/busybox').catch(() => {
      throw new Error('/bin/busybox is missing: install busybox-static (scripts/setup.sh does)');
    });
    const repo = uniqueRepo('pull-busybox');
    await pushImage(url, repo, 'v1', {
      layers: [
        {
          tar: await tarLayer([
            { name: 'bin/', type: 'directory' },
            { name: 'bin/busybox', mode: 0o755, content: busybox },
            { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
            { name: 'bin/cat', type: 'symlink', linkname: '/bin/busybox' },
          ]),
        },
        {
          tar: await tarLayer([
            { name: 'etc/', type: 'directory' },
            { name: 'etc/hostname-test', content: 'pull-unpack\n' },
          ]),
          compression: 'zstd',
        },
      ],
    });
    const { dir } = await freshDir();
    expect((await runCli([`${host}/${repo}:v1`, dir, '-q'])).code).toBe(0);
    const out = await run('chroot', [dir, '/bin/sh', '-c', 'echo hello from $(cat /etc/hostname-test)']);
    expect(out.stdout).toBe('hello from pull-unpack\n');
  });
});
