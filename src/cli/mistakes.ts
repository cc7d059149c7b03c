/**
 * Likely mistakes on a command line, recognised so the user hears what they probably meant: a
 * first word close to a command (`inspekt`; an IMAGE is always tried first, the guess is only
 * added to the error of a pull that failed), a file or directory given as IMAGE, IMAGE and DIR
 * swapped.
 */
import { lstat, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import { parseLocalReference } from '../image/local-reference.js';
import { parseReference } from '../image/reference.js';
import { TarIndex } from '../tar/archive-index.js';
import { COMMAND_WORDS, usageError } from './args.js';
import { closestNames } from './similar.js';

/**
 * `err` with a did-you-mean for `firstWord` added to its hint when that word, taken as IMAGE,
 * is close to a command (`pull-unpack inspekt alpine` failed to pull an image "inspekt").
 */
export function withCommandGuess(err: unknown, firstWord: string): unknown {
  if (firstWord.startsWith('-')) return err;
  const [guess] = closestNames(firstWord, COMMAND_WORDS);
  return guess === undefined ? err : withHint(err, `did you mean 'pull-unpack ${guess}'? ("${firstWord}" was taken as an IMAGE)`);
}

/** `err` (a PullUnpackError) with `hint` after its own; anything else as it is. */
export function withHint(err: unknown, hint: string | undefined): unknown {
  if (!isPullUnpackError(err) || hint === undefined) return err;
  return new PullUnpackError(err.code, err.message, { hint: err.hint ? `${err.hint}; ${hint}` : hint, cause: err });
}

/**
 * Refuses (USAGE, before anything is fetched) an IMAGE that names a local file or directory
 * rather than an image, saying what was probably meant: an image archive or layout without its
 * `oci-archive:`, `docker-archive:` or `oci:` prefix, or IMAGE and DIR swapped (IMAGE a path to
 * an existing directory, DIR a missing path that reads as an image reference). An IMAGE that is
 * both a directory here and a valid reference (`rootfs`) is tried: the hint returned is for the
 * pull's error, should it fail; so is a bare name without an extension that is a file here (a
 * `busybox` binary) but no image archive. A local reference, or an IMAGE on no path, is left to the pull.
 */
export async function checkImageArgument(image: string, dir: string | undefined): Promise<string | undefined> {
  if (parseLocalPrefix(image)) return undefined;
  const info = await stat(image).catch(() => undefined);
  if (info?.isFile()) {
    const refusal = await fileAsImage(image);
    // A bare name with no extension (a `busybox` binary here) is as likely an image: tried, as a directory's is.
    if (refusal.archive || !looksLikeImage(image) || /[./]/.test(image)) throw refusal.error;
    return `${image} is also a file here: a local image is read as oci:DIR, oci-archive:FILE or docker-archive:FILE`;
  }
  if (!info?.isDirectory()) return undefined;
  if (await exists(join(image, 'oci-layout'))) {
    throw usageError('pull', `${image} is an OCI image layout, not an image reference`, `read it as one: oci:${image}`);
  }
  if (dir === undefined || !looksLikeImage(dir) || (await exists(dir))) return undefined;
  const swapped = `IMAGE comes first: pull-unpack ${dir} ${image}`;
  if (looksLikeImage(image)) return `${image} is also a directory here: if IMAGE and DIR are swapped, ${swapped}`;
  throw usageError('pull', `IMAGE and DIR look swapped: ${image} is a directory and ${dir} reads as an image`, swapped);
}

function parseLocalPrefix(image: string): boolean {
  try {
    return parseLocalReference(image) !== undefined;
  } catch {
    return true;
  }
}

function looksLikeImage(text: string): boolean {
  try {
    parseReference(text);
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined)) !== undefined;
}

/** What the file `path` holds, read as a tar with our own reader: an OCI layout, `docker save` output, or neither. */
async function fileAsImage(path: string): Promise<{ error: PullUnpackError; archive: boolean }> {
  let names: string[];
  try {
    const tar = await TarIndex.open(path);
    names = tar.names();
    await tar.close();
  } catch {
    names = [];
  }
  const message = `${path} is a file, not an image reference`;
  if (names.includes('oci-layout') || names.includes('index.json')) {
    return { error: usageError('pull', message, `it holds an OCI image layout: read it as oci-archive:${path}`), archive: true };
  }
  if (names.includes('manifest.json')) {
    return { error: usageError('pull', message, `it is a docker save archive: read it as docker-archive:${path}`), archive: true };
  }
  const error = usageError(
    'pull',
    `${message} (nor a tar of an OCI layout or of docker save)`,
    'a local image is read as oci:DIR, oci-archive:FILE or docker-archive:FILE (uncompressed tar)',
  );
  return { error, archive: false };
}
