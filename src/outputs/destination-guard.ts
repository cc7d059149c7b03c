/**
 * What a pull must never replace. DIR is replaced by a rename when the pull commits (with
 * `force` even when it holds files), so a DIR that holds more than the user named is refused
 * before anything is read, fetched or written: an empty DIR argument, `/`, the current directory
 * or any of its parents, $HOME or any of its parents, a directory holding the blob cache (or
 * inside it), and a directory that is a mount point or has one inside it (the rename would fail
 * with EBUSY after the download, or move a mounted filesystem's contents aside).
 */
import { readFile, realpath } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { PullUnpackError } from '../errors.js';

const MOUNTINFO = '/proc/self/mountinfo';

/**
 * Refuses (USAGE) a destination `dir` that must not be replaced (see the module comment);
 * returns it as an absolute path. `cacheDir` is the blob cache the pull will use, if any.
 */
export async function guardDestination(dir: string, cacheDir: string | undefined): Promise<string> {
  if (dir === '') throw refuse('DIR is an empty string', 'name the directory to write, e.g. ./rootfs');
  const dest = resolve(dir);
  const real = await realPathOf(dest);
  const named = dest === real ? dest : `${dest} (${real})`;
  if (real === sep) throw refuse(`refusing to replace ${named}: it is the root directory`);
  if (within(await realPathOf(process.cwd()), real)) {
    throw refuse(`refusing to replace ${named}: it is the current directory or one of its parents`);
  }
  if (within(await realPathOf(homedir()), real)) {
    throw refuse(`refusing to replace ${named}: it is the home directory or one of its parents`);
  }
  if (cacheDir !== undefined) {
    const cache = await realPathOf(resolve(cacheDir));
    if (within(cache, real)) throw refuse(`refusing to replace ${named}: it holds the blob cache ${cache}`, cacheHint);
    if (within(real, cache)) throw refuse(`refusing to write ${named}: it is inside the blob cache ${cache}`, cacheHint);
  }
  const mount = (await mountPoints()).find((m) => within(m, real));
  if (mount !== undefined) {
    const where = mount === real ? 'it is a mount point' : `the mount point ${mount} is inside it`;
    throw refuse(
      `refusing to replace ${named}: ${where}`,
      'pull into a new directory (inside the mounted filesystem, if that is where it should go)',
    );
  }
  return dest;
}

const cacheHint = 'choose another DIR, or another cache with --cache-dir';

function refuse(message: string, hint = 'name a new or empty directory for the result, e.g. ./rootfs'): PullUnpackError {
  return new PullUnpackError('USAGE', message, { hint });
}

/** True when `path` is `dir` or lies below it (both absolute and normalized). */
function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === sep ? sep : dir + sep);
}

/** The real path of `path` whose last components may not exist yet: the existing part resolved, the rest appended. */
async function realPathOf(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (err) {
    const parent = dirname(path);
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path) return path;
    return join(await realPathOf(parent), basename(path));
  }
}

/**
 * Every mount point this process sees (proc(5): the fifth field of /proc/self/mountinfo, with
 * space, tab, newline and backslash written as octal escapes); none where there is no /proc.
 */
async function mountPoints(): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(MOUNTINFO, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((field): field is string => field !== undefined)
    .map((field) => field.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8))));
}
