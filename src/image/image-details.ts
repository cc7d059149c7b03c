/**
 * What `skopeo inspect` (and `skopeo inspect --config`) shows about one platform's image, read
 * from its manifest and config: a pure function, so `inspect` and its tests share it. Config
 * fields are the registry's text: a field of the wrong type is left out rather than trusted.
 */
import type { Descriptor, ImageConfig, ImageManifest } from './oci.js';

/** One platform's image: its run settings, labels and layers. */
export interface ImageDetails {
  /** The platform manifest's digest (the index entry chosen, or the manifest the reference names). */
  manifestDigest: string;
  configDigest: string;
  /** RFC 3339, as the config says it. */
  created: string | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  env: string[];
  workingDir: string | undefined;
  user: string | undefined;
  /** '80/tcp', in the config's order. */
  exposedPorts: string[];
  labels: Record<string, string>;
  /** The number of layers and their total compressed size in bytes (what the registry serves). */
  layers: number;
  layersSize: number;
}

/** The details of the image `manifest` (named by `descriptor`) with its `config`. */
export function imageDetails(descriptor: Descriptor, manifest: ImageManifest, config: ImageConfig): ImageDetails {
  const run = config.config ?? {};
  return {
    manifestDigest: descriptor.digest,
    configDigest: manifest.config.digest,
    created: stringOf(config.created),
    entrypoint: stringsOf(run.Entrypoint),
    cmd: stringsOf(run.Cmd),
    env: stringsOf(run.Env) ?? [],
    workingDir: stringOf(run.WorkingDir),
    user: stringOf(run.User),
    exposedPorts: isObject(run.ExposedPorts) ? Object.keys(run.ExposedPorts) : [],
    labels: isObject(run.Labels) ? stringEntries(run.Labels) : {},
    layers: manifest.layers.length,
    layersSize: manifest.layers.reduce((n, l) => n + l.size, 0),
  };
}

function stringOf(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function stringsOf(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function stringEntries(record: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(record).filter((e): e is [string, string] => typeof e[1] === 'string'));
}
