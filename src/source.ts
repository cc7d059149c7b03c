/**
 * The seam between where an image comes from and what is done with it: the resolver, fetcher
 * and applier see only an ImageSource, whether it is a registry or (later) a local layout.
 */
import type { Readable } from 'node:stream';
import { isPullUnpackError } from './errors.js';
import type { Descriptor } from './oci.js';
import type { FetchedManifest, RegistryClient } from './registry.js';

export interface ImageSource {
  /** Names the image in messages, e.g. 'docker.io/library/alpine'. */
  readonly name: string;
  /** Manifest or index bytes by tag or digest; verified against the digest when given one. */
  getManifest(reference: string, signal?: AbortSignal): Promise<FetchedManifest>;
  /** The blob's raw (unverified) bytes; the caller verifies and consumes or destroys the stream. */
  fetchBlob(descriptor: Descriptor, signal?: AbortSignal, what?: string): Promise<Readable>;
}

/** An ImageSource for one repository of a registry. */
export function registrySource(client: RegistryClient, repository: string): ImageSource {
  return {
    name: `${client.registry}/${repository}`,
    getManifest: (reference, signal) => client.getManifest(repository, reference, signal),
    fetchBlob: (descriptor, signal, what) => client.fetchBlob(repository, descriptor, signal, what),
  };
}

/**
 * Tries each source in turn (mirrors first, the upstream last) for every manifest and blob;
 * a source that fails is reported through `onNotice` and the next one is asked. Whatever
 * answers is verified by the caller exactly as if the upstream had answered.
 */
export function fallbackSource(sources: readonly ImageSource[], onNotice: (message: string) => void): ImageSource {
  const last = sources[sources.length - 1];
  if (!last) throw new Error('fallbackSource needs at least one source');
  if (sources.length === 1) return last;
  async function tryEach<T>(what: string, call: (s: ImageSource) => Promise<T>): Promise<T> {
    for (const source of sources.slice(0, -1)) {
      try {
        return await call(source);
      } catch (err) {
        if (isPullUnpackError(err, 'ABORTED')) throw err;
        onNotice(`mirror ${source.name} failed for ${what} (${(err as Error).message}); trying the next source`);
      }
    }
    return call(last!);
  }
  return {
    name: last.name,
    getManifest: (reference, signal) => tryEach(reference, (s) => s.getManifest(reference, signal)),
    fetchBlob: (descriptor, signal, what) => tryEach(what ?? descriptor.digest, (s) => s.fetchBlob(descriptor, signal, what)),
  };
}
