/**
 * The seam between where an image comes from and what is done with it: the resolver, fetcher
 * and applier see only an ImageSource, whether it is a registry (with its mirrors), the blob
 * cache, an OCI layout or an archive.
 */
import { Transform, type Readable } from 'node:stream';
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import { verifyBytes } from '../image/digest.js';
import type { Descriptor, FetchedManifest } from '../image/oci.js';
import type { RegistryClient } from '../registry/client.js';

export interface ImageSource {
  /** Names the image in messages, e.g. 'docker.io/library/alpine'. */
  readonly name: string;
  /** Manifest or index bytes by tag or digest; verified against the digest when given one. */
  getManifest(reference: string, signal?: AbortSignal): Promise<FetchedManifest>;
  /**
   * The blob's raw (unverified) bytes from `offset` (default 0) on; the caller verifies and
   * consumes or destroys the stream.
   */
  fetchBlob(descriptor: Descriptor, signal?: AbortSignal, what?: string, offset?: number): Promise<Readable>;
  /**
   * Optional: the OCI 1.1 referrers index of `digest` (distribution-spec "Listing Referrers"),
   * or undefined when the source has no referrers API; callers then read the referrers tag
   * `<alg>-<hex>` instead, as the distribution-spec's fallback describes.
   */
  getReferrers?(digest: string, signal?: AbortSignal): Promise<FetchedManifest | undefined>;
  /** Optional: what readBlob() returns, for sources that keep what they read (the cache). */
  readBlob?(descriptor: Descriptor, maxBytes: number, signal?: AbortSignal, what?: string): Promise<Buffer>;
}

/**
 * A whole small blob (a signature payload, a sigstore bundle), verified against its descriptor:
 * TOO_LARGE, before anything is read, when the descriptor is over `maxBytes`; SIZE_MISMATCH as
 * soon as the bytes run past the descriptor's size; DIGEST_MISMATCH when they do not hash to it.
 */
export async function readBlob(
  source: ImageSource,
  descriptor: Descriptor,
  maxBytes: number,
  signal?: AbortSignal,
  what = `blob ${descriptor.digest}`,
): Promise<Buffer> {
  if (source.readBlob) return source.readBlob(descriptor, maxBytes, signal, what);
  if (descriptor.size > maxBytes) {
    throw new PullUnpackError('TOO_LARGE', `${what} is ${descriptor.size} bytes, over the ${maxBytes}-byte limit`);
  }
  const stream = await source.fetchBlob(descriptor, signal, what);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      total += (chunk as Buffer).length;
      // The descriptor's size is within maxBytes: a blob longer than it is not read further.
      if (total > descriptor.size) break;
    }
  } finally {
    stream.destroy();
  }
  const bytes = Buffer.concat(chunks);
  verifyBytes(bytes, descriptor.digest, what, descriptor.size);
  return bytes;
}

/** An ImageSource for one repository of a registry. */
export function registrySource(client: RegistryClient, repository: string): ImageSource {
  return {
    name: `${client.registry}/${repository}`,
    getManifest: (reference, signal) => client.getManifest(repository, reference, signal),
    fetchBlob: (descriptor, signal, what, offset) => client.fetchBlob(repository, descriptor, signal, what, offset),
    getReferrers: (digest, signal) => client.getReferrers(repository, digest, signal),
  };
}

/**
 * Tries each source in turn (mirrors first, the upstream last) for every manifest and blob;
 * a source that fails is reported through `onNotice` and the next one is asked. A mirror that
 * cannot be reached at all (NETWORK) is skipped for the rest of the operation, so a dead
 * mirror costs one timeout, not one per blob. Whatever answers is verified by the caller
 * exactly as if the upstream had answered.
 */
export function fallbackSource(sources: readonly ImageSource[], onNotice: (message: string) => void): ImageSource {
  const last = sources[sources.length - 1];
  if (!last) throw new Error('fallbackSource needs at least one source');
  if (sources.length === 1) return last;
  const unreachable = new Set<ImageSource>();
  async function tryEach<T>(what: string, call: (s: ImageSource) => Promise<T>): Promise<T> {
    for (const source of sources.slice(0, -1)) {
      if (unreachable.has(source)) continue;
      try {
        return await call(source);
      } catch (err) {
        if (isPullUnpackError(err, 'ABORTED')) throw err;
        const down = isPullUnpackError(err, 'NETWORK');
        if (down) unreachable.add(source);
        onNotice(
          `mirror ${source.name} failed for ${what} (${(err as Error).message}); ${down ? 'not using it again' : 'trying the next source'}`,
        );
      }
    }
    return call(last!);
  }
  return {
    name: last.name,
    getManifest: (reference, signal) => tryEach(reference, (s) => s.getManifest(reference, signal)),
    fetchBlob: (descriptor, signal, what, offset) =>
      tryEach(what ?? descriptor.digest, (s) => s.fetchBlob(descriptor, signal, what, offset)),
    getReferrers: (digest, signal) => tryEach(`the referrers of ${digest}`, async (s) => s.getReferrers?.(digest, signal)),
    readBlob: (descriptor, maxBytes, signal, what) =>
      tryEach(what ?? descriptor.digest, (s) => readBlob(s, descriptor, maxBytes, signal, what)),
  };
}

/** Gives `source` offset support by dropping the first bytes of each blob (for local files). */
export function withBlobOffsets(source: ImageSource): ImageSource {
  return {
    name: source.name,
    getManifest: (reference, signal) => source.getManifest(reference, signal),
    ...(source.getReferrers && { getReferrers: source.getReferrers.bind(source) }),
    async fetchBlob(descriptor, signal, what, offset = 0) {
      const stream = await source.fetchBlob(descriptor, signal, what);
      if (offset === 0) return stream;
      let skip = offset;
      const dropPrefix = new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          if (skip >= chunk.length) {
            skip -= chunk.length;
            callback();
            return;
          }
          const rest = chunk.subarray(skip);
          skip = 0;
          callback(null, rest);
        },
      });
      stream.on('error', (err) => dropPrefix.destroy(err));
      return stream.pipe(dropPrefix);
    },
  };
}
