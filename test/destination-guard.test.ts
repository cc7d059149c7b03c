/**
 * `--force` replaces DIR, so a DIR that holds more than the user named is refused (usage error,
 * exit 2) before anything is touched: the built CLI runs as a child process in a chosen working
 * directory and $HOME, against a server that counts requests (none may arrive), and the
 * directories it was pointed at are compared before and after.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCli } from './helpers/crash-fixtures.js';
import { startServer, type TestServer } from './helpers/registry.js';
import { diffTrees, snapshotTree, type TreeEntry } from './helpers/tree.js';

let work: string;
let home: string;
let project: string;
let server: TestServer;
let requests = 0;
let image: string;
let before: Map<string, TreeEntry>;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-guard-'));
  home = join(work, 'home', 'user');
  project = join(home, 'project', 'src');
  await mkdir(project, { recursive: true });
  await writeFile(join(home, '.profile'), 'precious\n');
  await writeFile(join(project, 'main.c'), 'int main(void) { return 0; }\n');
  server = await startServer((_req, res) => {
    requests++;
    res.writeHead(500).end();
  });
  image = `${server.host}/a/b:1`;
  before = await snapshotTree(work);
});

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

/** Runs `pull-unpack --force IMAGE DIR ...` in `cwd` with $HOME set; expects a refusal naming `why`. */
async function expectRefused(dir: string, why: RegExp, extra: string[] = [], cwd = project): Promise<void> {
  const seen = requests;
  const run = spawnCli(['--force', image, dir, ...extra], {
    cwd,
    env: { ...process.env, HOME: home, XDG_CACHE_HOME: join(work, 'xdg-cache') },
  });
  expect(await run.exited).toEqual({ code: 2, signal: null });
  expect(run.stderr()).toMatch(why);
  expect(run.stderr()).toMatch(/^pull-unpack: .*\nhint: .*\n$/);
  expect(requests).toBe(seen);
  expect(diffTrees(before, await snapshotTree(work))).toEqual([]);
}

describe('--force never replaces what the user did not name', () => {
  it('refuses an empty DIR argument ("" is not the current directory)', async () => {
    await expectRefused('', /DIR is an empty string/);
  });

  it('refuses "." (the current directory)', async () => {
    await expectRefused('.', /refusing to replace .*src: it is the current directory or one of its parents/);
  });

  it('refuses ".." and any other parent of the current directory', async () => {
    await expectRefused('..', /it is the current directory or one of its parents/);
    await expectRefused(join(work, 'home'), /it is the current directory or one of its parents/);
  });

  it('refuses "/"', async () => {
    await expectRefused('/', /refusing to replace \/: it is the root directory/);
  });

  it('refuses $HOME and its parents, also from a working directory outside it', async () => {
    await expectRefused(home, /it is the home directory or one of its parents/, [], work);
    await expectRefused(join(work, 'home'), /it is the home directory or one of its parents/, [], tmpdir());
  });

  it('refuses a DIR that holds the blob cache, or lies inside it, even when DIR does not exist yet', async () => {
    await expectRefused(join(work, 'out'), /it holds the blob cache/, ['--cache-dir', join(work, 'out', 'cache')], work);
    await expectRefused(join(home, 'project'), /it holds the blob cache/, ['--cache-dir', join(project, 'cache')], work);
    await expectRefused(join(work, 'cache', 'rootfs'), /it is inside the blob cache/, ['--cache-dir', join(work, 'cache')], work);
  });

  const root = process.getuid?.() === 0;
  it.skipIf(!root)('refuses a DIR with a mount point inside it, and a DIR that is one (needs root to mount a tmpfs)', async () => {
    const dir = join(work, 'mounted');
    const mountPoint = join(dir, 'data', 'mnt');
    await mkdir(mountPoint, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mountPoint]);
    try {
      await writeFile(join(mountPoint, 'on-the-tmpfs'), 'precious\n');
      before = await snapshotTree(work);
      await expectRefused(dir, new RegExp(`the mount point ${mountPoint} is inside it`), [], work);
      await expectRefused(mountPoint, /it is a mount point/, [], work);
      expect(await readdir(mountPoint)).toEqual(['on-the-tmpfs']);
    } finally {
      execFileSync('umount', [mountPoint]);
    }
  });
});
