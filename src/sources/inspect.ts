/**
 * `inspect`: what a reference names (index or manifest), its platforms, and which entry this
 * host (or the requested platform) would get, and why. Nothing is downloaded but documents.
 */
import { isPullUnpackError } from '../errors.js';
import { imageDetails, type ImageDetails } from '../image/image-details.js';
import type { ImageConfig, Platform } from '../image/oci.js';
import { formatPlatform, normalizePlatform } from '../image/platform.js';
import {
  checkConfigPlatform,
  chooseManifest,
  configPlatform,
  fetchConfig,
  fetchTopLevel,
  SINGLE_MANIFEST_REASON,
  type ResolvedImage,
  type ResolveOptions,
} from './resolve.js';
import type { ImageSource } from './source.js';

export interface InspectedPlatform {
  /** 'linux/arm/v7'; 'unknown/unknown' for attestations. */
  platform: string | undefined;
  mediaType: string;
  digest: string;
  size: number;
  attestation: boolean;
  /** Digests of nested indexes this entry was found in. */
  via: string[];
}

export interface InspectResult {
  reference: string;
  kind: 'index' | 'manifest';
  mediaType: string;
  digest: string;
  size: number;
  /** The index's entries (empty for a single manifest). */
  platforms: InspectedPlatform[];
  /** The platform asked for (the host's unless overridden). */
  wanted: string;
  /** True when `wanted` is this host's platform (no platform was asked for). */
  wantedIsHost: boolean;
  /** The entry this platform gets, or why none does. */
  pick: { digest: string; platform: string; reason: string; notes: string[] } | { error: string; code: string };
  /** For a single manifest: the platform its config declares. */
  configPlatform?: string | undefined;
  /** What `skopeo inspect` shows of the picked platform's image (absent when no platform matched). */
  image?: ImageDetails | undefined;
  /** Why `image` is absent although a platform matched: its config could not be read. */
  imageError?: string | undefined;
  /** The manifest bytes exactly as served (not part of the JSON output). */
  raw: Buffer;
  /** The picked platform's manifest bytes exactly as served: `raw` for a single manifest (not part of the JSON output). */
  platformRaw?: Buffer | undefined;
}

export interface InspectImageOptions extends ResolveOptions {
  /** True when the platform was asked for (--platform), not the host's: a single manifest built for another is no match. */
  platformGiven?: boolean | undefined;
}

/** Inspects `reference` through `source`; a platform with no match is reported, not thrown. */
export async function inspectImage(
  source: ImageSource,
  reference: string,
  display: string,
  wanted: Platform,
  options: InspectImageOptions = {},
): Promise<InspectResult> {
  const top = await fetchTopLevel(source, reference, options);
  const normalized = normalizePlatform(wanted);
  const base = {
    reference: display,
    kind: top.parsed.kind,
    mediaType: top.descriptor.mediaType,
    digest: top.descriptor.digest,
    size: top.descriptor.size,
    wanted: formatPlatform(normalized),
    wantedIsHost: !(options.platformGiven ?? false),
    raw: top.bytes,
  };
  if (top.parsed.kind === 'manifest') {
    const { config } = await fetchConfig(source, top.parsed.manifest, options);
    const built = configPlatform(config);
    const platform = built ? formatPlatform(built) : undefined;
    let picked: ResolvedImage | undefined;
    const pick = await noMatchReported(async () => {
      const resolved = await chooseManifest(top, normalized);
      const notes = checkConfigPlatform(resolved, config, normalized, options.platformGiven ?? false, display);
      picked = resolved;
      return {
        digest: top.descriptor.digest,
        platform: platform ?? 'unknown',
        reason: SINGLE_MANIFEST_REASON,
        notes,
      };
    });
    return { ...base, platforms: [], configPlatform: platform, pick, ...pickedImage(picked, config) };
  }
  const platforms = top.entries.map((e) => ({
    platform: e.descriptor.platform ? formatPlatform(e.descriptor.platform) : undefined,
    mediaType: e.descriptor.mediaType,
    digest: e.descriptor.digest,
    size: e.descriptor.size,
    attestation: e.attestation,
    via: e.via,
  }));
  let picked: ResolvedImage | undefined;
  const pick = await noMatchReported(async () => {
    picked = await chooseManifest(top, normalized);
    const choice = picked.choice!;
    return { digest: choice.descriptor.digest, platform: formatPlatform(choice.platform), reason: choice.reason, notes: choice.notes };
  });
  return { ...base, platforms, pick, ...(await entryImage(source, picked, options)) };
}

/**
 * The picked index entry's image details. Its config is read only for them: one that cannot be
 * read (damaged, refused) is reported beside the index's report instead of replacing it.
 */
async function entryImage(
  source: ImageSource,
  picked: ResolvedImage | undefined,
  options: InspectImageOptions,
): Promise<Pick<InspectResult, 'image' | 'platformRaw' | 'imageError'>> {
  if (!picked) return {};
  try {
    return pickedImage(picked, (await fetchConfig(source, picked.manifest, options)).config);
  } catch (err) {
    if (!isPullUnpackError(err) || err.code === 'ABORTED') throw err;
    return { platformRaw: picked.manifestBytes, imageError: err.message };
  }
}

/** The picked platform's image details and manifest bytes; nothing when no platform matched. */
function pickedImage(picked: ResolvedImage | undefined, config: ImageConfig | undefined): Pick<InspectResult, 'image' | 'platformRaw'> {
  if (!picked || !config) return {};
  return { image: imageDetails(picked.manifestDescriptor, picked.manifest, config), platformRaw: picked.manifestBytes };
}

/** The pick `choose` makes, or the NO_MATCHING_PLATFORM error it throws as a value. */
async function noMatchReported(choose: () => Promise<InspectResult['pick']>): Promise<InspectResult['pick']> {
  try {
    return await choose();
  } catch (err) {
    if (!isPullUnpackError(err, 'NO_MATCHING_PLATFORM')) throw err;
    return { error: err.message, code: err.code };
  }
}
