/**
 * All-or-nothing output: the result is built in a staging directory beside DIR and moved into
 * place only when complete. On failure the staging directory is removed and DIR is untouched.
 * A result with no DIR (a tar on standard output) is staged in the temporary directory.
 */
import { chmod, lstat, mkdir, mkdtemp, readdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
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
}

/**
 * Checks DIR before any download: it may be missing or an empty directory; a non-empty one
 * needs `force`; anything that is not a directory is refused. Returns DIR as an absolute path.
 */
export async function checkDestination(dir: string, force: boolean): Promise<string> {
  const dest = resolve(dir);
  let info;
  try {
    info = await lstat(dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    try {
      await lstat(dirname(dest));
    } catch {
      throw new PullUnpackError('DESTINATION_INVALID', `the parent directory of ${dest} does not exist`, {
        hint: `create it first: mkdir -p ${dirname(dest)}`,
      });
    }
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

/** Creates the staging directory next to `dest` (same filesystem, so the final rename is atomic). */
export async function createStaging(dest: string, onNotice?: (message: string) => void): Promise<Staging> {
  await sweepStaleStaging(dest, onNotice);
  const dir = await mkdtemp(join(dirname(dest), `${stagingPrefix(dest)}`));
  const out = join(dir, 'out');
  const scratch = join(dir, 'scratch');
  try {
    await writeFile(join(dir, OWNER_FILE), ownerMark());
    await mkdir(out);
    // The rootfs's "/" is 0755 whatever the umask: a 0700 root locks non-root users out of the
    // container (a layer's "./" entry is ignored, as containerd does, so nothing else sets it).
    await chmod(out, 0o755);
    await mkdir(scratch);
  } catch (err) {
    // A full disk can refuse the owner file after mkdtemp: leave nothing behind.
    await removeTree(dir);
    throw err;
  }
  return { dir, out, scratch, dest };
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

/** Removes the staging directory; safe to call more than once. */
export async function discardStaging(staging: Staging): Promise<void> {
  await removeTree(staging.dir);
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
