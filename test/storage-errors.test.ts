/**
 * A cache or destination whose filesystem refuses writes, made real: a small tmpfs (ENOSPC), a
 * btrfs qgroup limit (EDQUOT), a read-only bind mount (EROFS) and a directory the user `nobody`
 * may not write (EACCES). The built CLI runs as a child process; each time it ends with exit 1
 * and two lines (what cannot be written, and what to do), and leaves nothing behind: no
 * partial blob on the full filesystem, no lock, no staging directory.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { watch } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { BIN, spawnCli, unverifiedBlobs } from './helpers/crash-fixtures.js';
import { IS_ROOT, NEEDS_ROOT, NOBODY, withQuota, withReadOnly, withTmpfs } from './helpers/filesystems.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let work: string;
let image: string;

beforeAll(async () => {
  const registry = testRegistry();
  // Readable by nobody too (the EACCES test runs the CLI as nobody).
  work = await mkdtemp(join(tmpdir(), 'pu-storage-'));
  await chmod(work, 0o755);
  const repo = uniqueRepo('storage');
  await pushImage(registry.url, repo, 'v1', {
    layers: [
      { tar: await tarLayer([{ name: 'a.bin', content: randomBytes(3 * MiB) }]) },
      { tar: await tarLayer([{ name: 'b.bin', content: randomBytes(3 * MiB) }]), compression: 'zstd' },
    ],
  });
  image = `${registry.host}/${repo}:v1`;
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/**
 * Runs `pull-unpack ...args` (with `env` added to the environment, in `work`); expects exit 1 and
 * exactly `pull-unpack: cannot write ...` plus a hint.
 */
async function expectStorageFailure(
  args: string[],
  message: RegExp,
  hint: RegExp,
  user?: { uid: number; gid: number },
  env: NodeJS.ProcessEnv = {},
): Promise<void> {
  const run = spawnCli(args, { env: { ...process.env, HOME: work, ...env }, cwd: work, ...(user ? { user } : {}) });
  const exit = await run.exited;
  const stderr = run.stderr();
  expect({ exit, stdout: run.stdout() }).toEqual({ exit: { code: 1, signal: null }, stdout: '' });
  const lines = stderr.split('\n');
  expect(lines, stderr).toHaveLength(3);
  expect(lines[0]).toMatch(message);
  expect(lines[1]).toMatch(hint);
  expect(stderr).not.toMatch(/unexpected error|connection lost|resuming|\n\s+at /);
}

/** Every file left under `dir` (relative), directories omitted. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => !e.isDirectory()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1));
}

const CACHE_FULL_HINT = /^hint: .*--cache-dir DIR.*--no-cache.*pull-unpack cache prune --all/;

describe('a full disk', () => {
  it.skipIf(!IS_ROOT)(
    `ENOSPC in the cache: names the cache and --cache-dir, --no-cache, cache prune; no partial blob, lock or staging left${NEEDS_ROOT}`,
    async () => {
      const mount = join(work, 'full-cache');
      const parent = join(work, 'full-cache-dest');
      await mkdir(parent);
      await withTmpfs(mount, '2m', async () => {
        const cache = join(mount, 'cache');
        await expectStorageFailure(
          ['--cache-dir', cache, image, join(parent, 'rootfs')],
          new RegExp(`^pull-unpack: cannot write the blob cache ${cache}: no space left on the device \\(ENOSPC\\)$`),
          CACHE_FULL_HINT,
        );
        // Only the cache's skeleton and verified blobs (the manifest and config) remain.
        expect(await readdir(join(cache, 'ingest'))).toEqual([]);
        expect((await unverifiedBlobs(cache)).bad).toEqual([]);
        expect(await filesUnder(cache)).toEqual(expect.not.arrayContaining([expect.stringMatching(/partial|lock|tmp/)]));
      });
      expect(await readdir(parent)).toEqual([]);
    },
  );

  it.skipIf(!IS_ROOT)(
    `ENOSPC in the destination: names DIR and another filesystem as the way out; no staging left${NEEDS_ROOT}`,
    async () => {
      const mount = join(work, 'full-dest');
      const cache = join(work, 'full-dest-cache');
      await withTmpfs(mount, '4m', async () => {
        const dir = join(mount, 'rootfs');
        await expectStorageFailure(
          ['--cache-dir', cache, image, dir],
          new RegExp(`^pull-unpack: cannot write ${dir}: no space left on the device \\(ENOSPC\\)$`),
          /^hint: free some space there, or choose a DIR on another filesystem/,
        );
        expect(await readdir(mount)).toEqual([]);
      });
      expect((await unverifiedBlobs(cache)).bad).toEqual([]);
    },
  );

  it.skipIf(!IS_ROOT)(
    `ENOSPC with --no-cache (downloads kept in the staging directory): names DIR; nothing left${NEEDS_ROOT}`,
    async () => {
      const mount = join(work, 'full-nocache');
      await withTmpfs(mount, '4m', async () => {
        const dir = join(mount, 'rootfs');
        await expectStorageFailure(
          ['--no-cache', image, dir],
          new RegExp(`^pull-unpack: cannot write ${dir}( \\(.*\\))?: no space left on the device \\(ENOSPC\\)$`),
          /^hint: free some space there/,
        );
        expect(await readdir(mount)).toEqual([]);
      });
    },
  );

  it.skipIf(!IS_ROOT)(
    `EDQUOT in the cache (a btrfs qgroup limit): names the cache and what to do; no partial blob left${NEEDS_ROOT}`,
    async () => {
      const parent = join(work, 'quota-dest');
      await mkdir(parent);
      await withQuota(join(work, 'quota'), '1M', async (subvolume) => {
        const cache = join(subvolume, 'cache');
        await expectStorageFailure(
          ['--cache-dir', cache, image, join(parent, 'rootfs')],
          new RegExp(`^pull-unpack: cannot write the blob cache ${cache}( \\(.*\\))?: the disk quota is exceeded \\(EDQUOT\\)$`),
          CACHE_FULL_HINT,
        );
        expect(await readdir(join(cache, 'ingest'))).toEqual([]);
      });
      expect(await readdir(parent)).toEqual([]);
    },
  );
});

describe('a filesystem that may not be written', () => {
  it.skipIf(!IS_ROOT)(`EROFS: a read-only cache, then a read-only destination, each named with what to do${NEEDS_ROOT}`, async () => {
    const readOnly = join(work, 'read-only');
    const parent = join(work, 'ro-dest');
    await mkdir(parent);
    await withReadOnly(readOnly, async () => {
      await expectStorageFailure(
        ['--cache-dir', join(readOnly, 'cache'), image, join(parent, 'rootfs')],
        new RegExp(`^pull-unpack: cannot write the blob cache ${join(readOnly, 'cache')}.*: the filesystem is read-only \\(EROFS\\)$`),
        /^hint: use a cache you can write \(--cache-dir DIR\), or none \(--no-cache\)$/,
      );
      await expectStorageFailure(
        ['--cache-dir', join(work, 'ro-cache'), image, join(readOnly, 'rootfs')],
        new RegExp(`^pull-unpack: cannot write ${join(readOnly, 'rootfs')} .*: the filesystem is read-only \\(EROFS\\)$`),
        /^hint: choose a DIR you can write/,
      );
      expect(await readdir(readOnly)).toEqual([]);
    });
    expect(await readdir(parent)).toEqual([]);
  });

  it.skipIf(!IS_ROOT)(`EACCES: run as nobody, a cache and a destination it may not write, each named${NEEDS_ROOT}`, async () => {
    const locked = join(work, 'root-only');
    await mkdir(locked, { mode: 0o755 });
    // Only the cache is out of bounds here: nobody may write the destination's parent.
    const parent = join(work, 'nobody-dest');
    await mkdir(parent);
    await chmod(parent, 0o777);
    await expectStorageFailure(
      ['--cache-dir', join(locked, 'cache'), image, join(parent, 'rootfs')],
      new RegExp(`^pull-unpack: cannot write the blob cache ${join(locked, 'cache')}.*: permission denied \\(EACCES\\)$`),
      /^hint: use a cache you can write/,
      NOBODY,
    );
    await expectStorageFailure(
      ['--no-cache', image, join(locked, 'rootfs')],
      new RegExp(`^pull-unpack: cannot write ${join(locked, 'rootfs')} .*: permission denied \\(EACCES\\)$`),
      /^hint: choose a DIR you can write/,
      NOBODY,
    );
    expect(await readdir(locked)).toEqual([]);
    expect(await readdir(parent)).toEqual([]);
  });
});

describe('a tar for standard output (--output tar -)', () => {
  it.skipIf(!IS_ROOT)(
    `is staged in $TMPDIR, never in the current directory: a read-only current directory is no obstacle${NEEDS_ROOT}`,
    async () => {
      const cwd = join(work, 'ro-cwd');
      const temporary = join(work, 'stream-tmp');
      await mkdir(temporary);
      const staged: string[] = [];
      const watcher = watch(temporary, (_event, name) => staged.push(String(name)));
      const tarFile = join(work, 'stream.tar');
      const out = await open(tarFile, 'w');
      try {
        await withReadOnly(cwd, async () => {
          const child = spawn(process.execPath, [BIN, '--cache-dir', join(work, 'stream-cache'), '--output', 'tar', image, '-'], {
            cwd,
            env: { ...process.env, HOME: work, TMPDIR: temporary },
            stdio: ['ignore', out.fd, 'pipe'],
          });
          let stderr = '';
          child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
          const [code] = (await once(child, 'close')) as [number | null];
          expect({ code, stderr }).toEqual({ code: 0, stderr: expect.stringMatching(/-> - \(2 layers/) as unknown });
          expect(await readdir(cwd)).toEqual([]);
        });
      } finally {
        watcher.close();
        await out.close();
      }
      expect(staged.some((name) => name.startsWith('.pull-unpack-stream.pull-unpack-'))).toBe(true);
      expect(await readdir(temporary)).toEqual([]);
      expect((await run('tar', ['-tf', tarFile])).stdout.split('\n').filter(Boolean).sort()).toEqual(['a.bin', 'b.bin']);
    },
  );

  it.skipIf(!IS_ROOT)(`ENOSPC in $TMPDIR: names the temporary directory and TMPDIR; nothing left there${NEEDS_ROOT}`, async () => {
    const mount = join(work, 'full-tmp');
    await withTmpfs(mount, '4m', async () => {
      await expectStorageFailure(
        ['--cache-dir', join(work, 'full-tmp-cache'), '--output', 'tar', image, '-'],
        new RegExp(`^pull-unpack: cannot write the temporary directory ${mount}( \\(.*\\))?: no space left on the device \\(ENOSPC\\)$`),
        /^hint: free some space there, or set TMPDIR to a directory with room/,
        undefined,
        { TMPDIR: mount },
      );
      expect(await readdir(mount)).toEqual([]);
    });
  });
});
