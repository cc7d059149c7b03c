import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { link, lstat, mkdir, readFile, readdir, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { PullUnpackError } from '../src/errors.js';
import { applyLayer, createApplyContext, finishApply, parsePaxXattrs } from '../src/apply/applier.js';
import { applyLayers, buildTar, gnuTar, makeTmp, removeTmp, run, stalledStream, type Applied } from './helpers/tar.js';

const tmps: string[] = [];
afterEach(async () => {
  for (const dir of tmps.splice(0)) await removeTmp(dir);
});

async function apply(layers: Buffer[], options: { isRoot?: boolean } = {}): Promise<Applied> {
  const applied = await applyLayers(layers, options);
  tmps.push(applied.base);
  return applied;
}

async function tmp(): Promise<string> {
  const dir = await makeTmp();
  tmps.push(dir);
  return dir;
}

async function getXattr(path: string, name: string): Promise<Buffer> {
  return run('getfattr', ['-h', '--absolute-names', '--only-values', '-n', name, path]);
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

const mode = async (p: string): Promise<number> => (await lstat(p)).mode & 0o7777;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('entry types', () => {
  it('writes regular files with content, mode, owner and mtime', async () => {
    const { root, stats } = await apply([
      await buildTar([{ name: 'etc/hostname', content: 'box\n', mode: 0o640, uid: 1234, gid: 5678, mtime: 1600000000 }]),
    ]);
    const st = await lstat(join(root, 'etc/hostname'));
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('box\n');
    expect(st.mode & 0o7777).toBe(0o640);
    expect([st.uid, st.gid]).toEqual([1234, 5678]);
    expect(st.mtimeMs).toBe(1600000000 * 1000);
    expect(stats[0]).toEqual({ entries: 1, files: 1, bytes: 4, whiteouts: 0, skipped: 0 });
  });

  it('streams a large file body intact across many write batches', async () => {
    const big = randomBytes(5 * 1024 * 1024 + 123);
    const tar = await buildTar([{ name: 'big.bin', content: big }]);
    const dir = await tmp();
    await mkdir(join(dir, 'root'));
    const ctx = createApplyContext(join(dir, 'root'));
    // Small chunks, as a decompressor would hand them over.
    const chunks: Buffer[] = [];
    for (let i = 0; i < tar.length; i += 65536) chunks.push(tar.subarray(i, i + 65536));
    const stats = await applyLayer(ctx, Readable.from(chunks));
    await finishApply(ctx);
    expect(stats.bytes).toBe(big.length);
    expect(sha(await readFile(join(dir, 'root/big.bin')))).toBe(sha(big));
  });

  it('creates directories and restores their mode, owner and mtime after the children are written', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'srv/', type: 'directory', mode: 0o750, uid: 33, gid: 44, mtime: 1500000000 },
        { name: 'srv/a', content: 'a' },
        { name: 'srv/sub/', type: 'directory', mtime: 1500000001 },
        { name: 'srv/sub/b', content: 'b' },
      ]),
    ]);
    const st = await lstat(join(root, 'srv'));
    expect(st.isDirectory()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o750);
    expect([st.uid, st.gid]).toEqual([33, 44]);
    expect(st.mtimeMs).toBe(1500000000 * 1000);
    expect((await lstat(join(root, 'srv/sub'))).mtimeMs).toBe(1500000001 * 1000);
  });

  it('creates missing parent directories with mode 0755', async () => {
    const { root } = await apply([await buildTar([{ name: 'x/y/z/file', content: '1' }])]);
    expect(await mode(join(root, 'x/y'))).toBe(0o755);
    expect(await readFile(join(root, 'x/y/z/file'), 'utf8')).toBe('1');
  });

  it('creates missing parents exactly 0755 and root:root under umask 077 and a non-root group', async () => {
    const tar = await buildTar([{ name: 'a/b/c/file', content: 'deep', uid: 7, gid: 8 }]);
    const oldMask = process.umask(0o077);
    const oldGid = process.getegid!();
    // The group new directories get: without a chown they would be 4321's.
    process.setegid!(4321);
    let applied: Applied;
    try {
      applied = await apply([tar], { isRoot: true });
    } finally {
      process.setegid!(oldGid);
      process.umask(oldMask);
    }
    for (const dir of ['a', 'a/b', 'a/b/c']) {
      const st = await lstat(join(applied.root, dir));
      expect([dir, st.mode & 0o7777, st.uid, st.gid]).toEqual([dir, 0o755, 0, 0]);
    }
    const file = await lstat(join(applied.root, 'a/b/c/file'));
    expect([file.mode & 0o7777, file.uid, file.gid]).toEqual([0o644, 7, 8]);
  });

  it('creates symlinks with owner and mtime of their own', async () => {
    const { root } = await apply([
      await buildTar([{ name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox', uid: 7, gid: 8, mtime: 1400000000 }]),
    ]);
    const st = await lstat(join(root, 'bin/sh'));
    expect(st.isSymbolicLink()).toBe(true);
    expect(await readlink(join(root, 'bin/sh'))).toBe('/bin/busybox');
    expect([st.uid, st.gid]).toEqual([7, 8]);
    expect(st.mtimeMs).toBe(1400000000 * 1000);
  });

  it('creates hardlinks to entries of the same layer', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'bin/busybox', content: 'bb', mode: 0o755 },
        { name: 'bin/ls', type: 'link', linkname: 'bin/busybox' },
        { name: './bin/cat', type: 'link', linkname: './bin/busybox' },
      ]),
    ]);
    const a = await lstat(join(root, 'bin/busybox'));
    expect((await lstat(join(root, 'bin/ls'))).ino).toBe(a.ino);
    expect((await lstat(join(root, 'bin/cat'))).ino).toBe(a.ino);
    expect(a.nlink).toBe(3);
  });

  it('creates hardlinks to files of a lower layer', async () => {
    const { root } = await apply([
      await buildTar([{ name: 'usr/lib/libc.so', content: 'libc' }]),
      await buildTar([{ name: 'lib/libc.so', type: 'link', linkname: 'usr/lib/libc.so' }]),
    ]);
    expect((await lstat(join(root, 'lib/libc.so'))).ino).toBe((await lstat(join(root, 'usr/lib/libc.so'))).ino);
  });

  it('links the symlink itself for a hardlink to a symlink', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'target', content: 't' },
        { name: 'sl', type: 'symlink', linkname: 'target' },
        { name: 'hl', type: 'link', linkname: 'sl' },
      ]),
    ]);
    const hl = await lstat(join(root, 'hl'));
    expect(hl.isSymbolicLink()).toBe(true);
    expect(hl.ino).toBe((await lstat(join(root, 'sl'))).ino);
    expect(hl.ino).not.toBe((await lstat(join(root, 'target'))).ino);
  });

  it('creates FIFOs', async () => {
    const { root } = await apply([await buildTar([{ name: 'run/fifo', type: 'fifo', mode: 0o620, mtime: 1300000000 }])]);
    const st = await lstat(join(root, 'run/fifo'));
    expect(st.isFIFO()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o620);
    expect(st.mtimeMs).toBe(1300000000 * 1000);
  });

  it('creates character and block devices as root', async () => {
    const { root, warnings } = await apply([
      await buildTar([
        { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 },
        { name: 'dev/loop0', type: 'block-device', mode: 0o660, devmajor: 7, devminor: 0, gid: 6 },
      ]),
    ]);
    const c = await lstat(join(root, 'dev/null'));
    expect(c.isCharacterDevice()).toBe(true);
    expect(c.rdev).toBe(0x103);
    expect(c.mode & 0o7777).toBe(0o666);
    const b = await lstat(join(root, 'dev/loop0'));
    expect(b.isBlockDevice()).toBe(true);
    expect(b.rdev).toBe(0x700);
    expect(b.gid).toBe(6);
    expect(warnings).toEqual([]);
  });

  it('handles PAX long names and long link names', async () => {
    const longDir = 'd'.repeat(120);
    const longName = `${longDir}/${'f'.repeat(150)}`;
    const { root } = await apply([
      await buildTar([
        { name: longName, content: 'long' },
        { name: 'sym', type: 'symlink', linkname: `/${'t'.repeat(200)}` },
        { name: 'hard', type: 'link', linkname: longName },
      ]),
    ]);
    expect(await readFile(join(root, longName), 'utf8')).toBe('long');
    expect(await readlink(join(root, 'sym'))).toBe(`/${'t'.repeat(200)}`);
    expect((await lstat(join(root, 'hard'))).ino).toBe((await lstat(join(root, longName))).ino);
  });

  it('handles GNU long names and long link names (tar --format=gnu)', async () => {
    const src = await tmp();
    const longDir = 'g'.repeat(110);
    const longFile = `${longDir}/${'h'.repeat(130)}`;
    await mkdir(join(src, longDir));
    await writeFile(join(src, longFile), 'gnu');
    await symlink(`../${'l'.repeat(150)}`, join(src, 'sym'));
    await link(join(src, longFile), join(src, 'hard'));
    const tar = await gnuTar(src, [longDir, 'sym', 'hard'], { format: 'gnu' });
    expect(tar.includes(Buffer.from('././@LongLink'))).toBe(true);
    const { root } = await apply([tar]);
    expect(await readFile(join(root, longFile), 'utf8')).toBe('gnu');
    expect(await readlink(join(root, 'sym'))).toBe(`../${'l'.repeat(150)}`);
    expect((await lstat(join(root, 'hard'))).ino).toBe((await lstat(join(root, longFile))).ino);
  });

  it('rejects entry types it cannot create with UNSUPPORTED_ENTRY', async () => {
    const tar = await buildTar([{ name: 'sparse', content: 'x' }]);
    // Turn the entry into a GNU sparse file ('S'), which tar-stream does not decode.
    tar[156] = 'S'.charCodeAt(0);
    tar.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += tar[i]!;
    tar.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    await expect(apply([tar])).rejects.toMatchObject({ code: 'UNSUPPORTED_ENTRY' });
  });
});

describe('modes and ownership', () => {
  it('applies setuid, setgid and sticky bits after chown', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'usr/bin/su', content: 'su', mode: 0o4755, uid: 1000, gid: 1000 },
        { name: 'usr/bin/wall', content: 'w', mode: 0o2755, uid: 0, gid: 5 },
        { name: 'tmp/', type: 'directory', mode: 0o1777 },
        { name: 'srv/shared/', type: 'directory', mode: 0o2775, gid: 50 },
      ]),
    ]);
    const su = await lstat(join(root, 'usr/bin/su'));
    expect(su.mode & 0o7777).toBe(0o4755);
    expect(su.uid).toBe(1000);
    expect(await mode(join(root, 'usr/bin/wall'))).toBe(0o2755);
    expect(await mode(join(root, 'tmp'))).toBe(0o1777);
    expect(await mode(join(root, 'srv/shared'))).toBe(0o2775);
  });

  it('extracts children of 0555 and 000 directories and restores those modes at the end', async () => {
    for (const isRoot of [true, false]) {
      const { root } = await apply(
        [
          await buildTar([
            { name: 'ro/', type: 'directory', mode: 0o555 },
            { name: 'ro/file', content: 'r' },
            { name: 'none/', type: 'directory', mode: 0o000 },
            { name: 'none/sub/', type: 'directory', mode: 0o700 },
            { name: 'none/sub/file', content: 'n' },
          ]),
          await buildTar([{ name: 'ro/later', content: 'l' }]),
        ],
        { isRoot },
      );
      expect(await readFile(join(root, 'ro/file'), 'utf8')).toBe('r');
      expect(await readFile(join(root, 'ro/later'), 'utf8')).toBe('l');
      expect(await readFile(join(root, 'none/sub/file'), 'utf8')).toBe('n');
      expect(await mode(join(root, 'ro'))).toBe(0o555);
      expect(await mode(join(root, 'none'))).toBe(0o000);
    }
  });

  it('extracts files with mode 0444 and 000', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'readonly', content: 'ro', mode: 0o444 },
        { name: 'nothing', content: 'no', mode: 0o000 },
      ]),
    ]);
    expect(await readFile(join(root, 'readonly'), 'utf8')).toBe('ro');
    expect(await mode(join(root, 'readonly'))).toBe(0o444);
    expect(await readFile(join(root, 'nothing'), 'utf8')).toBe('no');
    expect(await mode(join(root, 'nothing'))).toBe(0o000);
  });

  it('as non-root: applies no ownership and skips devices with one summary warning', async () => {
    const { root, warnings, stats } = await apply(
      [
        await buildTar([
          { name: 'f', content: 'x', uid: 1234, gid: 4321 },
          { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
          { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
          { name: 'dev/fifo', type: 'fifo' },
        ]),
        await buildTar([{ name: 'dev/zero', type: 'character-device', devmajor: 1, devminor: 5 }]),
      ],
      { isRoot: false },
    );
    expect((await lstat(join(root, 'f'))).uid).toBe(process.getuid!());
    expect(await exists(join(root, 'dev/null'))).toBe(false);
    expect(await exists(join(root, 'dev/zero'))).toBe(false);
    expect((await lstat(join(root, 'dev/fifo'))).isFIFO()).toBe(true);
    expect(stats.map((s) => s.skipped)).toEqual([2, 1]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/skipped 3 device node/);
  });
});

describe('times', () => {
  it('sets mtimes of files, directories and symlinks, directories last', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'd/', type: 'directory', mtime: 1111111111 },
        { name: 'd/f', content: 'f', mtime: 1222222222 },
        { name: 'd/l', type: 'symlink', linkname: 'f', mtime: 1333333333 },
      ]),
      await buildTar([{ name: 'd/added-later', content: 'x' }]),
    ]);
    expect((await lstat(join(root, 'd'))).mtimeMs).toBe(1111111111 * 1000);
    expect((await lstat(join(root, 'd/f'))).mtimeMs).toBe(1222222222 * 1000);
    expect((await lstat(join(root, 'd/l'))).mtimeMs).toBe(1333333333 * 1000);
  });

  it('keeps sub-second PAX mtimes (GNU tar --format=posix)', async () => {
    const src = await tmp();
    await writeFile(join(src, 'f'), 'x');
    await utimes(join(src, 'f'), 1700000000.25, 1700000000.5);
    const { root } = await apply([await gnuTar(src, ['f'], { format: 'posix' })]);
    expect((await lstat(join(root, 'f'))).mtimeMs).toBe(1700000000500);
  });
});

describe('extended attributes', () => {
  it('sets PAX SCHILY.xattr values on files and directories', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'd/', type: 'directory', pax: { 'SCHILY.xattr.user.dir': 'on dir' } },
        { name: 'd/f', content: 'x', pax: { 'SCHILY.xattr.user.mime_type': 'text/plain', 'SCHILY.xattr.user.empty': '' } },
      ]),
    ]);
    expect((await getXattr(join(root, 'd/f'), 'user.mime_type')).toString()).toBe('text/plain');
    expect((await getXattr(join(root, 'd/f'), 'user.empty')).length).toBe(0);
    expect((await getXattr(join(root, 'd'), 'user.dir')).toString()).toBe('on dir');
  });

  it('sets a binary security.capability (GNU tar --xattrs) after chown and chmod', async () => {
    const src = await tmp();
    await writeFile(join(src, 'ping'), 'ping');
    // v2 capability, effective, permitted = CAP_SETUID (bit 7): a 0x80 byte, not valid UTF-8.
    const cap = Buffer.from('0100000280000000000000000000000000000000', 'hex');
    await run('chown', ['1000:1000', join(src, 'ping')]);
    await run('chmod', ['0750', join(src, 'ping')]);
    await run('setfattr', ['-n', 'security.capability', '-v', `0x${cap.toString('hex')}`, join(src, 'ping')]);
    const { root } = await apply([await gnuTar(src, ['ping'], { format: 'posix', xattrs: true })]);
    expect(await getXattr(join(root, 'ping'), 'security.capability')).toEqual(cap);
    expect((await lstat(join(root, 'ping'))).uid).toBe(1000);
    expect(await mode(join(root, 'ping'))).toBe(0o750);
  });

  it('sets xattrs on a symlink itself, and on names that need quoting', async () => {
    const odd = 'we ird\\na=me\névé';
    const { root } = await apply([
      await buildTar([
        { name: 'target', content: 't' },
        { name: 'link', type: 'symlink', linkname: 'target', pax: { 'SCHILY.xattr.trusted.on-link': 'L' } },
        { name: odd, content: 'o', pax: { 'SCHILY.xattr.user.odd': 'yes' } },
      ]),
    ]);
    expect((await getXattr(join(root, 'link'), 'trusted.on-link')).toString()).toBe('L');
    await expect(getXattr(join(root, 'target'), 'trusted.on-link')).rejects.toThrow();
    expect((await getXattr(join(root, odd), 'user.odd')).toString()).toBe('yes');
  });

  it('replaces the xattrs of a directory an upper layer re-declares (layer.md: attributes replaced)', async () => {
    const odd = 'odd dir\névé';
    const lower = { 'SCHILY.xattr.user.dir': 'lower', 'SCHILY.xattr.trusted.t': 'lower' };
    const { root } = await apply([
      await buildTar([
        { name: 'xdir/', type: 'directory', pax: lower },
        { name: 'plain/', type: 'directory', pax: lower },
        { name: `${odd}/`, type: 'directory', pax: lower },
      ]),
      await buildTar([
        { name: 'xdir/', type: 'directory', pax: { 'SCHILY.xattr.user.other': 'upper' } },
        { name: 'plain/', type: 'directory' },
        { name: `${odd}/`, type: 'directory', pax: { 'SCHILY.xattr.user.dir': 'upper' } },
      ]),
    ]);
    const names = async (p: string): Promise<string> =>
      (await run('getfattr', ['-h', '-d', '-m', '-', '--absolute-names', p]))
        .toString()
        .split('\n')
        .filter((l) => l.includes('='))
        .join(',');
    expect(await names(join(root, 'xdir'))).toBe('user.other="upper"');
    expect(await names(join(root, 'plain'))).toBe('');
    expect(await names(join(root, odd))).toBe('user.dir="upper"');
  });

  it('does not set host-specific xattrs (security.selinux) from a layer', async () => {
    const { root } = await apply([
      await buildTar([{ name: 'f', content: 'x', pax: { 'SCHILY.xattr.security.selinux': 'system_u:object_r:etc_t:s0' } }]),
    ]);
    await expect(getXattr(join(root, 'f'), 'security.selinux')).rejects.toThrow();
  });

  it('as non-root: sets user.* only and warns once for the others', async () => {
    const { root, warnings } = await apply(
      [
        await buildTar([
          { name: 'f', content: 'x', pax: { 'SCHILY.xattr.user.a': '1', 'SCHILY.xattr.security.capability': 'zz' } },
          { name: 'g', content: 'x', pax: { 'SCHILY.xattr.trusted.b': '2' } },
        ]),
      ],
      { isRoot: false },
    );
    expect((await getXattr(join(root, 'f'), 'user.a')).toString()).toBe('1');
    await expect(getXattr(join(root, 'f'), 'security.capability')).rejects.toThrow();
    expect(warnings).toEqual([expect.stringMatching(/skipped 2 extended attribute/)]);
  });

  it('warns once and still extracts when setfattr is not installed', async () => {
    const layer = await buildTar([
      { name: 'a', content: 'a', pax: { 'SCHILY.xattr.user.a': '1' } },
      { name: 'b', content: 'b', pax: { 'SCHILY.xattr.user.b': '2' } },
    ]);
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    let applied: Applied;
    try {
      applied = await apply([layer, layer]);
    } finally {
      process.env.PATH = path;
    }
    expect(await readFile(join(applied.root, 'b'), 'utf8')).toBe('b');
    expect(applied.warnings).toEqual([expect.stringMatching(/setfattr\/getfattr .* were not found/)]);
    await expect(getXattr(join(applied.root, 'a'), 'user.a')).rejects.toThrow();
  });

  it('parses binary PAX records', () => {
    const rec = (k: string, v: Buffer): Buffer => {
      const body = Buffer.concat([Buffer.from(` ${k}=`), v, Buffer.from('\n')]);
      let len = body.length + 1;
      if (String(len).length + body.length !== len) len = String(len + 1).length + body.length;
      return Buffer.concat([Buffer.from(String(len)), body]);
    };
    const v = Buffer.from([0x00, 0xff, 0x0a, 0x3d, 0x80]);
    const parsed = parsePaxXattrs(Buffer.concat([rec('path', Buffer.from('a')), rec('SCHILY.xattr.user.bin', v)]));
    expect(parsed?.get('user.bin')).toEqual(v);
    expect(parsed?.size).toBe(1);
  });
});

describe('replacing existing paths (layer.md "Changeset over existing files")', () => {
  it('replaces a directory with a file, removing its contents', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'p/', type: 'directory' },
        { name: 'p/deep/x', content: 'x' },
      ]),
      await buildTar([{ name: 'p', content: 'now a file' }]),
    ]);
    expect(await readFile(join(root, 'p'), 'utf8')).toBe('now a file');
  });

  it('replaces a file with a directory', async () => {
    const { root } = await apply([
      await buildTar([{ name: 'p', content: 'file' }]),
      await buildTar([
        { name: 'p/', type: 'directory', mode: 0o700 },
        { name: 'p/child', content: 'c' },
      ]),
    ]);
    expect((await lstat(join(root, 'p'))).isDirectory()).toBe(true);
    expect(await mode(join(root, 'p'))).toBe(0o700);
    expect(await readFile(join(root, 'p/child'), 'utf8')).toBe('c');
  });

  it('replaces a directory with a symlink', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'lib/', type: 'directory' },
        { name: 'lib/libc.so', content: 'c' },
        { name: 'usr/lib/', type: 'directory' },
      ]),
      await buildTar([{ name: 'lib', type: 'symlink', linkname: 'usr/lib' }]),
    ]);
    expect((await lstat(join(root, 'lib'))).isSymbolicLink()).toBe(true);
    expect(await readdir(join(root, 'usr/lib'))).toEqual([]);
  });

  it('merges a directory over a directory: keeps contents, takes mode, owner and mtime', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'etc/', type: 'directory', mode: 0o755, mtime: 1000 },
        { name: 'etc/keep', content: 'k' },
      ]),
      await buildTar([
        { name: 'etc/', type: 'directory', mode: 0o700, uid: 9, gid: 9, mtime: 2000 },
        { name: 'etc/new', content: 'n' },
      ]),
    ]);
    expect((await readdir(join(root, 'etc'))).sort()).toEqual(['keep', 'new']);
    const st = await lstat(join(root, 'etc'));
    expect(st.mode & 0o7777).toBe(0o700);
    expect([st.uid, st.gid]).toEqual([9, 9]);
    expect(st.mtimeMs).toBe(2000 * 1000);
  });

  it('replaces a file with a new inode, leaving lower-layer hardlinks unchanged', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'a', content: 'old' },
        { name: 'b', type: 'link', linkname: 'a' },
      ]),
      await buildTar([{ name: 'a', content: 'new', mode: 0o600 }]),
    ]);
    expect(await readFile(join(root, 'a'), 'utf8')).toBe('new');
    expect(await readFile(join(root, 'b'), 'utf8')).toBe('old');
    expect((await lstat(join(root, 'a'))).ino).not.toBe((await lstat(join(root, 'b'))).ino);
  });

  it('replaces a symlink to a directory with a real directory for a directory entry', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'real/', type: 'directory' },
        { name: 'real/x', content: 'x' },
        { name: 'alias', type: 'symlink', linkname: 'real' },
      ]),
      await buildTar([
        { name: 'alias/', type: 'directory' },
        { name: 'alias/y', content: 'y' },
      ]),
    ]);
    expect((await lstat(join(root, 'alias'))).isDirectory()).toBe(true);
    expect(await readdir(join(root, 'alias'))).toEqual(['y']);
    expect(await readdir(join(root, 'real'))).toEqual(['x']);
  });

  it('replaces other entry types (symlink, fifo, hardlink) at an existing path', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'x', content: 'file' },
        { name: 'y', type: 'symlink', linkname: 'x' },
        { name: 'z', content: 'z' },
      ]),
      await buildTar([
        { name: 'x', type: 'fifo' },
        { name: 'y', type: 'link', linkname: 'z' },
        { name: 'z2', type: 'symlink', linkname: 'z' },
      ]),
      await buildTar([{ name: 'z2', type: 'symlink', linkname: 'y' }]),
    ]);
    expect((await lstat(join(root, 'x'))).isFIFO()).toBe(true);
    expect((await lstat(join(root, 'y'))).ino).toBe((await lstat(join(root, 'z'))).ino);
    expect(await readlink(join(root, 'z2'))).toBe('y');
  });

  it('resolves names afresh after a directory or symlink parent is replaced in a later layer', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'real/', type: 'directory' },
        { name: 'l', type: 'symlink', linkname: 'real' },
        { name: 'l/one', content: '1' },
        { name: 'd/', type: 'directory' },
        { name: 'd/one', content: '1' },
        { name: 'e/', type: 'directory' },
      ]),
      await buildTar([
        { name: '.wh.l' },
        { name: 'l/two', content: '2' },
        { name: 'd', type: 'symlink', linkname: 'e' },
        { name: 'd/two', content: '2' },
      ]),
    ]);
    expect(await readdir(join(root, 'real'))).toEqual(['one']);
    expect((await lstat(join(root, 'l'))).isDirectory()).toBe(true);
    expect(await readdir(join(root, 'l'))).toEqual(['two']);
    expect(await readdir(join(root, 'e'))).toEqual(['two']);
  });

  it('writes through a symlinked parent directory inside the root', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'usr/lib/', type: 'directory' },
        { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
      ]),
      await buildTar([{ name: 'lib/libz.so', content: 'z' }]),
    ]);
    expect(await readFile(join(root, 'usr/lib/libz.so'), 'utf8')).toBe('z');
    expect((await lstat(join(root, 'lib'))).isSymbolicLink()).toBe(true);
  });
});

describe('whiteouts', () => {
  it('removes a lower file and a lower directory tree, and never writes the whiteout', async () => {
    const { root, stats } = await apply([
      await buildTar([
        { name: 'etc/old.conf', content: 'o' },
        { name: 'etc/keep', content: 'k' },
        { name: 'var/cache/', type: 'directory' },
        { name: 'var/cache/a/b', content: 'b' },
      ]),
      await buildTar([{ name: 'etc/.wh.old.conf' }, { name: 'var/.wh.cache' }]),
    ]);
    expect(await readdir(join(root, 'etc'))).toEqual(['keep']);
    expect(await readdir(join(root, 'var'))).toEqual([]);
    expect(stats[1]!.whiteouts).toBe(2);
  });

  it('is a no-op for a missing name or a missing parent', async () => {
    const { root } = await apply([
      await buildTar([{ name: 'a/f', content: 'f' }]),
      await buildTar([{ name: 'a/.wh.nothing' }, { name: 'missing/dir/.wh.x' }, { name: 'a/f/.wh.under-a-file' }]),
    ]);
    expect(await readdir(root)).toEqual(['a']);
    expect(await readdir(join(root, 'a'))).toEqual(['f']);
  });

  it('removes a symlink itself, not its target', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'data/', type: 'directory' },
        { name: 'data/x', content: 'x' },
        { name: 'ln', type: 'symlink', linkname: 'data' },
      ]),
      await buildTar([{ name: '.wh.ln' }]),
    ]);
    expect(await readdir(root)).toEqual(['data']);
    expect(await readdir(join(root, 'data'))).toEqual(['x']);
  });

  it('treats a whiteout by name whatever its entry type (directory, hardlink)', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'a', content: 'a' },
        { name: 'b', content: 'b' },
        { name: 'c', content: 'c' },
      ]),
      await buildTar([
        { name: '.wh.a/', type: 'directory' },
        { name: '.wh.b', type: 'link', linkname: 'c' },
      ]),
    ]);
    expect(await readdir(root)).toEqual(['c']);
  });

  it('keeps an entry of the same layer that a later whiteout names (whiteouts only apply to lower layers)', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'd/', type: 'directory' },
        { name: 'd/lower', content: 'l' },
        { name: 'f', content: 'lower f' },
      ]),
      await buildTar([
        { name: 'f', content: 'upper f' },
        { name: '.wh.f' },
        { name: 'd/', type: 'directory' },
        { name: 'd/upper', content: 'u' },
        { name: '.wh.d' },
      ]),
    ]);
    expect(await readFile(join(root, 'f'), 'utf8')).toBe('upper f');
    expect(await readdir(join(root, 'd'))).toEqual(['upper']);
  });

  for (const order of ['marker first', 'marker last'] as const) {
    it(`opaque directory hides lower children and keeps this layer's (${order})`, async () => {
      const upper = [
        { name: 'a/', type: 'directory' as const },
        { name: 'a/b/', type: 'directory' as const },
        { name: 'a/b/c/', type: 'directory' as const },
        { name: 'a/b/c/foo', content: 'foo' },
        { name: 'a/new', content: 'new' },
      ];
      const marker = { name: 'a/.wh..wh..opq' };
      const { root } = await apply([
        await buildTar([
          { name: 'a/', type: 'directory' },
          { name: 'a/b/', type: 'directory' },
          { name: 'a/b/c/', type: 'directory' },
          { name: 'a/b/c/bar', content: 'bar' },
          { name: 'a/b/sibling', content: 's' },
          { name: 'a/gone', content: 'g' },
          { name: 'other/keep', content: 'k' },
        ]),
        await buildTar(order === 'marker first' ? [marker, ...upper] : [...upper, marker]),
      ]);
      expect((await readdir(join(root, 'a'))).sort()).toEqual(['b', 'new']);
      expect(await readdir(join(root, 'a/b'))).toEqual(['c']);
      expect(await readdir(join(root, 'a/b/c'))).toEqual(['foo']);
      expect(await readFile(join(root, 'other/keep'), 'utf8')).toBe('k');
    });
  }

  it('opaque marker keeps files this layer adds without a directory entry for their parent', async () => {
    const { root } = await apply([
      await buildTar([
        { name: 'bin/old', content: 'o' },
        { name: 'bin/sub/old', content: 'o' },
      ]),
      await buildTar([{ name: 'bin/sub/new', content: 'n' }, { name: 'bin/.wh..wh..opq' }]),
    ]);
    expect(await readdir(join(root, 'bin'))).toEqual(['sub']);
    expect(await readdir(join(root, 'bin/sub'))).toEqual(['new']);
  });

  it('skips aufs metadata whiteouts (.wh..wh.plnk)', async () => {
    const { root, stats } = await apply([
      await buildTar([
        { name: '.wh..wh.plnk/', type: 'directory' },
        { name: '.wh..wh.aufs', content: '' },
        { name: 'f', content: 'f' },
      ]),
    ]);
    expect(await readdir(root)).toEqual(['f']);
    expect(stats[0]!.skipped).toBe(2);
  });

  it('a whiteout removes a directory whose restrictive mode was deferred (non-root)', async () => {
    const { root } = await apply(
      [
        await buildTar([
          { name: 'locked/', type: 'directory', mode: 0o500 },
          { name: 'locked/inner/', type: 'directory', mode: 0o000 },
          { name: 'locked/inner/f', content: 'x' },
        ]),
        await buildTar([{ name: '.wh.locked' }, { name: 'locked', content: 'file now' }]),
      ],
      { isRoot: false },
    );
    expect(await readFile(join(root, 'locked'), 'utf8')).toBe('file now');
  });
});

describe('names', () => {
  it('normalizes ./ prefixes, duplicate slashes and inner .. and ignores the root entry', async () => {
    const { root, stats } = await apply([
      await buildTar([
        { name: './', type: 'directory', mode: 0o700 },
        { name: './a//b/../c', content: 'c' },
      ]),
    ]);
    expect(await readdir(join(root, 'a'))).toEqual(['c']);
    expect(await mode(root)).not.toBe(0o700);
    expect(stats[0]!.entries).toBe(2);
  });
});

describe('names that are not UTF-8 (their bytes are kept, as umoci does)', () => {
  /** A path whose last part is `name`, a string of one char per byte (e.g. 'caf\xe9'). */
  const raw = (dir: string, name: string): Buffer => Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(name, 'latin1')]);
  /** The names in `dir`, as one-char-per-byte strings. */
  const namesIn = async (dir: string | Buffer): Promise<string[]> =>
    (await readdir(dir, { encoding: 'buffer' })).map((b) => b.toString('latin1')).sort();
  const LONG = `long\xe9${'x'.repeat(150)}`;
  const LONG_TARGET = `../${'y\xe9'.repeat(60)}`;

  async function rawTree(): Promise<string> {
    const src = await tmp();
    await writeFile(raw(src, 'caf\xe9.txt'), 'latin-1\n');
    // The same name in UTF-8 is another file: the two must not collapse into one.
    await writeFile(raw(src, 'caf\xc3\xa9.txt'), 'utf-8\n');
    await mkdir(raw(src, 'dir\xff'));
    await writeFile(raw(src, 'dir\xff/inner'), 'inner\n');
    await writeFile(raw(src, `dir\xff/${LONG}`), 'long\n');
    await symlink(Buffer.from('caf\xe9.txt', 'latin1'), raw(src, 'link\xe9'));
    await symlink(Buffer.from(LONG_TARGET, 'latin1'), raw(src, 'long-link'));
    await link(raw(src, 'caf\xe9.txt'), raw(src, 'hard\xe9'));
    await run('sh', ['-c', 'mkfifo -m 0600 "$(printf "fifo\\351")"'], { cwd: src });
    return src;
  }

  for (const format of ['gnu', 'posix'] as const) {
    it(`keeps file, directory, symlink, hardlink and FIFO names and link targets (GNU tar --format=${format})`, async () => {
      const tar = await gnuTar(await rawTree(), ['.'], { format });
      const { root } = await apply([tar]);
      expect(await namesIn(root)).toEqual(['caf\xc3\xa9.txt', 'caf\xe9.txt', 'dir\xff', 'fifo\xe9', 'hard\xe9', 'link\xe9', 'long-link']);
      expect(await readFile(raw(root, 'caf\xe9.txt'), 'utf8')).toBe('latin-1\n');
      expect(await readFile(join(root, 'café.txt'), 'utf8')).toBe('utf-8\n');
      expect(await namesIn(raw(root, 'dir\xff'))).toEqual(['inner', LONG].sort());
      expect(await readFile(raw(root, `dir\xff/${LONG}`), 'utf8')).toBe('long\n');
      expect((await readlink(raw(root, 'link\xe9'), { encoding: 'buffer' })).toString('latin1')).toBe('caf\xe9.txt');
      expect((await readlink(raw(root, 'long-link'), { encoding: 'buffer' })).toString('latin1')).toBe(LONG_TARGET);
      expect((await lstat(raw(root, 'hard\xe9'))).ino).toBe((await lstat(raw(root, 'caf\xe9.txt'))).ino);
      expect((await lstat(raw(root, 'fifo\xe9'))).isFIFO()).toBe(true);
      expect((await lstat(raw(root, 'fifo\xe9'))).mode & 0o7777).toBe(0o600);
    });
  }

  it('applies whiteouts and opaque markers to names that are not UTF-8', async () => {
    const lower = await tmp();
    await writeFile(raw(lower, 'gone\xe9'), 'g');
    await writeFile(raw(lower, 'kept\xe9'), 'k');
    await mkdir(raw(lower, 'opq\xff'));
    await writeFile(raw(lower, 'opq\xff/old\xe9'), 'o');
    const upper = await tmp();
    await writeFile(raw(upper, '.wh.gone\xe9'), '');
    await mkdir(raw(upper, 'opq\xff'));
    await writeFile(raw(upper, 'opq\xff/.wh..wh..opq'), '');
    await writeFile(raw(upper, 'opq\xff/new\xe9'), 'n');
    const { root, stats } = await apply([await gnuTar(lower, ['.'], { format: 'gnu' }), await gnuTar(upper, ['.'], { format: 'gnu' })]);
    expect(await namesIn(root)).toEqual(['kept\xe9', 'opq\xff']);
    expect(await namesIn(raw(root, 'opq\xff'))).toEqual(['new\xe9']);
    expect(stats[1]!.whiteouts).toBe(2);
  });

  it('sets and replaces the xattrs of files and directories whose names are not UTF-8', async () => {
    const lower = await tmp();
    await writeFile(raw(lower, 'file\xe9'), 'f');
    await mkdir(raw(lower, 'dir\xff'));
    const upper = await tmp();
    await mkdir(raw(upper, 'dir\xff'));
    // setfattr cannot take these names as arguments: set them through a shell's printf.
    const setAttr = (cwd: string, name: string, attr: string, value: string): Promise<Buffer> =>
      run('sh', ['-c', 'setfattr -n "$1" -v "$2" -- "$(printf "$3")"', 'sh', attr, value, name], { cwd });
    await setAttr(lower, 'file\\351', 'user.file', 'lower');
    await setAttr(lower, 'dir\\377', 'user.dir', 'lower');
    await setAttr(upper, 'dir\\377', 'user.other', 'upper');
    const { root } = await apply([
      await gnuTar(lower, ['.'], { format: 'posix', xattrs: true }),
      await gnuTar(upper, ['.'], { format: 'posix', xattrs: true }),
    ]);
    const dump = (await run('getfattr', ['-R', '-d', '-m', '^user\\.', '--absolute-names', root])).toString('latin1');
    expect(dump).toContain(`# file: ${root}/file\xe9\nuser.file="lower"\n`);
    expect(dump).toContain(`# file: ${root}/dir\xff\nuser.other="upper"\n\n`);
    expect(dump).not.toContain('user.dir=');
  });

  it('creates parents of such names that the layer does not list', async () => {
    const src = await tmp();
    await mkdir(raw(src, 'p\xff/q\xe9'), { recursive: true });
    await writeFile(raw(src, 'p\xff/q\xe9/f'), 'f');
    // Only the file is listed (tar reads the names in a -T list as bytes): its parents are implicit.
    const list = join(await tmp(), 'list');
    await writeFile(list, Buffer.from('p\xff/q\xe9/f\n', 'latin1'));
    const tar = await run('tar', ['-C', src, '--format=gnu', '--no-recursion', '-cf', '-', '-T', list]);
    const { root, stats } = await apply([tar]);
    expect(stats[0]!.entries).toBe(1);
    expect(await readFile(raw(root, 'p\xff/q\xe9/f'), 'utf8')).toBe('f');
    for (const dir of ['p\xff', 'p\xff/q\xe9']) expect((await lstat(raw(root, dir))).mode & 0o7777).toBe(0o755);
  });
});

describe('stream handling', () => {
  it('consumes the whole stream, including padding after the end-of-archive blocks', async () => {
    const tar = Buffer.concat([await buildTar([{ name: 'f', content: 'x' }]), Buffer.alloc(10240)]);
    const dir = await tmp();
    await mkdir(join(dir, 'root'));
    const source = Readable.from([tar]);
    await applyLayer(createApplyContext(join(dir, 'root')), source);
    expect(source.readableEnded).toBe(true);
  });

  it('rejects a corrupt tar with CORRUPT_LAYER', async () => {
    const garbage = Buffer.alloc(2048, 0x41);
    await expect(apply([garbage])).rejects.toMatchObject({ code: 'CORRUPT_LAYER' });
  });

  it('rejects a truncated tar with CORRUPT_LAYER', async () => {
    const tar = await buildTar([{ name: 'f', content: randomBytes(4096) }]);
    await expect(apply([tar.subarray(0, 2048)])).rejects.toMatchObject({ code: 'CORRUPT_LAYER' });
  });

  it('passes a typed error of the source through (e.g. a DiffID mismatch found at the end)', async () => {
    const tar = await buildTar([{ name: 'f', content: 'x' }]);
    async function* failing(): AsyncGenerator<Buffer> {
      yield tar.subarray(0, 1024);
      throw new PullUnpackError('DIFFID_MISMATCH', 'diffid mismatch');
    }
    const dir = await tmp();
    await mkdir(join(dir, 'root'));
    await expect(applyLayer(createApplyContext(join(dir, 'root')), Readable.from(failing()))).rejects.toMatchObject({
      code: 'DIFFID_MISMATCH',
    });
  });

  it('rejects a hardlink to a missing target and a file under a file with CORRUPT_LAYER', async () => {
    await expect(apply([await buildTar([{ name: 'h', type: 'link', linkname: 'nope' }])])).rejects.toMatchObject({ code: 'CORRUPT_LAYER' });
    await expect(
      apply([
        await buildTar([
          { name: 'f', content: 'f' },
          { name: 'f/g', content: 'g' },
        ]),
      ]),
    ).rejects.toMatchObject({
      code: 'CORRUPT_LAYER',
      message: expect.stringContaining('layer 1: "f/g"'),
    });
  });

  it('aborts mid-file: stops reading, destroys the stream, rejects with ABORTED', async () => {
    const tar = await buildTar([
      { name: 'a', content: 'a' },
      { name: 'big', content: randomBytes(1 << 20) },
    ]);
    const source = stalledStream(tar.subarray(0, 200 * 1024));
    const dir = await tmp();
    await mkdir(join(dir, 'root'));
    const controller = new AbortController();
    const pending = applyLayer(createApplyContext(join(dir, 'root')), source, { signal: controller.signal });
    // 'drain': the applier has read all 200 KiB given, so it is inside "big", waiting for more.
    await once(source, 'drain');
    controller.abort(new Error('user pressed ^C'));
    await expect(pending).rejects.toMatchObject({ code: 'ABORTED' });
    expect(source.destroyed).toBe(true);
  });

  it('rejects at once with ABORTED for an already-aborted signal', async () => {
    const dir = await tmp();
    await mkdir(join(dir, 'root'));
    const source = stalledStream(await buildTar([{ name: 'a', content: 'a' }]));
    const controller = new AbortController();
    controller.abort();
    await expect(applyLayer(createApplyContext(join(dir, 'root')), source, { signal: controller.signal })).rejects.toMatchObject({
      code: 'ABORTED',
    });
    expect(source.destroyed).toBe(true);
    expect(await readdir(join(dir, 'root'))).toEqual([]);
  });
});
