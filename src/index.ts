/**
 * The public API of pull-unpack. Everything the CLI does goes through these functions.
 */
import { inspectImage, type InspectResult } from './image/inspect.js';
import { openImage, wantedPlatform, type SourceOptions } from './sources/open.js';

export { PullUnpackError, RegistryError, isPullUnpackError, type ErrorCode } from './errors.js';
export { parseReference, familiarName, type Reference } from './image/reference.js';
export { parsePlatform, formatPlatform, hostPlatform, normalizePlatform, selectPlatform, type PlatformChoice } from './image/platform.js';
export { parseDigest, digestOf, VerifyingStream } from './image/digest.js';
export {
  MediaType,
  parseManifest,
  parseImageConfig,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
} from './image/oci.js';
export { RegistryClient, type RegistryClientOptions } from './registry/client.js';
export type { InspectResult, InspectedPlatform } from './image/inspect.js';
export type { SourceOptions } from './sources/open.js';
export { parseLocalReference, type LocalReference } from './sources/layout.js';
export { pullBundle, type BundleOptions, type BundleResult } from './outputs/bundle.js';
export {
  toRuntimeConfig,
  applyOverrides,
  type ConfigOverrides,
  type RuntimeConfigOptions,
  type RuntimeSpec,
} from './outputs/runtime-config.js';
export { pullTar, pullOci } from './outputs/outputs.js';
export { pull, type PullOptions, type PullResult, type PullEvent, type PulledLayer } from './pull.js';

export type InspectOptions = SourceOptions;

/** Inspects an image reference: index or manifest, its platforms, and the entry this platform gets. */
export async function inspect(image: string, options: InspectOptions = {}): Promise<InspectResult> {
  const wanted = wantedPlatform(options);
  const opened = await openImage(image, options);
  try {
    return await inspectImage(opened.source, opened.reference, opened.display, wanted, {
      signal: options.signal,
      limits: opened.limits,
      platformGiven: options.platform !== undefined,
    });
  } finally {
    await opened.close();
  }
}
