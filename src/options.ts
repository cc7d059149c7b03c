/**
 * Options shared by every entry point, resolved and validated once (go-containerregistry's
 * remote/options.go shape). Only the CLI reads argv and the environment; it passes them here.
 */
import type { Platform } from './oci.js';
import { hostPlatform, normalizePlatform, parsePlatform } from './platform.js';
import type { Reference } from './reference.js';
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

/** An ImageSource for a registry reference, with the options' TLS and HTTP settings. */
export function openSource(reference: Reference, options: SourceOptions): ImageSource {
  const client = new RegistryClient({ registry: reference.registry, insecureRegistries: options.insecureRegistries });
  return registrySource(client, reference.repository);
}
