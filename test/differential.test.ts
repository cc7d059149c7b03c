/**
 * Differential tests: the same image unpacked by pull-unpack and by the reference pair
 * `skopeo copy` + `umoci unpack`, compared entry by entry (type, mode, owner, size, content
 * hash, link target, device numbers, xattrs, hardlink groups, mtimes). Every difference that
 * is allowed is listed in KNOWN_DIFFERENCES with the reason; nothing else may differ.
 *
 * Not here: a variant whose base layer is a real Debian tree (debootstrap), which a separate
 * task adds.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarDirectory, tarLayer, type LayerCompression, type TarEntry } from '../testdata/lib/image-builder.mjs';
import { pushFeatureImage } from './helpers/feature-image.js';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';
import { diffTrees, snapshotTree, type TreeEntry } from './helpers/tree.js';

const run = promisify(execFile);
const { host, url } = testRegistry();

let work: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('test/differential.test.ts needs root (umoci unpack without --rootless, owners, devices)');
  work = await mkdtemp(join(tmpdir(), 'differential-'));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/**
 * Differences between umoci and pull-unpack that are not bugs, matched by exact path and
 * property. Each says why.
 */
const KNOWN_DIFFERENCES: Array<{ path: string; property: 'mtime' | 'mode' | 'owner'; why: string }> = [
  {
    path: '.',
    property: 'mtime',
    why:
      'an image without a "./" entry says nothing about the root directory: umoci sets its mtime ' +
      'to the epoch, pull-unpack leaves the time it was created; neither comes from the image. ' +
      'With a "./" entry see the next item',
  },
  {
    path: '.',
    property: 'mode',
    why:
      'umoci applies the metadata of a layer\'s "./" entry to the rootfs directory itself; ' +
      'pull-unpack ignores entries that resolve to the root, as containerd does (pkg/archive ' +
      '"resolved to root"): the root belongs to the caller, and a layer tarred from a 0700 ' +
      'mkdtemp directory (as tree1 here) must not make / untraversable for non-root users',
  },
];

/** diffTrees(umoci, ours) minus KNOWN_DIFFERENCES. */
function unexpectedDifferences(reference: Map<string, TreeEntry>, ours: Map<string, TreeEntry>): string[] {
  return diffTrees(reference, ours).filter((line) => !KNOWN_DIFFERENCES.some((k) => line.startsWith(`${k.path}: ${k.property} `)));
}

/** `skopeo copy` into an OCI layout and `umoci unpack`; returns the rootfs umoci wrote. */
async function unpackWithUmoci(ref: string, compressions: readonly LayerCompression[]): Promise<string> {
  const dir = await mkdtemp(join(work, 'umoci-'));
  const layout = join(dir, 'layout');
  // umoci 0.4.7 refuses zstd layers ("blob is not correct mediatype"): let skopeo recompress them
  // to gzip. The tar inside, which is what is compared, stays the same.
  const recompress = compressions.includes('zstd') ? ['--dest-compress-format', 'gzip'] : [];
  await run('skopeo', ['copy', '-q', '--src-tls-verify=false', ...recompress, `docker://${ref}`, `oci:${layout}:img`]);
  await run('umoci', ['unpack', '--image', `${layout}:img`, join(dir, 'bundle')]);
  return join(dir, 'bundle', 'rootfs');
}

async function unpackWithPullUnpack(ref: string): Promise<string> {
  const dir = join(await mkdtemp(join(work, 'ours-')), 'rootfs');
  const r = await runCli([ref, dir, '--quiet']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return dir;
}

async function compare(ref: string, compressions: readonly LayerCompression[]): Promise<Map<string, TreeEntry>> {
  const [reference, ours] = await Promise.all([unpackWithUmoci(ref, compressions), unpackWithPullUnpack(ref)]);
  const [a, b] = [await snapshotTree(reference), await snapshotTree(ours)];
  expect(unexpectedDifferences(a, b)).toEqual([]);
  return b;
}

describe('pull-unpack and umoci unpack the feature image identically', () => {
  const variants: Array<[string, [LayerCompression, LayerCompression, LayerCompression]]> = [
    ['gzip', ['gzip', 'gzip', 'gzip']],
    ['zstd', ['zstd', 'zstd', 'zstd']],
    ['gzip, zstd, uncompressed', ['gzip', 'zstd', 'none']],
  ];
  it.each(variants)('%s layers', async (_name, compressions) => {
    const repo = uniqueRepo('diff-feature');
    await pushFeatureImage(url, repo, 'v1', { compressions });
    const tree = await compare(`${host}/${repo}:v1`, compressions);
    // The comparison covered the interesting entries (not two empty trees).
    expect(tree.get('usr/bin/ping')?.xattrs['security.capability']).toBeTruthy();
    expect(tree.get('dev/loop0')?.rdev).toEqual({ major: 7, minor: 0 });
    expect(tree.get('lib/target.txt')?.hardlinks).toEqual(['lib/link-to-target', 'lib/target.txt']);
    expect(tree.get('usr/bin/suid-root')?.mode).toBe(0o4755);
  });
});

describe('pull-unpack and umoci unpack GNU tar layers of a real tree identically', () => {
  it('long names, long link targets, unicode, odd modes and owners, links, whiteouts; gnu and pax formats', async () => {
    const base = await mkdtemp(join(work, 'tree1-'));
    await buildBaseTree(base);
    const upper = await mkdtemp(join(work, 'tree2-'));
    await buildUpperTree(upper);
    const repo = uniqueRepo('diff-gnutar');
    await pushImage(url, repo, 'v1', {
      layers: [
        { tar: await tarDirectory(base, { format: 'gnu' }), compression: 'gzip' },
        { tar: await tarDirectory(upper, { format: 'pax' }), compression: 'gzip' },
      ],
    });
    const tree = await compare(`${host}/${repo}:v1`, ['gzip', 'gzip']);
    expect(tree.has(`deep/${LONG_DIR}/${LONG_FILE}`)).toBe(true);
    expect(tree.get('keep/pair-b')?.hardlinks).toEqual(['keep/pair-a', 'keep/pair-b']);
    // The upper layer rewrote hard-1: hard-2 keeps the old inode and content.
    expect(tree.get('keep/hard-2')).toMatchObject({ nlink: 1, size: 'hard\n'.length });
    expect(tree.has('gone')).toBe(false);
    expect(tree.has('opaque/old.txt')).toBe(false);
    expect(tree.get('opaque/new.txt')?.type).toBe('file');
  });
});

describe('pull-unpack and umoci unpack layer edge cases identically', () => {
  it('merged-usr symlink parents, hardlinked symlinks, type swaps, same-layer whiteouts, distinct mtimes', async () => {
    const repo = uniqueRepo('diff-edge');
    await pushImage(url, repo, 'v1', {
      layers: [
        { tar: await tarLayer(EDGE_LAYER1), compression: 'gzip' },
        { tar: await tarLayer(EDGE_LAYER2), compression: 'zstd' },
      ],
    });
    const tree = await compare(`${host}/${repo}:v1`, ['gzip', 'zstd']);
    expect(tree.get('usr/lib/libfoo.so')?.type).toBe('file');
    expect(tree.get('usr/lib/libbar.so')?.type).toBe('file');
    expect(tree.has('usr/lib/old.so')).toBe(false);
    expect(tree.get('lib')?.type).toBe('symlink');
    expect(tree.get('links/hardsym')).toMatchObject({ type: 'symlink', hardlinks: ['links/hardsym', 'links/sym'] });
    expect(tree.get('xfile')?.xattrs).toEqual({});
    expect([...tree.keys()].filter((p) => p.startsWith('opq2/'))).toEqual(['opq2/after-opq']);
    expect(tree.get('gone-later')?.size).toBe('recreated in layer 2\n'.length);
  });

  // layer.md "Changeset over existing files": when the entry and the existing path are both
  // directories, "the existing path's attributes MUST be replaced by those of the entry", and
  // extended attributes are attributes (layer.md "File Attributes"). umoci clears them first.
  it("a directory re-declared by an upper layer has exactly that entry's xattrs", async () => {
    const repo = uniqueRepo('diff-xdir');
    await pushImage(url, repo, 'v1', {
      layers: [
        {
          tar: await tarLayer([
            { name: 'xdir/', type: 'directory', mode: 0o750, pax: { 'SCHILY.xattr.user.dir': 'lower', 'SCHILY.xattr.trusted.t': 'lower' } },
          ]),
        },
        { tar: await tarLayer([{ name: 'xdir/', type: 'directory', mode: 0o755, pax: { 'SCHILY.xattr.user.other': 'upper' } }]) },
      ],
    });
    const tree = await compare(`${host}/${repo}:v1`, ['gzip', 'gzip']);
    expect(tree.get('xdir')).toMatchObject({ mode: 0o755, xattrs: { 'user.other': Buffer.from('upper').toString('base64') } });
  });
});

const T1 = 1_000_000_000;
const T2 = 1_600_000_000;

const EDGE_LAYER1: TarEntry[] = [
  { name: 'usr/', type: 'directory', mtime: T1 },
  { name: 'usr/lib/', type: 'directory', mtime: T1 + 1 },
  { name: 'usr/lib/old.so', content: 'old\n', mtime: T1 + 2 },
  { name: 'lib', type: 'symlink', linkname: 'usr/lib', mtime: T1 + 3 },
  { name: 'lib64', type: 'symlink', linkname: '/usr/lib', mtime: T1 + 4 },
  { name: 'links/', type: 'directory', mtime: T1 + 5 },
  { name: 'links/sym', type: 'symlink', linkname: 'nowhere', mtime: T1 + 6 },
  { name: 'links/hardsym', type: 'link', linkname: 'links/sym' },
  { name: 'xdir/', type: 'directory', mode: 0o750, mtime: T1 + 7, pax: { 'SCHILY.xattr.user.dir': 'lower' } },
  { name: 'xfile', content: 'lower\n', mtime: T1 + 8, pax: { 'SCHILY.xattr.user.file': 'lower' } },
  { name: 'swap/', type: 'directory', mtime: T1 + 9 },
  { name: 'swap/was-symlink', type: 'symlink', linkname: '../usr', mtime: T1 + 10 },
  { name: 'swap/was-dir/', type: 'directory', mode: 0o555, mtime: T1 + 11 },
  { name: 'swap/was-dir/ro/', type: 'directory', mode: 0o500, mtime: T1 + 12 },
  { name: 'swap/was-dir/ro/f', mode: 0o400, content: 'f\n', mtime: T1 + 13 },
  { name: 'swap/was-file', content: 'file\n', mtime: T1 + 14 },
  { name: 'owned/', type: 'directory', uid: 1000, gid: 1000, mode: 0o2770, mtime: T1 + 15 },
  { name: 'owned/setuid-user', uid: 1000, gid: 1000, mode: 0o4750, content: 'x\n', mtime: T1 + 16 },
  { name: 'owned/sticky-file', mode: 0o1644, content: 'sticky\n', mtime: T1 + 17 },
  { name: 'gone-later', content: 'whited out by layer 2\n', mtime: T1 + 18 },
  { name: 'opq2/', type: 'directory', mtime: T1 + 19 },
  { name: 'opq2/old/', type: 'directory', mtime: T1 + 20 },
  { name: 'opq2/old/f', content: 'old\n', mtime: T1 + 21 },
];

const EDGE_LAYER2: TarEntry[] = [
  // Through the merged-usr symlinks, relative and absolute, as Debian's layers do.
  { name: 'lib/libfoo.so', content: 'foo\n', mtime: T2 },
  { name: 'lib64/libbar.so', content: 'bar\n', mtime: T2 + 1 },
  { name: 'lib/.wh.old.so' },
  { name: 'links/via-symlink-parent', type: 'link', linkname: 'lib/libfoo.so' },
  // Re-declared with the same xattr: mode and mtime change (dropped xattrs: the next test).
  { name: 'xdir/', type: 'directory', mode: 0o755, mtime: T2 + 2, pax: { 'SCHILY.xattr.user.dir': 'lower' } },
  { name: 'xfile', content: 'upper\n', mtime: T2 + 3 },
  { name: 'swap/was-symlink/', type: 'directory', mode: 0o700, mtime: T2 + 4 },
  { name: 'swap/was-dir', type: 'symlink', linkname: '/usr/lib', mtime: T2 + 5 },
  { name: 'swap/was-file', type: 'fifo', mode: 0o600, mtime: T2 + 6 },
  // A whiteout and a re-creation of the same name in one layer: the new file stays.
  { name: 'gone-later', content: 'recreated in layer 2\n', mtime: T2 + 7 },
  { name: '.wh.gone-later' },
  // Opaque marker without a directory entry in this layer.
  { name: 'opq2/.wh..wh..opq' },
  { name: 'opq2/after-opq', content: 'new\n', mtime: T2 + 8 },
];

describe('pull-unpack and umoci unpack what GNU tar writes from a real tree identically', () => {
  /** `dir` tarred by GNU tar in pax format with every xattr, as `docker save`-style tools do. */
  async function pushGnuTar(dir: string, prefix: string): Promise<string> {
    const { stdout: tar } = await run(
      'tar',
      [
        '--xattrs',
        '--xattrs-include=*',
        '--format=pax',
        '--numeric-owner',
        '--sort=name',
        '--mtime=@1700000000',
        '-C',
        dir,
        '-cf',
        '-',
        '.',
      ],
      { encoding: 'buffer', maxBuffer: 64 << 20 },
    );
    const repo = uniqueRepo(prefix);
    await pushImage(url, repo, 'v1', { layers: [{ tar, compression: 'gzip' }] });
    return `${host}/${repo}:v1`;
  }

  it('binary xattr values (raw bytes in SCHILY.xattr records) and a real setcap capability', async () => {
    const dir = await mkdtemp(join(work, 'xattrs-'));
    await chmod(dir, 0o755);
    await writeFile(join(dir, 'binary-xattr'), 'x\n');
    await run('setfattr', ['-n', 'user.bin', '-v', '0x00fffe80', join(dir, 'binary-xattr')]);
    await run('setfattr', ['-n', 'trusted.t', '-v', '0s3q2+7w==', join(dir, 'binary-xattr')]);
    await mkdir(join(dir, 'xdir'));
    await run('setfattr', ['-n', 'user.dir', '-v', '0xc3', join(dir, 'xdir')]);
    await writeFile(join(dir, 'ping'), 'not really ping\n');
    await chmod(join(dir, 'ping'), 0o755);
    await run('setcap', ['cap_net_raw+ep', join(dir, 'ping')]);
    const tree = await compare(await pushGnuTar(dir, 'diff-xattrs'), ['gzip']);
    expect(tree.get('binary-xattr')?.xattrs).toEqual({ 'user.bin': 'AP/+gA==', 'trusted.t': '3q2+7w==' });
    expect(tree.get('xdir')?.xattrs).toEqual({ 'user.dir': 'ww==' });
    expect(tree.get('ping')?.xattrs['security.capability']).toBe('AQAAAgAgAAAAAAAAAAAAAAAAAAA=');
  });

  // Names are bytes on Linux and in tar: Latin-1 and broken UTF-8 names exist in real images
  // (GNU tar stores them raw in the ustar header). umoci keeps the bytes.
  it('file, directory and symlink names (and link targets) that are not UTF-8 keep their bytes', async () => {
    const dir = await mkdtemp(join(work, 'names-'));
    await chmod(dir, 0o755);
    const raw = (name: string): Buffer => Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(name, 'latin1')]);
    await writeFile(raw('caf\xe9.txt'), 'latin-1 name\n');
    await mkdir(raw('dir\xff'));
    await writeFile(Buffer.concat([raw('dir\xff'), Buffer.from('/inner')]), 'inner\n');
    await symlink(Buffer.from('caf\xe9.txt', 'latin1'), raw('link\xe9'));
    const tree = await compare(await pushGnuTar(dir, 'diff-names'), ['gzip']);
    expect(tree.get('caf\\xe9.txt')?.type).toBe('file');
    expect(tree.get('dir\\xff/inner')?.type).toBe('file');
    expect(tree.get('link\\xe9')?.linkTarget).toBe('caf\\xe9.txt');
  });
});

const LONG_DIR = 'd'.repeat(120);
const LONG_FILE = `${'f'.repeat(200)}.txt`;

/** A tree GNU tar stores with ././@LongLink records, owners, odd modes, links and a FIFO. */
async function buildBaseTree(dir: string): Promise<void> {
  await mkdir(join(dir, 'deep', LONG_DIR), { recursive: true });
  await writeFile(join(dir, 'deep', LONG_DIR, LONG_FILE), 'a long name\n');
  await symlink(`../deep/${LONG_DIR}/${LONG_FILE}`, join(dir, 'long-target-link'));
  await writeFile(join(dir, 'ünïcødé naïve ☃.txt'), 'unicode\n');
  await writeFile(join(dir, 'with space and = sign'), 'odd name\n');
  await writeFile(join(dir, 'empty'), '');
  await writeFile(join(dir, 'mode-zero'), 'no permissions\n');
  await chmod(join(dir, 'mode-zero'), 0);
  await mkdir(join(dir, 'shared'));
  await chown(join(dir, 'shared'), 0, 100);
  await chmod(join(dir, 'shared'), 0o2775);
  await writeFile(join(dir, 'shared', 'owned'), 'owned\n');
  await chown(join(dir, 'shared', 'owned'), 4242, 4343);
  await mkdir(join(dir, 'keep'));
  await writeFile(join(dir, 'keep', 'hard-1'), 'hard\n');
  await link(join(dir, 'keep', 'hard-1'), join(dir, 'keep', 'hard-2'));
  await writeFile(join(dir, 'keep', 'pair-a'), 'pair\n');
  await link(join(dir, 'keep', 'pair-a'), join(dir, 'keep', 'pair-b'));
  await run('mkfifo', ['-m', '0640', join(dir, 'keep', 'pipe')]);
  await run('mknod', ['-m', '0600', join(dir, 'keep', 'console'), 'c', '5', '1']);
  await mkdir(join(dir, 'gone', 'sub'), { recursive: true });
  await writeFile(join(dir, 'gone', 'sub', 'x'), 'x\n');
  await mkdir(join(dir, 'opaque'));
  await writeFile(join(dir, 'opaque', 'old.txt'), 'old\n');
  await mkdir(join(dir, 'empty-dir'));
  await chmod(join(dir, 'empty-dir'), 0o700);
}

/** The upper layer: whiteout files as plain files in the tree, as docker's exporter writes them. */
async function buildUpperTree(dir: string): Promise<void> {
  await writeFile(join(dir, '.wh.gone'), '');
  await mkdir(join(dir, 'opaque'));
  await writeFile(join(dir, 'opaque', '.wh..wh..opq'), '');
  await writeFile(join(dir, 'opaque', 'new.txt'), 'new\n');
  await mkdir(join(dir, 'deep', LONG_DIR), { recursive: true });
  await writeFile(join(dir, 'deep', LONG_DIR, LONG_FILE), 'replaced in a pax layer\n');
  await mkdir(join(dir, 'keep'));
  await writeFile(join(dir, 'keep', 'hard-1'), 'rewritten\n');
}
