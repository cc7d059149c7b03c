import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import tarStream from 'tar-stream';
import { createDecompressor, layerCompression } from '../src/layer/decompress.js';
import {
  FIXED_MTIME,
  IN_TOTO_MEDIA_TYPE,
  MEDIA_TYPES,
  compressLayer,
  pushBlob,
  pushImage,
  pushIndex,
  pushMultiPlatform,
  sha256,
  tarDirectory,
  tarLayer,
  type Descriptor,
} from '../testdata/lib/image-builder.mjs';
import { freePort, isAlive, startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';

const HTPASSWD = new URL('../testdata/auth/htpasswd', import.meta.url).pathname;
const REGISTRY_CLI = new URL('../testdata/registry.mjs', import.meta.url).pathname;
const ACCEPT = [MEDIA_TYPES.oci.index, MEDIA_TYPES.oci.manifest, MEDIA_TYPES.docker.index, MEDIA_TYPES.docker.manifest].join(', ');

interface TarItem {
  name: string;
  type: string | null | undefined;
  mode: number | undefined;
  uid: number | undefined;
  mtime: Date | undefined;
  linkname: string | null | undefined;
  pax: Record<string, string> | undefined;
  content: string;
}

async function listTar(tar: Uint8Array): Promise<TarItem[]> {
  const items: TarItem[] = [];
  const extract = tarStream.extract();
  Readable.from([Buffer.from(tar)]).pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    const h = entry.header as tarStream.Header & { pax?: Record<string, string> };
    items.push({
      name: h.name,
      type: h.type,
      mode: h.mode,
      uid: h.uid,
      mtime: h.mtime,
      linkname: h.linkname,
      pax: h.pax,
      content: Buffer.concat(chunks).toString(),
    });
  }
  return items;
}

async function getManifest(url: string, repo: string, ref: string): Promise<{ bytes: Buffer; type: string | null; digest: string | null }> {
  const response = await fetch(`${url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
  expect(response.status, `GET manifest ${repo}:${ref}`).toBe(200);
  return {
    bytes: Buffer.from(await response.arrayBuffer()),
    type: response.headers.get('content-type'),
    digest: response.headers.get('docker-content-digest'),
  };
}

async function getBlob(url: string, repo: string, digest: string): Promise<Buffer> {
  const response = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
  expect(response.status, `GET blob ${digest}`).toBe(200);
  const bytes = Buffer.from(await response.arrayBuffer());
  expect(sha256(bytes)).toBe(digest);
  return bytes;
}

/** Runs a layer blob through the project's own decompressor, as a pull would. */
async function decompressBlob(blob: Buffer, mediaType: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of Readable.from([blob]).pipe(createDecompressor(layerCompression(mediaType), 'test layer'))) {
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function expectManifestServed(url: string, repo: string, ref: string, descriptor: Descriptor): Promise<Buffer> {
  const got = await getManifest(url, repo, ref);
  expect(got.type).toBe(descriptor.mediaType);
  expect(got.digest).toBe(descriptor.digest);
  expect(sha256(got.bytes)).toBe(descriptor.digest);
  expect(got.bytes.length).toBe(descriptor.size);
  return got.bytes;
}

describe('tar and compression helpers', () => {
  it('tarLayer writes every entry type with fixed defaults, in the given order', async () => {
    const tar = await tarLayer([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/shadow', content: 'root:*:1::::::\n', mode: 0 },
      { name: 'bin/sh', content: Buffer.from('#!'), mode: 0o4755, uid: 1000, gid: 1000 },
      { name: 'sh-link', type: 'symlink', linkname: 'bin/sh' },
      { name: 'sh-hard', type: 'link', linkname: 'bin/sh' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
      { name: 'pipe', type: 'fifo' },
      { name: 'xattr', content: 'x', pax: { 'SCHILY.xattr.user.k': 'v' }, mtime: 1_000_000 },
    ]);
    const items = await listTar(tar);
    expect(items.map((i) => [i.name, i.type])).toEqual([
      ['etc/', 'directory'],
      ['etc/shadow', 'file'],
      ['bin/sh', 'file'],
      ['sh-link', 'symlink'],
      ['sh-hard', 'link'],
      ['dev/null', 'character-device'],
      ['dev/sda', 'block-device'],
      ['pipe', 'fifo'],
      ['xattr', 'file'],
    ]);
    expect(items[0]!.mode).toBe(0o755);
    expect(items[1]!.mode).toBe(0);
    expect(items[2]!.mode).toBe(0o4755);
    expect(items[2]!.uid).toBe(1000);
    expect(items[3]!.linkname).toBe('bin/sh');
    expect(items[1]!.content).toBe('root:*:1::::::\n');
    expect(items[1]!.mtime).toEqual(FIXED_MTIME);
    expect(items[8]!.mtime).toEqual(new Date(1_000_000_000));
    expect(items[8]!.pax?.['SCHILY.xattr.user.k']).toBe('v');
    expect((await tarLayer([{ name: 'a', content: 'b' }])).equals(await tarLayer([{ name: 'a', content: 'b' }]))).toBe(true);
  });

  it('tarDirectory packs a real tree sorted, with fixed mtimes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'image-builder-'));
    try {
      await mkdir(join(dir, 'b/c'), { recursive: true });
      await writeFile(join(dir, 'b/c/file'), 'deep');
      await writeFile(join(dir, 'a.txt'), 'first');
      await symlink('a.txt', join(dir, 'link'));
      const items = await listTar(await tarDirectory(dir));
      expect(items.map((i) => i.name)).toEqual(['./', './a.txt', './b/', './b/c/', './b/c/file', './link']);
      expect(items.every((i) => i.mtime?.getTime() === FIXED_MTIME.getTime())).toBe(true);
      expect(items.find((i) => i.name === './link')?.linkname).toBe('a.txt');
      expect(items.find((i) => i.name === './b/c/file')?.content).toBe('deep');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('compressLayer makes gzip, zstd and plain blobs that decompress back', async () => {
    const tar = await tarLayer([{ name: 'x', content: 'y'.repeat(10_000) }]);
    const gz = await compressLayer(tar, 'gzip');
    const zst = await compressLayer(tar, 'zstd');
    expect(gz.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(zst.subarray(0, 4)).toEqual(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    expect(zlib.gunzipSync(gz).equals(tar)).toBe(true);
    expect((await decompressBlob(zst, MEDIA_TYPES.oci.layer.zstd)).equals(tar)).toBe(true);
    expect((await compressLayer(tar, 'none')).equals(tar)).toBe(true);
  });
});

describe('pushing to a real registry', () => {
  let registry: RunningRegistry;

  beforeAll(async () => {
    registry = await startRegistry();
  });

  afterAll(async () => {
    await registry?.stop();
  });

  it('serves the registry API on loopback', async () => {
    expect(registry.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(registry.host).toBe(registry.url.slice('http://'.length));
    const response = await fetch(`${registry.url}/v2/`);
    expect(response.status).toBe(200);
  });

  it('pushes a single OCI image with gzip, zstd and uncompressed layers', async () => {
    const tars = [
      await tarLayer([
        { name: 'etc/', type: 'directory' },
        { name: 'etc/os-release', content: 'NAME=one\n' },
      ]),
      await tarLayer([{ name: 'two.txt', content: 'two' }]),
      await tarLayer([{ name: 'three.txt', content: 'three' }]),
    ];
    const image = await pushImage(registry.url, 'single/oci', 'v1', {
      layers: [
        { tar: tars[0]!, compression: 'gzip' },
        { tar: tars[1]!, compression: 'zstd' },
        { tar: tars[2]!, compression: 'none' },
      ],
      config: { config: { Env: ['A=1'], Cmd: ['/bin/true'] } },
    });
    expect(image.descriptor.mediaType).toBe(MEDIA_TYPES.oci.manifest);
    const bytes = await expectManifestServed(registry.url, 'single/oci', 'v1', image.descriptor);
    const manifest = JSON.parse(bytes.toString());
    expect(manifest.layers.map((l: Descriptor) => l.mediaType)).toEqual([
      MEDIA_TYPES.oci.layer.gzip,
      MEDIA_TYPES.oci.layer.zstd,
      MEDIA_TYPES.oci.layer.none,
    ]);
    await expectManifestServed(registry.url, 'single/oci', image.descriptor.digest, image.descriptor);

    const config = JSON.parse((await getBlob(registry.url, 'single/oci', manifest.config.digest)).toString());
    expect(config).toMatchObject({ architecture: 'amd64', os: 'linux', config: { Env: ['A=1'], Cmd: ['/bin/true'] } });
    expect(config.rootfs.diff_ids).toEqual(tars.map((t) => sha256(t)));
    for (const [i, layer] of manifest.layers.entries()) {
      const blob = await getBlob(registry.url, 'single/oci', layer.digest);
      expect(blob.length).toBe(layer.size);
      expect((await decompressBlob(blob, layer.mediaType)).equals(tars[i]!)).toBe(true);
    }
  });

  it('lets a layer declare another media type or DiffID than its content has', async () => {
    const tar = await tarLayer([{ name: 'x', content: 'x' }]);
    const image = await pushImage(registry.url, 'single/odd', 'v1', {
      layers: [{ tar, compression: 'zstd', mediaType: MEDIA_TYPES.oci.layer.gzip, diffId: sha256(Buffer.from('other')) }],
    });
    expect(image.layers[0]!.mediaType).toBe(MEDIA_TYPES.oci.layer.gzip);
    const blob = await getBlob(registry.url, 'single/odd', image.layers[0]!.digest);
    expect(blob.subarray(0, 4)).toEqual(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    expect(image.config.rootfs.diff_ids).toEqual([sha256(Buffer.from('other'))]);
  });

  it('skips blobs the registry already has and returns the same digest', async () => {
    const bytes = Buffer.from('the same blob twice');
    const first = await pushBlob(registry.url, 'blobs/dup', bytes);
    const second = await pushBlob(registry.url, 'blobs/dup', bytes);
    expect(second).toEqual(first);
    expect(first).toEqual({ digest: sha256(bytes), size: bytes.length });
    await getBlob(registry.url, 'blobs/dup', first.digest);
  });

  it('pushes a Docker manifest list of Docker schema 2 images', async () => {
    const entries = [];
    for (const [architecture, variant] of [
      ['amd64', undefined],
      ['arm64', 'v8'],
    ] as const) {
      const tar = await tarLayer([{ name: 'arch', content: architecture }]);
      const image = await pushImage(registry.url, 'docker/list', null, {
        layers: [{ tar }],
        config: { architecture, ...(variant ? { variant } : {}) },
        format: 'docker',
      });
      expect(image.descriptor.mediaType).toBe(MEDIA_TYPES.docker.manifest);
      expect(image.configDescriptor.mediaType).toBe(MEDIA_TYPES.docker.config);
      expect(image.layers[0]!.mediaType).toBe(MEDIA_TYPES.docker.layer.gzip);
      entries.push({ descriptor: image.descriptor, platform: { architecture, os: 'linux', ...(variant ? { variant } : {}) } });
    }
    const list = await pushIndex(registry.url, 'docker/list', 'latest', entries, 'docker');
    expect(list.mediaType).toBe(MEDIA_TYPES.docker.index);
    const served = JSON.parse((await expectManifestServed(registry.url, 'docker/list', 'latest', list)).toString());
    expect(served.manifests.map((m: Descriptor) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ]);
    for (const entry of served.manifests) {
      await expectManifestServed(registry.url, 'docker/list', entry.digest, entry);
    }
  });

  it('pushes a multi-platform OCI index with buildx-style attestations', async () => {
    const platforms = ['linux/amd64', 'linux/arm64', 'linux/arm/v7'];
    const pushed = await pushMultiPlatform(registry.url, 'multi/app', 'latest', platforms, {
      attestation: true,
      files: { 'etc/os-release': 'NAME=multi\n', 'usr/share/doc/readme': 'hi' },
    });
    const index = JSON.parse((await expectManifestServed(registry.url, 'multi/app', 'latest', pushed.descriptor)).toString());
    expect(index.mediaType).toBe(MEDIA_TYPES.oci.index);
    expect(index.manifests).toHaveLength(6);
    const images = index.manifests.slice(0, 3);
    expect(images.map((m: Descriptor) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
      { architecture: 'arm', os: 'linux', variant: 'v7' },
    ]);
    for (const [i, entry] of images.entries()) {
      const manifest = JSON.parse((await expectManifestServed(registry.url, 'multi/app', entry.digest, entry)).toString());
      const config = JSON.parse((await getBlob(registry.url, 'multi/app', manifest.config.digest)).toString());
      expect(config.architecture).toBe(entry.platform.architecture);
      expect(config.variant).toBe(entry.platform.variant);
      const layer = manifest.layers[0];
      const items = await listTar(await decompressBlob(await getBlob(registry.url, 'multi/app', layer.digest), layer.mediaType));
      expect(items.map((item) => item.name)).toEqual([
        'etc/',
        'etc/os-release',
        'platform.txt',
        'usr/',
        'usr/share/',
        'usr/share/doc/',
        'usr/share/doc/readme',
      ]);
      expect(items.find((item) => item.name === 'platform.txt')?.content).toBe(`${platforms[i]}\n`);
    }
    const attestations = index.manifests.slice(3);
    for (const [i, entry] of attestations.entries()) {
      expect(entry.platform).toEqual({ architecture: 'unknown', os: 'unknown' });
      expect(entry.annotations).toEqual({
        'vnd.docker.reference.digest': images[i].digest,
        'vnd.docker.reference.type': 'attestation-manifest',
      });
      const manifest = JSON.parse((await expectManifestServed(registry.url, 'multi/app', entry.digest, entry)).toString());
      expect(manifest.layers[0].mediaType).toBe(IN_TOTO_MEDIA_TYPE);
      const statement = JSON.parse((await getBlob(registry.url, 'multi/app', manifest.layers[0].digest)).toString());
      expect(`sha256:${statement.subject[0].digest.sha256}`).toBe(images[i].digest);
      expect(() => layerCompression(manifest.layers[0].mediaType)).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_MEDIA_TYPE' }));
    }
    // Deterministic: the same input gives the same index digest.
    const again = await pushMultiPlatform(registry.url, 'multi/app', 'latest', platforms, {
      attestation: true,
      files: { 'etc/os-release': 'NAME=multi\n', 'usr/share/doc/readme': 'hi' },
    });
    expect(again.descriptor.digest).toBe(pushed.descriptor.digest);
  });
});

describe('registry server', () => {
  it('stops: the process is gone, the port closed and the directory removed', async () => {
    const registry = await startRegistry();
    expect(isAlive(registry.pid)).toBe(true);
    await pushBlob(registry.url, 'stop/me', Buffer.from('data'));
    await registry.stop();
    expect(isAlive(registry.pid)).toBe(false);
    expect(existsSync(registry.dir)).toBe(false);
    await expect(fetch(`${registry.url}/v2/`)).rejects.toThrow();
    await registry.stop();
  });

  it('fails with the registry log when its port is taken', async () => {
    const port = await freePort();
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    try {
      await expect(startRegistry({ port })).rejects.toThrow(/address already in use/);
    } finally {
      blocker.close();
    }
  });

  it('requires htpasswd credentials when asked to, and the builder sends them from the URL', async () => {
    const registry = await startRegistry({ htpasswd: HTPASSWD });
    try {
      const anonymous = await fetch(`${registry.url}/v2/`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic /);
      const tar = await tarLayer([{ name: 'secret', content: 's' }]);
      await expect(pushImage(registry.url, 'auth/app', 'v1', { layers: [{ tar }] })).rejects.toThrow(/401/);
      const withCredentials = registry.url.replace('http://', 'http://tester:pull-unpack-test-password@');
      const image = await pushImage(withCredentials, 'auth/app', 'v1', { layers: [{ tar }] });
      const basic = `Basic ${Buffer.from('tester:pull-unpack-test-password').toString('base64')}`;
      const response = await fetch(`${registry.url}/v2/auth/app/manifests/v1`, { headers: { accept: ACCEPT, authorization: basic } });
      expect(response.headers.get('docker-content-digest')).toBe(image.descriptor.digest);
    } finally {
      await registry.stop();
    }
  });

  it('runs as a pull-through cache of another registry', async () => {
    const upstream = await startRegistry();
    const cache = await startRegistry({ proxy: { remoteurl: upstream.url } });
    try {
      const image = await pushImage(upstream.url, 'library/cached', 'v1', {
        layers: [{ tar: await tarLayer([{ name: 'c', content: 'cached' }]) }],
        format: 'docker',
      });
      await expectManifestServed(cache.url, 'library/cached', 'v1', image.descriptor);
      await getBlob(cache.url, 'library/cached', image.layers[0]!.digest);
    } finally {
      await cache.stop();
      await upstream.stop();
    }
  });

  it('the CLI starts a detached registry and stops it', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'registry-cli-'));
    const run = promisify(execFile);
    try {
      const { stdout } = await run(process.execPath, [REGISTRY_CLI, 'start', '--state-dir', stateDir]);
      const host = stdout.trim();
      expect(host).toMatch(/^127\.0\.0\.1:\d+$/);
      expect((await readFile(join(stateDir, 'host'), 'utf8')).trim()).toBe(host);
      const pid = Number((await readFile(join(stateDir, 'pid'), 'utf8')).trim());
      expect(isAlive(pid)).toBe(true);
      expect((await fetch(`http://${host}/v2/`)).status).toBe(200);
      await run(process.execPath, [REGISTRY_CLI, 'stop', '--state-dir', stateDir]);
      expect(isAlive(pid)).toBe(false);
      expect(existsSync(join(stateDir, 'registry'))).toBe(false);
      expect(existsSync(join(stateDir, 'pid'))).toBe(false);
      await expect(fetch(`http://${host}/v2/`)).rejects.toThrow();
      // Stopping twice is fine.
      await run(process.execPath, [REGISTRY_CLI, 'stop', '--state-dir', stateDir]);
    } finally {
      await run(process.execPath, [REGISTRY_CLI, 'stop', '--state-dir', stateDir]).catch(() => undefined);
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
