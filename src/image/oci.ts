/**
 * OCI image-spec and Docker schema 2 types, media types, and checked parsing of manifests,
 * indexes and image configs. Parsing validates shape only; digests are checked by the caller.
 */
import { PullUnpackError } from '../errors.js';
import { parseDigest } from './digest.js';
import { parseJson } from './json.js';

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** The manifest media types we ask for, most preferred first. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest] as const;

/** The annotation docker buildx puts on attestation entries of an index. */
export const ATTESTATION_ANNOTATION = 'vnd.docker.reference.type';

/** The annotation naming an image layout's index entry, e.g. a tag (image-spec annotations.md). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
// Its grammar (annotations.md): a bare tag or a full reference such as 'docker.io/library/alpine:3.19'.
const REF_NAME_COMPONENT = '[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*';
const REF_NAME = new RegExp(`^${REF_NAME_COMPONENT}(?:/${REF_NAME_COMPONENT})*$`);

/** True when `text` may be the value of a ref.name annotation. */
export function isRefName(text: string): boolean {
  return REF_NAME.test(text);
}

/** The `imageLayoutVersion` of the layouts pull-unpack writes (image-layout.md). */
export const OCI_LAYOUT_VERSION = '1.0.0';

/** True for an `imageLayoutVersion` pull-unpack reads: 1.x (a later major version may change the layout). */
export function isReadableLayoutVersion(version: unknown): boolean {
  return typeof version === 'string' && /^1\./.test(version);
}

/** A manifest or index exactly as a source served it, with the digest computed locally. */
export interface FetchedManifest {
  bytes: Buffer;
  /** The Content-Type it was served with, without parameters; may be empty. */
  contentType: string;
  /** sha256 (or the requested algorithm) of `bytes`: the digest to report. */
  digest: string;
}

/** An image platform as in the image-spec index `platform` object. */
export interface Platform {
  architecture: string;
  os: string;
  variant?: string | undefined;
  'os.version'?: string | undefined;
  'os.features'?: string[] | undefined;
}

/** A content descriptor: the unit every stage hands to the next. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[] | undefined;
  annotations?: Record<string, string> | undefined;
  platform?: Platform | undefined;
  artifactType?: string | undefined;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string> | undefined;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  manifests: Descriptor[];
  annotations?: Record<string, string> | undefined;
}

/** The parts of the image config (OCI and Docker share them) that pull-unpack uses. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  created?: string;
  author?: string;
  config?: ImageRunConfig;
  rootfs: { type: string; diff_ids: string[] };
  history?: unknown[];
}

export interface ImageRunConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  [key: string]: unknown;
}

export type ParsedManifest =
  { kind: 'index'; mediaType: string; index: ImageIndex } | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList]);
const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);

/** True for media types that name an index or a manifest list. */
export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

/** True for media types that name a single-image manifest. */
function isManifestMediaType(mediaType: string): boolean {
  return MANIFEST_TYPES.has(mediaType);
}

/** True for a descriptor that an index marks as an attestation or an unknown platform. */
export function isAttestation(desc: Descriptor): boolean {
  if (desc.annotations?.[ATTESTATION_ANNOTATION] === 'attestation-manifest') return true;
  return desc.platform?.os === 'unknown' && desc.platform.architecture === 'unknown';
}

/**
 * Parses manifest bytes served with `contentType` (the HTTP header, may be empty).
 * The body's own `mediaType` wins over the header when both are present, as containerd does;
 * a manifest with neither is classified by its fields. `what` names the image in errors.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined, what: string): ParsedManifest {
  const header = (contentType ?? '').split(';')[0]!.trim();
  if (header === MediaType.DockerSchema1 || header === MediaType.DockerSchema1Signed) throw schema1Error(what);
  const doc = parseJsonObject(bytes, `manifest of ${what}`);
  if (doc['schemaVersion'] === 1) throw schema1Error(what);
  const bodyType = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : undefined;
  const mediaType = bodyType ?? (header && header !== 'application/json' ? header : guessMediaType(doc));
  if (doc['schemaVersion'] !== 2) {
    throw invalid(what, `schemaVersion is ${JSON.stringify(doc['schemaVersion'])}, expected 2`);
  }
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(doc['manifests'])) throw invalid(what, 'an index must have a "manifests" array');
    const manifests = doc['manifests'].map((d, i) => checkDescriptor(d, `${what} manifests[${i}]`));
    return { kind: 'index', mediaType, index: { ...(doc as object), mediaType, manifests } as ImageIndex };
  }
  if (isManifestMediaType(mediaType)) {
    const config = checkDescriptor(doc['config'], `${what} config`);
    if (!Array.isArray(doc['layers'])) throw invalid(what, 'a manifest must have a "layers" array');
    const layers = doc['layers'].map((d, i) => checkDescriptor(d, `${what} layers[${i}]`));
    return { kind: 'manifest', mediaType, manifest: { ...(doc as object), mediaType, config, layers } as ImageManifest };
  }
  throw new PullUnpackError('UNSUPPORTED_MEDIA_TYPE', `${what}: unsupported manifest media type "${mediaType}"`, {
    hint: 'pull-unpack understands OCI image indexes and manifests and Docker schema 2 manifests and manifest lists',
  });
}

/** Parses and checks an image config blob. */
export function parseImageConfig(bytes: Uint8Array, what: string): ImageConfig {
  const doc = parseJsonObject(bytes, `config of ${what}`, 'INVALID_CONFIG');
  const rootfs = doc['rootfs'] as { type?: unknown; diff_ids?: unknown } | undefined;
  if (!rootfs || typeof rootfs !== 'object' || !Array.isArray(rootfs.diff_ids)) {
    throw new PullUnpackError('INVALID_CONFIG', `config of ${what} has no rootfs.diff_ids`);
  }
  for (const id of rootfs.diff_ids) {
    if (typeof id !== 'string') throw new PullUnpackError('INVALID_CONFIG', `config of ${what}: a DiffID is not a string`);
    parseDigest(id);
  }
  const config = doc['config'];
  if (config !== undefined && config !== null && (typeof config !== 'object' || Array.isArray(config))) {
    throw new PullUnpackError('INVALID_CONFIG', `config of ${what}: "config" is not an object`);
  }
  return doc as unknown as ImageConfig;
}

function guessMediaType(doc: Record<string, unknown>): string {
  if (Array.isArray(doc['manifests'])) return MediaType.OciIndex;
  if (doc['config'] && Array.isArray(doc['layers'])) return MediaType.OciManifest;
  return 'unknown';
}

function checkDescriptor(value: unknown, where: string): Descriptor {
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new PullUnpackError('INVALID_MANIFEST', `${where} is not a descriptor object`);
  }
  const d = value as Record<string, unknown>;
  if (typeof d['mediaType'] !== 'string' || d['mediaType'] === '') {
    throw new PullUnpackError('INVALID_MANIFEST', `${where} has no mediaType`);
  }
  if (typeof d['digest'] !== 'string') throw new PullUnpackError('INVALID_MANIFEST', `${where} has no digest`);
  parseDigest(d['digest']);
  if (typeof d['size'] !== 'number' || !Number.isSafeInteger(d['size']) || d['size'] < 0) {
    throw new PullUnpackError('INVALID_MANIFEST', `${where} has no valid size`);
  }
  if (d['urls'] !== undefined && !(Array.isArray(d['urls']) && d['urls'].every((u) => typeof u === 'string'))) {
    throw new PullUnpackError('INVALID_MANIFEST', `${where} has invalid urls`);
  }
  const platform = d['platform'];
  if (platform !== undefined) {
    const p = platform as Record<string, unknown>;
    if (!p || typeof p !== 'object' || typeof p['os'] !== 'string' || typeof p['architecture'] !== 'string') {
      throw new PullUnpackError('INVALID_MANIFEST', `${where} has an invalid platform`);
    }
    const optionalString = (key: string): boolean => p[key] === undefined || typeof p[key] === 'string';
    const features = p['os.features'];
    if (
      !optionalString('variant') ||
      !optionalString('os.version') ||
      !(features === undefined || (Array.isArray(features) && features.every((f) => typeof f === 'string')))
    ) {
      throw new PullUnpackError('INVALID_MANIFEST', `${where} has an invalid platform (variant, os.version or os.features)`);
    }
  }
  return d as unknown as Descriptor;
}

function parseJsonObject(
  bytes: Uint8Array,
  what: string,
  code: 'INVALID_MANIFEST' | 'INVALID_CONFIG' = 'INVALID_MANIFEST',
): Record<string, unknown> {
  if (/^\s*</.test(Buffer.from(bytes.subarray(0, 40)).toString('utf8'))) {
    throw new PullUnpackError(code, `${what} is not JSON (the server answered HTML)`, {
      hint: 'is this address a registry? A proxy or login page may be answering instead',
    });
  }
  const doc = parseJson(bytes, what, { code });
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new PullUnpackError(code, `${what} is not a JSON object`);
  }
  return doc as Record<string, unknown>;
}

function schema1Error(what: string): PullUnpackError {
  return new PullUnpackError('UNSUPPORTED_SCHEMA1', `${what} uses the unsupported legacy schema 1 manifest format`, {
    hint: 'schema 1 was deprecated in 2017; push the image again with a current tool (docker, buildah, skopeo)',
  });
}

function invalid(what: string, why: string): PullUnpackError {
  return new PullUnpackError('INVALID_MANIFEST', `manifest of ${what} is invalid: ${why}`);
}
