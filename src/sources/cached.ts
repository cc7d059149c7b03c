/**
 * ImageSources around the blob cache: `cachingSource` answers from the cache what it can and
 * stores every manifest it fetches; `offlineSource` answers from the cache alone and names
 * exactly what is missing.
 */
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { readRefs } from '../store/cache-index.js';
import type { BlobStore } from '../store/blob-store.js';
import { digestOf, parseDigest } from '../image/digest.js';
import { PullUnpackError } from '../errors.js';
import type { Descriptor } from '../image/oci.js';
import type { FetchedManifest } from '../registry/client.js';
import type { ImageSource } from './source.js';

function isDigest(reference: string): boolean {
  return reference.includes(':');
}

/**
 * Manifests by digest and blobs come from the cache when it has them; manifests fetched from
 * `source` are stored under the digest of their bytes (content-addressed, so never unverified).
 * Tags always go to `source`: they move.
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
      await store.putBytes(
        { mediaType: '', digest: fetched.digest, size: fetched.bytes.length },
        fetched.bytes,
        `manifest ${fetched.digest}`,
      );
      return fetched;
    },
    async fetchBlob(descriptor, signal, what, offset) {
      if (await store.has(descriptor)) return store.read(descriptor.digest, offset ?? 0);
      return source.fetchBlob(descriptor, signal, what, offset);
    },
  };
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
        const ref = (await readRefs(store)).find((r) => r.reference === display);
        if (!ref) throw missing(`${display} was never pulled into the cache (${store.root})`);
        digest = ref.descriptor.digest;
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
