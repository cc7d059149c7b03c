/**
 * Reference -> the manifest (and config) to unpack: fetches what the tag names, follows
 * (nested) indexes, picks the platform entry, and verifies every document it reads.
 */
import { verifyBytes } from './digest.js';
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
} from './oci.js';
import { formatPlatform, normalizePlatform, selectPlatform, type PlatformChoice } from './platform.js';
import type { ImageSource } from '../sources/source.js';

/** Indexes nested deeper than this are refused (real images nest at most once). */
const MAX_INDEX_DEPTH = 4;
/** Image configs larger than this are refused. */
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

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
}

export interface ResolvedImage {
  top: TopLevel;
  /** Set when the reference named an index: the entry chosen for the platform. */
  choice: PlatformChoice | undefined;
  manifestDescriptor: Descriptor;
  manifestBytes: Buffer;
  manifest: ImageManifest;
}

/** Fetches and parses what `reference` (a tag or digest) names; follows nested indexes. */
export async function fetchTopLevel(source: ImageSource, reference: string, signal?: AbortSignal): Promise<TopLevel> {
  const fetched = await source.getManifest(reference, signal);
  const parsed = parseManifest(fetched.bytes, fetched.contentType, `${source.name}${reference.includes(':') ? '@' : ':'}${reference}`);
  const descriptor: Descriptor = { mediaType: parsed.mediaType, digest: fetched.digest, size: fetched.bytes.length };
  const entries = parsed.kind === 'index' ? await flattenIndex(source, parsed.index, [], signal) : [];
  return { descriptor, bytes: fetched.bytes, parsed, entries };
}

async function flattenIndex(source: ImageSource, index: ImageIndex, via: string[], signal?: AbortSignal): Promise<IndexEntry[]> {
  const entries: IndexEntry[] = [];
  for (const descriptor of index.manifests) {
    if (!isIndexMediaType(descriptor.mediaType)) {
      entries.push({ descriptor, via, attestation: isAttestation(descriptor) });
      continue;
    }
    if (via.length + 1 >= MAX_INDEX_DEPTH) {
      throw new PullUnpackError('INVALID_MANIFEST', `${source.name}: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
    }
    const nested = await fetchDocument(source, descriptor, signal);
    if (nested.kind !== 'index') {
      throw new PullUnpackError('INVALID_MANIFEST', `${source.name}@${descriptor.digest} is listed as an index but is a manifest`);
    }
    entries.push(...(await flattenIndex(source, nested.index, [...via, descriptor.digest], signal)));
  }
  return entries;
}

/** Fetches a manifest or index by descriptor, checking its size and digest. */
async function fetchDocument(source: ImageSource, descriptor: Descriptor, signal?: AbortSignal): Promise<ParsedManifest> {
  const fetched = await source.getManifest(descriptor.digest, signal);
  const what = `${source.name}@${descriptor.digest}`;
  verifyBytes(fetched.bytes, descriptor.digest, what, descriptor.size);
  return parseManifest(fetched.bytes, fetched.contentType || descriptor.mediaType, what);
}

/** Resolves `reference` to the single-platform manifest to unpack. */
export async function resolveImage(source: ImageSource, reference: string, wanted: Platform, signal?: AbortSignal): Promise<ResolvedImage> {
  const top = await fetchTopLevel(source, reference, signal);
  return chooseManifest(source, top, wanted, signal);
}

/** Picks the platform entry of an index (or takes the manifest itself) and fetches it. */
export async function chooseManifest(source: ImageSource, top: TopLevel, wanted: Platform, signal?: AbortSignal): Promise<ResolvedImage> {
  if (top.parsed.kind === 'manifest') {
    return { top, choice: undefined, manifestDescriptor: top.descriptor, manifestBytes: top.bytes, manifest: top.parsed.manifest };
  }
  const choice = selectPlatform(
    top.entries.map((e) => e.descriptor),
    normalizePlatform(wanted),
    source.name,
  );
  const fetched = await source.getManifest(choice.descriptor.digest, signal);
  const what = `${source.name}@${choice.descriptor.digest} (${formatPlatform(choice.platform)})`;
  verifyBytes(fetched.bytes, choice.descriptor.digest, what, choice.descriptor.size);
  const parsed = parseManifest(fetched.bytes, fetched.contentType || choice.descriptor.mediaType, what);
  if (parsed.kind !== 'manifest') {
    throw new PullUnpackError('INVALID_MANIFEST', `${what} is listed as an image manifest but is an index`);
  }
  return { top, choice, manifestDescriptor: choice.descriptor, manifestBytes: fetched.bytes, manifest: parsed.manifest };
}

/** Fetches, verifies and parses the image config a manifest names. */
export async function fetchConfig(
  source: ImageSource,
  manifest: ImageManifest,
  signal?: AbortSignal,
  maxBytes = MAX_CONFIG_BYTES,
): Promise<{ config: ImageConfig; bytes: Buffer }> {
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
