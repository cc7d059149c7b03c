/**
 * Bounded parallel downloads into a BlobStore, store first. Each blob is verified on its way in,
 * and a blob the store already has is verified again before it is used (a damaged copy is
 * evicted and downloaded again).
 */
import pLimit from 'p-limit';
import type { BlobFollower } from './blob-follow.js';
import type { BlobStore } from './blob-store.js';
import { abortError, isPullUnpackError, PullUnpackError } from '../errors.js';
import type { Descriptor } from '../image/oci.js';
import type { ImageSource } from '../sources/source.js';

/** `index`: the layer's position in the manifest (0-based), when the blob is a layer; a layer listed twice is fetched once, under its first index. */
export type BlobEvent = { index?: number } & (
  | { type: 'blob-start'; digest: string; size: number; what: string }
  | { type: 'blob-progress'; digest: string; bytes: number; size: number }
  /** Another process holds the blob's lock; `message` says who and until when it is waited for. */
  | { type: 'blob-wait'; digest: string; what: string; message: string }
  /** `fetched`: bytes downloaded by this process (less than `size` after a resume). */
  | { type: 'blob-verified'; digest: string; size: number; fromCache: boolean; fetched: number }
);

export interface FetchOptions {
  concurrency: number;
  signal?: AbortSignal | undefined;
  onEvent?: ((event: BlobEvent) => void) | undefined;
}

export interface BlobRequest {
  descriptor: Descriptor;
  /** Names the blob in messages and events, e.g. 'layer 2/5'. */
  what: string;
  /** The layer's position in the manifest, reported as `index` on the blob's events. */
  index?: number | undefined;
  /** Told about the download's progress and outcome, to read the blob while it arrives. */
  follower?: BlobFollower | undefined;
}

/**
 * Starts fetching every blob with at most `concurrency` downloads at once, in the order given.
 * Returns one promise per blob, resolving to the verified blob's path in the store. Every
 * promise has a rejection handler attached, so the caller may await them one by one.
 */
export function fetchBlobs(source: ImageSource, store: BlobStore, blobs: BlobRequest[], options: FetchOptions): Array<Promise<string>> {
  const limit = pLimit(Math.max(1, options.concurrency));
  // A digest listed twice (an image may repeat a layer) is downloaded once: a second download
  // would only wait for the first one's lock. Its follower reads the blob once it is verified.
  const started = new Map<string, Promise<string>>();
  return blobs.map(({ descriptor, what, index, follower }) => {
    const onEvent = options.onEvent && index !== undefined ? (e: BlobEvent) => options.onEvent!({ ...e, index }) : options.onEvent;
    const task =
      started.get(descriptor.digest) ?? limit(() => fetchOne(source, store, descriptor, what, { ...options, onEvent }, follower));
    started.set(descriptor.digest, task);
    task.then(
      (path) => follower?.settle({ path }),
      (error: unknown) => follower?.settle({ error }),
    );
    return task;
  });
}

async function fetchOne(
  source: ImageSource,
  store: BlobStore,
  descriptor: Descriptor,
  what: string,
  options: FetchOptions,
  follower: BlobFollower | undefined,
): Promise<string> {
  const { onEvent, signal } = options;
  // A queued download whose turn comes after the fetch was stopped neither starts nor reports.
  if (signal?.aborted) throw abortError(signal);
  if ((await store.verify(descriptor, what, signal)) === 'verified') {
    onEvent?.({ type: 'blob-verified', digest: descriptor.digest, size: descriptor.size, fromCache: true, fetched: 0 });
    return store.path(descriptor.digest);
  }
  if (signal?.aborted) throw abortError(signal);
  onEvent?.({ type: 'blob-start', digest: descriptor.digest, size: descriptor.size, what });
  const open = async (offset: number) => {
    try {
      return await source.fetchBlob(descriptor, signal, what, offset);
    } catch (err) {
      throw foreignLayerError(err, descriptor, what) ?? err;
    }
  };
  const result = await store.ingest(descriptor, open, what, {
    signal,
    onBytes: onEvent && ((bytes) => onEvent({ type: 'blob-progress', digest: descriptor.digest, bytes, size: descriptor.size })),
    onWait: (message) => onEvent?.({ type: 'blob-wait', digest: descriptor.digest, what, message }),
    onWritten: follower && ((partial, length, fresh) => follower.written(partial, length, fresh)),
  });
  // fetched is 0 when another process downloaded the blob while this one waited.
  const fromCache = result.fetched === 0 && result.resumed === 0;
  onEvent?.({ type: 'blob-verified', digest: descriptor.digest, size: descriptor.size, fromCache, fetched: result.fetched });
  return result.path;
}

/** A non-distributable (foreign) layer the registry does not have: name it and its URLs. */
function foreignLayerError(err: unknown, descriptor: Descriptor, what: string): PullUnpackError | undefined {
  if (!isPullUnpackError(err, 'NOT_FOUND') || !descriptor.urls?.length) return undefined;
  return new PullUnpackError(
    'NOT_FOUND',
    `${what} (${descriptor.digest}) is a non-distributable layer the registry does not have; it lives at ${descriptor.urls.join(', ')}`,
    {
      cause: err,
      hint: 'pull-unpack fetches layers only from the registry; copy the layer into the registry first (e.g. skopeo copy --dest-... with foreign layers allowed)',
    },
  );
}
