/**
 * All-or-nothing output: the result is built in a staging directory beside DIR and moved into
 * place only when complete. On failure the staging directory is removed and DIR is untouched.
 * A result with no DIR (a tar on standard output) is staged in the temporary directory.
 */
import { chmod, lstat, mkdir, mkdtemp, readdir, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { PullUnpackError } from '../errors.js';
import { ownerIsGone, ownerMark } from '../store/lock.js';
import { readRegularFile } from '../store/regular-file.js';
import type { StoragePlace } from '../store/storage-error.js';

export interface Staging {
  /** The staging directory itself (removed by `discard` or after `commit`). */
  readonly dir: string;
  /** What becomes DIR: the rootfs, or the bundle directory. */
  readonly out: string;
  /** Scratch space for downloads that are not kept. */
  readonly scratch: string;
  /** The final destination. */
  readonly dest: string;
  /** The highest of DEST's parent directories this pull created, if any: removed again by `discard`. */
  readonly createdParent?: string | undefined;
}

/**
 * Checks DIR before any download: it may be missing (with missing parents too, created by
 * createStaging) or an empty directory; a non-empty one needs `force`; anything that is not a
 * directory is refused. Returns DIR as an absolute path.
 */
export async function checkDestination(dir: string, force: boolean): Promise<string> {
  const dest = resolve(dir);
  let info;
  try {
    info = await lstat(dest);
  } catch (err) {
    if (!isMissing(err)) throw err;
    await checkParents(dest);
    return dest;
  }
  if (!info.isDirectory()) {
    throw new PullUnpackError('DESTINATION_INVALID', `${dest} exists and is not a directory`);
  }
  if (!force && (await readdir(dest)).length > 0) {
    throw new PullUnpackError('DESTINATION_NOT_EMPTY', `${dest} is not empty`, {
      hint: 'choose an empty or new directory, or pass --force to replace it',
    });
  }
  return dest;
}

/**
 * The nearest existing ancestor of a missing `path` must be a directory: the missing ones
 * between are created by createStaging, as `umoci unpack` and `skopeo copy` create theirs.
 */
async function checkParents(path: string): Promise<void> {
  for (let parent = dirname(path); ; parent = dirname(parent)) {
    const info = await lstat(parent).catch((err: unknown) => {
      if (!isMissing(err) || dirname(parent) === parent) throw err;
      return undefined;
    });
    if (info === undefined) continue;
    // A symlink to a directory is followed by mkdir and rename, as a directory path is.
    if (info.isDirectory() || (info.isSymbolicLink() && (await stat(parent).catch(() => undefined))?.isDirectory())) return;
    throw new PullUnpackError('DESTINATION_INVALID', `${parent} is not a directory, so ${path} cannot be created`);
  }
}

/** ENOENT, or ENOTDIR: a path below a file (which checkParents then names). */
function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Creates the staging directory next to `dest` (same filesystem, so the final rename is atomic),
 * and DEST's missing parent directories first: `discardStaging` removes those again.
 */
export async function createStaging(dest: string, onNotice?: (message: string) => void): Promise<Staging> {
  const createdParent = await mkdir(dirname(dest), { recursive: true });
  let dir: string;
  try {
    await sweepStaleStaging(dest, onNotice);
    dir = await mkdtemp(join(dirname(dest), `${stagingPrefix(dest)}`));
  } catch (err) {
    await removeCreatedParents(dest, createdParent);
    throw err;
  }
  const staging = { dir, out: join(dir, 'out'), scratch: join(dir, 'scratch'), dest, createdParent };
  try {
    await writeFile(join(dir, OWNER_FILE), ownerMark());
    await mkdir(staging.out);
    // The rootfs's "/" is 0755 whatever the umask: a 0700 root locks non-root users out of the
    // container (a layer's "./" entry is ignored, as containerd does, so nothing else sets it).
    await chmod(staging.out, 0o755);
    await mkdir(staging.scratch);
  } catch (err) {
    // A full disk can refuse the owner file after mkdtemp: leave nothing behind.
    await discardStaging(staging);
    throw err;
  }
  return staging;
}

/**
 * Removes the parents of `dest` up to `created` (the highest one a pull created), deepest first,
 * with rmdir: one that another process has put something in meanwhile stays, with its parents.
 */
async function removeCreatedParents(dest: string, created: string | undefined): Promise<void> {
  if (created === undefined) return;
  for (let dir = dirname(dest); dir.length >= created.length; dir = dirname(dir)) {
    try {
      await rmdir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') return;
      if (code !== 'ENOENT') throw err;
    }
    if (dir === created) return;
  }
}

const OWNER_FILE = 'owner';
/** An owner file holds a pid and a host name. */
const MAX_OWNER_BYTES = 4096;

function stagingPrefix(dest: string): string {
  return `.${basename(dest)}.pull-unpack-`;
}

/** The destination as a place that fails to be written: DIR itself and the staging directories beside it. */
export function destinationPlace(dest: string): StoragePlace {
  return { kind: 'destination', path: dest, claims: [dest, join(dirname(dest), stagingPrefix(dest))] };
}

/**
 * Where a result that has no destination (`--output tar -`) is staged: beside a name in the
 * temporary directory ($TMPDIR, else /tmp), never in the current directory; and that directory
 * as the place a storage error names.
 */
export function streamStaging(): { beside: string; place: StoragePlace } {
  const beside = join(tmpdir(), 'pull-unpack-stream');
  return { beside, place: { kind: 'temporary', path: tmpdir(), claims: [join(tmpdir(), stagingPrefix(beside))] } };
}

/**
 * Removes staging directories for `dest` left by pulls that were killed (SIGKILL, power loss):
 * only those whose owner file names a process of this host that no longer runs.
 */
async function sweepStaleStaging(dest: string, onNotice?: (message: string) => void): Promise<void> {
  const parent = dirname(dest);
  const prefix = stagingPrefix(dest);
  let names: string[];
  try {
    names = (await readdir(parent)).filter((n) => n.startsWith(prefix));
  } catch {
    return;
  }
  for (const name of names) {
    // An owner file that cannot be read (or is not a regular file) names nobody: leave that directory alone.
    const owner = (await readRegularFile(join(parent, name, OWNER_FILE), MAX_OWNER_BYTES).catch(() => undefined))?.toString('utf8');
    if (owner === undefined || !(await ownerIsGone(owner))) continue;
    // Killed between the two renames of commitStaging: put the user's old DIR back first.
    const previous = join(parent, name, 'previous');
    if ((await lstat(previous).catch(() => undefined))?.isDirectory() && !(await lstat(dest).catch(() => undefined))) {
      await rename(previous, dest);
      onNotice?.(`restored ${dest}, which an interrupted pull had moved aside`);
    }
    try {
      await removeTree(join(parent, name));
    } catch (err) {
      // A rootless bundle killed while its owners were set holds files of subordinate ids,
      // which only a user namespace can remove: say how, and go on with this pull.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EPERM') throw err;
      const quoted = `'${join(parent, name).replace(/'/g, "'\\''")}'`;
      onNotice?.(
        `cannot remove ${join(parent, name)}, left by an interrupted pull (${code}): remove it with unshare --map-root-user --map-auto rm -rf ${quoted}`,
      );
      continue;
    }
    onNotice?.(`removed ${join(parent, name)}, left by an interrupted pull`);
  }
}

/**
 * Moves the staged result into place. An existing empty DIR is replaced by the rename; a
 * non-empty one (allowed by --force) is moved aside first and removed after the swap, with
 * `remove` (e.g. in a user namespace, for a tree owned by subordinate ids).
 */
export async function commitStaging(staging: Staging, remove: (path: string) => Promise<void> = removeTree): Promise<void> {
  const { dest, out, dir } = staging;
  const old = join(dir, 'previous');
  let movedAside = false;
  try {
    await rmdir(dest);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') {
      await rename(dest, old);
      movedAside = true;
    } else if (code !== 'ENOENT') {
      throw err;
    }
  }
  try {
    await rename(out, dest);
  } catch (err) {
    if (movedAside) await rename(old, dest);
    throw err;
  }
  await remove(dir);
}

/** Removes the staging directory, and the parents of DEST it created; safe to call more than once. */
export async function discardStaging(staging: Staging): Promise<void> {
  await removeTree(staging.dir);
  await removeCreatedParents(staging.dest, staging.createdParent);
}

/**
 * `rm -rf` that also works without root on trees holding directories with no write or
 * execute permission (images ship those): such directories are opened up before removal.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    await openUp(path);
    await rm(path, { recursive: true, force: true });
  }
}

async function openUp(path: string): Promise<void> {
  let info;
  try {
    info = await lstat(path);
  } catch {
    return;
  }
  if (!info.isDirectory()) return;
  await chmod(path, 0o700);
  for (const name of await readdir(path)) await openUp(join(path, name));
}
