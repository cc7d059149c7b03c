/**
 * Bounded parallel fetch, strictly ordered apply (go-containerregistry's remote/limiter.go
 * shape): every layer's download starts at once, up to the concurrency; layer N is read while it
 * downloads (store/blob-follow.ts), through the verified layer stream (layer/layer-stream.ts),
 * once layers 1..N-1 are applied. The first failure aborts everything else.
 */
import { applyLayer, createApplyContext, finishApply, type ApplyContext, type ApplyLayerOptions } from '../apply/applier.js';
import type { OwnerRecord } from '../apply/owners.js';
import { abortError, isPullUnpackError } from '../errors.js';
import type { Descriptor } from '../image/oci.js';
import { checkDiffId, openLayerTar, uncompressedBudget, type LayerTar, type LayerWithDiffId } from '../layer/layer-stream.js';
import type { Limits } from '../limits.js';
import type { ImageSource } from '../sources/source.js';
import { BlobFollower } from '../store/blob-follow.js';
import type { BlobStore } from '../store/blob-store.js';
import { fetchBlobs, type BlobEvent } from '../store/fetch.js';

/** The least time between two layer-progress events of one layer. */
export const LAYER_PROGRESS_MS = 100;

/** While a layer is applied: tar entries applied so far, at most every LAYER_PROGRESS_MS per layer. */
export interface LayerProgressEvent {
  type: 'layer-progress';
  index: number;
  digest: string;
  entries: number;
}

/** One layer applied (or, without a rootfs, checked against its DiffID). */
export interface LayerAppliedEvent {
  type: 'layer-applied';
  index: number;
  digest: string;
  diffId: string;
  entries: number;
}

/** Where the layers come from and go to, and how they are reported. */
export interface LayerPipeline {
  /** The image's source (through the cache when there is one). */
  source: ImageSource;
  store: BlobStore;
  /** Aborted by the first failure; its signal stops every download and the apply. */
  controller: AbortController;
  concurrency: number;
  limits: Limits;
  /** Apply ownership and create devices (default: running as root). */
  isRoot: boolean | undefined;
  /** Record entry owners here instead of applying them (rootless bundles map them afterwards). */
  owners?: OwnerRecord | undefined;
  onEvent: (event: BlobEvent | LayerProgressEvent | LayerAppliedEvent) => void;
  onWarning: (message: string) => void;
}

/** Bytes a pull downloaded, and layer bytes the cache already had (or another process downloaded meanwhile). */
export interface LayerBytes {
  bytesFetched: number;
  bytesFromCache: number;
}

/**
 * Downloads all `layers` in parallel and applies them in order into `rootfs` (or, without one,
 * only checks their DiffIDs), each while it downloads once the layers before it are applied.
 * Resolves with the bytes downloaded and each layer's verified blob file, in order.
 */
export async function unpackLayers(
  pipeline: LayerPipeline,
  rootfs: string | undefined,
  layers: LayerWithDiffId[],
): Promise<LayerBytes & { layerPaths: string[] }> {
  const { controller, limits } = pipeline;
  const signal = controller.signal;
  const downloads = startDownloads(pipeline, layers);
  const ctx =
    rootfs === undefined
      ? undefined
      : createApplyContext(rootfs, { isRoot: pipeline.isRoot, onWarning: pipeline.onWarning, limits, owners: pipeline.owners });
  const layerPaths: string[] = [];
  const budget = uncompressedBudget(limits.maxUncompressedBytes);
  try {
    for (const [i, layer] of layers.entries()) {
      if (signal.aborted) throw signal.reason ?? abortError(signal);
      const { what, follower } = downloads.layers[i]!;
      const file = downloads.files[i]!;
      const tar = openLayerTar(follower.stream(), layer, what, budget);
      let entries = 0;
      try {
        if (ctx) entries = await applyLayerTar(ctx, tar, { what, signal, onEntries: layerProgress(i, layer.digest, pipeline.onEvent) });
        else await checkDiffId(tar, signal);
      } catch (err) {
        // Bytes that do not match the blob's digest explain any failure to unpack them.
        throw (await downloadError(file)) ?? err;
      }
      // The applied bytes are the verified blob's: the follower ends only after verification.
      layerPaths.push(await file);
      pipeline.onEvent({ type: 'layer-applied', index: i, digest: layer.digest, diffId: layer.diffId, entries });
    }
    if (ctx) await finishApply(ctx);
  } catch (err) {
    // Stop the other downloads and wait until they let go of the staging directory, so that
    // none of them writes (or recreates a directory) in it after it has been discarded.
    controller.abort(err);
    await Promise.allSettled(downloads.files);
    throw err;
  }
  return { ...downloads.bytes, layerPaths };
}

/** The downloads of every layer of a pull, started at once (bounded by the concurrency). */
interface LayerDownloads {
  /** Each layer's name in messages, and the follower that reads it while it downloads. */
  layers: Array<{ what: string; follower: BlobFollower }>;
  /** Each layer's verified blob file, once downloaded. */
  files: Array<Promise<string>>;
  bytes: LayerBytes;
}

function startDownloads(pipeline: LayerPipeline, layers: LayerWithDiffId[]): LayerDownloads {
  const { source, store, controller } = pipeline;
  const bytes = { bytesFetched: 0, bytesFromCache: 0 };
  const onEvent = (event: BlobEvent): void => {
    if (event.type === 'blob-verified') {
      bytes.bytesFetched += event.fetched;
      bytes.bytesFromCache += event.size - event.fetched;
    }
    pipeline.onEvent(event);
  };
  const requests = layers.map((l, i) => ({
    descriptor: descriptorOf(l),
    index: i,
    what: `layer ${i + 1}/${layers.length} of ${source.name} (${l.digest})`,
    follower: new BlobFollower(),
  }));
  const files = fetchBlobs(source, store, requests, { concurrency: pipeline.concurrency, signal: controller.signal, onEvent });
  // The first failed download stops the others at once instead of after the layers before it.
  for (const f of files) f.catch((err: unknown) => controller.abort(err));
  return { layers: requests, files, bytes };
}

/** The download's own failure (not an abort caused by another one), once it settled. */
async function downloadError(download: Promise<string>): Promise<unknown> {
  const error = await download.then(
    () => undefined,
    (err: unknown) => err,
  );
  return isPullUnpackError(error, 'ABORTED') ? undefined : error;
}

function descriptorOf(layer: LayerWithDiffId): Descriptor {
  return { mediaType: layer.mediaType, digest: layer.digest, size: layer.size };
}

/** The applier's entry count as layer-progress events, at most one per LAYER_PROGRESS_MS. */
function layerProgress(index: number, digest: string, onEvent: (event: LayerProgressEvent) => void): (entries: number) => void {
  let last = Number.NEGATIVE_INFINITY;
  return (entries) => {
    const now = performance.now();
    if (now - last < LAYER_PROGRESS_MS) return;
    last = now;
    onEvent({ type: 'layer-progress', index, digest, entries });
  };
}

/** Applies a layer's tar stream; resolves with its entry count once the DiffID was checked. */
async function applyLayerTar(ctx: ApplyContext, { tar, done }: LayerTar, options: ApplyLayerOptions): Promise<number> {
  try {
    const stats = await applyLayer(ctx, tar, options);
    // The tar may end before the stream does (padding): read the rest so the DiffID covers it all.
    tar.resume();
    await done;
    return stats.entries;
  } catch (err) {
    tar.destroy();
    await done.catch(() => undefined);
    throw err;
  }
}
