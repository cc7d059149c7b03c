/** Types for image-builder.mjs: build images in code and push them to a v2 registry. */
import type { LayerCompression, TarEntry } from './tar-builder.mjs';

export type { LayerCompression, TarDirectoryOptions, TarEntry, TarEntryType } from './tar-builder.mjs';
export { FIXED_MTIME, compressLayer, entriesFromDirectory, tarDirectory, tarLayer } from './tar-builder.mjs';

export type ImageFormat = 'oci' | 'docker';

export interface FormatMediaTypes {
  index: string;
  manifest: string;
  config: string;
  layer: Record<LayerCompression, string>;
}

export declare const MEDIA_TYPES: Record<ImageFormat, FormatMediaTypes>;
export declare const IN_TOTO_MEDIA_TYPE: 'application/vnd.in-toto+json';

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

export interface BlobRef {
  digest: string;
  size: number;
}

export interface PushedManifest {
  mediaType: string;
  digest: string;
  size: number;
  /** The exact bytes pushed. */
  bytes: Buffer;
}

/** `sha256:<hex>` of `bytes`. */
export declare function sha256(bytes: Uint8Array): string;

/** 'linux/arm/v7' -> {os: 'linux', architecture: 'arm', variant: 'v7'}. */
export declare function parsePlatform(text: string): Platform;

/** True when the registry already has blob `digest` in `repo`. */
export declare function hasBlob(registryUrl: string, repo: string, digest: string): Promise<boolean>;

/** Uploads `bytes` as a blob (POST then PUT ?digest=); skipped when the registry has it. */
export declare function pushBlob(registryUrl: string, repo: string, bytes: Uint8Array): Promise<BlobRef>;

/**
 * PUTs a manifest or index under `reference` (a tag; null or undefined pushes by digest).
 * Objects are sent as compact JSON; `mediaType` defaults to the document's own.
 */
export declare function pushManifest(
  registryUrl: string,
  repo: string,
  reference: string | null | undefined,
  jsonBytesOrObject: Uint8Array | object,
  mediaType?: string,
): Promise<PushedManifest>;

export interface LayerSpec {
  /** The uncompressed tar; its sha256 is the DiffID unless `diffId` is given. */
  tar: Uint8Array;
  /** Default 'gzip'. */
  compression?: LayerCompression;
  /** Bytes to push as the layer blob instead of compressing `tar`. */
  blob?: Uint8Array;
  /** The media type to declare instead of the one `compression` implies. */
  mediaType?: string;
  /** The DiffID to record instead of sha256(tar). */
  diffId?: string;
  annotations?: Record<string, string>;
}

export interface PushImageOptions {
  layers?: LayerSpec[];
  /** Merged over {created: FIXED_MTIME, architecture: 'amd64', os: 'linux', config: {}, rootfs, history}. */
  config?: Record<string, unknown> & { config?: Record<string, unknown> };
  /** Default 'oci'. */
  format?: ImageFormat;
  annotations?: Record<string, string>;
}

export interface PushedImage {
  /** The manifest's descriptor. */
  descriptor: Descriptor;
  manifest: { schemaVersion: 2; mediaType: string; config: Descriptor; layers: Descriptor[]; annotations?: Record<string, string> };
  manifestBytes: Buffer;
  config: Record<string, unknown> & { rootfs: { type: string; diff_ids: string[] } };
  configBytes: Buffer;
  configDescriptor: Descriptor;
  layers: Descriptor[];
  diffIds: string[];
}

/** Pushes layers, config and manifest; tagged `tag`, or by digest only when `tag` is null. */
export declare function pushImage(registryUrl: string, repo: string, tag: string | null, options?: PushImageOptions): Promise<PushedImage>;

export interface IndexEntry {
  descriptor: Descriptor;
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface PushedIndex extends PushedManifest {
  index: { schemaVersion: 2; mediaType: string; manifests: Descriptor[]; annotations?: Record<string, string> };
}

/** Pushes an OCI index or a Docker manifest list of `entries` (which must already be pushed). */
export declare function pushIndex(
  registryUrl: string,
  repo: string,
  tag: string | null,
  entries: readonly IndexEntry[],
  format?: ImageFormat,
  options?: { annotations?: Record<string, string> },
): Promise<PushedIndex>;

export interface MultiPlatformOptions {
  /** Default 'oci'. */
  format?: ImageFormat;
  /** Add a buildx-style attestation manifest per image. Default false. */
  attestation?: boolean;
  /** Files of every image besides /platform.txt: path -> content, or tar entries. */
  files?: Record<string, string | Uint8Array> | TarEntry[];
  /** Default 'gzip'. */
  compression?: LayerCompression;
  /** Merged into each image config (after the platform fields). */
  config?: Record<string, unknown> & { config?: Record<string, unknown> };
}

export interface PushedAttestation {
  descriptor: Descriptor;
  manifest: PushedImage['manifest'];
  statement: Record<string, unknown>;
}

export interface PushedMultiPlatform {
  /** The index's descriptor. */
  descriptor: Descriptor;
  index: PushedIndex['index'];
  images: Array<PushedImage & { platform: string }>;
  attestations: PushedAttestation[];
}

/** One image per platform ('linux/arm/v7'...), each with /platform.txt, under an index tagged `tag`. */
export declare function pushMultiPlatform(
  registryUrl: string,
  repo: string,
  tag: string,
  platforms: readonly string[],
  options?: MultiPlatformOptions,
): Promise<PushedMultiPlatform>;
