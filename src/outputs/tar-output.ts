/**
 * `--output tar FILE|-`: the flattened filesystem (whiteouts applied, hardlinks kept) as one tar
 * stream. A file appears only when complete; bytes already written to a stream cannot be taken
 * back, so a failure there ends the stream with an error.
 */
import { createWriteStream } from 'node:fs';
import { lstat, rename } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PullUnpackError } from '../errors.js';
import type { Output } from './output.js';
import { checkDestination, removeTree, type Staging } from './staging.js';
import { writeTreeAsTar } from './tar.js';

export interface TarOutputOptions {
  signal?: AbortSignal | undefined;
  onWarning?: ((message: string) => void) | undefined;
}

/**
 * The tar written to the file `target` (new, or replaced with --force), or to the stream
 * `target` (standard output), which has no destination: the pull stages in the temporary
 * directory then, never beside the current directory.
 */
export function tarOutput(target: string | NodeJS.WritableStream, options: TarOutputOptions = {}): Output {
  const file = typeof target === 'string' ? target : undefined;
  const staged = (staging: Staging): string => join(staging.dir, 'flattened.tar');
  return {
    destination: file,
    check: checkFileDestination,
    rootfs: async (staging) => staging.out,
    async finish(staging, image) {
      const out = file === undefined ? (target as NodeJS.WritableStream) : createWriteStream(staged(staging));
      await writeTreeAsTar(image.rootfs!, out, { signal: options.signal, onWarning: options.onWarning });
      return {};
    },
    async commit(staging) {
      if (file !== undefined) await rename(staged(staging), staging.dest);
      await removeTree(staging.dir);
    },
  };
}

/** A tar file destination: new (its missing directories are created), or replaced only with --force. */
async function checkFileDestination(file: string, force: boolean): Promise<string> {
  const dest = resolve(file);
  let info;
  try {
    info = await lstat(dest);
  } catch {
    return await checkDestination(dest, force);
  }
  if (info.isDirectory()) throw new PullUnpackError('DESTINATION_INVALID', `${dest} is a directory; --output tar writes a file`);
  if (!force) {
    throw new PullUnpackError('DESTINATION_NOT_EMPTY', `${dest} already exists`, { hint: 'pass --force to replace it' });
  }
  return dest;
}
