/**
 * Reading files that must be regular files (cache blobs, partial downloads, lock and owner files,
 * index.json) without ever blocking. A FIFO planted where a file is expected would make a plain
 * open() wait forever for a writer, and a device could be read without end: the file is opened
 * with O_NONBLOCK (which returns at once for a FIFO and changes nothing for a regular file) and
 * refused by fstat unless it is a regular file.
 */
import type { Stats } from 'node:fs';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** `path` exists but is not a regular file; `kind` says what it is, e.g. 'a FIFO'. */
export class NotRegularFileError extends Error {
  readonly path: string;
  readonly kind: string;

  constructor(path: string, kind: string) {
    super(`${path} is ${kind}, not a regular file`);
    this.name = 'NotRegularFileError';
    this.path = path;
    this.kind = kind;
  }
}

/**
 * Opens `path` for reading if it is a regular file (the caller closes the handle); rejects with
 * NotRegularFileError for anything else, and with the errno error (ENOENT, ...) when it cannot
 * be opened. `noFollow` refuses a symlink (ELOOP) instead of following it.
 */
export async function openRegularFile(path: string, options: { noFollow?: boolean } = {}): Promise<FileHandle> {
  const flags = constants.O_RDONLY | constants.O_NONBLOCK | (options.noFollow ? constants.O_NOFOLLOW : 0);
  const handle = await open(path, flags);
  let info: Stats;
  try {
    info = await handle.stat();
  } catch (err) {
    await handle.close();
    throw err;
  }
  if (!info.isFile()) {
    await handle.close();
    throw new NotRegularFileError(path, kindOf(info));
  }
  return handle;
}

/**
 * The bytes of the regular file `path` (see openRegularFile); `undefined` when it does not
 * exist, and no more than `maxBytes` are read (a file longer than that is cut there).
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer | undefined> {
  let handle: FileHandle;
  try {
    handle = await openRegularFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const buffer = Buffer.alloc(Math.min(maxBytes, (await handle.stat()).size));
    let filled = 0;
    while (filled < buffer.length) {
      const { bytesRead } = await handle.read(buffer, filled, buffer.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buffer.subarray(0, filled);
  } finally {
    await handle.close();
  }
}

function kindOf(info: Stats): string {
  if (info.isFIFO()) return 'a FIFO';
  if (info.isDirectory()) return 'a directory';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  if (info.isSocket()) return 'a socket';
  return 'something else';
}
