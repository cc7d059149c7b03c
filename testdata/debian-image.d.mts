/** Types for debian-image.mjs: a real Debian bookworm image in two layers, pushed by skopeo. */
import type { TarEntry } from './lib/tar-builder.mjs';

export type DebianCompression = 'gzip' | 'zstd';

export declare const DEBIAN_SUITE: 'bookworm';
export declare const DEBIAN_MIRROR: string;
/** The cached tarball's file name in the cache directory. */
export declare const CACHE_FILE: string;
export declare const COMPRESSIONS: readonly DebianCompression[];
export declare const LAYER_MEDIA_TYPES: Record<DebianCompression, string>;
/** The content of /etc/os-release after layer 2 (a regular file replacing layer 1's symlink). */
export declare const OS_RELEASE: string;
/** What /usr/local/bin/hello (added by layer 2) prints. */
export declare const HELLO_OUTPUT: string;
/** Layer 2's entries, in tar order. */
export declare const CHANGE_SET: readonly TarEntry[];

/** $PULL_UNPACK_TEST_CACHE or /var/cache/pull-unpack-tests. */
export declare function defaultCacheDir(env?: NodeJS.ProcessEnv): string;

/** The cached debootstrap tarball's path, built first (as root, a few minutes) when missing. */
export declare function debootstrapTarball(options?: { cacheDir?: string; log?: (line: string) => void }): Promise<string>;

/** Writes an OCI image layout with one image tagged `tag`; returns the manifest digest. */
export declare function writeLayout(
  layoutDir: string,
  tag: string,
  layerTars: readonly string[],
  compression: DebianCompression,
): Promise<string>;

export interface PushedDebianImage {
  /** HOST/REPO:gzip or HOST/REPO:zstd. */
  ref: string;
  /** The OCI layout skopeo pushed from. */
  layout: string;
  /** The manifest digest in the layout. */
  manifestDigest: string;
}

export interface DebianImages {
  images: Record<DebianCompression, PushedDebianImage>;
  baseTarball: string;
  /** Seconds: getting the debootstrap tarball (cached or built), then writing layouts and pushing. */
  timings: { base: number; layoutsAndPush: number };
}

/** Builds both layouts in `workDir` and pushes them with skopeo to `registry`/`repo`:gzip and :zstd. */
export declare function buildDebianImages(options: {
  registry: string;
  repo: string;
  workDir: string;
  cacheDir?: string;
  log?: (line: string) => void;
}): Promise<DebianImages>;
