/**
 * Options shared by every entry point, resolved and validated once (go-containerregistry's
 * remote/options.go shape). Only the CLI reads argv and the environment; it passes them here.
 */
import type { Platform } from './oci.js';
import { hostPlatform, normalizePlatform, parsePlatform } from './platform.js';
import { openLocalSource, parseLocalReference } from './layout-source.js';
import { manifestReference, parseReference } from './reference.js';
import { RegistryClient } from './registry.js';
import { registrySource, type ImageSource } from './source.js';

export interface SourceOptions {
  /** 'os/arch[/variant]' or a Platform; default: this host's platform. */
  platform?: string | Platform | undefined;
  /** Registries (host or host:port) reachable over plain HTTP or with unverified TLS. */
  insecureRegistries?: readonly string[] | undefined;
  /** Cancels every request and write of the operation. */
  signal?: AbortSignal | undefined;
  /** Receives one-line notices meant for the user (e.g. "no Linux host: using linux/amd64"). */
  onNotice?: ((message: string) => void) | undefined;
}

/** The platform to select: the requested one, normalized, or the host's (its notes go to onNotice). */
export function wantedPlatform(options: SourceOptions): Platform {
  const { platform } = options;
  if (typeof platform === 'string') return parsePlatform(platform);
  if (platform) return normalizePlatform(platform);
  const host = hostPlatform();
  for (const note of host.notes) options.onNotice?.(note);
  return host.platform;
}

/** An image to read: where from, what to ask it for first, and how to let go of it. */
export interface OpenedImage {
  source: ImageSource;
  /** The tag or digest naming the top-level manifest or index in `source`. */
  reference: string;
  /** The image as the user should see it: 'docker.io/library/alpine:latest', 'oci:/tmp/l:v1'. */
  display: string;
  /** Releases files held open by local sources; a no-op for registries. */
  close(): Promise<void>;
}

/**
 * Opens `image`: a registry reference (`alpine`, `host:5000/a/b:t`, `name@sha256:…`) or a local
 * source (`oci:DIR[:TAG|@DIGEST]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`).
 */
export async function openImage(image: string, options: SourceOptions): Promise<OpenedImage> {
  const local = parseLocalReference(image);
  if (local) {
    const opened = await openLocalSource(local, { signal: options.signal });
    return { source: opened.source, reference: opened.reference, display: local.toString(), close: () => opened.close() };
  }
  const reference = parseReference(image);
  const client = new RegistryClient({ registry: reference.registry, insecureRegistries: options.insecureRegistries });
  return {
    source: registrySource(client, reference.repository),
    reference: manifestReference(reference),
    display: reference.toString(),
    close: async () => undefined,
  };
}
