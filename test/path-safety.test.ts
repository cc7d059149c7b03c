/**
 * One named test per path attack on the layer applier (in the spirit of node-tar's ghsa-* tests
 * and containerd's TestBreakouts). Each test puts a sentinel directory OUTSIDE the root (a sibling
 * of it), snapshots it, applies the hostile layers, and checks that the sentinel is unchanged and
 * that nothing appeared next to the root.
 */
import { describe, expect, it } from 'vitest';
import { lstat, mkdir, readFile, readdir, readlink, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { cleanEntryName, fsPath, resolveInRoot } from '../src/apply/safe-path.js';
import { bytesToName, nameToBytes } from '../src/tar/names.js';
import { sentinelSandbox } from './helpers/sandbox.js';
import { applyLayers, buildTar, type TarEntrySpec } from './helpers/tar.js';

const box = sentinelSandbox('pu-safety-');

async function applyAll(layers: TarEntrySpec[][]): Promise<void> {
  const tars = await Promise.all(layers.map((l) => buildTar(l)));
  await applyLayers(tars, { into: box });
}

/**
 * Tars of `layers` in which every `@@` of a name or link target is the bytes 0xff 0xfe (not
 * UTF-8), header checksums fixed: tar-stream's pack only writes names as UTF-8.
 */
async function applyRaw(layers: TarEntrySpec[][]): Promise<void> {
  const tars = await Promise.all(layers.map(async (l) => withBytes(await buildTar(l), '@@', Buffer.from([0xff, 0xfe]))));
  await applyLayers(tars, { into: box });
}

function withBytes(tar: Buffer, placeholder: string, bytes: Buffer): Buffer {
  const out = Buffer.from(tar);
  const from = Buffer.from(placeholder);
  const headers = new Set<number>();
  for (let at = out.indexOf(from); at >= 0; at = out.indexOf(from, at + 1)) {
    const block = at - (at % 512);
    if (headers.has(block) || Number.parseInt(out.toString('latin1', block + 148, block + 155), 8) === headerSum(out, block))
      headers.add(block);
    bytes.copy(out, at);
  }
  for (const block of headers) out.write(`${headerSum(out, block).toString(8).padStart(6, '0')}\0 `, block + 148, 'latin1');
  return out;
}

/** The ustar header checksum: every byte of the block, the checksum field counted as spaces. */
function headerSum(tar: Buffer, block: number): number {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : (tar[block + i] as number);
  return sum;
}

async function inRoot(rel: string): Promise<string> {
  return readFile(join(box.root, rel), 'utf8');
}

describe('names', () => {
  it('refuses a name with .. components that climb above the root', async () => {
    await expect(applyAll([[{ name: '../outside/secret', content: 'pwned' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
    await expect(applyAll([[{ name: 'a/../../outside/new', content: 'pwned' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  // Changed by issue 11: absolute names were refused; containerd, umoci and GNU tar read them
  // from the root (a leading '/' stripped), and so does pull-unpack now, never outside it.
  it('resolves an absolute name inside the root, never at that host path', async () => {
    await applyAll([[{ name: `${box.outside}/secret`, content: 'in the root' }]]);
    expect(await inRoot(`${box.outside.slice(1)}/secret`)).toBe('in the root');
    await expect(applyAll([[{ name: '/../outside/secret', content: 'pwned' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('refuses a directory entry named ..', async () => {
    await expect(applyAll([[{ name: '../', type: 'directory', mode: 0o777 }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });
});

describe('symlinks from earlier entries', () => {
  it('does not follow a symlink created in a lower layer pointing outside (absolute)', async () => {
    await applyAll([[{ name: 'a', type: 'symlink', linkname: box.outside }], [{ name: 'a/secret', content: 'pwned' }]]);
    // Re-rooted: the absolute target is read as if the root were /.
    expect(await inRoot(join(box.outside, 'secret'))).toBe('pwned');
  });

  it('does not follow a relative ../../.. symlink out of the root', async () => {
    await applyAll([
      [{ name: 'a/b/up', type: 'symlink', linkname: '../../../../../../outside' }],
      [{ name: 'a/b/up/secret', content: 'pwned' }],
    ]);
    expect(await inRoot('outside/secret')).toBe('pwned');
  });

  it('does not follow a chain of symlinks that ends outside', async () => {
    await applyAll([
      [
        { name: 'a', type: 'symlink', linkname: 'b' },
        { name: 'b', type: 'symlink', linkname: box.outside },
      ],
      [{ name: 'a/sub/passwd', content: 'pwned' }],
    ]);
    expect(await inRoot(join(box.outside, 'sub/passwd'))).toBe('pwned');
  });

  it('does not follow a symlink to outside created earlier in the same layer', async () => {
    await applyAll([
      [
        { name: 'esc', type: 'symlink', linkname: '../outside' },
        { name: 'esc/secret', content: 'pwned' },
      ],
    ]);
    expect(await inRoot('outside/secret')).toBe('pwned');
  });

  it('does not write through a directory replaced by a symlink in a later layer', async () => {
    await applyAll([
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/f', content: 'f' },
      ],
      [{ name: 'd', type: 'symlink', linkname: box.outside }],
      [{ name: 'd/secret', content: 'pwned' }],
    ]);
    expect(await inRoot(join(box.outside, 'secret'))).toBe('pwned');
  });

  it('is not fooled by a poisoned directory cache (dir a, then symlink a -> outside, then a/x)', async () => {
    await applyAll([
      [
        { name: 'a/', type: 'directory' },
        { name: 'a/first', content: 'cached a as a directory' },
        { name: 'a', type: 'symlink', linkname: box.outside },
        { name: 'a/secret', content: 'pwned' },
        { name: 'a/sub/passwd', content: 'pwned' },
      ],
    ]);
    expect(await inRoot(join(box.outside, 'secret'))).toBe('pwned');
    expect(await inRoot(join(box.outside, 'sub/passwd'))).toBe('pwned');
  });

  it('is not fooled by a cached symlinked parent whose link is re-pointed outside', async () => {
    await applyAll([
      [
        { name: 'real/', type: 'directory' },
        { name: 'l', type: 'symlink', linkname: 'real' },
        { name: 'l/one', content: 'cached l -> real' },
        { name: 'l', type: 'symlink', linkname: '../outside' },
        { name: 'l/secret', content: 'pwned' },
      ],
    ]);
    expect(await inRoot('real/one')).toBe('cached l -> real');
    expect(await inRoot('outside/secret')).toBe('pwned');
  });

  it('replaces a final-component symlink pointing outside instead of writing through it', async () => {
    await applyAll([
      [{ name: 'f', type: 'symlink', linkname: join(box.outside, 'secret') }],
      [{ name: 'f', content: 'replaced the link' }],
    ]);
    expect(await inRoot('f')).toBe('replaced the link');
  });

  it('does not chmod, chown or retime the target of a symlink replaced by a directory entry', async () => {
    await applyAll([
      [{ name: 'd', type: 'symlink', linkname: box.outside }],
      [{ name: 'd/', type: 'directory', mode: 0o700, uid: 4242, mtime: 1 }],
    ]);
    expect((await lstat(join(box.root, 'd'))).isDirectory()).toBe(true);
  });

  it('does not restore deferred directory metadata through a later symlink', async () => {
    await applyAll([
      [
        { name: 'd/', type: 'directory', mode: 0o700, mtime: 1 },
        { name: 'd/sub/', type: 'directory', mode: 0o711, mtime: 2 },
      ],
      [{ name: 'd', type: 'symlink', linkname: box.outside }],
    ]);
    expect(await readlink(join(box.root, 'd'))).toBe(box.outside);
  });

  it('creates FIFOs and devices through a symlinked parent inside the root', async () => {
    await applyAll([
      [{ name: 'd', type: 'symlink', linkname: box.outside }],
      [
        { name: 'd/fifo', type: 'fifo' },
        { name: 'd/null', type: 'character-device', devmajor: 1, devminor: 3 },
        { name: 'd/hl', type: 'link', linkname: 'd/fifo' },
      ],
    ]);
    expect((await lstat(join(box.root, box.outside, 'fifo'))).isFIFO()).toBe(true);
    expect((await lstat(join(box.root, box.outside, 'null'))).isCharacterDevice()).toBe(true);
  });

  it('refuses a symlink loop', async () => {
    await expect(
      applyAll([
        [
          { name: 'a', type: 'symlink', linkname: 'b' },
          { name: 'b', type: 'symlink', linkname: 'a' },
          { name: 'a/x', content: 'loop' },
        ],
      ]),
    ).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });
});

describe('hardlinks', () => {
  it('refuses a hardlink whose target climbs out with ..', async () => {
    await expect(applyAll([[{ name: 'h', type: 'link', linkname: '../outside/secret' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  // Issue 11: an absolute hardlink target was refused while containerd and umoci resolve it from
  // the root; it is now the root's own file, and one that exists only on the host is missing.
  it('resolves a hardlink with an absolute target inside the root, never to the host file', async () => {
    await applyAll([
      [
        { name: 'etc/passwd', content: 'root:x:0:0:image\n' },
        { name: 'h', type: 'link', linkname: '/etc/passwd' },
      ],
    ]);
    const [h, passwd] = await Promise.all([lstat(join(box.root, 'h')), lstat(join(box.root, 'etc/passwd'))]);
    expect(h.ino).toBe(passwd.ino);
    await expect(applyAll([[{ name: 'h2', type: 'link', linkname: join(box.outside, 'secret') }]])).rejects.toMatchObject({
      code: 'CORRUPT_LAYER',
      message: expect.stringContaining('does not exist'),
    });
    await expect(applyAll([[{ name: 'h3', type: 'link', linkname: '/../outside/secret' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('links a symlink pointing outside as the symlink itself, never the outside file', async () => {
    await applyAll([[{ name: 's', type: 'symlink', linkname: join(box.outside, 'secret') }], [{ name: 'h', type: 'link', linkname: 's' }]]);
    const h = await lstat(join(box.root, 'h'));
    expect(h.isSymbolicLink()).toBe(true);
    expect(h.ino).not.toBe((await lstat(join(box.outside, 'secret'))).ino);
  });

  it('resolves a hardlink target through a symlinked parent inside the root only', async () => {
    await expect(
      applyAll([[{ name: 'd', type: 'symlink', linkname: box.outside }], [{ name: 'h', type: 'link', linkname: 'd/secret' }]]),
    ).rejects.toMatchObject({ code: 'CORRUPT_LAYER' });
    expect(await readdir(box.root)).toEqual(['d']);
  });
});

describe('whiteouts', () => {
  it('refuses a whiteout named .wh...', async () => {
    await expect(applyAll([[{ name: 'a/', type: 'directory' }, { name: 'a/.wh...' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('refuses a whiteout whose path climbs out of the root', async () => {
    await expect(applyAll([[{ name: '../.wh.outside' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
    await expect(applyAll([[{ name: '../outside/.wh.secret' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('refuses a whiteout of . (the directory itself)', async () => {
    await expect(applyAll([[{ name: 'a/.wh..' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('does not remove through a symlink pointing outside', async () => {
    await applyAll([[{ name: 'a', type: 'symlink', linkname: box.outside }], [{ name: 'a/.wh.secret' }, { name: 'a/sub/.wh.passwd' }]]);
    expect(await readlink(join(box.root, 'a'))).toBe(box.outside);
  });

  it('does not empty an outside directory through an opaque marker behind a symlink', async () => {
    await applyAll([[{ name: 'a', type: 'symlink', linkname: '../outside' }], [{ name: 'a/.wh..wh..opq' }]]);
    expect(await readlink(join(box.root, 'a'))).toBe('../outside');
  });

  it('removes a symlink pointing outside, never its target', async () => {
    await applyAll([[{ name: 'a', type: 'symlink', linkname: box.outside }], [{ name: '.wh.a' }]]);
    expect(await readdir(box.root)).toEqual([]);
  });
});

describe('metadata', () => {
  it('sets pending xattrs before a directory is replaced by a symlink to outside', async () => {
    await applyAll([
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/secret', content: 'inside', pax: { 'SCHILY.xattr.user.evil': 'x' } },
        { name: 'd', type: 'symlink', linkname: box.outside },
      ],
    ]);
    expect(await readlink(join(box.root, 'd'))).toBe(box.outside);
  });
});

describe('names that are not UTF-8', () => {
  it('refuses a name that is not UTF-8 and climbs out with .. (0xff 0xfe/../../outside)', async () => {
    await expect(applyRaw([[{ name: '@@/../../outside/pwned', content: 'x' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('refuses a PAX path that is not UTF-8 and climbs out with ..', async () => {
    const name = `@@${'/.'.repeat(130)}/../../outside/pwned`;
    expect((await buildTar([{ name }])).includes(Buffer.from(' path='))).toBe(true);
    await expect(applyRaw([[{ name, content: 'x' }]])).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
  });

  it('refuses a hardlink whose target is not UTF-8 and climbs out with ..', async () => {
    await expect(applyRaw([[{ name: 'h', type: 'link', linkname: '@@/../../outside/secret' }]])).rejects.toMatchObject({
      code: 'UNSAFE_PATH',
    });
  });

  it('does not follow a symlink whose target is not UTF-8 out of the root', async () => {
    await applyRaw([[{ name: 'esc', type: 'symlink', linkname: '@@/../../../outside' }], [{ name: 'esc/pwned', content: 'in' }]]);
    expect(await readlink(join(box.root, 'esc'), { encoding: 'buffer' })).toEqual(Buffer.from('\xff\xfe/../../../outside', 'latin1'));
    expect(await inRoot('outside/pwned')).toBe('in');
  });

  it('keeps overlong-encoded . and / (0xc0 0xae, 0xc0 0xaf) as the bytes of one name in the root', async () => {
    const dot = '\xc0\xae';
    const slash = '\xc0\xaf';
    const name = Buffer.from(`${dot}${dot}${slash}${dot}${dot}${slash}outside${slash}pwned`, 'latin1');
    const placeholder = 'N'.repeat(name.length);
    const tar = withBytes(await buildTar([{ name: placeholder, content: 'x' }]), placeholder, name);
    await applyLayers([tar], { into: box });
    expect(await readdir(box.root, { encoding: 'buffer' })).toEqual([name]);
  });
});

describe('safe-path', () => {
  it('cleanEntryName normalizes and refuses escapes', () => {
    expect(cleanEntryName('./a//b/./c/')).toBe('a/b/c');
    expect(cleanEntryName('a/../b')).toBe('b');
    expect(cleanEntryName('./')).toBeNull();
    expect(cleanEntryName('a/..')).toBeNull();
    // The root itself written as "/" (umoci insert does) names nothing outside: ignored like "./".
    expect(cleanEntryName('/')).toBeNull();
    expect(cleanEntryName('/./')).toBeNull();
    // A leading '/' is the root (issue 11), as containerd, umoci and GNU tar read it.
    expect(cleanEntryName('/etc/passwd')).toBe('etc/passwd');
    expect(cleanEntryName('//etc/../etc/./passwd')).toBe('etc/passwd');
    for (const bad of ['..', '../a', 'a/../../b', '/../etc/passwd', '/..', 'a\0b']) {
      expect(() => cleanEntryName(bad), bad).toThrow(expect.objectContaining({ code: 'UNSAFE_PATH' }));
    }
  });

  it('name strings map bytes one to one, keep every ASCII byte, and leave UTF-8 names as they are', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (raw) => {
        const bytes = Buffer.from(raw);
        const name = bytesToName(bytes);
        expect(nameToBytes(name).equals(bytes)).toBe(true);
        expect(Buffer.from(fsPath(name)).equals(bytes)).toBe(true);
        // `/`, `.` and NUL stay where the bytes have them, so cleanEntryName sees the kernel's components.
        for (const c of ['/', '.', '\0']) expect(name.split(c).length).toBe(bytes.toString('latin1').split(c).length);
      }),
    );
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 20 }), (text) => {
        expect(bytesToName(Buffer.from(text, 'utf8'))).toBe(text);
        expect(fsPath(text)).toBe(text);
      }),
    );
  });

  it('resolveInRoot re-roots absolute targets, clamps .., keeps a final link unless asked', async () => {
    const root = box.root;
    await mkdir(join(root, 'usr/lib'), { recursive: true });
    await symlink('/usr/lib', join(root, 'abs'));
    await symlink('../../../../..', join(root, 'up'));
    await symlink(box.outside, join(root, 'out'));
    expect(resolveInRoot(root, 'abs/x')).toBe(join(root, 'usr/lib/x'));
    expect(resolveInRoot(root, 'abs')).toBe(join(root, 'abs'));
    expect(resolveInRoot(root, 'abs', { followFinal: true })).toBe(join(root, 'usr/lib'));
    expect(resolveInRoot(root, 'up/etc/passwd')).toBe(join(root, 'etc/passwd'));
    expect(resolveInRoot(root, 'out/secret')).toBe(join(root, box.outside, 'secret'));
    expect(resolveInRoot(root, 'missing/../usr/lib')).toBe(join(root, 'usr/lib'));
    expect(resolveInRoot(root, '')).toBe(root);
  });
});
