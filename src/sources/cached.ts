/**
 * ImageSources around the blob cache: `cachingSource` answers from the cache what it can and
 * stores every manifest it fetches; `offlineSource` answers from the cache alone and names
 * exactly what is missing.
 */
import { readFile } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { readRefs } from '../store/cache-index.js';
import { memoTag, readTagMemo } from '../store/tag-memo.js';
import type { BlobStore } from '../store/blob-store.js';
import { digestOf, parseDigest } from '../image/digest.js';
import { PullUnpackError } from '../errors.js';
import type { Descriptor } from '../image/oci.js';
import type { FetchedManifest } from '../registry/client.js';
import type { ImageSource } from './source.js';

function isDigest(reference: string): boolean {
  return reference.includes(':');
}

/** Blobs up to this size that are read through the caching source are kept (signature payloads). */
export const SMALL_BLOB_BYTES = 4 * 1024 * 1024;

/**
 * Manifests by digest and blobs come from the cache when it has them; manifests fetched from
 * `source` are stored under the digest of their bytes (content-addressed, so never unverified).
 * Tags always go to `source`: they move; the digest each named is remembered for --offline
 * (tag-memo.ts). Small blobs read whole are kept once they verify, so that signature payloads
 * read online are there offline.
 */
export function cachingSource(source: ImageSource, store: BlobStore): ImageSource {
  return {
    name: source.name,
    async getManifest(reference, signal) {
      if (isDigest(reference)) {
        const cached = await readCachedManifest(store, reference);
        if (cached) return cached;
      }
      const fetched = await source.getManifest(reference, signal);
      const descriptor = { mediaType: '', digest: fetched.digest, size: fetched.bytes.length };
      await store.putBytes(descriptor, fetched.bytes, `manifest ${fetched.digest}`);
      if (!isDigest(reference)) await memoTag(store, `${source.name}:${reference}`, descriptor);
      return fetched;
    },
    async fetchBlob(descriptor, signal, what, offset) {
      if (await store.has(descriptor)) return store.read(descriptor.digest, offset ?? 0);
      const stream = await source.fetchBlob(descriptor, signal, what, offset);
      return (offset ?? 0) === 0 && descriptor.size <= SMALL_BLOB_BYTES ? keepWhenComplete(stream, store, descriptor) : stream;
    },
  };
}

/**
 * Passes `stream` through unchanged and, once it ended with exactly the descriptor's bytes,
 * stores them (putBytes verifies them; bytes that do not verify are simply not kept, and the
 * reader, which verifies too, sees the mismatch).
 */
function keepWhenComplete(stream: Readable, store: BlobStore, descriptor: Descriptor): Readable {
  const chunks: Buffer[] = [];
  let length = 0;
  const tee = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      length += chunk.length;
      if (length <= descriptor.size) chunks.push(chunk);
      callback(null, chunk);
    },
    flush(callback) {
      if (length !== descriptor.size) return callback();
      store.putBytes(descriptor, Buffer.concat(chunks), `blob ${descriptor.digest}`).then(
        () => callback(),
        () => callback(),
      );
    },
  });
  stream.on('error', (err) => tee.destroy(err));
  tee.on('close', () => stream.destroy());
  return stream.pipe(tee);
}

/**
 * Answers only from the cache. `display` is the reference as recorded by earlier pulls
 * (`docker.io/library/alpine:latest`); a tag is looked up among those recorded references.
 */
export function offlineSource(store: BlobStore, name: string, display: string): ImageSource {
  return {
    name,
    async getManifest(reference) {
      let digest = reference;
      if (!isDigest(reference)) {
        // The tag asked for, not always the image's own: the sigstore verifier reads signature tags too.
        const named = `${name}:${reference}`;
        const ref = (await readRefs(store)).find((r) => r.reference === named)?.descriptor ?? (await readTagMemo(store, named));
        if (!ref) throw missing(`${named === display ? display : named} was never pulled into the cache (${store.root})`);
        digest = ref.digest;
      }
      const cached = await readCachedManifest(store, digest);
      if (!cached) throw missing(`the manifest ${digest} of ${display} is not in the cache (${store.root})`);
      return cached;
    },
    async fetchBlob(descriptor: Descriptor, _signal?: AbortSignal, what?: string, offset?: number): Promise<Readable> {
      if (!(await store.has(descriptor))) throw missing(`${what ?? 'blob'} ${descriptor.digest} is not in the cache (${store.root})`);
      return store.read(descriptor.digest, offset ?? 0);
    },
  };
}

async function readCachedManifest(store: BlobStore, digest: string): Promise<FetchedManifest | undefined> {
  parseDigest(digest);
  let bytes: Buffer;
  try {
    bytes = await readFile(store.path(digest));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  // Cheap for a manifest, and it keeps a damaged cache file from being trusted.
  if (digestOf(bytes, parseDigest(digest).algorithm) !== digest) return undefined;
  // Used now: `cache prune --older-than` must not drop the manifest of an image still pulled.
  await store.touch(digest);
  return { bytes, contentType: '', digest };
}

function missing(message: string): PullUnpackError {
  return new PullUnpackError('NOT_FOUND', message, { hint: 'pull it once without --offline to fill the cache' });
}
