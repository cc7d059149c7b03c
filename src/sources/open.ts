/**
 * Options shared by every entry point, resolved and validated once (go-containerregistry's
 * remote/options.go shape). Only the CLI reads argv and the environment; it passes them here.
 */
import type { Platform } from '../image/oci.js';
import { hostPlatform, normalizePlatform, parsePlatform } from '../image/platform.js';
import type { Credentials } from '../registry/auth.js';
import { credentialProvider } from '../registry/credentials.js';
import { PullUnpackError } from '../errors.js';
import { openLocalSource } from './layout.js';
import { isLocalReference, type ImageReference } from '../image/local-reference.js';
import { manifestReference, type Reference } from '../image/reference.js';
import { DEFAULT_ATTEMPTS, RegistryClient, type RegistryClientOptions } from '../registry/client.js';
import { TAGS_ASKED, withExistingTags } from '../registry/tag-list.js';
import { fallbackSource, registrySource, withBlobOffsets, type ImageSource } from './source.js';
import { resolveLimits, type Limits } from '../limits.js';
import type { TransportOptions } from '../registry/transport.js';

export interface SourceOptions {
  /** 'os/arch[/variant]' or a Platform; default: this host's platform. */
  platform?: string | Platform | undefined;
  /** Registries (host or host:port) reachable over plain HTTP or with unverified TLS. */
  insecureRegistries?: readonly string[] | undefined;
  /** Cancels every request and write of the operation. */
  signal?: AbortSignal | undefined;
  /** Receives one-line notices meant for the user (e.g. "no Linux host: using linux/amd64"). */
  onNotice?: ((message: string) => void) | undefined;
  /** Credentials for the image's registry (--username/--password-stdin); win over any lookup. */
  credentials?: Credentials | undefined;
  /**
   * The environment to look up credentials in (docker config.json, credential helpers,
   * podman auth.json). The CLI passes process.env; without it only `credentials` are used.
   */
  env?: NodeJS.ProcessEnv | undefined;
  /** Extra CAs, docker's certs.d directory, proxies and timeouts. */
  transport?: TransportOptions | undefined;
  /** Registry mirrors, tried before the registry: {'docker.io': ['https://mirror.example']}. */
  mirrors?: Readonly<Record<string, readonly string[]>> | undefined;
  /** Attempts per request on connection errors, 5xx and 429 (default 5). */
  attempts?: number | undefined;
  /** Resource limits (defaults in DEFAULT_LIMITS); see SECURITY.md. */
  limits?: Partial<Limits> | undefined;
  /** Base of the exponential backoff between attempts, in milliseconds (default 500). */
  backoffMs?: number | undefined;
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
  /** True for oci:, oci-archive: and docker-archive: sources (never cached, never offline). */
  local: boolean;
  /** The limits every reader of this image obeys: DEFAULT_LIMITS with the options' overrides, resolved once. */
  limits: Limits;
  /** Releases files held open by local sources; a no-op for registries. */
  close(): Promise<void>;
}

/**
 * Opens `image`: a registry reference (`alpine`, `host:5000/a/b:t`, `name@sha256:…`), through its
 * mirrors first, or a local source (`oci:DIR[:TAG|@DIGEST]`, `oci-archive:FILE[:TAG]`,
 * `docker-archive:FILE[:REF]`).
 */
export async function openImage(image: ImageReference, options: SourceOptions): Promise<OpenedImage> {
  const limits = resolveLimits(options.limits);
  if (isLocalReference(image)) {
    const opened = await openLocalSource(image, { signal: options.signal, limits });
    return {
      source: withBlobOffsets(opened.source),
      reference: opened.reference,
      display: image.toString(),
      local: true,
      limits,
      close: () => opened.close(),
    };
  }
  const resolved = { ...options, limits };
  const mirrors = (options.mirrors?.[image.registry] ?? []).map((url) => mirrorSource(url, image, resolved));
  const client = registryClient(image.registry, resolved, options.credentials);
  const upstream = withTagsOnNotFound(registrySource(client, image.repository), client, image.repository);
  return {
    source: fallbackSource([...mirrors, upstream], options.onNotice ?? (() => undefined)),
    reference: manifestReference(image),
    display: image.toString(),
    local: false,
    limits,
    close: async () => undefined,
  };
}

/** `source`, whose 404 for a tag (not a digest) names the tags that exist when the registry lists them (the upstream's, not a mirror's). */
function withTagsOnNotFound(source: ImageSource, client: RegistryClient, repository: string): ImageSource {
  return {
    ...source,
    getManifest: (reference, signal) =>
      source.getManifest(reference, signal).catch(async (err: unknown) => {
        if (reference.includes(':')) throw err;
        throw await withExistingTags(err, (s) => client.listTags(repository, TAGS_ASKED, s), signal);
      }),
  };
}

/** A client for `registry` with the options' transport, retry and credential settings. */
function registryClient(
  registry: string,
  options: SourceOptions,
  explicit: Credentials | undefined,
  extra: Partial<RegistryClientOptions> = {},
): RegistryClient {
  const onNotice = options.onNotice ?? (() => undefined);
  const lookup = options.env ? credentialProvider(registry, { env: options.env, explicit, onNotice }) : undefined;
  return new RegistryClient({
    registry,
    insecureRegistries: options.insecureRegistries,
    credentials: lookup ?? explicit,
    transport: options.transport,
    attempts: options.attempts,
    maxManifestBytes: options.limits?.maxManifestBytes,
    backoffMs: options.backoffMs,
    onNotice,
    ...extra,
  });
}

/** Attempts per request on a mirror: one retry at most, then the next source is asked. */
const MIRROR_ATTEMPTS = 2;

/**
 * A mirror of the reference's registry at `url` ('https://mirror.example' or, for a test
 * mirror, 'http://host:port'): reached with exactly that scheme, no probing.
 */
function mirrorSource(url: string, reference: Reference, options: SourceOptions): ImageSource {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PullUnpackError('USAGE', `invalid mirror URL "${url}": expected https://HOST[:PORT]`);
  }
  if (
    (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') ||
    (parsed.pathname !== '/' && parsed.pathname !== '') ||
    parsed.username ||
    parsed.search
  ) {
    throw new PullUnpackError('USAGE', `invalid mirror URL "${url}": expected https://HOST[:PORT] (or http:// for a test mirror)`);
  }
  const attempts = Math.min(options.attempts ?? DEFAULT_ATTEMPTS, MIRROR_ATTEMPTS);
  return registrySource(registryClient(parsed.host, options, undefined, { origin: parsed.origin, attempts }), reference.repository);
}
