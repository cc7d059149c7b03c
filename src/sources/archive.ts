/**
 * An ImageSource for the legacy `docker save` format, which has no manifests: one is
 * synthesized from manifest.json. (An archive holding an OCI layout, `oci-archive:` or the one
 * docker 25+ writes, is read as a layout through layout-files.ts.)
 *
 * Legacy format (moby image/tarexport): manifest.json =
 *   [{ "Config": "<id>.json", "RepoTags": ["name:tag"], "Layers": ["<id>/layer.tar", ...] }]
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { abortError, PullUnpackError } from '../errors.js';
import { MediaType, type Descriptor, type FetchedManifest, type ImageManifest } from '../image/oci.js';
import { parseReference } from '../image/reference.js';
import { parseJson } from '../image/json.js';
import { limitError, type Limits } from '../limits.js';
import { readCapped, tarFiles } from './layout-files.js';
import type { ImageSource } from './source.js';
import type { TarIndex, TarMember } from '../tar/archive-index.js';

interface ArchiveImage {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

/**
 * An ImageSource for the image of a legacy `docker save` archive that `ref` (NAME[:TAG], Docker
 * normalization) names, or its only image. The limits are checked before any layer is read,
 * and each distinct layer file is read once to compute its digest (manifest.json may name one
 * file many times); the synthesized Docker schema 2 manifest is addressed by its own digest,
 * which is `reference`. NOT_FOUND listing the RepoTags when `ref` matches nothing or no `ref`
 * is given for several images.
 */
export async function openDockerArchive(
  tar: TarIndex,
  name: string,
  ref: string | undefined,
  options: { signal?: AbortSignal | undefined; limits: Limits },
): Promise<{ source: ImageSource; reference: string }> {
  const { signal, limits } = options;
  const images = await readArchiveManifest(tar, name, limits);
  const image = selectImage(images, name, ref);
  const label = image.RepoTags[0] ? `${name}:${image.RepoTags[0]}` : name;
  if (image.Layers.length > limits.maxLayers) throw limitError(`${label}: ${image.Layers.length} layers`, limits.maxLayers, '--max-layers');
  const blobs = new Map<string, TarMember>();
  const config = await describeConfig(tar, image.Config, label, blobs, limits);
  const described = new Map<TarMember, Descriptor>();
  const layers: Descriptor[] = [];
  for (const [i, path] of image.Layers.entries()) {
    const member = archiveMember(tar, path, `layer ${i + 1} of ${label}`);
    let descriptor = described.get(member);
    if (!descriptor) {
      descriptor = await describeLayer(tar, member, blobs, signal);
      described.set(member, descriptor);
    }
    layers.push(descriptor);
  }
  const manifest: ImageManifest = { schemaVersion: 2, mediaType: MediaType.DockerManifest, config, layers };
  const bytes = Buffer.from(JSON.stringify(manifest), 'utf8');
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const source: ImageSource = {
    name: label,
    async getManifest(reference, getSignal): Promise<FetchedManifest> {
      if (getSignal?.aborted) throw abortError(getSignal);
      if (reference !== digest) {
        throw new PullUnpackError('NOT_FOUND', `${label} has no manifest ${reference}`, {
          hint: `a docker save archive holds one manifest per image, synthesized here as ${digest}`,
        });
      }
      return { bytes: Buffer.from(bytes), contentType: MediaType.DockerManifest, digest };
    },
    async fetchBlob(descriptor, blobSignal, what): Promise<Readable> {
      if (blobSignal?.aborted) throw abortError(blobSignal);
      const member = blobs.get(descriptor.digest);
      if (!member) throw new PullUnpackError('NOT_FOUND', `${what ?? `blob ${descriptor.digest}`}: not in ${label}`);
      return tar.stream(member);
    },
  };
  return { source, reference: digest };
}

async function readArchiveManifest(tar: TarIndex, name: string, limits: Limits): Promise<ArchiveImage[]> {
  let bytes: Buffer;
  try {
    bytes = await readCapped(tarFiles(tar), 'manifest.json', limits.maxManifestBytes, '--max-manifest-size', `${name} manifest.json`);
  } catch (err) {
    if (err instanceof PullUnpackError && err.code === 'NOT_FOUND') {
      throw new PullUnpackError('NOT_FOUND', `${name} is not a docker save archive: it has neither manifest.json nor index.json`, {
        cause: err,
      });
    }
    throw err;
  }
  const doc = parseJson(bytes, `${name}: manifest.json`);
  if (!Array.isArray(doc)) throw new PullUnpackError('INVALID_MANIFEST', `${name}: manifest.json is not an array`);
  return doc.map((entry: unknown, i) => {
    const e = (entry ?? {}) as Record<string, unknown>;
    const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');
    if (typeof e['Config'] !== 'string' || !strings(e['Layers']) || !(e['RepoTags'] == null || strings(e['RepoTags']))) {
      throw new PullUnpackError('INVALID_MANIFEST', `${name}: manifest.json entry ${i} needs Config, Layers and RepoTags`);
    }
    return { Config: e['Config'], Layers: e['Layers'], RepoTags: (e['RepoTags'] as string[] | null) ?? [] };
  });
}

function selectImage(images: ArchiveImage[], name: string, ref: string | undefined): ArchiveImage {
  const list = (): string =>
    images.map((im) => (im.RepoTags.length ? im.RepoTags.join(' / ') : `untagged (config ${im.Config})`)).join(', ');
  if (ref === undefined) {
    if (images.length === 1) return images[0]!;
    throw new PullUnpackError('NOT_FOUND', `${name} holds ${images.length} images: ${list()}`, {
      hint: images.length ? `pick one with ${name}:NAME:TAG` : undefined,
    });
  }
  const wanted = parseReference(ref).toString();
  const found = images.filter((im) => im.RepoTags.some((t) => normalized(t) === wanted));
  if (found.length === 1) return found[0]!;
  throw new PullUnpackError(
    'NOT_FOUND',
    found.length ? `${name}: ${found.length} images are tagged "${ref}"` : `${name} has no image tagged "${ref}"; it holds ${list()}`,
    { hint: `pick one with ${name}:NAME:TAG` },
  );
}

function normalized(repoTag: string): string | undefined {
  try {
    return parseReference(repoTag).toString();
  } catch {
    // A RepoTag that is not a valid reference cannot be what a valid `ref` names.
    return undefined;
  }
}

async function describeConfig(
  tar: TarIndex,
  path: string,
  label: string,
  blobs: Map<string, TarMember>,
  limits: Limits,
): Promise<Descriptor> {
  const member = archiveMember(tar, path, `the config of ${label}`);
  if (member.size > limits.maxConfigBytes) {
    throw new PullUnpackError('TOO_LARGE', `the config of ${label} is ${member.size} bytes, over the ${limits.maxConfigBytes}-byte limit`, {
      hint: 'raise it with --max-config-size if the image is trusted',
    });
  }
  const digest = `sha256:${createHash('sha256')
    .update(await tar.read(member))
    .digest('hex')}`;
  blobs.set(digest, member);
  return { mediaType: MediaType.DockerConfig, digest, size: member.size };
}

const DOCKER_LAYER_ZSTD = 'application/vnd.docker.image.rootfs.diff.tar.zstd';
const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** Hashes a layer file as stored; its first bytes decide the media type (docker save may hold gzip layers). */
async function describeLayer(tar: TarIndex, member: TarMember, blobs: Map<string, TarMember>, signal?: AbortSignal): Promise<Descriptor> {
  const hash = createHash('sha256');
  let head = Buffer.alloc(0);
  const stream = tar.stream(member);
  for await (const chunk of stream) {
    if (signal?.aborted) {
      stream.destroy();
      throw abortError(signal);
    }
    if (head.length < ZSTD_MAGIC.length) head = Buffer.concat([head, (chunk as Buffer).subarray(0, ZSTD_MAGIC.length)]);
    hash.update(chunk as Buffer);
  }
  const digest = `sha256:${hash.digest('hex')}`;
  blobs.set(digest, member);
  let mediaType: string = MediaType.DockerLayer;
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) mediaType = MediaType.DockerLayerGzip;
  // Docker schema 2 has no registered zstd type; BuildKit's is what containerd and regclient accept.
  else if (head.subarray(0, 4).equals(ZSTD_MAGIC)) mediaType = DOCKER_LAYER_ZSTD;
  return { mediaType, digest, size: member.size };
}

function archiveMember(tar: TarIndex, path: string, what: string): TarMember {
  const member = tar.lookup(path);
  if (!member) throw new PullUnpackError('NOT_FOUND', `${what}: ${tar.path} has no file "${path}" (named in manifest.json)`);
  return member;
}
