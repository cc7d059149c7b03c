/**
 * How `inspect` prints its result: the human report (what the reference names, its platforms,
 * the pick and what `skopeo inspect` shows of the picked image), `--json` (one document) and
 * `--raw` (the manifest bytes exactly as served: the picked platform's with --platform).
 */
import type { InspectResult } from '../index.js';
import type { ImageDetails } from '../image/image-details.js';
import { MediaType } from '../image/oci.js';
import { escapeControl, toJson } from './escape.js';
import { formatBytes } from './progress-render.js';
import { formatTrust } from './trust-output.js';
import type { CliIo } from './io.js';

export interface InspectPrintOptions {
  raw?: boolean | undefined;
  json?: boolean | undefined;
  /** A platform was asked for (--platform): --raw prints that platform's manifest. */
  platformGiven?: boolean | undefined;
}

/** Prints `result` as `options` ask: the report and notices, the JSON document, or the raw bytes. */
export function printInspect(result: InspectResult, notices: string[], options: InspectPrintOptions, io: CliIo): void {
  if (options.raw) {
    if (options.platformGiven && 'error' in result.pick) {
      io.stderr.write(`pull-unpack: ${escapeControl(result.pick.error)}\n`);
      return;
    }
    io.stdout.write(options.platformGiven ? (result.platformRaw ?? result.raw) : result.raw);
    return;
  }
  if (options.json) {
    const { raw: _raw, platformRaw: _platformRaw, ...doc } = result;
    io.stdout.write(`${toJson({ ...doc, notices }, 2)}\n`);
    return;
  }
  for (const n of notices) io.stderr.write(`note: ${escapeControl(n)}\n`);
  io.stdout.write(formatInspect(result));
}

const KIND_NAMES: Record<string, string> = {
  [MediaType.OciIndex]: 'OCI image index',
  [MediaType.DockerManifestList]: 'Docker manifest list',
  [MediaType.OciManifest]: 'OCI image manifest',
  [MediaType.DockerManifest]: 'Docker image manifest (schema 2)',
};

/** The human-readable inspect report. */
export function formatInspect(r: InspectResult): string {
  const lines = [
    r.reference,
    `  type:      ${KIND_NAMES[r.mediaType] ?? r.mediaType} (${r.kind === 'index' ? 'multi-platform' : 'single manifest'})`,
    `  mediaType: ${r.mediaType}`,
    `  digest:    ${r.digest}`,
    `  size:      ${r.size} bytes`,
  ];
  if (r.kind === 'index') lines.push(...platformTable(r));
  else if (r.configPlatform) lines.push(`  platform:  ${r.configPlatform} (from the image config)`);
  // "this host (linux/amd64)" when no platform was asked for: the pick is the host's.
  const wanted = r.wantedIsHost ? `this host (${r.wanted})` : `for ${r.wanted}`;
  if ('digest' in r.pick) {
    lines.push(`  ${wanted}: ${r.pick.platform} ${r.pick.digest}`, `    why: ${r.pick.reason}`);
    for (const n of r.pick.notes) lines.push(`    note: ${n}`);
  } else {
    lines.push(`  ${wanted}: no match`, `    ${r.pick.error}`);
  }
  if (r.image) lines.push(...imageLines(r.image));
  else if (r.imageError) lines.push(`  image: its config cannot be read: ${r.imageError}`);
  lines.push(...formatTrust(r.trust));
  // Each line escaped on its own: a field from the registry cannot break one into two.
  return `${lines.map(escapeControl).join('\n')}\n`;
}

/** The index's entries: platform, manifest digest and the manifest's own size (not the image's). */
function platformTable(r: InspectResult): string[] {
  const width = Math.max(...r.platforms.map((p) => (p.platform ?? '-').length), 8);
  const digestWidth = Math.max(...r.platforms.map((p) => p.digest.length), 15);
  const lines = [
    `  platforms (${r.platforms.length}):`,
    `     ${'PLATFORM'.padEnd(width)}  ${'MANIFEST DIGEST'.padEnd(digestWidth)}  MANIFEST SIZE`,
  ];
  for (const p of r.platforms) {
    const marks = [p.attestation ? 'attestation' : '', p.via.length ? `nested in ${p.via.at(-1)!.slice(0, 19)}` : '']
      .filter(Boolean)
      .join(', ');
    const picked = 'digest' in r.pick && r.pick.digest === p.digest && !p.attestation ? '*' : ' ';
    const size = `${p.size} B`.padStart('MANIFEST SIZE'.length);
    lines.push(`   ${picked} ${(p.platform ?? '-').padEnd(width)}  ${p.digest.padEnd(digestWidth)}  ${size}${marks ? `  (${marks})` : ''}`);
  }
  return lines;
}

/** What `skopeo inspect` and `skopeo inspect --config` show of the picked image. */
function imageLines(image: ImageDetails): string[] {
  const field = (name: string, values: string[]): string[] =>
    values.length === 0 ? [`    ${`${name}:`.padEnd(14)}-`] : values.map((v, i) => `    ${(i === 0 ? `${name}:` : '').padEnd(14)}${v}`);
  const words = (value: string[] | undefined): string[] => (value === undefined ? [] : [JSON.stringify(value)]);
  return [
    '  image:',
    ...field('manifest', [image.manifestDigest]),
    ...field('config', [image.configDigest]),
    ...field('created', image.created === undefined ? [] : [image.created]),
    ...field('entrypoint', words(image.entrypoint)),
    ...field('cmd', words(image.cmd)),
    ...field('env', image.env),
    ...field('workingDir', image.workingDir === undefined ? [] : [image.workingDir]),
    ...field('user', image.user === undefined ? [] : [image.user]),
    ...field('exposedPorts', image.exposedPorts.length === 0 ? [] : [image.exposedPorts.join(', ')]),
    ...field(
      'labels',
      Object.entries(image.labels).map(([k, v]) => `${k}=${v}`),
    ),
    ...field('layers', [`${image.layers} (${formatBytes(image.layersSize)} compressed, ${image.layersSize} bytes)`]),
  ];
}
