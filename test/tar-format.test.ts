/**
 * Issue 11, section 1: a layer means the entries Go's archive/tar (containerd, docker, umoci)
 * reads in it, or it is refused where GNU tar would read other entries. One named test per rule,
 * on hand-made hostile archives (test/helpers/raw-tar.ts) in the sentinel sandbox of the hostile
 * suite, and on archives GNU tar writes (sparse files, large ids, old times), compared with
 * `umoci unpack` where umoci is the reference.
 */
import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/pull.js';
import { failure } from './helpers/errors.js';
import { gnuLong, member, pax, rawTar, sha256, umociUnpack, writeLayout, ZERO_BLOCK } from './helpers/raw-tar.js';
import { sentinelSandbox } from './helpers/sandbox.js';
import { applyLayers, makeTmp, removeTmp } from './helpers/tar.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';

const run = promisify(execFile);
const box = sentinelSandbox('pu-tar-format-');

/** Applies raw layer tars onto the sandbox root (as root: owners are applied). */
async function apply(...layers: Buffer[]): Promise<void> {
  await applyLayers(layers, { into: box, isRoot: process.getuid?.() === 0 });
}

async function inRoot(rel: string): Promise<string> {
  return readFile(join(box.root, rel), 'utf8');
}

/** The error of applying `layer`, and what it left in the root (nothing may be hidden there). */
async function refused(layer: Buffer): Promise<{ code: string; message: string }> {
  const err = await failure(apply(layer));
  return { code: err.code, message: err.message };
}

const SETUID_DECOY = member({ name: 'hidden-suid', mode: 0o4755 }, '#!/bin/sh\n');

describe('typeflags and bodies as Go reads them, or a refusal', () => {
  it("refuses a '0' file entry named x/ whose body holds a setuid entry (a file to Go, a directory to GNU tar)", async () => {
    for (const typeflag of ['0', '7']) {
      const layer = rawTar([member({ name: 'x/', typeflag }, SETUID_DECOY), member({ name: 'after' }, 'a')]);
      expect(await refused(layer)).toEqual({ code: 'CORRUPT_LAYER', message: expect.stringContaining('trailing slash') });
      expect(await readdir(box.root)).toEqual([]);
    }
  });

  it('refuses an old-style (NUL typeflag) directory x/ with a body, and reads one without a body as a directory', async () => {
    const hiding = rawTar([member({ name: 'x/', typeflag: '\0' }, SETUID_DECOY)]);
    expect(await refused(hiding)).toEqual({ code: 'CORRUPT_LAYER', message: expect.stringContaining('with a body') });
    expect(await readdir(box.root)).toEqual([]);
    await apply(rawTar([member({ name: 'old-dir/', typeflag: '\0', mode: 0o750 }), member({ name: 'old-dir/f' }, 'f')]));
    expect((await lstat(join(box.root, 'old-dir'))).isDirectory()).toBe(true);
    expect(await inRoot('old-dir/f')).toBe('f');
  });

  it('refuses link, symlink, device and FIFO headers with a non-zero size, in the header or a PAX record (Go reads no body, GNU tar skips one)', async () => {
    const headerOnly = [
      { name: 'hl', typeflag: '1', linkname: 'target' },
      { name: 'sl', typeflag: '2', linkname: 'target' },
      { name: 'chr', typeflag: '3' },
      { name: 'blk', typeflag: '4' },
      { name: 'fifo', typeflag: '6' },
    ];
    for (const h of headerOnly) {
      const target = member({ name: 'target' }, 't');
      for (const layer of [
        rawTar([target, member({ ...h, size: 512 }), SETUID_DECOY]),
        rawTar([target, pax({ size: '512' }), member(h), SETUID_DECOY]),
      ]) {
        expect(await refused(layer), h.name).toEqual({ code: 'CORRUPT_LAYER', message: expect.stringContaining('-byte body') });
        await rm(box.root, { recursive: true });
        await mkdir(box.root);
      }
    }
  });

  it('reads no body after a directory header whatever its size says, as Go and GNU tar both do', async () => {
    await apply(rawTar([member({ name: 'd/', typeflag: '5', size: 512 }), member({ name: 'next' }, 'n')]));
    expect((await readdir(box.root)).sort()).toEqual(['d', 'next']);
    expect(await inRoot('next')).toBe('n');
  });

  it('refuses a single zero block followed by more entries (Go fails, GNU tar stops there)', async () => {
    const layer = rawTar([member({ name: 'a' }, 'a'), ZERO_BLOCK, member({ name: 'b' }, 'b')]);
    expect(await refused(layer)).toEqual({ code: 'CORRUPT_LAYER', message: expect.stringContaining('zero block') });
    // One zero block at the very end is a short end marker: both read the entries before it.
    await apply(Buffer.concat([member({ name: 'c' }, 'c'), ZERO_BLOCK]));
    expect(await inRoot('c')).toBe('c');
  });

  it('refuses a global PAX header that sets path or owner (GNU tar applies it to every entry, Go ignores it); ignores a comment', async () => {
    const setters: Array<Record<string, string>> = [{ path: 'renamed' }, { uid: '0' }, { 'GNU.sparse.size': '9' }];
    for (const records of setters) {
      const layer = rawTar([pax(records, 'g'), member({ name: 'a' }, 'a')]);
      expect(await refused(layer)).toEqual({ code: 'CORRUPT_LAYER', message: expect.stringContaining('global PAX header') });
    }
    await apply(rawTar([pax({ comment: 'git archive of 4d5e6f' }, 'g'), member({ name: 'kept' }, 'k')]));
    expect(await readdir(box.root)).toEqual(['kept']);
  });

  it('refuses two PAX headers for one entry, two GNU long names, and PAX records mixed with GNU long names', async () => {
    for (const records of [
      [pax({ path: 'one' }), pax({ path: 'two' })],
      [gnuLong('L', 'one'), gnuLong('L', 'two')],
      [pax({ size: '512' }), gnuLong('L', 'long')],
      [gnuLong('K', 'target'), pax({ path: 'p' })],
    ]) {
      const layer = rawTar([...records, member({ name: 'n' }), SETUID_DECOY]);
      expect(await refused(layer)).toEqual({ code: 'CORRUPT_LAYER', message: expect.stringContaining('extended headers') });
    }
  });

  it('refuses the old GNU sparse type S by name', async () => {
    const layer = rawTar([member({ name: 'sparse-file', typeflag: 'S', magic: 'gnu' }, 'data')]);
    expect(await refused(layer)).toEqual({
      code: 'UNSUPPORTED_ENTRY',
      message: expect.stringContaining('GNU sparse file (type S) "sparse-file"'),
    });
  });
});

describe('PAX owners and times', () => {
  it('applies PAX uid and gid records (3000000:3000001, as docker, buildah and podman write them)', async () => {
    if (process.getuid?.() !== 0) throw new Error('needs root to chown');
    await apply(rawTar([pax({ uid: '3000000', gid: '3000001' }), member({ name: 'owned', uid: 0o7777777 }, 'x')]));
    const st = await lstat(join(box.root, 'owned'));
    expect([st.uid, st.gid]).toEqual([3000000, 3000001]);
  });

  it('sets times before 1970 (PAX -315619200, base-256 header -86400) and keeps times after 2038', async () => {
    await apply(
      rawTar([
        pax({ mtime: '-315619200' }),
        member({ name: 'pax-1960' }, 'x'),
        member({ name: 'header-1969', mtime: -86400 }, 'x'),
        pax({ mtime: '-1.5' }),
        member({ name: 'fraction' }, 'x'),
        pax({ mtime: '4102444800.25' }),
        member({ name: 'year-2100' }, 'x'),
        pax({ mtime: '-315619200' }),
        member({ name: 'dir-1960/', typeflag: '5' }),
      ]),
    );
    const mtime = async (rel: string): Promise<bigint> => (await stat(join(box.root, rel), { bigint: true })).mtimeNs;
    expect(await mtime('pax-1960')).toBe(-315619200_000_000_000n);
    expect(await mtime('header-1969')).toBe(-86400_000_000_000n);
    expect(await mtime('fraction')).toBe(-1_500_000_000n);
    expect(await mtime('year-2100')).toBe(4102444800_250_000_000n);
    expect(await mtime('dir-1960')).toBe(-315619200_000_000_000n);
  });
});

// ---------------------------------------------------------------------------------------------
// Sparse files and the end of the stream, from real tools

describe('GNU tar --sparse layers and the stream after the end-of-archive marker', () => {
  let work: string;
  let tree: string;

  beforeAll(async () => {
    work = await makeTmp('pu-tar-sparse-');
    tree = join(work, 'tree');
    await mkdir(tree);
    // 64 MiB with two data runs (one at the end), 10 MiB of holes only, and a plain file.
    const big = await open(join(tree, 'big'), 'w');
    await big.write('hello', 1_000_000);
    await big.truncate(64 << 20);
    await big.write('end', (64 << 20) - 3);
    await big.close();
    await writeFile(join(tree, 'hole'), '');
    await truncate(join(tree, 'hole'), 10 << 20);
    await writeFile(join(tree, 'small'), 'small\n');
  });

  afterAll(async () => {
    if (work) await removeTmp(work);
  });

  /** GNU tar's archive of `tree` with the given options. */
  async function gnuTar(...options: string[]): Promise<Buffer> {
    const { stdout } = await run('tar', ['-C', tree, '--sparse', ...options, '-cf', '-', 'big', 'hole', 'small'], {
      encoding: 'buffer',
      maxBuffer: 256 << 20,
    });
    return stdout;
  }

  async function expectSparseTree(root: string): Promise<void> {
    const big = await stat(join(root, 'big'));
    expect(big.size).toBe(64 << 20);
    // Holes stay holes: far fewer blocks than the size (umoci writes the zeros).
    expect(big.blocks * 512).toBeLessThan(1 << 20);
    const data = await readFile(join(root, 'big'));
    expect(data.toString('latin1', 1_000_000, 1_000_005)).toBe('hello');
    expect(data.toString('latin1', data.length - 3)).toBe('end');
    expect(data.subarray(0, 1_000_000).every((b) => b === 0)).toBe(true);
    expect((await stat(join(root, 'hole'))).size).toBe(10 << 20);
    expect(await readFile(join(root, 'small'), 'utf8')).toBe('small\n');
  }

  for (const version of ['0.0', '0.1', '1.0']) {
    it(`expands PAX sparse ${version} files to sparse files with their real name, size and content, as umoci does`, async () => {
      const layer = await gnuTar('--format=posix', `--sparse-version=${version}`);
      const dest = join(await mkdtemp(join(work, `ours-${version}-`)), 'rootfs');
      await pull(`oci:${await writeLayout(await mkdtemp(join(work, 'layout-')), [layer])}:img`, dest);
      expect((await readdir(dest)).sort()).toEqual(['big', 'hole', 'small']);
      await expectSparseTree(dest);
    });
  }

  it("umoci raw add-layer of GNU tar --sparse, large-id and pre-1970 layers: pull-unpack's tree is umoci unpack's", async () => {
    const layout = join(work, 'umoci-layout');
    await run('umoci', ['init', '--layout', layout]);
    await run('umoci', ['new', '--image', `${layout}:img`]);
    const layers = [
      await gnuTar('--format=posix', '--sparse-version=1.0', '--owner=0', '--group=0'),
      // GNU tar writes ids and times that ustar cannot hold as PAX uid, gid and mtime records.
      await gnuTar('--format=posix', '--sparse-version=0.1', '--owner=3000000', '--group=3000001', '--mtime=@-315619200'),
    ];
    for (const [i, layer] of layers.entries()) {
      const file = join(work, `layer-${i}.tar`);
      await writeFile(file, layer);
      await run('umoci', ['raw', 'add-layer', '--image', `${layout}:img`, file]);
    }
    const reference = await umociUnpack(work, layout);
    if ('error' in reference) throw new Error(reference.error);
    const ours = join(await mkdtemp(join(work, 'ours-')), 'rootfs');
    await pull(`oci:${layout}:img`, ours);
    const [a, b] = [await snapshotTree(reference.rootfs), await snapshotTree(ours)];
    a.delete('.');
    b.delete('.');
    expect(diffTrees(a, b)).toEqual([]);
    expect(b.get('big')).toMatchObject({ uid: 3000000, gid: 3000001, mtimeNs: '-315619200000000000', size: 64 << 20 });
    await expectSparseTree(ours);
  });

  it('reads the stream to its end after the end-of-archive marker: the DiffID covers it, the appended archive is not applied', async () => {
    const first = rawTar([member({ name: 'a' }, 'A')]);
    const appended = rawTar([member({ name: 'appended-suid', mode: 0o4755 }, '#!')]);
    // Big enough that the stream cannot end in one chunk together with the marker.
    const layer = Buffer.concat([first, appended, Buffer.alloc(4 << 20)]);
    const dest = join(await mkdtemp(join(work, 'ours-eof-')), 'rootfs');
    await pull(`oci:${await writeLayout(await mkdtemp(join(work, 'layout-')), [layer])}:img`, dest);
    expect(await readdir(dest)).toEqual(['a']);

    // The last byte after the marker differs from what the config's DiffID names: the pull fails.
    const tampered = Buffer.from(layer);
    tampered[tampered.length - 1] = 1;
    const layoutDir = await writeLayout(await mkdtemp(join(work, 'layout-')), [tampered], 'img', [sha256(layer)]);
    const err = await failure(pull(`oci:${layoutDir}:img`, join(await mkdtemp(join(work, 'ours-eof-')), 'rootfs')));
    expect(err.code).toBe('DIFFID_MISMATCH');
  });
});
