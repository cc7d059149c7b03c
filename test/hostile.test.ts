/**
 * The hostile-image suite, part two: one named test per attack class that test/path-safety.test.ts
 * does not cover (resource limits, name collisions, whiteouts in odd entry types, duplicates,
 * trailing garbage, devices and setuid as non-root). As there, each test puts a sentinel tree
 * OUTSIDE the root, and afterEach checks it is unchanged and nothing appeared next to the root.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { applyLayer, createApplyContext, finishApply, type ApplyLimits } from '../src/apply/applier.js';
import { sentinelSandbox } from './helpers/sandbox.js';
import { applyLayers, buildTar, type Applied, type TarEntrySpec } from './helpers/tar.js';
import { rejection } from './helpers/errors.js';

const box = sentinelSandbox('pu-hostile-');

/** Applies tars of `layers` onto box.root with the helper (default limits). */
async function applyAll(layers: TarEntrySpec[][], options: { isRoot?: boolean } = {}): Promise<Applied> {
  const tars = await Promise.all(layers.map((l) => buildTar(l)));
  return applyLayers(tars, { ...options, into: box });
}

/** Applies raw layer tars onto a fresh box.root on one context with `limits`. */
async function applyWithLimits(tars: Buffer[], limits: Partial<ApplyLimits>): Promise<void> {
  await rm(box.root, { recursive: true, force: true });
  await mkdir(box.root);
  const ctx = createApplyContext(box.root, { limits });
  for (const [i, tar] of tars.entries()) await applyLayer(ctx, Readable.from([tar]), { what: `layer ${i + 1}` });
  await finishApply(ctx);
}

async function inRoot(rel: string): Promise<string> {
  return readFile(join(box.root, rel), 'utf8');
}

/** The error `pending` rejects with (the test fails if it resolves). */

/** A TOO_LARGE error whose hint names `flag`. */
function tooLarge(flag: string): unknown {
  return expect.objectContaining({ code: 'TOO_LARGE', hint: expect.stringContaining(flag) });
}

describe('names', () => {
  // Documented result: names are bytes (as in tar and on Linux); nothing is normalized or
  // case-folded, so on a case-sensitive filesystem colliding spellings stay distinct files, and a
  // whiteout removes only the exact spelling it names. (On a case-insensitive or normalizing
  // filesystem they would collide: the rootfs must live on a Linux filesystem, as for runc.)
  it('keeps Unicode NFC/NFD and case-colliding names as distinct files, whited out by exact bytes only', async () => {
    const nfc = 'caf\u00e9';
    const nfd = 'cafe\u0301';
    await applyAll([
      [
        { name: nfc, content: 'nfc' },
        { name: nfd, content: 'nfd' },
        { name: 'File', content: 'upper' },
        { name: 'file', content: 'lower' },
        { name: 'Dir/', type: 'directory' },
        { name: 'dir', type: 'symlink', linkname: box.outside },
        { name: 'Dir/x', content: 'in the real Dir' },
      ],
      [{ name: `.wh.${nfd}` }, { name: '.wh.File' }],
    ]);
    const names = await readdir(box.root, { encoding: 'buffer' });
    expect(names.map((n) => n.toString('hex')).sort()).toEqual(
      [nfc, 'file', 'Dir', 'dir'].map((n) => Buffer.from(n).toString('hex')).sort(),
    );
    expect(await inRoot(nfc)).toBe('nfc');
    expect(await inRoot('file')).toBe('lower');
    expect(await inRoot('Dir/x')).toBe('in the real Dir');
    expect(await readlink(join(box.root, 'dir'))).toBe(box.outside);
  });

  it('refuses a name or link target over 4096 bytes (TOO_LARGE, --max-name-length); 255-byte components and a 4000-byte path work', async () => {
    const component = 'n'.repeat(255);
    // 19 components of 199 bytes, one of 200 and 19 slashes: 4000 bytes.
    const longPath = Array.from({ length: 20 }, (_, i) => `${String(i).padStart(2, '0')}${'p'.repeat(i === 19 ? 198 : 197)}`).join('/');
    expect(Buffer.byteLength(longPath)).toBe(4000);
    await applyAll([
      [
        { name: component, content: 'c' },
        { name: longPath, content: 'deep' },
      ],
    ]);
    expect(await inRoot(component)).toBe('c');
    expect(await inRoot(longPath)).toBe('deep');

    const tooLong = `${'x'.repeat(200)}/`.repeat(20) + 'f'.repeat(100);
    expect(Buffer.byteLength(tooLong)).toBeGreaterThan(4096);
    await expect(applyWithLimits([await buildTar([{ name: tooLong, content: 'x' }])], {})).rejects.toEqual(tooLarge('--max-name-length'));
    // Counted in bytes, not characters: 1400 three-byte characters are 4200 bytes.
    await expect(applyWithLimits([await buildTar([{ name: '\u20ac'.repeat(1400), content: 'x' }])], {})).rejects.toEqual(
      tooLarge('--max-name-length'),
    );
    const longTarget = `${box.outside}/${'../'.repeat(1500)}`;
    await expect(applyWithLimits([await buildTar([{ name: 'l', type: 'symlink', linkname: longTarget }])], {})).rejects.toEqual(
      tooLarge('--max-name-length'),
    );
    const err = await rejection(applyWithLimits([await buildTar([{ name: tooLong, content: 'x' }])], {}));
    // The message names the entry, elided: a hostile name does not flood the terminal.
    expect(err.message.length).toBeLessThan(400);
    expect(err.message).toMatch(/over the limit of 4096/);
    expect(await readdir(box.root)).toEqual([]);
  });

  it('refuses a path 300 components deep (TOO_LARGE, --max-path-depth); 200 deep works, depth counts the cleaned name', async () => {
    await applyAll([
      [
        { name: `${'d/'.repeat(199)}f`, content: 'deep' },
        { name: `${'a/../'.repeat(300)}g`, content: 'shallow' },
      ],
    ]);
    expect(await inRoot(`${'d/'.repeat(199)}f`)).toBe('deep');
    expect(await inRoot('g')).toBe('shallow');

    const tar = await buildTar([{ name: `${'e/'.repeat(299)}f`, content: 'x' }]);
    await expect(applyWithLimits([tar], {})).rejects.toEqual(tooLarge('--max-path-depth'));
    expect(await readdir(box.root)).toEqual([]);
    await expect(applyWithLimits([tar], { maxPathDepth: 300 })).resolves.toBeUndefined();
  });
});

describe('resource limits', () => {
  it('stops a layer of 1500 empty files at maxEntries 1000 (TOO_LARGE, --max-entries), counting all layers together', async () => {
    const files = (prefix: string, n: number): TarEntrySpec[] => Array.from({ length: n }, (_, i) => ({ name: `${prefix}${i}` }));
    const bomb = await buildTar(files('f', 1500));
    await expect(applyWithLimits([bomb], { maxEntries: 1000 })).rejects.toEqual(tooLarge('--max-entries'));
    // Exactly the first 1000 entries were applied; the 1001st was refused before touching the disk.
    expect((await readdir(box.root)).length).toBe(1000);

    const err = await rejection(applyWithLimits([await buildTar(files('a', 600)), await buildTar(files('b', 600))], { maxEntries: 1000 }));
    expect(err).toEqual(tooLarge('--max-entries'));
    expect(err.message).toMatch(/^layer 2: "b400": /);
    await expect(applyWithLimits([bomb], { maxEntries: 1500 })).resolves.toBeUndefined();
  });
});

describe('whiteouts', () => {
  // As containerd: a `.wh.x` entry of ANY type whites out `x` by name; its type, link target and
  // mode are ignored (a link target is never resolved), and the whiteout itself never appears.
  it('treats .wh. entries shipped as a hardlink, a symlink or a directory as whiteouts by name', async () => {
    const { stats } = await applyAll([
      [
        { name: 'a', content: 'a' },
        { name: 'b', content: 'b' },
        { name: 'c', content: 'c' },
        { name: 'd/', type: 'directory' },
        { name: 'd/inner', content: 'inner' },
        { name: 'e', content: 'e' },
      ],
      [
        { name: '.wh.a/', type: 'directory', mode: 0o777 },
        { name: '.wh.b', type: 'link', linkname: 'c' },
        { name: '.wh.d', type: 'link', linkname: '../outside/secret' },
        { name: '.wh.e', type: 'symlink', linkname: join(box.outside, 'secret') },
        { name: '.wh.missing/', type: 'directory' },
      ],
    ]);
    expect(await readdir(box.root)).toEqual(['c']);
    expect(await inRoot('c')).toBe('c');
    expect(stats[1]).toMatchObject({ entries: 5, whiteouts: 5, files: 0 });
  });
});

describe('duplicates', () => {
  // Documented result: entries apply in order, so a later duplicate replaces the earlier one
  // (GNU tar and containerd do the same); a file replaces a same-named directory with its tree.
  it('applies duplicate entries in one layer in order: last file wins, a file replaces a directory', async () => {
    await applyAll([
      [
        { name: 'f', content: 'one' },
        { name: 'hl', type: 'link', linkname: 'f' },
        { name: 'f', content: 'two' },
        { name: 'd/', type: 'directory' },
        { name: 'd/child', content: 'child' },
        { name: 'd', content: 'file wins' },
        { name: 'g', content: 'file first' },
        { name: 'g/', type: 'directory', mode: 0o700 },
      ],
    ]);
    expect(await inRoot('f')).toBe('two');
    // The second `f` is a new inode: the hardlink to the first keeps its content.
    expect(await inRoot('hl')).toBe('one');
    expect(await inRoot('d')).toBe('file wins');
    expect((await lstat(join(box.root, 'g'))).isDirectory()).toBe(true);
    expect((await readdir(box.root)).sort()).toEqual(['d', 'f', 'g', 'hl']);
  });
});

describe('archive framing', () => {
  // Changed by issue 11: the reader used to read on past the end-of-archive blocks (tar-stream's
  // behaviour), applying an appended second archive. Go's archive/tar (containerd, docker, umoci)
  // and GNU tar stop at the marker, and so does pull-unpack now: what follows is not read as
  // entries (a pull still hashes it: test/tar-format.test.ts).
  it('stops at the end-of-archive blocks: zero padding, garbage and appended archives after them are not applied', async () => {
    const tar = await buildTar([{ name: 'a', content: 'A' }]);
    await applyLayers([Buffer.concat([tar, Buffer.alloc(10240)])], { into: box });
    expect(await readdir(box.root)).toEqual(['a']);

    const escape = await buildTar([{ name: '../outside/secret', content: 'pwned' }]);
    const viaLink = await buildTar([
      { name: 'out', type: 'symlink', linkname: box.outside },
      { name: 'out/secret', content: 'pwned' },
    ]);
    const setuid = await buildTar([{ name: 'hidden', content: '#!', mode: 0o4755 }]);
    for (const after of [randomBytes(1536), Buffer.from('trailing garbage'), escape, viaLink, setuid]) {
      await applyWithLimits([Buffer.concat([tar, after])], {});
      expect(await readdir(box.root)).toEqual(['a']);
      expect(await inRoot('a')).toBe('A');
    }
  });
});

describe('privileges', () => {
  // Documented result (isRoot false): device nodes are skipped, whatever their path, with ONE
  // summary warning after the last layer; no ownership is applied; setuid/setgid bits on files
  // the process creates (and so owns) are kept, as GNU tar does for its own files.
  it('as non-root: skips device nodes with one summary warning and keeps setuid bits on owned files', async () => {
    const { warnings, stats } = await applyAll(
      [
        [
          { name: 'bin/su', content: '#!', mode: 0o4755, uid: 0 },
          { name: 'bin/wall', content: '#!', mode: 0o2755, gid: process.getgid!() },
          { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
          { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 },
          { name: 'esc', type: 'symlink', linkname: box.outside },
        ],
        [{ name: 'esc/kmem', type: 'character-device', devmajor: 1, devminor: 2, mode: 0o666 }],
      ],
      { isRoot: false },
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^skipped 3 device node\(s\)/);
    expect(stats.map((s) => s.skipped)).toEqual([2, 1]);
    // A skipped device is refused before its parents are made: not even dev/ appears.
    expect((await readdir(box.root)).sort()).toEqual(['bin', 'esc']);
    const su = await lstat(join(box.root, 'bin/su'));
    expect(su.mode & 0o7777).toBe(0o4755);
    expect(su.uid).toBe(process.getuid!());
    expect((await lstat(join(box.root, 'bin/wall'))).mode & 0o7777).toBe(0o2755);
  });
});
