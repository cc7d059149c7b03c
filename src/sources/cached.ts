/**
 * ImageSources around the blob cache: `cachingSource` answers from the cache what it can and
 * stores every manifest it fetches; `offlineSource` answers from the cache alone and names
 * exactly what is missing. Signature material is cached too, so that --offline verifies
 * exactly as online: the manifests behind attachment tags and referrers responses (recorded
 * in the cache index under `NAME:<alg>-<hex>[.sig]` and `NAME@referrers:<digest>`), and the
 * small blobs read with readBlob().
 */
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { readRefs, recordRef } from '../store/cache-index.js';
import type { BlobStore } from '../store/blob-store.js';
import { digestOf, parseDigest } from '../image/digest.js';
import { PullUnpackError } from '../errors.js';
import type { Descriptor } from '../image/oci.js';
import type { FetchedManifest } from '../registry/client.js';
import { readBlob, type ImageSource } from './source.js';

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
        if (cached) return cached;
      }
      const fetched = await source.getManifest(reference, signal);
      const descriptor = await keepManifest(store, fetched);
      // The image's own tag is recorded by the pull once it succeeds; an attachment's tag now.
      if (isAttachmentTag(reference)) await recordRef(store, `${source.name}:${reference}`, descriptor);
      return fetched;
    },
    async fetchBlob(descriptor, signal, what, offset) {
      if (await store.has(descriptor)) return store.read(descriptor.digest, offset ?? 0);
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
    async fetchBlob(descriptor: Descriptor, _signal?: AbortSignal, what?: string, offset?: number): Promise<Readable> {
      if (!(await store.has(descriptor))) throw missing(`${what ?? 'blob'} ${descriptor.digest} is not in the cache (${store.root})`);
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
      if (!cached) throw missing(`the manifest ${digest} of ${display} is not in the cache (${store.root})`);
      return cached;
    },
    /** The referrers response cached online, or undefined: then the referrers tag is looked up. */
    async getReferrers(digest) {
      const ref = (await readRefs(store)).find((r) => r.reference === referrersRef(name, digest));
      return ref && (await readCachedManifest(store, ref.descriptor.digest));
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
