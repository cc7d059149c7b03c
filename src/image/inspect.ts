/**
 * `inspect`: what a reference names (index or manifest), its platforms, and which entry this
 * host (or the requested platform) would get, and why. Nothing is downloaded but documents.
 */
import { isPullUnpackError } from '../errors.js';
import type { Platform } from './oci.js';
import { formatPlatform, normalizePlatform } from './platform.js';
import { chooseManifest, fetchConfig, fetchTopLevel } from './resolve.js';
import type { ImageSource } from '../sources/source.js';

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
  /** The entry this platform gets, or why none does. */
  pick: { digest: string; platform: string; reason: string; notes: string[] } | { error: string; code: string };
  /** For a single manifest: the platform its config declares. */
  configPlatform?: string | undefined;
  /** The manifest bytes exactly as served (not part of the JSON output). */
  raw: Buffer;
}

/** Inspects `reference` through `source`; a platform with no match is reported, not thrown. */
export async function inspectImage(
  source: ImageSource,
  reference: string,
  display: string,
  wanted: Platform,
  signal?: AbortSignal,
): Promise<InspectResult> {
  const top = await fetchTopLevel(source, reference, signal);
  const normalized = normalizePlatform(wanted);
  const base = {
    reference: display,
    kind: top.parsed.kind,
    mediaType: top.descriptor.mediaType,
    digest: top.descriptor.digest,
    size: top.descriptor.size,
    wanted: formatPlatform(normalized),
    raw: top.bytes,
  };
  if (top.parsed.kind === 'manifest') {
    const { config } = await fetchConfig(source, top.parsed.manifest, signal);
    const configPlatform =
      config.os && config.architecture
        ? formatPlatform({ os: config.os, architecture: config.architecture, variant: config.variant })
        : undefined;
    const reason = 'the reference names a single-platform manifest';
    return {
      ...base,
      platforms: [],
      configPlatform,
      pick: {
        digest: top.descriptor.digest,
        platform: configPlatform ?? 'unknown',
        reason,
        notes: platformNotes(configPlatform, base.wanted),
      },
    };
  }
  const platforms = top.entries.map((e) => ({
    platform: e.descriptor.platform ? formatPlatform(e.descriptor.platform) : undefined,
    mediaType: e.descriptor.mediaType,
    digest: e.descriptor.digest,
    size: e.descriptor.size,
    attestation: e.attestation,
    via: e.via,
  }));
  let pick: InspectResult['pick'];
  try {
    const { choice } = await chooseManifest(source, top, normalized, signal);
    pick = { digest: choice!.descriptor.digest, platform: formatPlatform(choice!.platform), reason: choice!.reason, notes: choice!.notes };
  } catch (err) {
    if (!isPullUnpackError(err, 'NO_MATCHING_PLATFORM')) throw err;
    pick = { error: err.message, code: err.code };
  }
  return { ...base, platforms, pick };
}

function platformNotes(configPlatform: string | undefined, wanted: string): string[] {
  if (!configPlatform || configPlatform === wanted) return [];
  return [`the image is built for ${configPlatform}, not ${wanted}`];
}
