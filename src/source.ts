/**
 * The seam between where an image comes from and what is done with it: the resolver, fetcher
 * and applier see only an ImageSource, whether it is a registry or (later) a local layout.
 */
import type { Readable } from 'node:stream';
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
