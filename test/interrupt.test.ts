/**
 * The user stops a pull: real SIGINT and SIGTERM sent to the built CLI running as a child process
 * (and a real Ctrl-C typed into a real terminal), at each stage of a pull, and a reader that
 * closes the pipe early. Blob bodies are trickled through a proxy so that signals land in the
 * middle of downloads and applies. Every time: the exit code says what happened, the staging
 * directory is gone, DIR is as before or complete, and partial downloads stay for a resume.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { BIN, spawnCli, stagingDirs, startTrickleProxy, unverifiedBlobs, type TrickleProxy } from './helpers/crash-fixtures.js';
import { startServer, testRegistry, uniqueRepo } from './helpers/registry.js';
import { diffTrees, snapshotTree, type TreeEntry } from './helpers/tree.js';

const MiB = 1024 * 1024;
const EXIT = { SIGINT: 130, SIGTERM: 143 } as const;

let work: string;
let proxy: TrickleProxy;
let image: string;
let bigDigest: string;
let reference: Map<string, TreeEntry>;

beforeAll(async () => {
  const registry = testRegistry();
  work = await mkdtemp(join(tmpdir(), 'pu-interrupt-'));
  const repo = uniqueRepo('interrupt');
  const pushed = await pushImage(registry.url, repo, 'v1', {
    layers: [
      {
        tar: await tarLayer([
          { name: 'etc/', type: 'directory' },
          { name: 'etc/os-release', content: 'ID=interrupt\n' },
        ]),
      },
      { tar: await tarLayer([{ name: 'big.bin', content: randomBytes(6 * MiB) }]) },
      { tar: await tarLayer([{ name: 'more.bin', content: randomBytes(2 * MiB) }]), compression: 'zstd' },
    ],
  });
  bigDigest = pushed.layers[1]!.digest;
  // 64 KiB every 8 ms: the 6 MiB layer takes most of a second, so signals land mid-download.
  proxy = await startTrickleProxy(registry.url, { chunkBytes: 64 * 1024, intervalMs: 8 });
  image = `${proxy.host}/${repo}:v1`;
  const dir = join(work, 'reference');
  const run = spawnCli(['--json', '--cache-dir', join(work, 'reference-cache'), image, dir]);
  expect((await run.exited).code).toBe(0);
  reference = await snapshotTree(dir);
});

afterAll(async () => {
  await proxy?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** A parent directory with DIR filled with `files` files of the user's (what --force replaces). */
async function userDir(name: string, files = 3): Promise<{ dir: string; before: Map<string, TreeEntry> }> {
  const dir = join(work, name, 'rootfs');
  await mkdir(join(dir, 'home'), { recursive: true });
  for (let i = 0; i < files; i++) await writeFile(join(dir, 'home', `note-${i}`), `precious ${i}\n`);
  return { dir, before: await snapshotTree(dir) };
}

describe('a signal at each stage of a pull', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} while resolving (the registry has not answered the manifest yet): exit ${EXIT[signal]}, staging removed, DIR as before`, async () => {
      let requested!: () => void;
      const manifestRequested = new Promise<void>((resolve) => (requested = resolve));
      // Answers /v2/ and never the manifest: the pull is resolving for as long as the test likes.
      const stalling = await startServer((req, res) => {
        if (req.url === '/v2/') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        requested();
      });
      try {
        const { dir, before } = await userDir(`resolving-${signal}`);
        const run = spawnCli(['--json', '--cache-dir', join(work, `cache-resolving-${signal}`), `${stalling.host}/a/b:1`, dir, '--force']);
        await manifestRequested;
        expect(await stagingDirs(dir)).toHaveLength(1);
        run.child.kill(signal);
        expect(await run.exited).toEqual({ code: EXIT[signal], signal: null });
        expect(run.stderr()).toBe('pull-unpack: the operation was aborted\n');
        expect(await stagingDirs(dir)).toEqual([]);
        expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
      } finally {
        await stalling.close();
      }
    });

    it(`${signal} while downloading: exit ${EXIT[signal]}, staging removed, DIR as before, the partial blob kept for a resume`, async () => {
      const { dir, before } = await userDir(`downloading-${signal}`);
      const cache = join(work, `cache-downloading-${signal}`);
      const run = spawnCli(['--json', '--cache-dir', cache, image, dir, '--force']);
      await run.until((e) => e.type === 'blob-progress' && e['digest'] === bigDigest && (e['bytes'] as number) > 0);
      run.child.kill(signal);
      expect(await run.exited).toEqual({ code: EXIT[signal], signal: null });
      expect(run.stderr()).toBe('pull-unpack: the operation was aborted\n');
      expect(await stagingDirs(dir)).toEqual([]);
      expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
      const ingest = await readdir(join(cache, 'ingest'));
      expect(ingest).toContain(`${bigDigest.slice('sha256:'.length)}.partial`);
      expect(ingest.filter((n) => n.endsWith('.lock'))).toEqual([]);
      expect((await unverifiedBlobs(cache)).bad).toEqual([]);
    });

    it(`${signal} while applying (layer 1 applied, the rest downloading and applying): exit ${EXIT[signal]}, staging removed, DIR as before`, async () => {
      const { dir, before } = await userDir(`applying-${signal}`);
      const cache = join(work, `cache-applying-${signal}`);
      const run = spawnCli(['--json', '--cache-dir', cache, image, dir, '--force'], {});
      await run.until((e) => e.type === 'layer-applied' && e['index'] === 0);
      run.child.kill(signal);
      expect(await run.exited).toEqual({ code: EXIT[signal], signal: null });
      expect(run.events.some((e) => e.type === 'done')).toBe(false);
      expect(await stagingDirs(dir)).toEqual([]);
      expect(diffTrees(before, await snapshotTree(dir))).toEqual([]);
      expect((await unverifiedBlobs(cache)).bad).toEqual([]);
    });

    it(`${signal} while committing (DIR already moved aside): the commit completes, exit 0, DIR complete, no staging left`, async () => {
      // Many old files make the removal of the replaced DIR, the last step of the commit, take a while.
      const { dir } = await userDir(`committing-${signal}`, 3000);
      const cache = join(work, `cache-committing-${signal}`);
      const run = spawnCli(['--json', '--cache-dir', cache, image, dir, '--force']);
      const watcher = watch(join(dir, '..'));
      let signalled = false;
      watcher.on('change', (_type, name) => {
        // The commit's first rename takes DIR away: the pull is committing from now on.
        if (name === 'rootfs' && !signalled) {
          signalled = true;
          run.child.kill(signal);
        }
      });
      const exit = await run.exited;
      watcher.close();
      expect(signalled).toBe(true);
      expect({ exit, stderr: run.stderr() }).toEqual({ exit: { code: 0, signal: null }, stderr: '' });
      expect(run.events.at(-1)?.type).toBe('done');
      expect(await stagingDirs(dir)).toEqual([]);
      expect(diffTrees(reference, await snapshotTree(dir), { ignoreDirMtime: true })).toEqual([]);
    });
  }

  it('Ctrl-C typed into a real terminal: the progress display is cleared, one line says why, exit 130, staging removed', async () => {
    const dir = join(work, 'tty', 'rootfs');
    await mkdir(join(work, 'tty'));
    const command = [process.execPath, BIN, '--cache-dir', join(work, 'cache-tty'), image, dir].map((a) => `'${a}'`).join(' ');
    // script(1) runs the CLI on a new pseudo-terminal; a \x03 written to it is a real Ctrl-C
    // (the terminal sends SIGINT to its foreground process group).
    const terminal = spawn('script', ['-qfec', command, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      // Plain text on the screen, so the layer line is read as it is shown.
      env: { ...process.env, NO_COLOR: '1' },
    });
    let screen = '';
    let typed = false;
    terminal.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      screen += chunk;
      if (!typed && /downloading +[1-9][\d.]* [kM]B/.test(screen)) {
        typed = true;
        terminal.stdin.write('\x03');
      }
    });
    const code = await new Promise<number | null>((resolve) => terminal.on('close', resolve));
    expect(typed).toBe(true);
    expect(code).toBe(130);
    // After ^C (a redraw may still land between the echo and the abort): the display is erased
    // (cursor up over its lines, clear to the end) and only the error follows.
    const afterInterrupt = screen.slice(screen.lastIndexOf('^C'));
    expect(afterInterrupt).toMatch(/(?:\r|\x1b\[\d+[AF])\x1b\[Jpull-unpack: the operation was aborted\r\n$/);
    expect(afterInterrupt.slice(afterInterrupt.lastIndexOf('\x1b[J'))).toBe('\x1b[Jpull-unpack: the operation was aborted\r\n');
    expect(await readdir(join(work, 'tty'))).toEqual([]);
  });
});

describe('a reader that closes the pipe early', () => {
  it('--json | head -1: a quiet exit 141 with no stack trace, staging removed, DIR not created', async () => {
    const parent = join(work, 'epipe-json');
    await mkdir(parent);
    const dir = join(parent, 'rootfs');
    const cache = join(work, 'cache-epipe-json');
    const run = spawnCli(['--json', '--cache-dir', cache, image, dir]);
    await run.until((e) => e.type === 'blob-progress');
    // The reading end of the pipe goes away, as when `head -1` exits: the next write gets EPIPE.
    run.child.stdout!.destroy();
    expect(await run.exited).toEqual({ code: 141, signal: null });
    expect(run.stderr()).toBe('');
    expect(await readdir(parent)).toEqual([]);
    expect((await unverifiedBlobs(cache)).bad).toEqual([]);
  });

  it('--output tar - | head -c 1: a quiet exit 141 with no stack trace, staging removed', async () => {
    const cwd = join(work, 'epipe-tar');
    await mkdir(cwd);
    const child = spawn(process.execPath, [BIN, '--cache-dir', join(work, 'cache-epipe-tar'), '--output', 'tar', image, '-'], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    let first: Buffer | undefined;
    child.stdout.once('data', (chunk: Buffer) => {
      first = chunk;
      child.stdout.destroy();
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(first?.length).toBeGreaterThan(0);
    expect({ code, stderr }).toEqual({ code: 141, stderr: '' });
    expect(await readdir(cwd)).toEqual([]);
  });
});
