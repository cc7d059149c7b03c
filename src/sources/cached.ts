/**
 * ImageSources around the blob cache: `cachingSource` answers from the cache what it can and
 * stores every manifest it fetches; `offlineSource` answers from the cache alone and names
 * exactly what is missing. Whatever the cache answers is verified first: a damaged copy is
 * evicted and fetched again online, and named in the error offline.
 */
import type { Readable } from 'node:stream';
import { readRefs } from '../store/cache-index.js';
import { NotRegularFileError, readRegularFile } from '../store/regular-file.js';
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
        if (typeof cached === 'object') return cached;
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
      if ((await store.verify(descriptor, what ?? `blob ${descriptor.digest}`, signal)) === 'verified') {
        return store.read(descriptor.digest, offset ?? 0);
      }
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
      if (cached === 'damaged') throw damaged(`the manifest ${digest} of ${display}`, store);
      if (cached === 'absent') throw missing(`the manifest ${digest} of ${display} is not in the cache (${store.root})`);
      return cached;
    },
    async fetchBlob(descriptor: Descriptor, signal?: AbortSignal, what?: string, offset?: number): Promise<Readable> {
      const label = what ?? `blob ${descriptor.digest}`;
      const state = await store.verify(descriptor, label, signal);
      if (state === 'evicted' || (state === 'absent' && store.wasEvicted(descriptor.digest))) throw damaged(label, store);
      if (state === 'absent') throw missing(`${label} is not in the cache (${store.root})`);
      return store.read(descriptor.digest, offset ?? 0);
    },
  };
}

/** Manifests (and indexes) are a few KiB; a cache file longer than this is not one. */
const MAX_CACHED_MANIFEST_BYTES = 64 * 1024 * 1024;

/**
 * The cached manifest with this digest, verified; 'damaged' when the cache file does not hash
 * to it (or is not a regular file: a FIFO would block the read), so that it is fetched again.
 */
async function readCachedManifest(store: BlobStore, digest: string): Promise<FetchedManifest | 'absent' | 'damaged'> {
  parseDigest(digest);
  const bytes = await readRegularFile(store.path(digest), MAX_CACHED_MANIFEST_BYTES).catch((err: unknown) => {
    if (err instanceof NotRegularFileError) return 'damaged' as const;
    throw err;
  });
  if (bytes === undefined) return 'absent';
  // Cheap for a manifest, and it keeps a damaged cache file from being trusted.
  if (bytes === 'damaged' || digestOf(bytes, parseDigest(digest).algorithm) !== digest) return 'damaged';
  // Used now: `cache prune --older-than` must not drop the manifest of an image still pulled.
  await store.touch(digest);
  return { bytes, contentType: '', digest };
}

function damaged(what: string, store: BlobStore): PullUnpackError {
  return new PullUnpackError('DIGEST_MISMATCH', `${what}: the copy in the cache ${store.root} is damaged (it does not match its digest)`, {
    hint: 'pull once without --offline to fetch it again; pull-unpack cache prune --all empties the cache if more of it is damaged',
  });
}

function missing(message: string): PullUnpackError {
  return new PullUnpackError('NOT_FOUND', message, { hint: 'pull it once without --offline to fill the cache' });
}
