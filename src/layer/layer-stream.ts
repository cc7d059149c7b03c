/**
 * The verified layer stream: a layer blob (as it downloads) -> decompress -> the uncompressed
 * size budget shared by every layer of a pull -> the DiffID check. What comes out is the layer's
 * tar, unverified until `done` settles without error.
 */
import { pipeline, Transform, type Readable } from 'node:stream';
import { abortError, PullUnpackError } from '../errors.js';
import { VerifyingStream } from '../image/digest.js';
import type { ImageConfig, ImageManifest } from '../image/oci.js';
import { limitError, type Limits } from '../limits.js';
import { createDecompressor, layerCompression } from './decompress.js';

/** A layer of a manifest with the DiffID its config lists for it. */
export interface LayerWithDiffId {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
}

/**
 * Pairs each layer of `manifest` with its DiffID in `config` (`name` names the image in errors).
 * Refuses more layers than limits.maxLayers, a config that lists another number of DiffIDs, and
 * media types no decompressor knows, before anything is downloaded.
 */
export function layersWithDiffIds(manifest: ImageManifest, config: ImageConfig, name: string, limits: Limits): LayerWithDiffId[] {
  const { layers } = manifest;
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

/** The uncompressed tar of one layer. */
export interface LayerTar {
  tar: Readable;
  /** Settles once the DiffID was checked (or the stream failed). */
  done: Promise<void>;
}

/** Uncompressed bytes still allowed, shared by every layer of a pull (limits.maxUncompressedBytes). */
export interface UncompressedBudget {
  remaining: number;
  readonly limit: number;
}

/** A budget of `limit` uncompressed bytes for all the layers of one pull. */
export function uncompressedBudget(limit: number): UncompressedBudget {
  return { remaining: limit, limit };
}

/**
 * The uncompressed tar stream of `blob` (a layer of `mediaType`), counted against `budget` and
 * checked against `diffId`; `what` names the layer in errors. The caller consumes or destroys
 * `tar` and awaits `done`.
 */
export function openLayerTar(
  blob: Readable,
  layer: { mediaType: string; diffId: string },
  what: string,
  budget: UncompressedBudget,
): LayerTar {
  let settle!: (err?: Error | null) => void;
  const done = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  // The stream can fail (its download did) while the caller is still applying entries and not yet
  // awaiting `done`: that is no unhandled rejection; the caller awaits `done` and sees the error.
  done.catch(() => undefined);
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

/** Reads a layer's tar to the end only to check its DiffID (an output without a rootfs). */
export async function checkDiffId({ tar, done }: LayerTar, signal: AbortSignal): Promise<void> {
  signal.addEventListener('abort', () => tar.destroy(abortError(signal)), { once: true });
  tar.resume();
  await done;
}
