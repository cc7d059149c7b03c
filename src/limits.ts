/**
 * Resource limits: what a pull refuses to read or write, whatever the image says. Each has a
 * default sane for real images and a CLI flag to change it (SECURITY.md lists them).
 */
import { PullUnpackError } from './errors.js';

export interface Limits {
  /** Largest manifest or index accepted, in bytes. */
  maxManifestBytes: number;
  /** Largest image config accepted, in bytes. */
  maxConfigBytes: number;
  /** Most manifest descriptors one resolve reads, over the index and every index nested in it. */
  maxManifests: number;
  /** Most levels of indexes, the top one included (an index in an index is 2). */
  maxIndexDepth: number;
  /** Most layers an image may have. */
  maxLayers: number;
  /** Most uncompressed layer bytes, all layers together (decompression bombs stop here). */
  maxUncompressedBytes: number;
  /** Most tar entries, all layers together. */
  maxEntries: number;
  /** Most path components in one entry name. */
  maxPathDepth: number;
  /** Longest entry name or link target, in bytes. */
  maxNameLength: number;
}

const GiB = 1024 ** 3;

export const DEFAULT_LIMITS: Readonly<Limits> = {
  maxManifestBytes: 4 * 1024 * 1024,
  maxConfigBytes: 8 * 1024 * 1024,
  // Real indexes list a few dozen entries (platforms and their attestations); each listed
  // descriptor counts, so an index naming one nested index thousands of times stops here.
  maxManifests: 1000,
  // docker buildx and skopeo nest at most once; 4 leaves room for hand-made layouts.
  maxIndexDepth: 4,
  // Docker refuses more than 127 layers on overlayfs; other tools allow a few more.
  maxLayers: 500,
  maxUncompressedBytes: 64 * GiB,
  maxEntries: 10_000_000,
  maxPathDepth: 256,
  // Linux's PATH_MAX.
  maxNameLength: 4096,
};

/** The defaults with `overrides` applied; every value must be a positive whole number. */
export function resolveLimits(overrides: Partial<Limits> = {}): Limits {
  const limits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(overrides) as Array<[keyof Limits, number | undefined]>) {
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) throw new PullUnpackError('USAGE', `the ${key} limit must be a positive whole number`);
    limits[key] = value;
  }
  return limits;
}

/** '512', '64k', '10M', '2G', '1T' (binary units) -> bytes; USAGE error otherwise. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new PullUnpackError('USAGE', `invalid size "${text}": use a number with an optional unit, e.g. 500M, 10G`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * unit);
}

/** The error for a limit that an image exceeds, naming the flag that raises it. */
export function limitError(what: string, limit: number, flag: string): PullUnpackError {
  return new PullUnpackError('TOO_LARGE', `${what}: over the limit of ${limit}`, {
    hint: `raise it with ${flag} if the image is trusted`,
  });
}
