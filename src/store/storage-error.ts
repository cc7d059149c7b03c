/**
 * A filesystem that refuses to be written (full, over quota, read-only, permission denied) as
 * one typed error that names the place and what to do, instead of an errno error with a stack
 * (or, worse, a download retried as if the connection had dropped).
 */
import { mkdir } from 'node:fs/promises';
import { constants } from 'node:os';
import { dirname } from 'node:path';
import { isPullUnpackError, PullUnpackError } from '../errors.js';

/**
 * Where pull-unpack writes: the persistent blob cache, the destination (and the staging
 * directory beside it), or the temporary directory (a result streamed to standard output).
 */
export interface StoragePlace {
  kind: 'cache' | 'destination' | 'temporary';
  /** The cache's root, the destination DIR (or FILE), or the temporary directory. */
  path: string;
  /** Where the place writes; a failure naming another path is not the place's (default: `path` and below). */
  claims?: string[] | undefined;
}

const REASONS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exceeded',
  EROFS: 'the filesystem is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
};

/**
 * `mkdir -p` that reports why it failed: Node's recursive mkdir says ENOENT when a component
 * cannot be created on a read-only filesystem or without permission, so that case is retried
 * one component at a time to get the real error (EROFS, EACCES).
 */
export async function makeDirectories(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const parent = dirname(path);
    if (parent !== path) await makeDirectories(parent);
    await mkdir(path).catch((inner: NodeJS.ErrnoException) => {
      if (inner.code !== 'EEXIST') throw inner;
    });
  }
}

/**
 * The REASONS key of an errno error that says the filesystem refuses writes, not that the input
 * is bad; undefined for anything else. libuv has no name for EDQUOT ("Unknown system error
 * -122" on Linux), so the number is checked too.
 */
function storageCode(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code, errno } = err as NodeJS.ErrnoException;
  if (typeof code === 'string' && code in REASONS) return code;
  return errno !== undefined && errno === -constants.errno.EDQUOT ? 'EDQUOT' : undefined;
}

/** True for an errno error that says the filesystem refuses writes (see REASONS). */
function isStorageFailure(err: unknown): err is NodeJS.ErrnoException {
  return storageCode(err) !== undefined;
}

/** True for a full disk or quota (ENOSPC, EDQUOT), also when wrapped in a STORAGE_ERROR. */
export function isOutOfSpace(err: unknown): boolean {
  const code = storageCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return true;
  return isPullUnpackError(err, 'STORAGE_ERROR') && isOutOfSpace(err.cause);
}

/**
 * STORAGE_ERROR for a storage failure at `place`, found in `err` or its causes (a layer applier
 * wraps what failed while writing an entry); any other error is returned as it is. The path that
 * failed is said when it is not the place itself; the hint says what the user can do.
 */
export function storageError(err: unknown, place: StoragePlace): unknown {
  if (isPullUnpackError(err, 'STORAGE_ERROR')) return err;
  const failure = storageFailureIn(err);
  if (failure === undefined) return err;
  const claims = place.claims ?? [place.path];
  if (failure.path !== undefined && !claims.some((prefix) => failure.path!.startsWith(prefix))) return err;
  const code = storageCode(failure)!;
  const full = code === 'ENOSPC' || code === 'EDQUOT';
  const what =
    place.kind === 'destination' ? place.path : `the ${place.kind === 'cache' ? 'blob cache' : 'temporary directory'} ${place.path}`;
  const at = failure.path !== undefined && failure.path !== place.path ? ` (${failure.path})` : '';
  const hint = place.kind === 'cache' ? cacheHint(full) : place.kind === 'temporary' ? temporaryHint(full) : destinationHint(full);
  return new PullUnpackError('STORAGE_ERROR', `cannot write ${what}${at}: ${REASONS[code]} (${code})`, { cause: err, hint });
}

/** The storage failure that `err` is, or was caused by (a few levels down). */
function storageFailureIn(err: unknown): NodeJS.ErrnoException | undefined {
  let current = err;
  for (let depth = 0; depth < 4 && current instanceof Error; depth++, current = current.cause) {
    if (isStorageFailure(current)) return current;
  }
  return undefined;
}

function cacheHint(full: boolean): string {
  return full
    ? 'free some space, or use another cache (--cache-dir DIR) or none (--no-cache); pull-unpack cache prune --all empties this one'
    : 'use a cache you can write (--cache-dir DIR), or none (--no-cache)';
}

function temporaryHint(full: boolean): string {
  const where = 'set TMPDIR to a directory with room: a tar for standard output is built there first';
  return full ? `free some space there, or ${where}` : `${where} and can be written`;
}

function destinationHint(full: boolean): string {
  return full
    ? 'free some space there, or choose a DIR on another filesystem (the result is built beside DIR, then renamed into place)'
    : 'choose a DIR you can write: the result is built in a directory created beside DIR, then renamed into place';
}
