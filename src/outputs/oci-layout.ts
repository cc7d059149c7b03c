/**
 * `--output oci`: the chosen platform's image as an OCI image layout (image-spec
 * image-layout.md), like `skopeo copy docker://REF oci:DIR:TAG`, for later offline use
 * (`pull-unpack oci:DIR:TAG`, skopeo, umoci).
 *
 * By default, unlike skopeo, the manifest and config are written byte for byte as the registry
 * served them, Docker schema 2 media types included, so every digest in the layout stays the
 * registry's and verifiable; pull-unpack's own `oci:` source reads such a layout, but skopeo
 * 1.9 and umoci 0.4 only see index entries of OCI media types. `convertDockerManifest` rewrites
 * a Docker manifest with OCI media types for them, as `skopeo copy` does (config and layer
 * blobs are unchanged; only the manifest, and so its digest, differs).
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { abortError, PullUnpackError } from '../errors.js';
import { digestOf, parseDigest, verifyBytes } from '../image/digest.js';
import { isRefName, MediaType, OCI_LAYOUT_VERSION, parseManifest, REF_NAME_ANNOTATION, type Descriptor } from '../image/oci.js';
import { parseJson } from '../image/json.js';

export interface OciLayoutInput {
  /** The platform's image manifest, exactly as served, and its descriptor. */
  manifest: { bytes: Buffer; descriptor: { mediaType: string; digest: string; size: number } };
  config: { bytes: Buffer; digest: string };
  /** Verified blob files on disk (from the cache), one per layer of the manifest. */
  layers: Array<{ digest: string; size: number; path: string }>;
  /** The `org.opencontainers.image.ref.name` annotation of the index entry, e.g. the tag. */
  refName?: string | undefined;
  /** Put on the index entry, as skopeo and `docker buildx` do. */
  platform?: { os: string; architecture: string; variant?: string | undefined } | undefined;
}

export interface WriteOciLayoutOptions {
  signal?: AbortSignal | undefined;
  /** Rewrite a Docker schema 2 manifest with OCI media types (default false: keep its bytes). */
  convertDockerManifest?: boolean | undefined;
}

/** Docker schema 2 media type -> OCI's, for convertDockerManifest. */
const DOCKER_TO_OCI: Record<string, string> = {
  [MediaType.DockerConfig]: MediaType.OciConfig,
  [MediaType.DockerLayer]: MediaType.OciLayer,
  [MediaType.DockerLayerGzip]: MediaType.OciLayerGzip,
  [MediaType.DockerForeignLayerGzip]: MediaType.OciLayerNondistributableGzip,
  'application/vnd.docker.image.rootfs.foreign.diff.tar': MediaType.OciLayerNondistributable,
};

/**
 * Writes an OCI image layout at `dir` (created if missing; it must be empty): `oci-layout`,
 * `blobs/ALG/HEX` for every layer, the config and the manifest, and last `index.json` with one
 * manifest descriptor (with `platform` and the ref.name annotation when given). The manifest
 * and config bytes are verified against their digests and the manifest must name exactly the
 * given config and layers. Layer blobs are hardlinked from `path` when on the same filesystem,
 * copied otherwise. The caller handles staging and atomicity: on failure `dir` may hold a
 * partial layout (never an index.json). Resolves with the manifest descriptor written in
 * index.json; rejects with ABORTED when `signal` fires.
 */
export async function writeOciLayout(dir: string, input: OciLayoutInput, options: WriteOciLayoutOptions = {}): Promise<Descriptor> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const mediaType = checkInput(input);
  const manifest =
    options.convertDockerManifest === true && mediaType === MediaType.DockerManifest ? toOciManifest(input.manifest.bytes) : input.manifest;
  await mkdir(dir, { recursive: true });
  if ((await readdir(dir)).length > 0) {
    throw new PullUnpackError('DESTINATION_NOT_EMPTY', `${dir} is not empty`, {
      hint: 'an OCI layout is written into an empty or new directory',
    });
  }
  await writeFile(join(dir, 'oci-layout'), `${JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION })}\n`);
  // A layer listed twice (an empty layer, say) is one blob.
  const unique = new Map(input.layers.map((l) => [l.digest, l]));
  for (const layer of unique.values()) {
    if (signal?.aborted) throw abortError(signal);
    await placeLayer(dir, layer, signal);
  }
  await writeFile(await blobPath(dir, input.config.digest), input.config.bytes);
  await writeFile(await blobPath(dir, manifest.descriptor.digest), manifest.bytes);
  if (signal?.aborted) throw abortError(signal);
  const entry = indexEntry(input, manifest.descriptor);
  await writeFile(
    join(dir, 'index.json'),
    `${JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [entry] }, null, 2)}\n`,
  );
  return entry;
}

/** The index.json descriptor of the manifest, with the platform and ref.name when given. */
function indexEntry(input: OciLayoutInput, manifest: { mediaType: string; digest: string; size: number }): Descriptor {
  const { mediaType, digest, size } = manifest;
  const entry: Descriptor = { mediaType, digest, size };
  if (input.platform !== undefined) {
    const { os, architecture, variant } = input.platform;
    entry.platform = variant === undefined || variant === '' ? { architecture, os } : { architecture, os, variant };
  }
  if (input.refName !== undefined) entry.annotations = { [REF_NAME_ANNOTATION]: input.refName };
  return entry;
}

/** The Docker schema 2 manifest `bytes` with OCI media types; every other field is kept. */
function toOciManifest(bytes: Buffer): OciLayoutInput['manifest'] {
  const doc = parseJson(bytes, 'the manifest') as Record<string, unknown> & { config: Descriptor; layers: Descriptor[] };
  const retype = (d: Descriptor): Descriptor => ({ ...d, mediaType: DOCKER_TO_OCI[d.mediaType] ?? d.mediaType });
  const converted = Buffer.from(
    JSON.stringify({ ...doc, mediaType: MediaType.OciManifest, config: retype(doc.config), layers: doc.layers.map(retype) }),
  );
  return { bytes: converted, descriptor: { mediaType: MediaType.OciManifest, digest: digestOf(converted), size: converted.length } };
}

/**
 * Verifies the manifest and config bytes and that the manifest names exactly these blobs;
 * returns the manifest's media type.
 */
function checkInput(input: OciLayoutInput): string {
  const { bytes, descriptor } = input.manifest;
  verifyBytes(bytes, descriptor.digest, 'the manifest', descriptor.size);
  verifyBytes(input.config.bytes, input.config.digest, 'the image config');
  if (input.refName !== undefined && !isRefName(input.refName)) {
    throw new PullUnpackError('INVALID_REFERENCE', `"${input.refName}" is not a valid OCI layout reference name`, {
      hint: 'a ref name is letters and digits joined by one of - . _ : @ + (or --), in /-separated parts, e.g. a tag',
    });
  }
  const parsed = parseManifest(bytes, descriptor.mediaType, 'the image');
  if (parsed.kind !== 'manifest') {
    throw new PullUnpackError('INVALID_MANIFEST', "an OCI layout is written from one platform's image manifest, not an index");
  }
  const { manifest } = parsed;
  if (manifest.config.digest !== input.config.digest) {
    throw new PullUnpackError(
      'INVALID_MANIFEST',
      `the manifest's config is ${manifest.config.digest}, not the given ${input.config.digest}`,
    );
  }
  const given = new Map(input.layers.map((l) => [l.digest, l.size]));
  for (const layer of manifest.layers) {
    if (!given.has(layer.digest))
      throw new PullUnpackError('INVALID_MANIFEST', `no blob was given for the manifest's layer ${layer.digest}`);
    if (given.get(layer.digest) !== layer.size) {
      throw new PullUnpackError(
        'SIZE_MISMATCH',
        `layer ${layer.digest}: the manifest says ${layer.size} bytes, the given blob ${given.get(layer.digest)}`,
      );
    }
  }
  const named = new Set(manifest.layers.map((l) => l.digest));
  const extra = input.layers.find((l) => !named.has(l.digest));
  if (extra !== undefined) throw new PullUnpackError('INVALID_MANIFEST', `layer ${extra.digest} is not in the manifest`);
  return parsed.mediaType;
}

/**
 * Puts one layer blob in the layout: a hardlink to the verified file (so a large image costs no
 * space or time), or a copy across filesystems.
 */
async function placeLayer(
  dir: string,
  layer: { digest: string; size: number; path: string },
  signal: AbortSignal | undefined,
): Promise<void> {
  const st = await stat(layer.path);
  if (st.size !== layer.size) {
    throw new PullUnpackError('SIZE_MISMATCH', `layer ${layer.digest}: ${layer.path} holds ${st.size} bytes, expected ${layer.size}`);
  }
  const dest = await blobPath(dir, layer.digest);
  try {
    await link(layer.path, dest);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // EXDEV: another filesystem; EPERM: hardlinks refused (e.g. protected_hardlinks, some FUSE).
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK' && code !== 'ENOTSUP') throw err;
  }
  try {
    await pipeline(createReadStream(layer.path), createWriteStream(dest, { flags: 'wx' }), signal === undefined ? {} : { signal });
  } catch (err) {
    if (signal?.aborted) throw abortError(signal);
    throw err;
  }
}

/** `blobs/ALG/HEX` for a digest, its directory created; the digest is parsed so it names no other path. */
async function blobPath(dir: string, digest: string): Promise<string> {
  const { algorithm, hex } = parseDigest(digest);
  const folder = join(dir, 'blobs', algorithm);
  await mkdir(folder, { recursive: true });
  return join(folder, hex);
}
