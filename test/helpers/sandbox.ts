/**
 * The sentinel sandbox of the hostile-image tests: each test gets a fresh root with a sentinel
 * directory beside it (OUTSIDE the root), and afterEach checks that the sentinel is unchanged
 * and that nothing appeared next to the root.
 */
import { lstat, mkdir, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, expect } from 'vitest';
import { makeTmp, removeTmp, run } from './tar.js';

export interface Sandbox {
  base: string;
  root: string;
  /** The sentinel directory, a sibling of root. */
  outside: string;
}

/** Registers the hooks; the returned object always describes the current test's sandbox. */
export function sentinelSandbox(prefix: string): Sandbox {
  const box: Sandbox = { base: '', root: '', outside: '' };
  let before = '';
  beforeEach(async () => {
    const base = await makeTmp(prefix);
    Object.assign(box, { base, root: join(base, 'root'), outside: join(base, 'outside') });
    await mkdir(box.root);
    await mkdir(join(box.outside, 'sub'), { recursive: true });
    await writeFile(join(box.outside, 'secret'), 'do not touch');
    await writeFile(join(box.outside, 'sub', 'passwd'), 'root:x:0:0');
    await run('setfattr', ['-n', 'user.sentinel', '-v', 'yes', join(box.outside, 'secret')]);
    before = await snapshotText(box.outside);
  });
  afterEach(async () => {
    // The sentinel is intact and nothing was created next to the root.
    expect(await snapshotText(box.outside)).toBe(before);
    expect((await readdir(box.base)).sort()).toEqual(['outside', 'root']);
    await removeTmp(box.base);
  });
  return box;
}

/** Names, types, modes, owners, mtimes, contents, link targets and xattrs of a tree, as text. */
export async function snapshotText(dir: string): Promise<string> {
  const lines: string[] = [];
  async function walk(rel: string): Promise<void> {
    const p = join(dir, rel);
    const st = await lstat(p);
    let extra = '';
    if (st.isFile()) extra = (await readFile(p)).toString('base64');
    if (st.isSymbolicLink()) extra = await readlink(p);
    const xattrs = (await run('getfattr', ['-h', '-d', '-m', '-', '--absolute-names', '-e', 'hex', p]))
      .toString()
      .replace(/^# file:.*$/m, '');
    lines.push([rel, st.mode.toString(8), st.uid, st.gid, st.nlink, st.mtimeMs, extra, xattrs.trim()].join(' | '));
    if (st.isDirectory()) for (const name of (await readdir(p)).sort()) await walk(join(rel, name));
  }
  await walk('.');
  return lines.join('\n');
}
