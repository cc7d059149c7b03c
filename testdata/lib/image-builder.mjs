/**
 * Builds container images in code and pushes them to a registry through the Docker Registry
 * v2 upload API (monolithic uploads). Plain JS so that tests (vitest) and scripts (node) share
 * it; types live in image-builder.d.mts. Everything is deterministic: fixed mtimes, the
 * caller's entry order, compact JSON.
 *
 * Registry URLs are loopback HTTP(S) like 'http://127.0.0.1:5000'; credentials in the URL
 * ('http://user:pass@127.0.0.1:5000') are sent as a Basic Authorization header.
 */
import { createHash } from 'node:crypto';
import { FIXED_MTIME, compressLayer, tarLayer } from './tar-builder.mjs';

export { FIXED_MTIME, compressLayer, entriesFromDirectory, tarDirectory, tarLayer } from './tar-builder.mjs';

export const MEDIA_TYPES = {
  oci: {
    index: 'application/vnd.oci.image.index.v1+json',
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: {
      none: 'application/vnd.oci.image.layer.v1.tar',
      gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
      zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
    },
  },
  docker: {
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: {
      none: 'application/vnd.docker.image.rootfs.diff.tar',
      gzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
      // Not a Docker type proper: BuildKit writes it for zstd layers in Docker-format images.
      zstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
    },
  },
};

export const IN_TOTO_MEDIA_TYPE = 'application/vnd.in-toto+json';

/** `sha256:<hex>` of `bytes`. */
export function sha256(bytes) {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

// ---------------------------------------------------------------------------------------------
// Registry HTTP

/** Splits credentials off a registry URL: the clean base URL and the headers to send. */
function endpoint(registryUrl) {
  const url = new URL(registryUrl);
  const headers = {};
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    headers.authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return { base: url.origin, headers };
}

async function request(registryUrl, method, path, { body, headers = {}, expect } = {}) {
  const { base, headers: auth } = endpoint(registryUrl);
  const url = path.startsWith('http://') || path.startsWith('https://') ? path : `${base}${path}`;
  const response = await fetch(url, { method, body, headers: { ...auth, ...headers }, redirect: 'manual' });
  if (expect && !expect.includes(response.status)) {
    const text = await response.text();
    throw new Error(`${method} ${url}: HTTP ${response.status} ${text.slice(0, 500)}`);
  }
  return response;
}

/** True when the registry already has the blob `digest` in `repo`. */
export async function hasBlob(registryUrl, repo, digest) {
  const response = await request(registryUrl, 'HEAD', `/v2/${repo}/blobs/${digest}`);
  return response.status === 200;
}

/** Uploads `bytes` as a blob of `repo` (skipped when present); returns its digest and size. */
export async function pushBlob(registryUrl, repo, bytes) {
  const data = Buffer.from(bytes);
  const digest = sha256(data);
  if (await hasBlob(registryUrl, repo, digest)) return { digest, size: data.length };
  const started = await request(registryUrl, 'POST', `/v2/${repo}/blobs/uploads/`, { expect: [202] });
  await started.arrayBuffer();
  const location = started.headers.get('location');
  if (!location) throw new Error(`POST /v2/${repo}/blobs/uploads/ gave no Location`);
  const { base } = endpoint(registryUrl);
  const upload = new URL(location, base);
  upload.searchParams.set('digest', digest);
  const done = await request(registryUrl, 'PUT', `${base}${upload.pathname}${upload.search}`, {
    body: data,
    headers: { 'content-type': 'application/octet-stream' },
    expect: [201],
  });
  await done.arrayBuffer();
  return { digest, size: data.length };
}

/**
 * PUTs a manifest or index (bytes as given, or an object as compact JSON) under `reference`
 * (a tag or its digest). Every blob and manifest it refers to must already be in `repo`.
 */
export async function pushManifest(registryUrl, repo, reference, jsonBytesOrObject, mediaType) {
  const isBytes = jsonBytesOrObject instanceof Uint8Array;
  const bytes = isBytes ? Buffer.from(jsonBytesOrObject) : Buffer.from(JSON.stringify(jsonBytesOrObject));
  const type = mediaType ?? (isBytes ? JSON.parse(bytes.toString()).mediaType : jsonBytesOrObject.mediaType);
  if (!type) throw new Error('pushManifest needs a media type');
  const digest = sha256(bytes);
  const response = await request(registryUrl, 'PUT', `/v2/${repo}/manifests/${reference ?? digest}`, {
    body: bytes,
    headers: { 'content-type': type },
    expect: [201],
  });
  await response.arrayBuffer();
  const served = response.headers.get('docker-content-digest');
  if (served && served !== digest) throw new Error(`registry stored manifest as ${served}, expected ${digest}`);
  return { mediaType: type, digest, size: bytes.length, bytes };
}

// ---------------------------------------------------------------------------------------------
// Images

/**
 * Pushes one image: its layers, its config and its manifest, tagged `tag` (or by digest only
 * when `tag` is null). Each layer is `{tar, compression}`, optionally with `blob` (bytes pushed
 * as they are), `mediaType` (declared instead of the one the compression implies), `diffId`
 * (recorded instead of sha256(tar)) and `annotations`. `config` is merged over defaults
 * (linux/amd64, FIXED_MTIME, rootfs from the layers); `format` is 'oci' (default) or 'docker'.
 */
export async function pushImage(registryUrl, repo, tag, { layers = [], config = {}, format = 'oci', annotations } = {}) {
  const types = MEDIA_TYPES[format];
  if (!types) throw new Error(`unknown format ${format}`);
  const layerDescriptors = [];
  const diffIds = [];
  for (const layer of layers) {
    const compression = layer.compression ?? 'gzip';
    const blob = layer.blob ?? (await compressLayer(layer.tar, compression));
    const { digest, size } = await pushBlob(registryUrl, repo, blob);
    const descriptor = { mediaType: layer.mediaType ?? types.layer[compression], digest, size };
    if (layer.annotations) descriptor.annotations = layer.annotations;
    layerDescriptors.push(descriptor);
    diffIds.push(layer.diffId ?? sha256(layer.tar));
  }
  const imageConfig = {
    created: FIXED_MTIME.toISOString(),
    architecture: 'amd64',
    os: 'linux',
    ...config,
    config: config.config ?? {},
    rootfs: config.rootfs ?? { type: 'layers', diff_ids: diffIds },
    history: config.history ?? layers.map(() => ({ created: FIXED_MTIME.toISOString(), created_by: 'image-builder' })),
  };
  const configBytes = Buffer.from(JSON.stringify(imageConfig));
  const configBlob = await pushBlob(registryUrl, repo, configBytes);
  const configDescriptor = { mediaType: types.config, ...configBlob };
  const manifest = { schemaVersion: 2, mediaType: types.manifest, config: configDescriptor, layers: layerDescriptors };
  if (annotations) manifest.annotations = annotations;
  const pushed = await pushManifest(registryUrl, repo, tag, manifest, types.manifest);
  return {
    descriptor: { mediaType: pushed.mediaType, digest: pushed.digest, size: pushed.size },
    manifest,
    manifestBytes: pushed.bytes,
    config: imageConfig,
    configBytes,
    configDescriptor,
    layers: layerDescriptors,
    diffIds,
  };
}

/**
 * Pushes an index ('oci') or a manifest list ('docker') of `entries` under `tag` (or by digest
 * when null). Each entry is `{descriptor, platform?, annotations?}`; the manifests must exist.
 */
export async function pushIndex(registryUrl, repo, tag, entries, format = 'oci', { annotations } = {}) {
  const types = MEDIA_TYPES[format];
  if (!types) throw new Error(`unknown format ${format}`);
  const manifests = entries.map(({ descriptor, platform, annotations: entryAnnotations }) => {
    const item = { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size };
    if (platform) item.platform = platform;
    if (entryAnnotations) item.annotations = entryAnnotations;
    return item;
  });
  const index = { schemaVersion: 2, mediaType: types.index, manifests };
  if (annotations) index.annotations = annotations;
  const pushed = await pushManifest(registryUrl, repo, tag, index, types.index);
  return { mediaType: pushed.mediaType, digest: pushed.digest, size: pushed.size, index, bytes: pushed.bytes };
}

/** 'linux/arm/v7' -> {os: 'linux', architecture: 'arm', variant: 'v7'}. */
export function parsePlatform(text) {
  const [os, architecture, variant] = text.split('/');
  if (!os || !architecture) throw new Error(`bad platform ${text}`);
  return variant ? { architecture, os, variant } : { architecture, os };
}

/**
 * Tar entries for `files` (an object path -> content, or an array of entries) plus
 * /platform.txt holding `platform`, with the parent directories, sorted by name.
 */
function platformEntries(files, platform) {
  const given = Array.isArray(files) ? files : Object.entries(files).map(([name, content]) => ({ name, type: 'file', content }));
  const byName = new Map();
  for (const entry of [...given, { name: 'platform.txt', type: 'file', content: `${platform}\n` }]) {
    const name = entry.name.replace(/^\/+/, '');
    const parts = name.replace(/\/+$/, '').split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = `${parts.slice(0, i).join('/')}/`;
      if (!byName.has(dir)) byName.set(dir, { name: dir, type: 'directory' });
    }
    byName.set(name, { ...entry, name });
  }
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Pushes one small image per platform (each with `files` and /platform.txt holding its
 * platform string) and an index of them under `tag`. With `attestation`, each image also gets
 * an attestation manifest the way docker buildx makes them (platform unknown/unknown,
 * vnd.docker.reference.* annotations, an in-toto layer).
 */
export async function pushMultiPlatform(registryUrl, repo, tag, platforms, options = {}) {
  const { format = 'oci', attestation = false, files = {}, compression = 'gzip', config = {} } = options;
  const images = [];
  const attestations = [];
  const entries = [];
  for (const text of platforms) {
    const platform = parsePlatform(text);
    const tar = await tarLayer(platformEntries(files, text));
    const image = await pushImage(registryUrl, repo, null, {
      layers: [{ tar, compression }],
      config: { ...platform, ...config, config: config.config ?? { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/bin/sh'] } },
      format,
    });
    images.push({ platform: text, ...image });
    entries.push({ descriptor: image.descriptor, platform });
  }
  if (attestation) {
    for (const image of images) {
      const pushed = await pushAttestation(registryUrl, repo, `${repo}:${tag}`, image.descriptor);
      attestations.push(pushed);
      entries.push({
        descriptor: pushed.descriptor,
        platform: { architecture: 'unknown', os: 'unknown' },
        annotations: {
          'vnd.docker.reference.digest': image.descriptor.digest,
          'vnd.docker.reference.type': 'attestation-manifest',
        },
      });
    }
  }
  const index = await pushIndex(registryUrl, repo, tag, entries, format);
  return { descriptor: { mediaType: index.mediaType, digest: index.digest, size: index.size }, index: index.index, images, attestations };
}

/** An OCI manifest holding an in-toto statement about `subject`, as buildx attaches. */
async function pushAttestation(registryUrl, repo, name, subject) {
  const statement = {
    _type: 'https://in-toto.io/Statement/v0.1',
    predicateType: 'https://slsa.dev/provenance/v0.2',
    subject: [{ name, digest: { sha256: subject.digest.slice('sha256:'.length) } }],
    predicate: { builder: { id: 'pull-unpack image-builder' } },
  };
  const bytes = Buffer.from(JSON.stringify(statement));
  const layer = await pushBlob(registryUrl, repo, bytes);
  const layerDescriptor = {
    mediaType: IN_TOTO_MEDIA_TYPE,
    ...layer,
    annotations: { 'in-toto.io/predicate-type': statement.predicateType },
  };
  const config = { architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [layer.digest] } };
  const configBlob = await pushBlob(registryUrl, repo, Buffer.from(JSON.stringify(config)));
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.oci.manifest,
    config: { mediaType: MEDIA_TYPES.oci.config, ...configBlob },
    layers: [layerDescriptor],
  };
  const pushed = await pushManifest(registryUrl, repo, null, manifest, MEDIA_TYPES.oci.manifest);
  return { descriptor: { mediaType: pushed.mediaType, digest: pushed.digest, size: pushed.size }, manifest, statement };
}
