/**
 * Wires the stages: open the image's source -> resolve (index -> platform manifest) -> check
 * its signatures -> fetch the layers (bounded, verified, cached) -> decompress each and check
 * it against its DiffID -> apply them in order -> the output, built in a staging directory that
 * replaces the destination only when everything succeeded. One AbortSignal runs end to end;
 * the first failure aborts every other download.
 */
import { resolve as resolvePath } from 'node:path';
import { abortError, isPullUnpackError, PullUnpackError } from './errors.js';
import { isLocalReference, parseImageReference, type ImageReference } from './image/local-reference.js';
import type { ImageConfig, Platform } from './image/oci.js';
import { formatPlatform } from './image/platform.js';
import { layersWithDiffIds, type LayerWithDiffId } from './layer/layer-stream.js';
import { bundleOutput, type BundleSettings } from './outputs/bundle.js';
import { guardDestination } from './outputs/destination-guard.js';
import { ociLayoutOutput } from './outputs/oci-output.js';
import { rootfsOutput, type Output, type PulledImage } from './outputs/output.js';
import type { RuntimeSpec } from './outputs/runtime-config.js';
import { createStaging, destinationPlace, discardStaging, streamStaging, type Staging } from './outputs/staging.js';
import { tarOutput } from './outputs/tar-output.js';
import { openImage, wantedPlatform, type OpenedImage, type SourceOptions } from './sources/open.js';
import { checkConfigPlatform, fetchConfig, resolveImage, SINGLE_MANIFEST_REASON, type ResolvedImage } from './sources/resolve.js';
import type { ImageSource } from './sources/source.js';
import { BlobStore } from './store/blob-store.js';
import { recordRef } from './store/cache-index.js';
import { cachingSource, offlineSource, requireCachedLayers } from './store/cached-source.js';
import type { BlobEvent } from './store/fetch.js';
import { lookasideCache } from './store/signature-cache.js';
import { storageError, type StoragePlace } from './store/storage-error.js';
import { enforceTrust, prepareTrust, type TrustEvent, type TrustOptions } from './trust/evaluate.js';
import { unpackLayers, type LayerAppliedEvent, type LayerProgressEvent } from './pull/layers.js';
import { pullSummary, type PullSummary } from './pull/summary.js';

const DEFAULT_CONCURRENCY = 4;

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
}

export type PullEvent =
  | {
      type: 'resolved';
      reference: string;
      digest: string;
      mediaType: string;
      manifestDigest: string;
      platform: string | undefined;
      reason: string;
    }
  | { type: 'config'; digest: string; layers: number; totalSize: number }
  | BlobEvent
  | LayerProgressEvent
  | LayerAppliedEvent
  | { type: 'warning'; message: string }
  | TrustEvent;

/** A layer of the pulled image: its descriptor and its DiffID. */
export type PulledLayer = LayerWithDiffId;

/** What a pull wrote and read: its summary's fields (see PullSummary), the image config, and the summary itself. */
export interface PullResult extends Omit<PullSummary, 'rootless'> {
  config: ImageConfig;
  /** The fields of the result without the config (and a bundle's `rootless`): what `--json` prints as its `done` event. */
  summary: PullSummary;
}

export type BundleOptions = PullOptions & BundleSettings;

export interface BundleResult extends PullResult {
  /** The generated runtime configuration, as written to DIR/config.json. */
  spec: RuntimeSpec;
  /** Shaped for runc --rootless (run by the user who made it), not for root. */
  rootless: boolean;
}

export interface TarOptions extends PullOptions {
  /** Where `--output tar -` writes: the CLI's standard output. */
  stdout?: NodeJS.WritableStream | undefined;
}

/** Pulls `image` and unpacks its root filesystem into `dir`, all or nothing. */
export function pull(image: string | ImageReference, dir: string, options: PullOptions = {}): Promise<PullResult> {
  return pullWith(image, rootfsOutput(dir), options);
}

/** Pulls `image` into `dir` as a runc bundle (rootfs + config.json), all or nothing. */
export async function pullBundle(image: string | ImageReference, dir: string, options: BundleOptions = {}): Promise<BundleResult> {
  const output = await bundleOutput(dir, options, { onWarning: warningsOf(options), env: options.env, signal: options.signal });
  // A rootless bundle's files are the user's: the layers' ownership is not applied.
  return pullWith(image, output, { ...options, isRoot: options.isRoot ?? (output.rootless ? false : undefined) });
}

/**
 * Pulls `image` and writes its flattened filesystem (whiteouts applied, hardlinks kept) as one
 * tar stream to the file `dest`, or to `options.stdout` when `dest` is '-' (staged in the
 * temporary directory). A file appears only when complete; a stream that fails ends with an error.
 */
export async function pullTar(image: string | ImageReference, dest: string, options: TarOptions = {}): Promise<PullResult> {
  if (dest === '-' && !options.stdout) {
    throw new PullUnpackError('USAGE', 'writing a tar to standard output needs a stream to write to');
  }
  const target = dest === '-' ? options.stdout! : dest;
  return pullWith(image, tarOutput(target, { signal: options.signal, onWarning: warningsOf(options) }), options);
}

/**
 * Pulls `image` into an OCI image layout at `dir` holding the chosen platform's manifest,
 * config and layers, tagged with the reference's tag. Layers are fetched and verified, not unpacked.
 */
export function pullOci(image: string | ImageReference, dir: string, options: PullOptions = {}): Promise<PullResult> {
  return pullWith(image, ociLayoutOutput(dir, { signal: options.signal }), options);
}

function warningsOf(options: PullOptions): (message: string) => void {
  return (message) => options.onEvent?.({ type: 'warning', message });
}

/**
 * The shared pull: checks the destination (guardDestination, then the output's own check) and
 * the trust settings before anything is fetched, then runs `output` over the opened image.
 */
async function pullWith<R extends object>(
  image: string | ImageReference,
  output: Output<R>,
  options: PullOptions,
): Promise<PullResult & R> {
  const ref = typeof image === 'string' ? parseImageReference(image) : image;
  if (options.offline && options.cacheDir === undefined && !isLocalReference(ref)) {
    throw new PullUnpackError('USAGE', 'offline pulls read the blob cache: give a cache directory (--cache-dir)');
  }
  const wanted = wantedPlatform({ ...options, onNotice: warningsOf(options) });
  const dest =
    output.destination === undefined
      ? undefined
      : await output.check(await guardDestination(output.destination, options.cacheDir), options.force ?? false);
  const trust = await prepareTrust(options.trust);
  const opened = await openImage(ref, options);
  try {
    return await pullOpened(opened, ref, dest, output, wanted, { ...options, trust });
  } finally {
    await opened.close();
  }
}

/** One pull under way: where it reads from and writes to, and how it stops. */
interface PullRun {
  opened: OpenedImage;
  image: ImageReference;
  options: PullOptions;
  /** Aborted by the user's signal or by the first failure. */
  controller: AbortController;
  /** The persistent cache (registry pulls with a cache directory), or the staging directory's scratch store. */
  store: BlobStore;
  persistent: boolean;
  /** The opened source, through the cache when there is one. */
  source: ImageSource;
  warn: (message: string) => void;
}

async function pullOpened<R extends object>(
  opened: OpenedImage,
  image: ImageReference,
  dest: string | undefined,
  output: Output<R>,
  wanted: Platform,
  options: PullOptions,
): Promise<PullResult & R> {
  const controller = new AbortController();
  const stopOnUserAbort = (): void => controller.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', stopOnUserAbort, { once: true });
  const warn = warningsOf(options);
  // Without a destination (a tar on standard output), the result is staged in the temporary directory.
  const { beside, place } = dest === undefined ? streamStaging() : { beside: dest, place: destinationPlace(dest) };
  let staging: Staging;
  try {
    staging = await createStaging(beside, warn);
  } catch (err) {
    throw storageError(err, place);
  }
  try {
    const run = { opened, image, options, controller, warn, ...openStore(opened, staging, place, options, warn) };
    const result = { ...(await pullStaged(run, staging, output, wanted)), path: dest ?? '-' };
    return { ...result, summary: pullSummary(result) };
  } catch (err) {
    // A download that failed aborts the layer being applied: report the failure, not the abort.
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
    const cause = isPullUnpackError(err, 'ABORTED') && reason instanceof Error ? reason : err;
    controller.abort(cause);
    await discardStaging(staging);
    if (options.signal?.aborted) throw abortError(options.signal);
    // Whatever the store did not claim was written in the staging directory.
    throw storageError(cause, place);
  } finally {
    options.signal?.removeEventListener('abort', stopOnUserAbort);
  }
}

/**
 * Registry pulls go through the persistent cache when there is one; local sources and pulls
 * without a cache keep their blobs in the staging directory, removed at the end. A local source
 * needs no network: --offline changes nothing for it.
 */
function openStore(
  opened: OpenedImage,
  staging: Staging,
  place: StoragePlace,
  options: PullOptions,
  warn: (message: string) => void,
): Pick<PullRun, 'store' | 'persistent' | 'source'> {
  const persistent = options.cacheDir !== undefined && !opened.local;
  const store = persistent
    ? new BlobStore(resolvePath(options.cacheDir!), { lockTimeoutMs: options.lockTimeoutMs, onNotice: warn })
    : new BlobStore(staging.scratch, { place, onNotice: warn });
  const source =
    options.offline && persistent
      ? offlineSource(store, opened.source.name, opened.display)
      : persistent
        ? cachingSource(opened.source, store)
        : opened.source;
  return { store, persistent, source };
}

/** Resolves, verifies and unpacks into `staging`, lets `output` finish there, and commits it. */
async function pullStaged<R extends object>(
  run: PullRun,
  staging: Staging,
  output: Output<R>,
  wanted: Platform,
): Promise<Omit<PullResult, 'path' | 'summary'> & R> {
  const { opened, store, persistent, options } = run;
  const signal = run.controller.signal;
  const { resolved, config, configBytes, layers } = await resolveVerified(run, wanted);
  const rootfs = await output.rootfs(staging);
  const { layerPaths, ...bytes } = await unpackLayers(
    {
      source: run.source,
      store,
      controller: run.controller,
      concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
      limits: opened.limits,
      isRoot: options.isRoot,
      owners: output.owners,
      onEvent: (event) => options.onEvent?.(event),
      onWarning: run.warn,
    },
    rootfs,
    layers,
  );
  const image: PulledImage = {
    reference: run.image,
    manifest: { bytes: resolved.manifestBytes, descriptor: resolved.manifestDescriptor },
    config: { parsed: config, bytes: configBytes, digest: resolved.manifest.config.digest },
    layers: layers.map((layer, i) => ({ ...layer, path: layerPaths[i]! })),
    rootfs,
  };
  const added = await output.finish(staging, image);
  if (signal.aborted) throw abortError(signal);
  await output.commit(staging);
  if (persistent && !options.offline) await recordRef(store, opened.display, resolved.top.descriptor);
  return {
    reference: opened.display,
    digest: resolved.top.descriptor.digest,
    indexDigest: resolved.choice ? resolved.top.descriptor.digest : undefined,
    manifestDigest: resolved.manifestDescriptor.digest,
    platform: resolved.choice ? formatPlatform(resolved.choice.platform) : config && configPlatform(config),
    configDigest: resolved.manifest.config.digest,
    config,
    layers,
    ...bytes,
    cacheDir: persistent ? store.root : undefined,
    ...added,
  };
}

/**
 * Resolves the reference to the platform's manifest, checks its signatures (before any layer is
 * fetched), fetches the config and pairs each layer with its DiffID.
 */
async function resolveVerified(
  run: PullRun,
  wanted: Platform,
): Promise<{ resolved: ResolvedImage; config: ImageConfig; configBytes: Buffer; layers: PulledLayer[] }> {
  const { opened, source, store, persistent, options, warn } = run;
  const { limits } = opened;
  const signal = run.controller.signal;
  const resolved = await resolveImage(source, opened.reference, wanted, { signal, limits });
  // A single manifest's platform is its config's: read now (digest-verified, size-capped, stored
  // only once the signatures are accepted) so that `resolved` names it before the signature check.
  const early = resolved.choice ? undefined : await fetchConfig(source, resolved.manifest, { signal, limits });
  emitResolved(opened.display, resolved, early?.config, options);
  const lookaside = { transport: options.transport, insecureHosts: options.insecureRegistries, offline: options.offline };
  const target = { source, image: run.image, digest: resolved.top.descriptor.digest, manifestBytes: resolved.top.bytes, signal };
  const cache = persistent ? lookasideCache(store) : undefined;
  await enforceTrust(options.trust, { ...target, onNotice: warn, lookaside: { ...lookaside, cache } }, opened.display, (e) =>
    options.onEvent?.(e),
  );
  const { config, bytes: configBytes } = early ?? (await fetchConfig(source, resolved.manifest, { signal, limits }));
  for (const note of checkConfigPlatform(resolved, config, wanted, options.platform !== undefined, opened.display)) warn(note);
  await store.putBytes(resolved.manifest.config, configBytes, `the config of ${source.name}`);
  const layers = layersWithDiffIds(resolved.manifest, config, source.name, limits);
  if (options.offline && persistent) await requireCachedLayers(store, layers, source.name);
  options.onEvent?.({
    type: 'config',
    digest: resolved.manifest.config.digest,
    layers: layers.length,
    totalSize: layers.reduce((n, l) => n + l.size, 0),
  });
  return { resolved, config, configBytes, layers };
}

function emitResolved(display: string, resolved: ResolvedImage, config: ImageConfig | undefined, options: PullOptions): void {
  options.onEvent?.({
    type: 'resolved',
    reference: display,
    digest: resolved.top.descriptor.digest,
    mediaType: resolved.top.descriptor.mediaType,
    manifestDigest: resolved.manifestDescriptor.digest,
    platform: resolved.choice ? formatPlatform(resolved.choice.platform) : config && configPlatform(config),
    reason: resolved.choice?.reason ?? SINGLE_MANIFEST_REASON,
  });
  for (const note of resolved.choice?.notes ?? []) options.onEvent?.({ type: 'warning', message: note });
}

function configPlatform(config: ImageConfig): string | undefined {
  return config.os && config.architecture
    ? formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant })
    : undefined;
}
