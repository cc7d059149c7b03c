/**
 * ImageSources around the blob cache: `cachingSource` answers from the cache what it can and
 * stores every manifest it fetches; `offlineSource` answers from the cache alone and names
 * exactly what is missing. Signature material is cached too, so that --offline verifies
 * exactly as online: the manifests behind attachment tags and referrers responses (recorded
 * in the cache index under `NAME:<alg>-<hex>[.sig]` and `NAME@referrers:<digest>`), and the
 * small blobs read with readBlob(). Whatever the cache answers is verified first: a damaged
 * copy is evicted and fetched again online, and named in the error offline.
 */
import type { Readable } from 'node:stream';
import { readRefs, recordRef } from './cache-index.js';
import type { BlobStore } from './blob-store.js';
import { NotRegularFileError, readRegularFile } from './regular-file.js';
import { digestOf, parseDigest } from '../image/digest.js';
import { PullUnpackError } from '../errors.js';
import type { Descriptor, FetchedManifest } from '../image/oci.js';
import { readBlob, type ImageSource } from '../sources/source.js';

function isDigest(reference: string): boolean {
  return reference.includes(':');
}

/**
 * Tags that name something attached to a digest rather than an image: the distribution-spec
 * referrers tag `<alg>-<hex>` and cosign's `<alg>-<hex>.sig` (and `.att`, `.sbom`).
 */
function isAttachmentTag(tag: string): boolean {
  return /^(?:sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})(?:\.[a-z]+)?$/.test(tag);
}

function referrersRef(name: string, digest: string): string {
  return `${name}@referrers:${digest}`;
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
      const descriptor = await keepManifest(store, fetched);
      // The image's own tag is recorded by the pull once it succeeds; an attachment's tag now.
      if (isAttachmentTag(reference)) await recordRef(store, `${source.name}:${reference}`, descriptor);
      return fetched;
    },
    async fetchBlob(descriptor, signal, what, offset) {
      if ((await store.verify(descriptor, what ?? `blob ${descriptor.digest}`, signal)) === 'verified') {
        return store.read(descriptor.digest, offset ?? 0);
      }
      return source.fetchBlob(descriptor, signal, what, offset);
    },
    ...(source.getReferrers && {
      async getReferrers(digest: string, signal?: AbortSignal) {
        const fetched = await source.getReferrers!(digest, signal);
        if (fetched) await recordRef(store, referrersRef(source.name, digest), await keepManifest(store, fetched));
        return fetched;
      },
    }),
    async readBlob(descriptor, maxBytes, signal, what) {
      if (await store.has(descriptor)) {
        const cached = await readBlob(offlineBlobs(store, source.name), descriptor, maxBytes, signal, what);
        await store.touch(descriptor.digest);
        return cached;
      }
      const bytes = await readBlob(source, descriptor, maxBytes, signal, what);
      await store.putBytes(descriptor, bytes, what ?? `blob ${descriptor.digest}`);
      return bytes;
    },
  };
}

async function keepManifest(store: BlobStore, fetched: FetchedManifest): Promise<Descriptor> {
  const descriptor = { mediaType: fetched.contentType, digest: fetched.digest, size: fetched.bytes.length };
  await store.putBytes(descriptor, fetched.bytes, `manifest ${fetched.digest}`);
  return descriptor;
}

/** Blobs from the cache alone. */
function offlineBlobs(store: BlobStore, name: string): ImageSource {
  return {
    name,
    getManifest: () => Promise.reject(new Error('offlineBlobs serves blobs only')),
    async fetchBlob(descriptor: Descriptor, signal?: AbortSignal, what?: string, offset?: number): Promise<Readable> {
      const label = what ?? `blob ${descriptor.digest}`;
      const state = await store.verify(descriptor, label, signal);
      if (state === 'evicted' || (state === 'absent' && store.wasEvicted(descriptor.digest))) throw damaged(label, store);
      if (state === 'absent') throw missing(`${label} is not in the cache (${store.root})`);
      return store.read(descriptor.digest, offset ?? 0);
    },
  };
}

/**
 * Answers only from the cache. `display` is the reference as recorded by earlier pulls
 * (`docker.io/library/alpine:latest`); a tag is looked up among those recorded references.
 */
export function offlineSource(store: BlobStore, name: string, display: string): ImageSource {
  return {
    ...offlineBlobs(store, name),
    async getManifest(reference) {
      let digest = reference;
      if (!isDigest(reference)) {
        const refs = await readRefs(store);
        const recorded = isAttachmentTag(reference) ? `${name}:${reference}` : display;
        const ref = refs.find((r) => r.reference === recorded);
        if (!ref) throw missing(`${recorded} was never ${recorded === display ? 'pulled' : 'fetched'} into the cache (${store.root})`);
        digest = ref.descriptor.digest;
      }
      const cached = await readCachedManifest(store, digest);
      if (cached === 'damaged') throw damaged(`the manifest ${digest} of ${display}`, store);
      if (cached === 'absent') throw missing(`the manifest ${digest} of ${display} is not in the cache (${store.root})`);
      return cached;
    },
    /** The referrers response cached online, or undefined: then the referrers tag is looked up. */
    async getReferrers(digest) {
      const ref = (await readRefs(store)).find((r) => r.reference === referrersRef(name, digest));
      if (!ref) return undefined;
      const cached = await readCachedManifest(store, ref.descriptor.digest);
      if (cached === 'damaged') throw damaged(`the referrers of ${digest}`, store);
      return cached === 'absent' ? undefined : cached;
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

/** With --offline, names every layer the cache lacks (NOT_FOUND listing them all) before anything is unpacked. */
export async function requireCachedLayers(store: BlobStore, layers: Descriptor[], name: string): Promise<void> {
  const absent = [];
  for (const [i, layer] of layers.entries()) {
    if (!(await store.has(layer))) absent.push(`layer ${i + 1}/${layers.length} ${layer.digest}`);
  }
  if (absent.length > 0) {
    throw new PullUnpackError('NOT_FOUND', `${name}: missing from the cache (${store.root}): ${absent.join(', ')}`, {
      hint: 'pull once without --offline to fetch them',
    });
  }
}

function damaged(what: string, store: BlobStore): PullUnpackError {
  return new PullUnpackError('DIGEST_MISMATCH', `${what}: the copy in the cache ${store.root} is damaged (it does not match its digest)`, {
    hint: 'pull once without --offline to fetch it again; pull-unpack cache prune --all empties the cache if more of it is damaged',
  });
}

function missing(message: string): PullUnpackError {
  return new PullUnpackError('NOT_FOUND', message, { hint: 'pull it once without --offline to fill the cache' });
}
