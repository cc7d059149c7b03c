/**
 * The files of an OCI image layout, wherever they are stored: a directory (`oci:`) or the
 * members of an indexed tar (`oci-archive:`, `docker-archive:`). Reads are capped; a file that
 * leads outside the layout, or is not a regular file, is refused.
 */
import { constants } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import type { TarIndex, TarMember } from '../tar/archive-index.js';

/** Read access to the files of an image layout or archive, wherever they are stored. */
export interface LayoutFiles {
  /** Reads a whole file, refusing more than `cap` bytes (TOO_LARGE); NOT_FOUND when absent. */
  read(name: string, cap: number, what: string): Promise<Buffer>;
  /** A stream of a file's bytes (the caller consumes or destroys it); NOT_FOUND when absent. */
  open(name: string, what: string): Promise<Readable>;
  close(): Promise<void>;
}

/** The layout's files under `root`. Symlinked blob files and blob directories outside `root` are refused. */
export async function dirFiles(root: string): Promise<LayoutFiles> {
  const info = await stat(root).catch((cause: NodeJS.ErrnoException) => {
    if (cause.code === 'ENOENT') throw new PullUnpackError('NOT_FOUND', `OCI layout directory ${root} does not exist`, { cause });
    throw cause;
  });
  if (!info.isDirectory()) {
    throw new PullUnpackError('NOT_FOUND', `${root} is not a directory`, {
      hint: 'oci: names an OCI image layout directory; use oci-archive: for a tar file',
    });
  }
  const realRoot = await realpath(root);
  const openRegular = async (name: string, what: string): Promise<FileHandle> => {
    const full = join(root, name);
    const dir = await realpath(dirname(full)).catch(() => undefined);
    if (dir !== undefined && dir !== realRoot && !dir.startsWith(realRoot + sep)) {
      throw new PullUnpackError('UNSAFE_PATH', `${what}: ${dirname(full)} leads outside the layout ${root}`);
    }
    // O_NONBLOCK: opening a FIFO (which the fstat below refuses) must not wait for a writer.
    const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(
      (cause: NodeJS.ErrnoException) => {
        if (cause.code === 'ENOENT') throw new PullUnpackError('NOT_FOUND', `${what}: ${full} does not exist`, { cause });
        if (cause.code === 'ELOOP') throw new PullUnpackError('UNSAFE_PATH', `${what}: ${full} is a symbolic link`, { cause });
        throw cause;
      },
    );
    if (!(await handle.stat()).isFile()) {
      await handle.close();
      throw new PullUnpackError('UNSAFE_PATH', `${what}: ${full} is not a regular file`);
    }
    return handle;
  };
  return {
    async read(name, cap, what) {
      const handle = await openRegular(name, what);
      try {
        const { size } = await handle.stat();
        if (size > cap) throw new PullUnpackError('TOO_LARGE', `${what} is ${size} bytes, over the ${cap}-byte limit`);
        return await handle.readFile();
      } finally {
        await handle.close();
      }
    },
    async open(name, what) {
      return (await openRegular(name, what)).createReadStream();
    },
    close: async () => undefined,
  };
}

/** LayoutFiles reading the members of an indexed tar (symlinks and hard links inside it are followed). */
export function tarFiles(tar: TarIndex): LayoutFiles {
  const member = (name: string, what: string): TarMember => {
    const found = tar.lookup(name);
    if (!found) throw new PullUnpackError('NOT_FOUND', `${what}: ${tar.path} has no file "${name}"`);
    return found;
  };
  return {
    async read(name, cap, what) {
      const m = member(name, what);
      if (m.size > cap) throw new PullUnpackError('TOO_LARGE', `${what} is ${m.size} bytes, over the ${cap}-byte limit`);
      return tar.read(m);
    },
    async open(name, what) {
      return tar.stream(member(name, what));
    },
    close: () => tar.close(),
  };
}

/** The file `name` of `files`, refused (TOO_LARGE, hinting at `flag`) when over `limit` bytes. */
export async function readCapped(files: LayoutFiles, name: string, limit: number, flag: string, what: string): Promise<Buffer> {
  try {
    return await files.read(name, limit, what);
  } catch (err) {
    if (!isPullUnpackError(err, 'TOO_LARGE')) throw err;
    throw new PullUnpackError('TOO_LARGE', err.message, { cause: err, hint: `raise it with ${flag} if the image is trusted` });
  }
}
