import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { createDecompressor, layerCompression } from '../src/layer/decompress.js';
import { VerifyingStream } from '../src/image/digest.js';
import { openLocalSource, type OpenedLocalSource } from '../src/sources/layout.js';
import { parseLocalReference } from '../src/image/local-reference.js';
import { MediaType, type Descriptor } from '../src/image/oci.js';
import { parsePlatform } from '../src/image/platform.js';
import { fetchConfig, resolveImage } from '../src/sources/resolve.js';
import { TarIndex } from '../src/tar/archive-index.js';

const run = promisify(execFile);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const amd64 = parsePlatform('linux/amd64');
const arm64 = parsePlatform('linux/arm64');

/** A tar with the given files, as tar-stream packs it. */
async function makeTar(files: Record<string, string | Buffer>): Promise<Buffer> {
  const p = pack();
  for (const [name, body] of Object.entries(files)) p.entry({ name, mode: 0o644, mtime: new Date(0) }, body);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

interface BuiltImage {
  manifest: Descriptor;
  config: Descriptor;
  layer: Descriptor;
  diffId: string;
}

/** Writes a one-layer image into the layout at `dir`; returns its descriptors. */
async function addImage(dir: string, arch: string, text: string): Promise<BuiltImage> {
  const put = async (bytes: Buffer, mediaType: string): Promise<Descriptor> => {
    const digest = sha256(bytes);
    await writeFile(join(dir, 'blobs/sha256', digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const tar = await makeTar({ 'hello.txt': text });
  const layer = await put(gzipSync(tar), MediaType.OciLayerGzip);
  const configJson = { architecture: arch, os: 'linux', config: { Cmd: ['/hello'] }, rootfs: { type: 'layers', diff_ids: [sha256(tar)] } };
  const config = await put(Buffer.from(JSON.stringify(configJson)), MediaType.OciConfig);
  const manifestJson = { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] };
  const manifest = await put(Buffer.from(JSON.stringify(manifestJson)), MediaType.OciManifest);
  return { manifest, config, layer, diffId: sha256(tar) };
}

async function writeIndex(dir: string, manifests: Descriptor[]): Promise<void> {
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }));
}

const tagged = (d: Descriptor, tag: string): Descriptor => ({ ...d, annotations: { 'org.opencontainers.image.ref.name': tag } });

async function newLayout(root: string, name: string): Promise<string> {
  const dir = join(root, name);
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  return dir;
}

async function readAll(stream: Readable, verify?: VerifyingStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  await (verify ? pipeline(stream, verify, sink) : pipeline(stream, sink));
  return Buffer.concat(chunks);
}

/** Resolves the source's image for `platform` and checks config and layers end to end, as a pull would. */
async function resolveAndVerify(
  opened: OpenedLocalSource,
  platform = amd64,
): Promise<{ text: string; config: Awaited<ReturnType<typeof fetchConfig>> }> {
  const { source, reference } = opened;
  const resolved = await resolveImage(source, reference, platform);
  const config = await fetchConfig(source, resolved.manifest);
  const texts: string[] = [];
  for (const [i, layer] of resolved.manifest.layers.entries()) {
    const tar = new VerifyingStream({ digest: config.config.rootfs.diff_ids[i]!, what: 'diffid', code: 'DIFFID_MISMATCH' });
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    });
    await pipeline(
      await source.fetchBlob(layer),
      new VerifyingStream({ digest: layer.digest, size: layer.size, what: `layer ${i}` }),
      createDecompressor(layerCompression(layer.mediaType), `layer ${i}`),
      tar,
      sink,
    );
    texts.push(
      Buffer.concat(chunks)
        .subarray(512, 512 + 64)
        .toString('utf8')
        .replace(/\0+$/, ''),
    );
  }
  return { text: texts.join('|'), config };
}

let root: string;
let multi: string; // v1 (amd64), v2 (amd64), multi (index: amd64 + arm64)
let single: string;
let images: { v1: BuiltImage; v2: BuiltImage; arm: BuiltImage };
let multiIndex: Descriptor;
const opened: OpenedLocalSource[] = [];
async function openRef(text: string): Promise<OpenedLocalSource> {
  const o = await openLocalSource(parseLocalReference(text)!);
  opened.push(o);
  return o;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'layout-source-'));
  multi = await newLayout(root, 'multi');
  const v1 = await addImage(multi, 'amd64', 'one');
  const v2 = await addImage(multi, 'amd64', 'two');
  const arm = await addImage(multi, 'arm64', 'arm');
  const indexBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [
        { ...v1.manifest, platform: { os: 'linux', architecture: 'amd64' } },
        { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64' } },
      ],
    }),
  );
  multiIndex = { mediaType: MediaType.OciIndex, digest: sha256(indexBytes), size: indexBytes.length };
  await writeFile(join(multi, 'blobs/sha256', multiIndex.digest.slice(7)), indexBytes);
  await writeIndex(multi, [tagged(v1.manifest, 'v1'), tagged(v2.manifest, 'v2'), tagged(multiIndex, 'multi')]);
  images = { v1, v2, arm };
  single = await newLayout(root, 'single');
  const only = await addImage(single, 'amd64', 'single');
  await writeIndex(single, [only.manifest]);
});

afterAll(async () => {
  for (const o of opened) await o.close();
  await rm(root, { recursive: true, force: true });
});

describe('parseLocalReference', () => {
  it.each([
    ['oci:/tmp/x', { transport: 'oci', path: '/tmp/x' }],
    ['oci:/tmp/x:v1', { transport: 'oci', path: '/tmp/x', tag: 'v1' }],
    ['oci:dir:docker.io/library/alpine:3.19', { transport: 'oci', path: 'dir', tag: 'docker.io/library/alpine:3.19' }],
    [`oci:/a@b@sha256:${'a'.repeat(64)}`, { transport: 'oci', path: '/a@b', digest: `sha256:${'a'.repeat(64)}` }],
    ['oci-archive:img.tar:latest', { transport: 'oci-archive', path: 'img.tar', tag: 'latest' }],
    ['docker-archive:img.tar', { transport: 'docker-archive', path: 'img.tar' }],
    ['docker-archive:img.tar:alpine:3.19', { transport: 'docker-archive', path: 'img.tar', tag: 'alpine:3.19' }],
  ])('parses %s', (text, want) => {
    const ref = parseLocalReference(text)!;
    expect({ ...ref, toString: undefined }).toEqual({ ...want, toString: undefined });
    expect(String(ref)).toBe(text);
  });

  it('leaves other references alone', () => {
    expect(parseLocalReference('alpine:3.19')).toBeUndefined();
    expect(parseLocalReference('docker.io/library/oci:1')).toBeUndefined();
    expect(parseLocalReference('ocifoo:bar')).toBeUndefined();
  });

  it.each([
    'oci:',
    'oci::v1',
    'oci:/x:',
    'oci:/x:bad tag',
    'oci:/x@sha256:abc',
    `oci:/x:v1@sha256:${'a'.repeat(64)}`,
    'docker-archive:f.tar:Not_Valid',
    `docker-archive:f.tar:alpine@sha256:${'a'.repeat(64)}`,
  ])('refuses %s with INVALID_REFERENCE', (text) => {
    expect(() => parseLocalReference(text)).toThrow(expect.objectContaining({ code: 'INVALID_REFERENCE' }));
  });
});

describe('oci: layout directory', () => {
  it('opens by tag and plugs into resolveImage/fetchConfig', async () => {
    const o = await openRef(`oci:${multi}:v1`);
    expect(o.reference).toBe('v1');
    const got = await o.source.getManifest('v1');
    expect(got.digest).toBe(images.v1.manifest.digest);
    expect(got.contentType).toBe(MediaType.OciManifest);
    const { text, config } = await resolveAndVerify(o);
    expect(text).toBe('one');
    expect(config.config.config?.Cmd).toEqual(['/hello']);
  });

  it('opens by digest', async () => {
    const o = await openRef(`oci:${multi}@${images.v2.manifest.digest}`);
    expect(o.reference).toBe(images.v2.manifest.digest);
    expect((await resolveAndVerify(o)).text).toBe('two');
  });

  it('follows a tagged index to the wanted platform', async () => {
    const o = await openRef(`oci:${multi}:multi`);
    expect((await resolveAndVerify(o, arm64)).text).toBe('arm');
    expect((await resolveAndVerify(o, amd64)).text).toBe('one');
    // A digest nested in the index but not in index.json is also served.
    expect((await o.source.getManifest(images.arm.manifest.digest)).digest).toBe(images.arm.manifest.digest);
  });

  it('takes the only entry when no tag is given', async () => {
    const o = await openRef(`oci:${single}`);
    expect(o.reference).toMatch(/^sha256:/);
    expect((await resolveAndVerify(o)).text).toBe('single');
  });

  it('lists what it holds when no tag is given and there are several', async () => {
    const err = await openLocalSource(parseLocalReference(`oci:${multi}`)!).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOT_FOUND' });
    const { message, hint } = err as { message: string; hint: string };
    expect(message).toContain('3 images');
    for (const d of [images.v1.manifest, images.v2.manifest, multiIndex]) expect(message).toContain(d.digest);
    expect(message).toMatch(/v1 \(sha256:.*v2 \(sha256:.*multi \(sha256:/);
    expect(hint).toContain(`oci:${multi}:TAG`);
    expect(hint).toContain(`oci:${multi}@sha256:`);
  });

  it('refuses a missing tag, naming the tags it has', async () => {
    const err = await openLocalSource(parseLocalReference(`oci:${multi}:nope`)!).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('"nope"') });
    expect((err as Error).message).toContain('"v1", "v2", "multi"');
  });

  it('refuses a digest the layout does not hold', async () => {
    const ref = parseLocalReference(`oci:${multi}@sha256:${'0'.repeat(64)}`)!;
    await expect(openLocalSource(ref)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('refuses a directory that is not a layout, and a missing one', async () => {
    const empty = await newLayout(root, 'not-a-layout');
    await expect(openLocalSource(parseLocalReference(`oci:${empty}`)!)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining('oci-layout'),
    });
    await expect(openLocalSource(parseLocalReference(`oci:${root}/missing`)!)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('matches full-reference ref names by Docker normalization', async () => {
    const dir = await newLayout(root, 'fullref');
    const img = await addImage(dir, 'amd64', 'full');
    await writeIndex(dir, [tagged(img.manifest, 'docker.io/library/alpine:3.19')]);
    for (const tag of ['alpine:3.19', 'docker.io/library/alpine:3.19', '3.19']) {
      expect((await openRef(`oci:${dir}:${tag}`)).reference).toBe(tag);
      expect((await (await openRef(`oci:${dir}:${tag}`)).source.getManifest(tag)).digest).toBe(img.manifest.digest);
    }
    await expect(openLocalSource(parseLocalReference(`oci:${dir}:alpine`)!)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('tampering and unsafe files', () => {
  let dir: string;
  let img: BuiltImage;
  beforeAll(async () => {
    dir = await newLayout(root, 'tamper');
    img = await addImage(dir, 'amd64', 'good');
    await writeIndex(dir, [tagged(img.manifest, 'v1')]);
  });

  it('serves a tampered layer raw, and VerifyingStream refuses it', async () => {
    const path = join(dir, 'blobs/sha256', img.layer.digest.slice(7));
    const bytes = await readFile(path);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    await writeFile(path, bytes);
    const o = await openRef(`oci:${dir}:v1`);
    const stream = await o.source.fetchBlob(img.layer);
    const verify = new VerifyingStream({ digest: img.layer.digest, size: img.layer.size, what: 'layer' });
    await expect(readAll(stream, verify)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });

  it('refuses a tampered manifest by digest and by tag', async () => {
    const o = await openRef(`oci:${dir}:v1`);
    const path = join(dir, 'blobs/sha256', img.manifest.digest.slice(7));
    const bytes = await readFile(path);
    await writeFile(path, Buffer.from(bytes.toString('utf8').replace('"schemaVersion":2', '"schemaVersion":2 ')));
    await expect(o.source.getManifest(img.manifest.digest)).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
    const sameSize = Buffer.from(bytes.toString('utf8').replace('"schemaVersion":2', '"schemaVersion":3'));
    await writeFile(path, sameSize);
    await expect(o.source.getManifest(img.manifest.digest)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    await expect(o.source.getManifest('v1')).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    await writeFile(path, bytes);
  });

  it('refuses a blob that is a symlink, even to the right content', async () => {
    const path = join(dir, 'blobs/sha256', img.config.digest.slice(7));
    const outside = join(root, 'outside-config');
    await writeFile(outside, await readFile(path));
    await unlink(path);
    await symlink(outside, path);
    const o = await openRef(`oci:${dir}:v1`);
    await expect(o.source.fetchBlob(img.config)).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });
});

describe('oci-archive:', () => {
  it('reads a tar of the layout made with tar -cf (./ names)', async () => {
    const file = join(root, 'multi.tar');
    await run('tar', ['-cf', file, '-C', multi, '.']);
    const o = await openRef(`oci-archive:${file}:v2`);
    expect((await resolveAndVerify(o)).text).toBe('two');
    await expect(openLocalSource(parseLocalReference(`oci-archive:${file}`)!)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const closing = await openLocalSource(parseLocalReference(`oci-archive:${file}:v1`)!);
    await closing.close();
    await closing.close();
    await expect(closing.source.getManifest('v1')).rejects.toThrow();
    const aborted = AbortSignal.abort();
    await expect(openLocalSource(parseLocalReference(`oci-archive:${file}`)!, { signal: aborted })).rejects.toMatchObject({
      code: 'ABORTED',
    });
  });

  it('reads an archive written by skopeo copy', async () => {
    const file = join(root, 'skopeo-oci.tar');
    await run('skopeo', ['--insecure-policy', 'copy', `oci:${multi}:v1`, `oci-archive:${file}:mytag`]);
    const o = await openRef(`oci-archive:${file}:mytag`);
    expect((await resolveAndVerify(o)).text).toBe('one');
    const noTag = await openRef(`oci-archive:${file}`);
    expect((await resolveAndVerify(noTag)).text).toBe('one');
  });

  it('refuses a compressed archive with a hint', async () => {
    const file = join(root, 'multi.tar.gz');
    await writeFile(file, gzipSync(await readFile(join(root, 'multi.tar'))));
    await expect(openLocalSource(parseLocalReference(`oci-archive:${file}`)!)).rejects.toMatchObject({
      code: 'UNSUPPORTED_MEDIA_TYPE',
      hint: expect.stringContaining('gunzip'),
    });
  });
});

describe('docker-archive:', () => {
  it('reads the legacy docker save form written by skopeo', async () => {
    const file = join(root, 'skopeo-docker.tar');
    await run('skopeo', ['--insecure-policy', 'copy', `oci:${multi}:v2`, `docker-archive:${file}:example.com/app:v2`]);
    const tar = await TarIndex.open(file);
    expect(tar.names()).toContain('manifest.json');
    expect(tar.names()).not.toContain('index.json');
    await tar.close();
    for (const ref of ['', ':example.com/app:v2']) {
      const o = await openRef(`docker-archive:${file}${ref}`);
      const resolved = await resolveImage(o.source, o.reference, amd64);
      expect(resolved.manifest.mediaType).toBe(MediaType.DockerManifest);
      expect(resolved.manifestDescriptor.digest).toBe(o.reference);
      expect((await resolveAndVerify(o)).text).toBe('two');
    }
    await expect(openLocalSource(parseLocalReference(`docker-archive:${file}:example.com/app:v9`)!)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining('example.com/app:v2'),
    });
  });

  describe('a hand-made archive with two images', () => {
    let file: string;
    beforeAll(async () => {
      const layerA = await makeTar({ 'hello.txt': 'alpha' });
      const layerB = gzipSync(await makeTar({ 'hello.txt': 'beta' }));
      const configFor = (diffIds: string[]): string =>
        JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } });
      const manifest = [
        { Config: 'a.json', RepoTags: ['alpine:latest'], Layers: ['aaa/layer.tar'] },
        // The second image shares layer A through a symlink, as docker save writes duplicates.
        { Config: 'b.json', RepoTags: ['example.com/team/b:1'], Layers: ['bbb/layer.tar', 'bbb/layer-b.tar'] },
      ];
      const p = pack();
      p.entry({ name: 'manifest.json' }, JSON.stringify(manifest));
      p.entry({ name: 'a.json' }, configFor([sha256(layerA)]));
      p.entry({ name: 'b.json' }, configFor([sha256(layerA), sha256(await makeTar({ 'hello.txt': 'beta' }))]));
      p.entry({ name: 'aaa/layer.tar' }, layerA);
      p.entry({ name: 'bbb/layer.tar', type: 'symlink', linkname: '../aaa/layer.tar' });
      p.entry({ name: 'bbb/layer-b.tar' }, layerB);
      p.finalize();
      const chunks: Buffer[] = [];
      for await (const c of p) chunks.push(c as Buffer);
      file = join(root, 'two-images.tar');
      await writeFile(file, Buffer.concat(chunks));
    });

    it('selects by RepoTag with Docker normalization', async () => {
      for (const ref of ['alpine', 'docker.io/library/alpine:latest']) {
        const o = await openRef(`docker-archive:${file}:${ref}`);
        expect((await resolveAndVerify(o)).text).toBe('alpha');
      }
      const b = await openRef(`docker-archive:${file}:example.com/team/b:1`);
      const resolved = await resolveImage(b.source, b.reference, amd64);
      expect(resolved.manifest.layers.map((l) => l.mediaType)).toEqual([MediaType.DockerLayer, MediaType.DockerLayerGzip]);
      expect((await resolveAndVerify(b)).text).toBe('alpha|beta');
    });

    it('lists the RepoTags when no image or an unknown one is named', async () => {
      for (const ref of ['', ':busybox']) {
        const err = await openLocalSource(parseLocalReference(`docker-archive:${file}${ref}`)!).catch((e: unknown) => e);
        expect(err).toMatchObject({ code: 'NOT_FOUND' });
        expect((err as Error).message).toContain('alpine:latest');
        expect((err as Error).message).toContain('example.com/team/b:1');
      }
    });
  });

  it('prefers the OCI layout inside a docker 25+ archive', async () => {
    const dir = await newLayout(root, 'docker25');
    const img = await addImage(dir, 'amd64', 'modern');
    const other = await addImage(dir, 'amd64', 'other');
    const named = (d: Descriptor, name: string, tag: string): Descriptor => ({
      ...d,
      annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': tag },
    });
    await writeIndex(dir, [
      named(img.manifest, 'docker.io/library/modern:latest', 'latest'),
      named(other.manifest, 'docker.io/library/other:1', '1'),
    ]);
    await writeFile(
      join(dir, 'manifest.json'),
      JSON.stringify([{ Config: `blobs/sha256/${img.config.digest.slice(7)}`, RepoTags: ['modern:latest'], Layers: [] }]),
    );
    const file = join(root, 'docker25.tar');
    await run('tar', ['-cf', file, '-C', dir, '.']);
    const o = await openRef(`docker-archive:${file}:modern`);
    expect(o.source.name).toBe(`docker-archive:${file}`);
    expect((await resolveAndVerify(o)).text).toBe('modern');
    expect((await resolveAndVerify(await openRef(`docker-archive:${file}:other:1`))).text).toBe('other');
  });
});

describe('TarIndex', () => {
  it('finds GNU long names, pax names and hard links', async () => {
    const dir = join(root, 'longnames');
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}.txt`;
    await mkdir(join(dir, 'd'.repeat(120)), { recursive: true });
    await writeFile(join(dir, long), 'long name content');
    await run('ln', [join(dir, long), join(dir, 'hard')]);
    for (const format of ['gnu', 'pax']) {
      const file = join(root, `long-${format}.tar`);
      await run('tar', [`--format=${format}`, '-cf', file, '-C', dir, long, 'hard']);
      const tar = await TarIndex.open(file);
      try {
        for (const name of [long, `./${long}`, 'hard']) {
          const member = tar.lookup(name);
          expect(member, `${format} ${name}`).toBeDefined();
          expect((await tar.read(member!)).toString()).toBe('long name content');
          expect((await readAll(tar.stream(member!))).toString()).toBe('long name content');
        }
      } finally {
        await tar.close();
      }
    }
  });

  it('refuses a corrupt header and a truncated archive', async () => {
    const good = await makeTar({ 'a.txt': 'x'.repeat(1000) });
    const badSum = Buffer.from(good);
    badSum[10] = badSum[10]! ^ 1;
    await writeFile(join(root, 'badsum.tar'), badSum);
    await expect(TarIndex.open(join(root, 'badsum.tar'))).rejects.toMatchObject({ code: 'CORRUPT_LAYER' });
    await writeFile(join(root, 'short.tar'), good.subarray(0, 700));
    await expect(TarIndex.open(join(root, 'short.tar'))).rejects.toMatchObject({ code: 'CORRUPT_LAYER' });
  });

  it('keeps symlinks inside the archive', async () => {
    const p = pack();
    p.entry({ name: 'secret' }, 'inside');
    p.entry({ name: 'a/up', type: 'symlink', linkname: '../../../../secret' });
    p.entry({ name: 'a/abs', type: 'symlink', linkname: '/secret' });
    p.entry({ name: 'loop', type: 'symlink', linkname: 'loop' });
    p.finalize();
    const chunks: Buffer[] = [];
    for await (const c of p) chunks.push(c as Buffer);
    await writeFile(join(root, 'links.tar'), Buffer.concat(chunks));
    const tar = await TarIndex.open(join(root, 'links.tar'));
    try {
      // '..' past the archive root stays at the root, like a chroot lookup.
      expect((await tar.read(tar.lookup('a/up')!)).toString()).toBe('inside');
      expect((await tar.read(tar.lookup('a/abs')!)).toString()).toBe('inside');
      expect(() => tar.lookup('loop')).toThrow(expect.objectContaining({ code: 'UNSAFE_PATH' }));
    } finally {
      await tar.close();
    }
  });
});
