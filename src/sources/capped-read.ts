/**
 * Reads of a local image's documents under the resolved limits: the TOO_LARGE error names the
 * flag that raises the limit, as a registry pull's does.
 */
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import type { LayoutFiles } from './layout.js';

/** The file `name` of `files`, refused (TOO_LARGE, hinting at `flag`) when over `limit` bytes. */
export async function readCapped(files: LayoutFiles, name: string, limit: number, flag: string, what: string): Promise<Buffer> {
  try {
    return await files.read(name, limit, what);
  } catch (err) {
    if (!isPullUnpackError(err, 'TOO_LARGE')) throw err;
    throw new PullUnpackError('TOO_LARGE', err.message, { cause: err, hint: `raise it with ${flag} if the image is trusted` });
  }
}
