import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { extract } from 'tar-stream';
import { openLocalSource } from '../src/sources/layout.js';
import { parseLocalReference } from '../src/image/local-reference.js';
import type { Descriptor } from '../src/image/oci.js';
import { writeOciLayout, type OciLayoutInput } from '../src/outputs/oci-layout.js';
import { writeTreeAsTar } from '../src/outputs/tar.js';
import { encodeHeader as encodeTarHeader } from '../src/tar/encode.js';
import { parsePlatform } from '../src/image/platform.js';
import { fetchConfig, resolveImage } from '../src/sources/resolve.js';
import {
  buildRichTree,
  buildTinyImage,
  BIG_GID,
  BIG_UID,
  CAP_NET_RAW_EP,
  LONG_BASENAME,
  type TinyImage,
} from './helpers/export-fixtures.js';
import { applyLayers, makeTmp, removeTmp, run, type TarEntrySpec } from './helpers/tar.js';
import { diffTrees, snapshotTree, type TreeEntry } from './helpers/tree.js';

let base: string;
let root: string;
let tarFile: string;
let result: { entries: number; bytes: number };
let warnings: string[];
let source: Map<string, TreeEntry>;

beforeAll(async () => {
  base = await makeTmp('pu-output-tar-');
  root = join(base, 'root');
  await mkdir(root);
  await buildRichTree(root);
  source = withoutRoot(await snapshotTree(root));
  tarFile = join(base, 'rootfs.tar');
  warnings = [];
  result = await writeTreeAsTar(root, createWriteStream(tarFile), { onWarning: (m) => warnings.push(m) });
});

afterAll(async () => {
  await removeTmp(base);
});

/** The walk's '.' entry: the tar has no member for the root itself. */
function withoutRoot(tree: Map<string, TreeEntry>): Map<string, TreeEntry> {
  tree.delete('.');
  return tree;
}

async function extractWithGnuTar(file: string): Promise<string> {
  const out = await mkdtemp(join(base, 'gnu-'));
  await run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', file, '-C', out]);
  return out;
}

/** Member names as GNU tar lists them, raw bytes shown as the tree snapshot shows them. */
function gnuTarNames(file: string): string[] {
  const listed = spawnSync('tar', ['--quoting-style=literal', '-tf', file], { encoding: 'buffer' });
  expect(listed.status).toBe(0);
  const lines = listed.stdout
    .toString('latin1')
    .split('\n')
    .filter((l) => l !== '');
  return lines.map((l) => {
    const bytes = Buffer.from(l, 'latin1');
    const text = bytes.toString('utf8');
    if (Buffer.from(text).equals(bytes)) return text;
    return [...bytes].map((b) => (b >= 0x80 ? `\\x${b.toString(16).padStart(2, '0')}` : String.fromCharCode(b))).join('');
  });
}

describe('writeTreeAsTar', () => {
  it('round-trips the whole tree through GNU tar: types, modes, owners, content, links, devices, xattrs, mtimes', async () => {
    const out = await extractWithGnuTar(tarFile);
    // The fixture holds what the comparison is about.
    expect(source.size).toBeGreaterThan(40);
    expect(source.get('owned')).toMatchObject({ uid: BIG_UID, gid: BIG_GID, mode: 0o640 });
    expect(source.get('bin/ping')?.xattrs['security.capability']).toBe(CAP_NET_RAW_EP.toString('base64'));
    expect(source.get('dev/big')).toMatchObject({ type: 'char-device', rdev: { major: 4095, minor: 1048575 } });
    expect(source.get('times/before-1970')?.mtimeNs).toBe('-86400250000000');
    expect(source.get('times/subsecond')?.mtimeNs).toBe('1600000000123456000');
    expect(source.get('names/latin1-\\xe9\\xff')?.type).toBe('file');
    expect(source.get('lib/hard-b')?.hardlinks).toEqual(['bin/hard-a', 'lib/hard-b', 'lib/hard-c']);
    expect(source.get('locked')?.mode).toBe(0);
    expect(diffTrees(source, withoutRoot(await snapshotTree(out)))).toEqual([]);
    expect(warnings).toEqual([]);
    expect(result.bytes).toBe((await stat(tarFile)).size);
    expect(result.entries).toBe(source.size);
  });

  it('keeps the binary security.capability value: getcap reads it from the extracted file', async () => {
    const out = await extractWithGnuTar(tarFile);
    const got = spawnSync('getfattr', ['--only-values', '-n', 'security.capability', join(out, 'bin/ping')], { encoding: 'buffer' });
    expect(got.stdout.equals(CAP_NET_RAW_EP)).toBe(true);
    expect(spawnSync('getcap', [join(out, 'bin/ping')], { encoding: 'utf8' }).stdout).toContain('cap_net_raw=ep');
  });

  it('writes members depth-first in byte order, relative, without ./ and without a root member', async () => {
    const names = gnuTarNames(tarFile);
    const expected = [...source].map(([path, e]) => (e.type === 'directory' ? `${path}/` : path));
    expect(names).toEqual(expected);
    expect(names.slice(0, 3)).toEqual(['bin/', 'bin/hard-a', 'bin/ping']);
    expect(names.some((n) => n.startsWith('./') || n.startsWith('/'))).toBe(false);
  });

  it('writes the first name of a hardlinked inode as a file and later names as links to it', async () => {
    const listing = spawnSync('tar', ['-tvf', tarFile], { encoding: 'utf8' }).stdout.split('\n');
    const line = (name: string): string => listing.find((l) => l.endsWith(` ${name}`) || l.includes(` ${name} link to `)) ?? '';
    expect(line('bin/hard-a')).toMatch(/^-rwxr-x--- 0\/0 +22 /);
    expect(line('lib/hard-b')).toMatch(/^hrwxr-x--- .* lib\/hard-b link to bin\/hard-a$/);
    expect(line('lib/hard-c')).toMatch(/ lib\/hard-c link to bin\/hard-a$/);
    // The first name is 190 bytes: the link member needs a PAX linkpath.
    expect(listing.find((l) => l.includes('lib/z-link-to-deep'))).toMatch(/ link to deep\/a{60}\/b{60}\/linked-target$/);
  });

  it('is readable by the layer applier: the tar is a valid single layer', async () => {
    const applied = await applyLayers([await readFile(tarFile)], { isRoot: true });
    try {
      expect(applied.warnings).toEqual([]);
      const back = withoutRoot(await snapshotTree(applied.root));
      // The applier passes times to Node's utimes, which turns a time before 1970 into "now";
      // GNU tar (above) shows the archive holds the right one.
      const diffs = diffTrees(source, back);
      expect(diffs.filter((d) => !d.startsWith('times/before-1970: mtime '))).toEqual([]);
    } finally {
      await removeTmp(applied.base);
    }
  });

  it('writes the same bytes for the same tree', async () => {
    const again = await collect((out) => writeTreeAsTar(root, out));
    expect(again.data.equals(await readFile(tarFile))).toBe(true);
  });

  it('skips sockets with a warning', async () => {
    const dir = await mkdtemp(join(base, 'sock-'));
    await writeFile(join(dir, 'a'), 'a');
    const made = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(join(dir, 'sock'))}, () => process.exit(0))`,
    ]);
    expect(made.status).toBe(0);
    expect((await stat(join(dir, 'sock'))).isSocket()).toBe(true);
    const seen: string[] = [];
    const { data, result: r } = await collect((out) => writeTreeAsTar(dir, out, { onWarning: (m) => seen.push(m) }));
    expect(r.entries).toBe(1);
    expect(seen).toEqual(['socket not archived: sock']);
    expect(await tarNames(data)).toEqual(['a']);
  });

  it('streams file bodies with backpressure, never holding a whole file', async () => {
    const dir = await mkdtemp(join(base, 'big-'));
    const big = createHash('sha256');
    const chunk = Buffer.alloc(1 << 20, 7);
    const size = 48 * (1 << 20);
    const file = createWriteStream(join(dir, 'big'));
    for (let i = 0; i < 48; i++) {
      file.write(chunk);
      big.update(chunk);
    }
    await new Promise((resolve) => file.end(resolve));
    // Whole seconds: a sub-second mtime would add a PAX header.
    await utimes(join(dir, 'big'), 1600000000, 1600000000);
    let maxBuffered = 0;
    let received = 0;
    const hash = createHash('sha256');
    const slow = new Writable({
      highWaterMark: 64 * 1024,
      write(data: Buffer, _enc, cb) {
        // The file body is bytes [512, 512 + size): after its header, before padding and the end blocks.
        const start = received;
        received += data.length;
        hash.update(data.subarray(Math.max(0, 512 - start), Math.max(0, 512 + size - start)));
        maxBuffered = Math.max(maxBuffered, slow.writableLength);
        setImmediate(cb);
      },
    });
    const r = await writeTreeAsTar(dir, slow);
    expect(r.bytes).toBe(received);
    expect(received).toBe(512 + size + 1024);
    expect(maxBuffered).toBeLessThan(1 << 20);
    expect(hash.digest('hex')).toBe(big.digest('hex'));
    expect(slow.writableFinished).toBe(true);
  });

  it('rejects with ABORTED when the signal fires mid-stream, and at once when already aborted', async () => {
    const controller = new AbortController();
    let received = 0;
    const out = new Writable({
      write(data: Buffer, _enc, cb) {
        received += data.length;
        if (received > 4096) controller.abort(new Error('stop'));
        setTimeout(cb, 1);
      },
    });
    await expect(writeTreeAsTar(root, out, { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORTED' });
    expect(received).toBeLessThan(result.bytes);
    const pre = new PassThrough();
    await expect(writeTreeAsTar(root, pre, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORTED' });
    expect(pre.readableLength).toBe(0);
  });
});

describe('encodeTarHeader', () => {
  it('writes sizes above 8 GiB as PAX size plus a base-256 field that GNU tar and tar-stream read', async () => {
    const size = 9 * 1024 ** 3 + 5;
    const header = encodeTarHeader({
      name: Buffer.from('huge.img'),
      type: 'file',
      mode: 0o600,
      uid: BIG_UID,
      gid: 0,
      size,
      mtimeNs: 1_000_000_000n * 1600000000n,
    });
    expect(header.length % 512).toBe(0);
    expect(header.toString('latin1')).toContain(` size=${size}\n`);
    expect(header.toString('latin1')).toContain(` uid=${BIG_UID}\n`);
    // Header only: GNU tar lists the member, then fails on the missing body.
    const listed = spawnSync('tar', ['--numeric-owner', '-tvf', '-'], { input: header, encoding: 'utf8' });
    expect(listed.stdout).toMatch(new RegExp(`^-rw------- ${BIG_UID}/0 +${size} .* huge\\.img\\n$`));
    const ex = extract();
    const got = new Promise<{ name: string; size: number | undefined; uid: number | undefined }>((resolve) => {
      ex.on('entry', (h, stream) => {
        resolve({ name: h.name, size: h.size, uid: h.uid });
        stream.resume();
        ex.destroy();
      });
    });
    ex.end(header);
    expect(await got).toEqual({ name: 'huge.img', size, uid: BIG_UID });
  });

  it('splits names between 100 and 255 bytes into ustar prefix and name, and uses PAX path beyond', () => {
    const mid = Buffer.from(`${'d'.repeat(90)}/${'f'.repeat(90)}`);
    const plain = encodeTarHeader({ name: mid, type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtimeNs: 0n });
    expect(plain.length).toBe(512);
    expect(plain.subarray(345, 435).toString()).toBe('d'.repeat(90));
    const long = encodeTarHeader({
      name: Buffer.from(`x/${LONG_BASENAME}`),
      type: 'file',
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 0,
      mtimeNs: 0n,
    });
    expect(long.length).toBe(3 * 512);
    expect(long.toString('latin1')).toContain(` path=x/${LONG_BASENAME}\n`);
  });

  it('keeps mode 000 and the setuid, setgid and sticky bits', () => {
    const h = encodeTarHeader({ name: Buffer.from('m'), type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtimeNs: 0n });
    expect(h.subarray(100, 107).toString()).toBe('0000000');
    const s = encodeTarHeader({ name: Buffer.from('s/'), type: 'directory', mode: 0o7777, uid: 0, gid: 0, size: 0, mtimeNs: 0n });
    expect(s.subarray(100, 107).toString()).toBe('0007777');
  });
});

/** Runs `write` into a memory sink and returns what it wrote. */
async function collect(
  write: (out: NodeJS.WritableStream) => Promise<{ entries: number; bytes: number }>,
): Promise<{ data: Buffer; result: { entries: number; bytes: number } }> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(data: Buffer, _enc, cb) {
      chunks.push(data);
      cb();
    },
  });
  const r = await write(sink);
  return { data: Buffer.concat(chunks), result: r };
}

/** Member names as tar-stream reads them. */
async function tarNames(data: Buffer): Promise<string[]> {
  const names: string[] = [];
  const ex = extract();
  ex.end(data);
  for await (const entry of ex) {
    names.push(entry.header.name);
    entry.resume();
  }
  return names;
}

const IMAGE_FILES: TarEntrySpec[] = [
  { name: 'etc/', type: 'directory' },
  { name: 'etc/hello', content: 'hello from the layout\n' },
  { name: 'bin/', type: 'directory' },
  { name: 'bin/tool', content: '#!/bin/sh\necho tool\n', mode: 0o4755 },
  { name: 'bin/alias', type: 'symlink', linkname: 'tool' },
];

describe('writeOciLayout', () => {
  let dir: string;
  let cache: string;
  let image: TinyImage;
  let layerPath: string;

  const input = (img: TinyImage, path: string, extra: Partial<OciLayoutInput> = {}): OciLayoutInput => ({
    manifest: {
      bytes: img.manifestBytes,
      descriptor: {
        mediaType: (JSON.parse(img.manifestBytes.toString()) as { mediaType: string }).mediaType,
        digest: img.manifestDigest,
        size: img.manifestBytes.length,
      },
    },
    config: { bytes: img.configBytes, digest: img.configDigest },
    layers: [{ digest: img.layerDigest, size: img.layerBytes.length, path }],
    refName: 'v1.2',
    platform: { os: 'linux', architecture: 'amd64' },
    ...extra,
  });

  beforeAll(async () => {
    dir = await makeTmp('pu-output-oci-');
    cache = join(dir, 'cache');
    await mkdir(cache);
    image = await buildTinyImage(IMAGE_FILES);
    layerPath = join(cache, image.layerDigest.slice('sha256:'.length));
    await writeFile(layerPath, image.layerBytes);
  });

  afterAll(async () => {
    await removeTmp(dir);
  });

  it('writes oci-layout, index.json and every blob byte for byte, hardlinking the layer on the same filesystem', async () => {
    const layout = join(dir, 'layout');
    await writeOciLayout(layout, input(image, layerPath));
    expect(JSON.parse(await readFile(join(layout, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    expect(JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'))).toEqual({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: image.manifestDigest,
          size: image.manifestBytes.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'org.opencontainers.image.ref.name': 'v1.2' },
        },
      ],
    });
    const blobs = join(layout, 'blobs/sha256');
    expect((await readdir(blobs)).sort()).toEqual(
      [image.manifestDigest, image.configDigest, image.layerDigest].map((d) => d.slice(7)).sort(),
    );
    for (const name of await readdir(blobs)) {
      expect(
        createHash('sha256')
          .update(await readFile(join(blobs, name)))
          .digest('hex'),
      ).toBe(name);
    }
    expect((await readFile(join(blobs, image.manifestDigest.slice(7)))).equals(image.manifestBytes)).toBe(true);
    const [a, b] = await Promise.all([stat(layerPath), stat(join(blobs, image.layerDigest.slice(7)))]);
    expect(b.ino).toBe(a.ino);
  });

  it('is unpacked by umoci and inspected by skopeo', async () => {
    const layout = join(dir, 'for-umoci');
    await writeOciLayout(layout, input(image, layerPath));
    const bundle = join(dir, 'bundle');
    await run('umoci', ['unpack', '--image', `${layout}:v1.2`, bundle]);
    expect(await readFile(join(bundle, 'rootfs/etc/hello'), 'utf8')).toBe('hello from the layout\n');
    expect((await stat(join(bundle, 'rootfs/bin/tool'))).mode & 0o7777).toBe(0o4755);
    const inspected = JSON.parse((await run('skopeo', ['inspect', `oci:${layout}:v1.2`])).toString()) as {
      Digest: string;
      Layers: string[];
      Architecture: string;
      Os: string;
    };
    expect(inspected).toMatchObject({ Digest: image.manifestDigest, Layers: [image.layerDigest], Architecture: 'amd64', Os: 'linux' });
  });

  it("keeps a Docker schema 2 manifest byte-exact, and pull-unpack's oci: source reads the layout", async () => {
    const docker = await buildTinyImage(IMAGE_FILES, { docker: true });
    const path = join(cache, docker.layerDigest.slice(7));
    await writeFile(path, docker.layerBytes);
    const layout = join(dir, 'docker');
    const written = await writeOciLayout(layout, input(docker, path));
    expect(written).toMatchObject({ mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: docker.manifestDigest });
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    expect(index.manifests).toEqual([written]);
    expect((await readFile(join(layout, 'blobs/sha256', docker.manifestDigest.slice(7)))).equals(docker.manifestBytes)).toBe(true);
    const opened = await openLocalSource(parseLocalReference(`oci:${layout}:v1.2`)!);
    try {
      const resolved = await resolveImage(opened.source, opened.reference, parsePlatform('linux/amd64'));
      expect(resolved.manifest.layers.map((l) => l.digest)).toEqual([docker.layerDigest]);
      const config = await fetchConfig(opened.source, resolved.manifest);
      expect(config.bytes.equals(docker.configBytes)).toBe(true);
    } finally {
      await opened.close();
    }
  });

  it('with convertDockerManifest rewrites a Docker manifest with OCI media types, which umoci and skopeo read', async () => {
    const docker = await buildTinyImage(IMAGE_FILES, { docker: true });
    const path = join(cache, docker.layerDigest.slice(7));
    await writeFile(path, docker.layerBytes);
    const layout = join(dir, 'converted');
    const written = await writeOciLayout(layout, input(docker, path), { convertDockerManifest: true });
    expect(written.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(written.digest).not.toBe(docker.manifestDigest);
    const manifest = JSON.parse(await readFile(join(layout, 'blobs/sha256', written.digest.slice(7)), 'utf8')) as {
      mediaType: string;
      config: Descriptor;
      layers: Descriptor[];
    };
    expect(manifest).toEqual({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: docker.configDigest, size: docker.configBytes.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: docker.layerDigest, size: docker.layerBytes.length }],
    });
    const bundle = join(dir, 'converted-bundle');
    await run('umoci', ['unpack', '--image', `${layout}:v1.2`, bundle]);
    expect(await readFile(join(bundle, 'rootfs/etc/hello'), 'utf8')).toBe('hello from the layout\n');
    const inspected = JSON.parse((await run('skopeo', ['inspect', `oci:${layout}:v1.2`])).toString()) as {
      Digest: string;
      Layers: string[];
    };
    expect(inspected).toMatchObject({ Digest: written.digest, Layers: [docker.layerDigest] });
    // An OCI manifest is never rewritten.
    const oci = await writeOciLayout(join(dir, 'not-converted'), input(image, layerPath), { convertDockerManifest: true });
    expect(oci.digest).toBe(image.manifestDigest);
  });

  it('copies the layer when the cache is on another filesystem', async () => {
    const shm = await mkdtemp('/dev/shm/pu-output-oci-');
    try {
      const path = join(shm, 'layer');
      await writeFile(path, image.layerBytes);
      const layout = join(dir, 'copied');
      await writeOciLayout(layout, input(image, path));
      const blob = join(layout, 'blobs/sha256', image.layerDigest.slice(7));
      expect((await readFile(blob)).equals(image.layerBytes)).toBe(true);
      expect((await stat(blob)).dev).not.toBe((await stat(path)).dev);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it('writes no ref.name or platform when none is given, and a layer listed twice once', async () => {
    const twice = await buildTinyImage(IMAGE_FILES);
    const manifest = JSON.parse(twice.manifestBytes.toString()) as { layers: unknown[] };
    manifest.layers.push(manifest.layers[0]);
    const bytes = Buffer.from(JSON.stringify(manifest));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    const layout = join(dir, 'plain');
    const layer = { digest: twice.layerDigest, size: twice.layerBytes.length, path: layerPath };
    await writeOciLayout(layout, {
      manifest: { bytes, descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: bytes.length } },
      config: { bytes: twice.configBytes, digest: twice.configDigest },
      layers: [layer, layer],
    });
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    expect(index.manifests).toEqual([{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: bytes.length }]);
    expect(await readdir(join(layout, 'blobs/sha256'))).toHaveLength(3);
  });

  it('refuses inconsistent input before writing anything', async () => {
    const cases: Array<[string, OciLayoutInput]> = [
      [
        'DIGEST_MISMATCH',
        {
          ...input(image, layerPath),
          manifest: { ...input(image, layerPath).manifest, bytes: Buffer.from(image.manifestBytes.toString().replace('   "', '\t  "')) },
        },
      ],
      [
        'SIZE_MISMATCH',
        {
          ...input(image, layerPath),
          manifest: { ...input(image, layerPath).manifest, bytes: Buffer.from(`${image.manifestBytes.toString()} `) },
        },
      ],
      ['DIGEST_MISMATCH', input(image, layerPath, { config: { bytes: Buffer.from('{}'), digest: image.configDigest } })],
      ['INVALID_MANIFEST', input(image, layerPath, { layers: [] })],
      [
        'INVALID_MANIFEST',
        input(image, layerPath, {
          layers: [
            { digest: image.layerDigest, size: image.layerBytes.length, path: layerPath },
            { digest: image.configDigest, size: 2, path: layerPath },
          ],
        }),
      ],
      ['SIZE_MISMATCH', input(image, layerPath, { layers: [{ digest: image.layerDigest, size: 1, path: layerPath }] })],
      ['INVALID_REFERENCE', input(image, layerPath, { refName: 'not a tag!' })],
    ];
    for (const [code, bad] of cases) {
      const layout = join(dir, `bad-${code}`);
      await expect(writeOciLayout(layout, bad), code).rejects.toMatchObject({ code });
      await expect(stat(layout)).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });

  it('refuses a non-empty directory, a blob file of the wrong size, and an aborted signal', async () => {
    const full = join(dir, 'full');
    await mkdir(full);
    await writeFile(join(full, 'something'), '');
    await expect(writeOciLayout(full, input(image, layerPath))).rejects.toMatchObject({ code: 'DESTINATION_NOT_EMPTY' });
    const short = join(cache, 'short');
    await writeFile(short, image.layerBytes.subarray(1));
    await expect(writeOciLayout(join(dir, 'short'), input(image, short))).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
    await expect(writeOciLayout(join(dir, 'aborted'), input(image, layerPath), { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: 'ABORTED',
    });
    await expect(stat(join(dir, 'short', 'index.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
