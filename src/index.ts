/**
 * The public API of pull-unpack. Everything the CLI does goes through these functions.
 */
import { inspectImage, type InspectResult as ImageInspectResult } from './sources/inspect.js';
import { openImage, wantedPlatform, type SourceOptions } from './sources/open.js';
import { parseImageReference, type ImageReference } from './image/local-reference.js';
import { evaluateTrust, prepareTrust, wantsTrust, type TrustOptions, type TrustVerdict } from './trust/evaluate.js';

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
export type { InspectedPlatform } from './sources/inspect.js';
export type { PullSummary } from './pull/summary.js';
export type { TrustOptions, TrustVerdict, TrustEvent } from './trust/evaluate.js';
export type { SignatureReport, VerifyOptions } from './trust/types.js';
export type { SourceOptions } from './sources/open.js';
export { parseLocalReference, parseImageReference, type LocalReference, type ImageReference } from './image/local-reference.js';
export {
  toRuntimeConfig,
  applyOverrides,
  type ConfigOverrides,
  type RuntimeConfigOptions,
  type RuntimeSpec,
} from './outputs/runtime-config.js';
export {
  pull,
  pullBundle,
  pullTar,
  pullOci,
  type PullOptions,
  type PullResult,
  type PullEvent,
  type PulledLayer,
  type BundleOptions,
  type BundleResult,
  type TarOptions,
} from './pull.js';

export interface InspectOptions extends SourceOptions {
  /** With a policy or --verify-* settings: check the signatures of the digest and list them. */
  trust?: TrustOptions | undefined;
}

/** What `inspect` reports; `trust` lists the requirements checked and the signatures found. */
export type InspectResult = ImageInspectResult & { trust?: TrustVerdict[] | undefined };

/** Inspects an image reference: index or manifest, its platforms, and the entry this platform gets. */
export async function inspect(image: string | ImageReference, options: InspectOptions = {}): Promise<InspectResult> {
  const ref = typeof image === 'string' ? parseImageReference(image) : image;
  const wanted = wantedPlatform(options);
  const trust = await prepareTrust(options.trust);
  const opened = await openImage(ref, options);
  try {
    const result = await inspectImage(opened.source, opened.reference, opened.display, wanted, {
      signal: options.signal,
      limits: opened.limits,
      platformGiven: options.platform !== undefined,
    });
    if (!wantsTrust(trust)) return result;
    const target = {
      source: opened.source,
      image: ref,
      digest: result.digest,
      manifestBytes: result.raw,
      signal: options.signal,
    };
    const lookaside = { transport: options.transport, insecureHosts: options.insecureRegistries };
    const verdicts = await evaluateTrust(trust, { ...target, onNotice: options.onNotice, lookaside }, true);
    // An insecureAcceptAnything policy (the usual /etc/containers/policy.json) checks nothing worth listing.
    const checked = verdicts.filter((v) => !v.accepted || v.checksSignatures);
    return checked.length > 0 ? { ...result, trust: checked } : result;
  } finally {
    await opened.close();
  }
}
