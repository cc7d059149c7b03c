/**
 * The summary of a finished pull: what the library returns as `result.summary` and what the
 * CLI prints as `--json`'s `done` event (docs/events.schema.json), built in one place.
 */
import type { LayerWithDiffId } from '../layer/layer-stream.js';

export interface PullSummary {
  reference: string;
  /** The digest the reference resolved to (an index or the manifest itself). */
  digest: string;
  indexDigest: string | undefined;
  manifestDigest: string;
  platform: string | undefined;
  configDigest: string;
  layers: LayerWithDiffId[];
  /** Absolute path of what was written (the rootfs, the bundle, the tar file or the layout); '-' for standard output. */
  path: string;
  /** Bytes downloaded by this pull. */
  bytesFetched: number;
  /** Layer bytes the cache already had (or another process downloaded meanwhile). */
  bytesFromCache: number;
  /** The persistent cache used, if any. */
  cacheDir: string | undefined;
  /** After a bundle pull: shaped for runc run by the user who made it, not for root. */
  rootless?: boolean | undefined;
}

/** The summary of `result`: its reportable fields only (not the config, not a bundle's spec). */
export function pullSummary(result: PullSummary): PullSummary {
  const { reference, digest, indexDigest, manifestDigest, platform, configDigest, layers, path } = result;
  const { bytesFetched, bytesFromCache, cacheDir, rootless } = result;
  const summary: PullSummary = {
    reference,
    digest,
    indexDigest,
    manifestDigest,
    platform,
    configDigest,
    layers,
    path,
    bytesFetched,
    bytesFromCache,
    cacheDir,
  };
  if (rootless !== undefined) summary.rootless = rootless;
  return summary;
}
