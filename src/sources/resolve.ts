/**
 * Reference -> the manifest (and config) to unpack: fetches what the tag names, follows
 * (nested) indexes, picks the platform entry, and verifies every document it reads.
 */
import { verifyBytes } from '../image/digest.js';
import { PullUnpackError } from '../errors.js';
import {
  isAttestation,
  isIndexMediaType,
  parseImageConfig,
  parseManifest,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type ParsedManifest,
  type Platform,
} from '../image/oci.js';
import { formatPlatform, normalizePlatform, platformRank, selectPlatform, type PlatformChoice } from '../image/platform.js';
import type { ImageSource } from './source.js';
import { DEFAULT_LIMITS, limitError, type Limits } from '../limits.js';

/** One entry of an index, with the chain of nested indexes it was found in. */
export interface IndexEntry {
  descriptor: Descriptor;
  /** Digests of the nested indexes between the top index and this entry (empty for direct entries). */
  via: string[];
  attestation: boolean;
}

/** What a reference points at, before any platform choice. */
export interface TopLevel {
  descriptor: Descriptor;
  bytes: Buffer;
  parsed: ParsedManifest;
  /** Every manifest entry of the index and of the indexes nested in it; empty for a manifest. */
  entries: IndexEntry[];
  /** Reads the resolve's further documents (each digest once). */
  reader: DocumentReader;
}

export interface ResolvedImage {
  top: TopLevel;
  /** Set when the reference named an index: the entry chosen for the platform. */
  choice: PlatformChoice | undefined;
  manifestDescriptor: Descriptor;
  manifestBytes: Buffer;
  manifest: ImageManifest;
}

export interface ResolveOptions {
  signal?: AbortSignal | undefined;
  /** The limits a resolve obeys (maxManifestBytes is the source's business); default DEFAULT_LIMITS. */
  limits?: Limits | undefined;
}

/**
 * The documents of one resolve: each digest is fetched at most once, and every descriptor an
 * index lists counts against maxManifests, so an index naming the same nested index thousands
 * of times costs one request and then a TOO_LARGE, not millions of requests.
 */
class DocumentReader {
  private readonly fetched = new Map<string, ReturnType<ImageSource['getManifest']>>();
  private listed = 0;

  constructor(
    readonly source: ImageSource,
    readonly limits: Limits,
    readonly signal: AbortSignal | undefined,
  ) {}

  /** Counts the descriptors of one more index listing. */
  count(listing: number): void {
    this.listed += listing;
    if (this.listed > this.limits.maxManifests) {
      throw limitError(`${this.source.name}: its indexes list ${this.listed} manifests`, this.limits.maxManifests, '--max-manifests');
    }
  }

  /** The manifest or index `descriptor` names, fetched once, checked against its size and digest, parsed. */
  async read(
    descriptor: Descriptor,
    what = `${this.source.name}@${descriptor.digest}`,
  ): Promise<{ bytes: Buffer; parsed: ParsedManifest }> {
    let pending = this.fetched.get(descriptor.digest);
    if (!pending) {
      pending = this.source.getManifest(descriptor.digest, this.signal);
      this.fetched.set(descriptor.digest, pending);
    }
    const { bytes, contentType } = await pending;
    verifyBytes(bytes, descriptor.digest, what, descriptor.size);
    return { bytes, parsed: parseManifest(bytes, contentType || descriptor.mediaType, what) };
  }
}

/** Fetches and parses what `reference` (a tag or digest) names; follows nested indexes. */
export async function fetchTopLevel(source: ImageSource, reference: string, options: ResolveOptions = {}): Promise<TopLevel> {
  const reader = new DocumentReader(source, options.limits ?? DEFAULT_LIMITS, options.signal);
  const fetched = await source.getManifest(reference, options.signal);
  const parsed = parseManifest(fetched.bytes, fetched.contentType, `${source.name}${reference.includes(':') ? '@' : ':'}${reference}`);
  const descriptor: Descriptor = { mediaType: parsed.mediaType, digest: fetched.digest, size: fetched.bytes.length };
  const entries = parsed.kind === 'index' ? await flattenIndex(reader, parsed.index, [], new Set()) : [];
  return { descriptor, bytes: fetched.bytes, parsed, entries, reader };
}

/**
 * The manifest entries of `index` and of the indexes nested in it, in order. A nested index
 * met again (by digest) adds nothing: its entries are already listed.
 */
async function flattenIndex(reader: DocumentReader, index: ImageIndex, via: string[], expanded: Set<string>): Promise<IndexEntry[]> {
  reader.count(index.manifests.length);
  const entries: IndexEntry[] = [];
  for (const descriptor of index.manifests) {
    if (!isIndexMediaType(descriptor.mediaType)) {
      entries.push({ descriptor, via, attestation: isAttestation(descriptor) });
      continue;
    }
    if (expanded.has(descriptor.digest)) continue;
    expanded.add(descriptor.digest);
    // The top index is level 1; `via` holds the levels between it and this one.
    const level = via.length + 2;
    if (level > reader.limits.maxIndexDepth) {
      throw limitError(`${reader.source.name}: indexes nested ${level} levels deep`, reader.limits.maxIndexDepth, '--max-index-depth');
    }
    const nested = await reader.read(descriptor);
    if (nested.parsed.kind !== 'index') {
      throw new PullUnpackError('INVALID_MANIFEST', `${reader.source.name}@${descriptor.digest} is listed as an index but is a manifest`);
    }
    entries.push(...(await flattenIndex(reader, nested.parsed.index, [...via, descriptor.digest], expanded)));
  }
  return entries;
}

/** Why a reference that names a manifest (not an index) gets that manifest. */
export const SINGLE_MANIFEST_REASON = 'the reference names a single-platform manifest';

/** Resolves `reference` to the single-platform manifest to unpack. */
export async function resolveImage(
  source: ImageSource,
  reference: string,
  wanted: Platform,
  options: ResolveOptions = {},
): Promise<ResolvedImage> {
  const top = await fetchTopLevel(source, reference, options);
  return chooseManifest(top, wanted);
}

/** Picks the platform entry of an index (or takes the manifest itself) and fetches it. */
export async function chooseManifest(top: TopLevel, wanted: Platform): Promise<ResolvedImage> {
  if (top.parsed.kind === 'manifest') {
    return { top, choice: undefined, manifestDescriptor: top.descriptor, manifestBytes: top.bytes, manifest: top.parsed.manifest };
  }
  const { source } = top.reader;
  const choice = selectPlatform(
    top.entries.map((e) => e.descriptor),
    normalizePlatform(wanted),
    source.name,
  );
  const what = `${source.name}@${choice.descriptor.digest} (${formatPlatform(choice.platform)})`;
  const { bytes, parsed } = await top.reader.read(choice.descriptor, what);
  if (parsed.kind !== 'manifest') {
    throw new PullUnpackError('INVALID_MANIFEST', `${what} is listed as an image manifest but is an index`);
  }
  return { top, choice, manifestDescriptor: choice.descriptor, manifestBytes: bytes, manifest: parsed.manifest };
}

/** Fetches, verifies and parses the image config a manifest names. */
export async function fetchConfig(
  source: ImageSource,
  manifest: ImageManifest,
  options: ResolveOptions = {},
): Promise<{ config: ImageConfig; bytes: Buffer }> {
  const { signal } = options;
  const maxBytes = (options.limits ?? DEFAULT_LIMITS).maxConfigBytes;
  const descriptor = manifest.config;
  const what = `the config of ${source.name} (${descriptor.digest})`;
  if (descriptor.size > maxBytes) {
    throw new PullUnpackError('TOO_LARGE', `${what} is ${descriptor.size} bytes, over the ${maxBytes}-byte limit`, {
      hint: 'raise it with --max-config-size if the image is trusted',
    });
  }
  const stream = await source.fetchBlob(descriptor, signal, what);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > descriptor.size) {
      stream.destroy();
      break;
    }
    chunks.push(chunk as Buffer);
  }
  const bytes = Buffer.concat(chunks);
  verifyBytes(bytes, descriptor.digest, what, descriptor.size);
  return { config: parseImageConfig(bytes, source.name), bytes };
}

/** The platform an image config declares ('linux/arm64'), or undefined when it names no OS and architecture. */
export function configPlatform(config: ImageConfig): Platform | undefined {
  if (typeof config.os !== 'string' || typeof config.architecture !== 'string' || !config.os || !config.architecture) return undefined;
  return normalizePlatform({ os: config.os, architecture: config.architecture, variant: config.variant });
}

/**
 * Checks a single-platform image (one the reference names directly, not an index entry) against
 * the wanted platform, as docker and containerd do: its config's os/architecture/variant is what
 * it is built for. Asked for with --platform (`explicit`), an image for another platform is
 * NO_MATCHING_PLATFORM naming both; for the host's platform it is pulled, and the returned notes
 * say it may not run here. A config that names no platform is pulled as docker pulls it (moby
 * takes an empty OS for the host's), with a note when a platform was asked for. `name` names
 * the image in messages.
 */
export function checkConfigPlatform(
  resolved: ResolvedImage,
  config: ImageConfig,
  wanted: Platform,
  explicit: boolean,
  name: string,
): string[] {
  if (resolved.choice) return [];
  const target = formatPlatform(normalizePlatform(wanted));
  const built = configPlatform(config);
  if (!built) return explicit ? [`the config of ${name} names no platform; it cannot be checked against ${target}`] : [];
  if (platformRank(wanted, built) !== undefined) return [];
  const have = formatPlatform(built);
  if (!explicit) return [`${name} is built for ${have}, not for this host's ${target}: it may not run here`];
  throw new PullUnpackError('NO_MATCHING_PLATFORM', `${name} is built for ${have}, not ${target}`, {
    hint: `it is a single-platform image: pull it with --platform ${have}, or without --platform`,
  });
}
