/**
 * Signatures read from an HTTP lookaside, kept in the blob cache so that `--offline` verifies
 * exactly what an online pull verified: each signature is a content-addressed blob, and
 * `signatures/<sha256 of the URL>.json` lists them for the URL of their directory. Nothing here
 * is trusted: the signatures are verified each time they are used.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestOf } from '../image/digest.js';
import type { BlobStore } from './blob-store.js';

interface Record {
  url: string;
  signatures: Array<{ digest: string; size: number }>;
}

/** A LookasideCache (trust/lookaside.ts) in `store`. */
export function lookasideCache(store: BlobStore): {
  get(url: string): Promise<Buffer[] | undefined>;
  put(url: string, signatures: Buffer[]): Promise<void>;
} {
  const recordPath = (url: string): string => join(store.root, 'signatures', `${createHash('sha256').update(url).digest('hex')}.json`);
  return {
    async get(url) {
      let record: Record;
      try {
        record = JSON.parse(await readFile(recordPath(url), 'utf8')) as Record;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
      if (record.url !== url || !Array.isArray(record.signatures)) return undefined;
      const signatures: Buffer[] = [];
      for (const { digest } of record.signatures) {
        const bytes = await readFile(store.path(digest)).catch(() => undefined);
        // A signature pruned from the cache (or damaged) makes the whole record unusable.
        if (!bytes || digestOf(bytes) !== digest) return undefined;
        signatures.push(bytes);
      }
      return signatures;
    },
    async put(url, signatures) {
      const entries = [];
      for (const bytes of signatures) {
        const descriptor = { mediaType: 'application/octet-stream', digest: digestOf(bytes), size: bytes.length };
        await store.putBytes(descriptor, bytes, `a signature from ${url}`);
        entries.push({ digest: descriptor.digest, size: descriptor.size });
      }
      const path = recordPath(url);
      await mkdir(join(store.root, 'signatures'), { recursive: true });
      const tmp = `${path}.${process.pid}.${randomUUID()}.tmp`;
      try {
        await writeFile(tmp, JSON.stringify({ url, signatures: entries } satisfies Record));
        await rename(tmp, path);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
    },
  };
}
