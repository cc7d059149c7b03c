/**
 * Which digest a tag named when it was last fetched through the cache, one small file per
 * `name:tag` under `tags/`, so that `--offline` resolves the tags a pull read besides the
 * image's own (e.g. cosign's `sha256-<hex>.sig` signature tags) exactly as the online pull did.
 * The image's own reference is recorded in index.json only after a pull succeeded
 * (cache-index.ts); that record comes first.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Descriptor } from '../image/oci.js';
import type { BlobStore } from './blob-store.js';

function memoPath(store: BlobStore, reference: string): string {
  return join(store.root, 'tags', `${createHash('sha256').update(reference).digest('hex')}.json`);
}

/** Remembers that `reference` ('host/repo:tag') named `descriptor`. */
export async function memoTag(store: BlobStore, reference: string, descriptor: Descriptor): Promise<void> {
  const path = memoPath(store, reference);
  await mkdir(join(store.root, 'tags'), { recursive: true });
  const tmp = `${path}.${process.pid}.${randomUUID()}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify({ reference, descriptor }));
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The descriptor `reference` named when last fetched, if it ever was. */
export async function readTagMemo(store: BlobStore, reference: string): Promise<Descriptor | undefined> {
  let memo: { reference?: unknown; descriptor?: Descriptor };
  try {
    memo = JSON.parse(await readFile(memoPath(store, reference), 'utf8')) as typeof memo;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return memo.reference === reference && typeof memo.descriptor?.digest === 'string' ? memo.descriptor : undefined;
}
