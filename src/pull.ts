/**
 * Wires the stages: resolve -> fetch (bounded, verified) -> decompress -> DiffID check -> apply,
 * into a staging directory that replaces DIR only when everything succeeded.
 * One AbortSignal runs end to end; the first failure aborts every other download.
 */
import { resolve as resolvePath } from 'node:path';
import { parseLocalReference } from './sources/layout.js';
import { pipeline, Transform, type Readable } from 'node:stream';
import { applyLayer, createApplyContext, finishApply, type ApplyContext, type ApplyLayerOptions } from './apply/applier.js';
import { BlobFollower } from './store/blob-follow.js';
import { BlobStore } from './store/blob-store.js';
import { recordRef } from './store/cache-index.js';
import { cachingSource, offlineSource } from './sources/cached.js';
import { createDecompressor, layerCompression } from './layer/decompress.js';
import { checkDestination, commitStaging, createStaging, destinationPlace, discardStaging, type Staging } from './outputs/staging.js';
import { guardDestination } from './outputs/destination-guard.js';
import { storageError } from './store/storage-error.js';
import { VerifyingStream } from './image/digest.js';
import { abortError, isPullUnpackError, PullUnpackError } from './errors.js';
import { fetchBlobs, type BlobEvent } from './store/fetch.js';
import type { Descriptor, ImageConfig, Platform } from './image/oci.js';
import { openImage, wantedPlatform, type OpenedImage, type SourceOptions } from './sources/open.js';
import { formatPlatform } from './image/platform.js';
import { limitError, type Limits } from './limits.js';
import { checkConfigPlatform, fetchConfig, resolveImage, type ResolvedImage } from './image/resolve.js';
import type { ImageSource } from './sources/source.js';
import { enforceTrust, prepareTrust, type TrustEvent, type TrustOptions } from './trust/evaluate.js';
import { lookasideCache } from './store/signature-cache.js';
import type { OwnerRecord } from './apply/owners.js';

export const DEFAULT_CONCURRENCY = 4;
/** The least time between two layer-progress events of one layer. */
export const LAYER_PROGRESS_MS = 100;

export interface PullOptions extends SourceOptions {
  /** Parallel downloads (default 4). */
  concurrency?: number | undefined;
  /** Replace a non-empty destination (still atomically). */
  force?: boolean | undefined;
  /** Apply ownership and create devices; default: running as root. */
  isRoot?: boolean | undefined;
  /**
   * The persistent blob cache (an OCI image layout) for registry pulls. Without it, downloads
   * live in the staging directory and are removed when the pull ends.
   */
  cacheDir?: string | undefined;
  /** Use only the cache: no registry is contacted; anything missing is named in the error. */
  offline?: boolean | undefined;
  /** Take over a cache lock its holder has not refreshed for this long (default 60 s, at least 10 s). */
  lockTimeoutMs?: number | undefined;
  /** Progress and warnings, in the order they happen. */
  onEvent?: ((event: PullEvent) => void) | undefined;
  /** Signature verification (policy.json, registries.d, --verify-*): checked before any layer is fetched. */
  trust?: TrustOptions | undefined;
  /** Record entry owners here instead of applying them (rootless bundles map them afterwards). */
  recordOwners?: OwnerRecord | undefined;
}

export type PullEvent =
  | {
      type: 'resolved';
      reference: string;
      digest: string;
      mediaType: string;
      manifestDigest: string;
      platform: string | undefined;
      reason: string | undefined;
    }
  | { type: 'config'; digest: string; layers: number; totalSize: number }
  | BlobEvent
  /** While a layer is applied: tar entries applied so far, at most every LAYER_PROGRESS_MS per layer. */
  | { type: 'layer-progress'; index: number; digest: string; entries: number }
  | { type: 'layer-applied'; index: number; digest: string; diffId: string; entries: number }
  | { type: 'warning'; message: string }
  | TrustEvent;

export interface PulledLayer {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
}

export interface PullResult {
  reference: string;
  /** The digest the reference resolved to (an index or the manifest itself). */
  digest: string;
  indexDigest: string | undefined;
  manifestDigest: string;
  platform: string | undefined;
  configDigest: string;
  config: ImageConfig;
  layers: PulledLayer[];
  /** Absolute path of what was written (the rootfs, or the bundle directory). */
  path: string;
  /** Bytes downloaded by this pull. */
  bytesFetched: number;
  /** Layer bytes the cache already had (or another process downloaded meanwhile). */
  bytesFromCache: number;
  /** The persistent cache used, if any. */
  cacheDir: string | undefined;
}

/** The verified documents and blobs of a pull, for writers of other outputs. */
export interface PulledImage {
  manifest: { bytes: Buffer; descriptor: Descriptor };
  configBytes: Buffer;
  /** Verified layer blob files, in manifest order. */
  layerPaths: string[];
}

/** What a stage after the rootfs (e.g. the bundle writer) adds inside the staging directory. */
export type StagingHook = (staging: Staging, rootfs: string, pulled: Omit<PullResult, 'path'>, image: PulledImage) => Promise<void>;

/** Where the rootfs goes inside the staging directory, and what else a caller writes there. */
export interface Layout {
  rootfsIn: (staging: Staging) => string;
  prepare?: ((staging: Staging) => Promise<void>) | undefined;
  finish?: StagingHook | undefined;
  /** Only fetch and verify the layers (an OCI layout output needs no rootfs). */
  skipApply?: boolean | undefined;
  /** Moves the result into place instead of renaming the staging `out` directory to DIR. */
  commit?: ((staging: Staging) => Promise<void>) | undefined;
  /** Checks the destination before anything is fetched; default: an empty or new directory. */
  checkDestination?: ((dest: string, force: boolean) => Promise<string>) | undefined;
}

/** Pulls `image` and unpacks its root filesystem into `dir`, all or nothing. */
export async function pull(image: string, dir: string, options: PullOptions = {}): Promise<PullResult> {
  return pullInto(image, dir, options, { rootfsIn: (s) => s.out });
}

/** The shared pull: `layout` says where the rootfs goes in the staging dir and what else to write. */
export async function pullInto(image: string, dir: string, options: PullOptions, layout: Layout): Promise<PullResult> {
  if (options.offline && options.cacheDir === undefined && !parseLocalReference(image)) {
    throw new PullUnpackError('USAGE', 'offline pulls read the blob cache: give a cache directory (--cache-dir)');
  }
  const wanted = wantedPlatform({ ...options, onNotice: (m) => options.onEvent?.({ type: 'warning', message: m }) });
  const guarded = await guardDestination(dir, options.cacheDir);
  const dest = await (layout.checkDestination ?? checkDestination)(guarded, options.force ?? false);
  const trust = await prepareTrust(options.trust);
  const opened = await openImage(image, options);
  try {
    return await pullOpened(opened, dest, wanted, { ...options, trust }, layout);
  } finally {
    await opened.close();
  }
}

async function pullOpened(opened: OpenedImage, dest: string, wanted: Platform, options: PullOptions, layout: Layout): Promise<PullResult> {
  const controller = new AbortController();
  const stopOnUserAbort = (): void => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', stopOnUserAbort, { once: true });
  const signal = controller.signal;
  const { limits } = opened;
  const warn = (message: string): void => options.onEvent?.({ type: 'warning', message });
  let staging: Staging;
  try {
    staging = await createStaging(dest, warn);
  } catch (err) {
    throw storageError(err, destinationPlace(dest));
  }
  try {
    // Registry pulls go through the persistent cache when there is one; local sources and
    // pulls without a cache keep their blobs in the staging directory, removed at the end.
    const persistent = options.cacheDir !== undefined && !opened.local;
    const store = persistent
      ? new BlobStore(resolvePath(options.cacheDir!), { lockTimeoutMs: options.lockTimeoutMs, onNotice: warn })
      : new BlobStore(staging.scratch, { place: destinationPlace(dest), onNotice: warn });
    // A local source needs no network: --offline changes nothing for it.
    const source =
      options.offline && persistent
        ? offlineSource(store, opened.source.name, opened.display)
        : persistent
          ? cachingSource(opened.source, store)
          : opened.source;
    const resolved = await resolveImage(source, opened.reference, wanted, { signal, limits });
    emitResolved(opened.display, resolved, options);
    const lookaside = { transport: options.transport, insecureHosts: options.insecureRegistries, offline: options.offline };
    const target = { source, image: opened.display, digest: resolved.top.descriptor.digest, manifestBytes: resolved.top.bytes, signal };
    const onNotice = (message: string): void => options.onEvent?.({ type: 'warning', message });
    const cache = persistent ? lookasideCache(store) : undefined;
    await enforceTrust(options.trust, { ...target, onNotice, lookaside: { ...lookaside, cache } }, opened.display, (e) =>
      options.onEvent?.(e),
    );
    const { config, bytes: configBytes } = await fetchConfig(source, resolved.manifest, { signal, limits });
    for (const note of checkConfigPlatform(resolved, config, wanted, options.platform !== undefined, opened.display)) {
      options.onEvent?.({ type: 'warning', message: note });
    }
    await store.putBytes(resolved.manifest.config, configBytes, `the config of ${source.name}`);
    const layers = checkLayers(resolved, config, source.name, limits);
    if (options.offline && persistent) await checkOffline(store, layers, source.name);
    options.onEvent?.({
      type: 'config',
      digest: resolved.manifest.config.digest,
      layers: layers.length,
      totalSize: layers.reduce((n, l) => n + l.size, 0),
    });
    await layout.prepare?.(staging);
    const rootfs = layout.rootfsIn(staging);
    const { layerPaths, ...bytes } = await unpackLayers(
      source,
      store,
      layout.skipApply ? undefined : rootfs,
      layers,
      options,
      controller,
      limits,
    );
    const pulled = {
      reference: opened.display,
      digest: resolved.top.descriptor.digest,
      indexDigest: resolved.choice ? resolved.top.descriptor.digest : undefined,
      manifestDigest: resolved.manifestDescriptor.digest,
      platform: resolved.choice ? formatPlatform(resolved.choice.platform) : configPlatform(config),
      configDigest: resolved.manifest.config.digest,
      config,
      layers,
      ...bytes,
      cacheDir: persistent ? store.root : undefined,
    };
    const image = { manifest: { bytes: resolved.manifestBytes, descriptor: resolved.manifestDescriptor }, configBytes, layerPaths };
    await layout.finish?.(staging, rootfs, pulled, image);
    if (signal.aborted) throw abortError(signal);
    await (layout.commit ?? commitStaging)(staging);
    if (persistent && !options.offline) await recordRef(store, opened.display, resolved.top.descriptor);
    return { ...pulled, path: dest };
  } catch (err) {
    // A download that failed aborts the layer being applied: report the failure, not the abort.
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
    const cause = isPullUnpackError(err, 'ABORTED') && reason instanceof Error ? reason : err;
    controller.abort(cause);
    await discardStaging(staging);
    if (options.signal?.aborted) throw abortError(options.signal);
    // Whatever the store did not claim was written in the staging directory, beside DIR.
    throw storageError(cause, destinationPlace(dest));
  } finally {
    options.signal?.removeEventListener('abort', stopOnUserAbort);
  }
}

/** With --offline, names every layer the cache lacks before anything is unpacked. */
async function checkOffline(store: BlobStore, layers: PulledLayer[], name: string): Promise<void> {
  const absent = [];
  for (const [i, layer] of layers.entries()) {
    if (!(await store.has(descriptorOf(layer)))) absent.push(`layer ${i + 1}/${layers.length} ${layer.digest}`);
  }
  if (absent.length > 0) {
    throw new PullUnpackError('NOT_FOUND', `${name}: missing from the cache (${store.root}): ${absent.join(', ')}`, {
      hint: 'pull once without --offline to fetch them',
    });
  }
}

function emitResolved(display: string, resolved: ResolvedImage, options: PullOptions): void {
  options.onEvent?.({
    type: 'resolved',
    reference: display,
    digest: resolved.top.descriptor.digest,
    mediaType: resolved.top.descriptor.mediaType,
    manifestDigest: resolved.manifestDescriptor.digest,
    platform: resolved.choice ? formatPlatform(resolved.choice.platform) : undefined,
    reason: resolved.choice?.reason,
  });
  for (const note of resolved.choice?.notes ?? []) options.onEvent?.({ type: 'warning', message: note });
}

function configPlatform(config: ImageConfig): string | undefined {
  return config.os && config.architecture
    ? formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant })
    : undefined;
}

/** Pairs each layer with its DiffID; refuses unknown media types before anything is downloaded. */
function checkLayers(resolved: ResolvedImage, config: ImageConfig, name: string, limits: Limits): PulledLayer[] {
  const { layers } = resolved.manifest;
  if (layers.length > limits.maxLayers) throw limitError(`${name}: ${layers.length} layers`, limits.maxLayers, '--max-layers');
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== layers.length) {
    throw new PullUnpackError(
      'INVALID_CONFIG',
      `${name}: the manifest has ${layers.length} layers but the config lists ${diffIds.length} DiffIDs`,
    );
  }
  return layers.map((layer, i) => {
    layerCompression(layer.mediaType);
    return { digest: layer.digest, size: layer.size, mediaType: layer.mediaType, diffId: diffIds[i]! };
  });
}

/**
 * Downloads all layers in parallel and applies them in order, each while it downloads once the
 * layers before it are applied. Returns the number of bytes downloaded.
 */
async function unpackLayers(
  source: ImageSource,
  store: BlobStore,
  rootfs: string | undefined,
  layers: PulledLayer[],
  options: PullOptions,
  controller: AbortController,
  limits: Limits,
): Promise<{ bytesFetched: number; bytesFromCache: number; layerPaths: string[] }> {
  const signal = controller.signal;
  const bytes = { bytesFetched: 0, bytesFromCache: 0 };
  const onEvent = (event: BlobEvent): void => {
    if (event.type === 'blob-verified') {
      bytes.bytesFetched += event.fetched;
      bytes.bytesFromCache += event.size - event.fetched;
    }
    options.onEvent?.(event);
  };
  // Each layer is read while it downloads (blob-follow.ts): applying overlaps the download.
  const followers = layers.map(() => new BlobFollower());
  const requests = layers.map((l, i) => ({
    descriptor: descriptorOf(l),
    what: `layer ${i + 1}/${layers.length} of ${source.name} (${l.digest})`,
    follower: followers[i],
  }));
  const downloads = fetchBlobs(source, store, requests, { concurrency: options.concurrency ?? DEFAULT_CONCURRENCY, signal, onEvent });
  // The first failed download stops the others at once instead of after the layers before it.
  for (const d of downloads) d.catch((err: unknown) => controller.abort(err));
  const ctx =
    rootfs === undefined
      ? undefined
      : createApplyContext(rootfs, {
          isRoot: options.isRoot,
          onWarning: (message) => options.onEvent?.({ type: 'warning', message }),
          limits,
          owners: options.recordOwners,
        });
  const layerPaths: string[] = [];
  const budget = { remaining: limits.maxUncompressedBytes, limit: limits.maxUncompressedBytes };
  try {
    for (const [i, layer] of layers.entries()) {
      if (signal.aborted) throw signal.reason ?? abortError(signal);
      const what = requests[i]!.what;
      const opened = openLayerTar(followers[i]!.stream(), layer, what, budget);
      let entries: number;
      try {
        const onEntries = layerProgress(i, layer.digest, options.onEvent);
        entries = ctx ? await applyLayerFile(ctx, opened, { what, signal, onEntries }) : await checkDiffId(opened, signal);
      } catch (err) {
        // Bytes that do not match the blob's digest explain any failure to unpack them.
        throw (await downloadError(downloads[i]!)) ?? err;
      }
      // The applied bytes are the verified blob's: the follower ends only after verification.
      layerPaths.push(await downloads[i]!);
      options.onEvent?.({ type: 'layer-applied', index: i, digest: layer.digest, diffId: layer.diffId, entries });
    }
    if (ctx) await finishApply(ctx);
  } catch (err) {
    // Stop the other downloads and wait until they let go of the staging directory, so that
    // none of them writes (or recreates a directory) in it after it has been discarded.
    controller.abort(err);
    await Promise.allSettled(downloads);
    throw err;
  }
  return { ...bytes, layerPaths };
}

/** The download's own failure (not an abort caused by another one), once it settled. */
async function downloadError(download: Promise<string>): Promise<unknown> {
  const error = await download.then(
    () => undefined,
    (err: unknown) => err,
  );
  return isPullUnpackError(error, 'ABORTED') ? undefined : error;
}

/** Decompresses a blob only to check it against its DiffID (no rootfs is written). */
async function checkDiffId({ tar, done }: LayerTar, signal: AbortSignal): Promise<number> {
  signal.addEventListener('abort', () => tar.destroy(abortError(signal)), { once: true });
  tar.resume();
  await done;
  return 0;
}

function descriptorOf(layer: PulledLayer): Descriptor {
  return { mediaType: layer.mediaType, digest: layer.digest, size: layer.size };
}

/** The applier's entry count as layer-progress events, at most one per LAYER_PROGRESS_MS. */
function layerProgress(index: number, digest: string, onEvent: PullOptions['onEvent']): ((entries: number) => void) | undefined {
  if (!onEvent) return undefined;
  let last = Number.NEGATIVE_INFINITY;
  return (entries) => {
    const now = performance.now();
    if (now - last < LAYER_PROGRESS_MS) return;
    last = now;
    onEvent({ type: 'layer-progress', index, digest, entries });
  };
}

/** Decompresses a blob, checks it against its DiffID, and applies it. */
async function applyLayerFile(ctx: ApplyContext, { tar, done }: LayerTar, options: ApplyLayerOptions): Promise<number> {
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

interface LayerTar {
  tar: Readable;
  /** Settles once the DiffID was checked (or the stream failed). */
  done: Promise<void>;
}

/** Uncompressed bytes still allowed, shared by every layer of a pull. */
interface Budget {
  remaining: number;
  readonly limit: number;
}

/** The uncompressed tar stream of a layer blob (as it downloads), counted against `budget` and checked against the DiffID. */
function openLayerTar(blob: Readable, layer: PulledLayer, what: string, budget: Budget): LayerTar {
  let settle!: (err?: Error | null) => void;
  const done = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  const count = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback) {
      budget.remaining -= chunk.length;
      if (budget.remaining < 0) {
        callback(limitError('the uncompressed layers', budget.limit, '--max-uncompressed-size (e.g. 200G)'));
        return;
      }
      callback(null, chunk);
    },
  });
  const tar = pipeline(
    blob,
    createDecompressor(layerCompression(layer.mediaType), what),
    count,
    new VerifyingStream({ digest: layer.diffId, what, code: 'DIFFID_MISMATCH' }),
    (err) => settle(err),
  );
  return { tar, done };
}
