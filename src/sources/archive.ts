/**
 * Images inside tar archives: the file access an OCI layout needs (`oci-archive:`, and the
 * OCI layout docker 25+ writes into `docker save` output), and an ImageSource for the legacy
 * `docker save` format, which has no manifests: one is synthesized from manifest.json.
 *
 * Legacy format (moby image/tarexport): manifest.json =
 *   [{ "Config": "<id>.json", "RepoTags": ["name:tag"], "Layers": ["<id>/layer.tar", ...] }]
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { abortError, PullUnpackError } from '../errors.js';
import type { LayoutFiles } from './layout.js';
import { MediaType, type Descriptor, type ImageManifest } from '../image/oci.js';
import { parseReference } from '../image/reference.js';
import { MAX_MANIFEST_BYTES, type FetchedManifest } from '../registry/client.js';
import { MAX_CONFIG_BYTES } from '../image/resolve.js';
import type { ImageSource } from './source.js';
import type { TarIndex, TarMember } from '../tar/archive-index.js';

/** LayoutFiles reading the members of an indexed tar (symlinks and hard links inside it are followed). */
export function tarFiles(tar: TarIndex): LayoutFiles {
  const member = (name: string, what: string): TarMember => {
    const found = tar.lookup(name);
    if (!found) throw new PullUnpackError('NOT_FOUND', `${what}: ${tar.path} has no file "${name}"`);
    return found;
  };
  return {
    async read(name, cap, what) {
      const m = member(name, what);
      if (m.size > cap) throw new PullUnpackError('TOO_LARGE', `${what} is ${m.size} bytes, over the ${cap}-byte limit`);
      return tar.read(m);
    },
    async open(name, what) {
      return tar.stream(member(name, what));
    },
    close: () => tar.close(),
  };
}

interface ArchiveImage {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

/**
 * An ImageSource for the image of a legacy `docker save` archive that `ref` (NAME[:TAG], Docker
 * normalization) names, or its only image. Reads each layer once to compute its digest; the
 * synthesized Docker schema 2 manifest is addressed by its own digest, which is `reference`.
 * NOT_FOUND listing the RepoTags when `ref` matches nothing or no `ref` is given for several images.
 */
export async function openDockerArchive(
  tar: TarIndex,
  name: string,
  ref: string | undefined,
  signal?: AbortSignal,
): Promise<{ source: ImageSource; reference: string }> {
  const images = await readArchiveManifest(tar, name);
  const image = selectImage(images, name, ref);
  const label = image.RepoTags[0] ? `${name}:${image.RepoTags[0]}` : name;
  const blobs = new Map<string, TarMember>();
  const config = describeConfig(tar, image.Config, label, blobs);
  const layers: Descriptor[] = [];
  for (const [i, path] of image.Layers.entries()) {
    layers.push(await describeLayer(tar, path, `layer ${i + 1} of ${label}`, blobs, signal));
  }
  const manifest: ImageManifest = { schemaVersion: 2, mediaType: MediaType.DockerManifest, config: await config, layers };
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

async function readArchiveManifest(tar: TarIndex, name: string): Promise<ArchiveImage[]> {
  const files = tarFiles(tar);
  let doc: unknown;
  try {
    doc = JSON.parse((await files.read('manifest.json', MAX_MANIFEST_BYTES, `${name} manifest.json`)).toString('utf8'));
  } catch (err) {
    if (err instanceof PullUnpackError && err.code === 'NOT_FOUND') {
      throw new PullUnpackError('NOT_FOUND', `${name} is not a docker save archive: it has neither manifest.json nor index.json`, {
        cause: err,
      });
    }
    if (err instanceof SyntaxError) throw new PullUnpackError('INVALID_MANIFEST', `${name}: manifest.json is not JSON`, { cause: err });
    throw err;
  }
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

async function describeConfig(tar: TarIndex, path: string, label: string, blobs: Map<string, TarMember>): Promise<Descriptor> {
  const member = archiveMember(tar, path, `the config of ${label}`);
  if (member.size > MAX_CONFIG_BYTES) {
    throw new PullUnpackError('TOO_LARGE', `the config of ${label} is ${member.size} bytes, over the ${MAX_CONFIG_BYTES}-byte limit`);
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
async function describeLayer(
  tar: TarIndex,
  path: string,
  what: string,
  blobs: Map<string, TarMember>,
  signal?: AbortSignal,
): Promise<Descriptor> {
  const member = archiveMember(tar, path, what);
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
