/**
 * The applier's tar reader against tar-stream (the extractor it replaced): the same entries,
 * headers and bodies on well-formed archives from tar-stream's pack and from GNU tar in both
 * formats, fed in chunks of every awkward size; and failures on broken input. Where tar-stream
 * is lenient in ways Go's archive/tar and GNU tar are not (reading past the end-of-archive
 * marker), the reader follows Go (test/tar-format.test.ts holds it to Go and GNU tar).
 */
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { extract } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePaxXattrs, TarReader, type TarHeader } from '../src/tar/reader.js';
import { bytesToName } from '../src/tar/names.js';
import { buildTar, gnuTar, makeTmp, removeTmp } from './helpers/tar.js';

interface Seen {
  header: ReturnType<typeof fields>;
  body: string;
}

function chunked(data: Buffer, size: number): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) pieces.push(data.subarray(i, i + size));
  return Readable.from(pieces);
}

/** tar-stream decodes names as latin1 (one char per byte): the name string of those bytes. */
const latin1ToName = (text: string): string => bytesToName(Buffer.from(text, 'latin1'));

/** The fields both readers give; mtime in whole seconds (tar-stream keeps the ustar field only). */
const fields = (h: Partial<Omit<TarHeader, 'mtime'>> & { mtime?: number | Date }) => ({
  name: h.name,
  linkname: h.linkname,
  type: h.type,
  mode: h.mode,
  uid: h.uid,
  gid: h.gid,
  size: h.size,
  mtime: h.mtime instanceof Date ? h.mtime.getTime() / 1000 : Math.floor(h.mtime ?? Number.NaN),
  devmajor: h.devmajor,
  devminor: h.devminor,
  pax: h.pax ?? null,
});

async function readWithReader(data: Buffer, chunk: number): Promise<Seen[]> {
  const seen: Seen[] = [];
  for await (const entry of new TarReader(chunked(data, chunk))) {
    const parts: Buffer[] = [];
    for await (const piece of entry) parts.push(piece);
    seen.push({ header: fields(entry.header), body: Buffer.concat(parts).toString('base64') });
  }
  return seen;
}

/** What tar-stream reads, names and link targets turned into name strings as the applier did. */
async function readWithTarStream(data: Buffer): Promise<Seen[]> {
  const ex = extract({ allowUnknownFormat: true, filenameEncoding: 'latin1' } as Parameters<typeof extract>[0]);
  const seen: Seen[] = [];
  Readable.from([data]).pipe(ex);
  for await (const entry of ex) {
    const parts: Buffer[] = [];
    for await (const piece of entry) parts.push(piece as Buffer);
    const h = entry.header as unknown as Omit<TarHeader, 'mtime'> & { mtime: Date };
    const named = {
      ...h,
      name: h.pax?.['path'] ? h.name : latin1ToName(h.name),
      linkname: h.linkname && !h.pax?.['linkpath'] ? latin1ToName(h.linkname) : h.linkname,
    };
    seen.push({ header: fields(named), body: Buffer.concat(parts).toString('base64') });
  }
  return seen;
}

let tmp: string;
const archives: Record<string, Buffer> = {};

beforeAll(async () => {
  tmp = await makeTmp('pu-tar-reader-');
  const long = `${'deep/'.repeat(30)}file-with-a-long-name.txt`;
  archives['tar-stream pack, pax records'] = await buildTar([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/hosts', content: '127.0.0.1 localhost\n', mode: 0o600, uid: 7, gid: 8 },
    { name: long, content: 'x'.repeat(1500) },
    { name: 'link', type: 'symlink', linkname: `../${'t'.repeat(150)}` },
    { name: 'hard', type: 'link', linkname: 'etc/hosts' },
    { name: 'empty', content: '' },
    { name: 'exactly-512', content: Buffer.alloc(512, 7) },
    { name: 'caps', content: 'bin', pax: { 'SCHILY.xattr.user.note': 'hello' } },
  ]);
  const tree = join(tmp, 'tree');
  await mkdir(join(tree, 'a', 'b'.repeat(120)), { recursive: true });
  await writeFile(join(tree, 'a', 'b'.repeat(120), 'c'.repeat(120)), 'long gnu name\n');
  await writeFile(join(tree, 'a', 'small'), 'small\n');
  await symlink('l'.repeat(130), join(tree, 'a', 'long-link'));
  archives['GNU tar, gnu format (L/K records)'] = await gnuTar(tree, ['a'], { format: 'gnu' });
  archives['GNU tar, posix format (pax records)'] = await gnuTar(tree, ['a'], { format: 'posix' });
});

afterAll(async () => {
  await removeTmp(tmp);
});

describe('TarReader reads what tar-stream reads', () => {
  for (const chunk of [1, 7, 511, 512, 513, 4096, 1 << 20]) {
    it(`every archive, in chunks of ${chunk} bytes`, async () => {
      for (const [label, data] of Object.entries(archives)) {
        const expected = await readWithTarStream(data);
        expect(expected.length, label).toBeGreaterThan(3);
        expect(await readWithReader(data, chunk), label).toEqual(expected);
      }
    });
  }

  it('skips an unread body, and keeps pax xattr values as bytes', async () => {
    const value = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0xfe]);
    const record = (key: string, v: Buffer): Buffer => {
      const body = Buffer.concat([Buffer.from(` ${key}=`), v, Buffer.from('\n')]);
      let length = body.length + 1;
      if (String(length).length + body.length !== length) length = String(length + 1).length + body.length;
      return Buffer.concat([Buffer.from(String(length)), body]);
    };
    expect(parsePaxXattrs(record('SCHILY.xattr.security.capability', value))?.get('security.capability')).toEqual(value);
    const names: string[] = [];
    for await (const entry of new TarReader(chunked(archives['tar-stream pack, pax records']!, 100))) names.push(entry.header.name);
    expect(names).toContain('exactly-512');
    expect(names.at(-1)).toBe('caps');
  });

  // Changed by issue 11: tar-stream reads on past the end-of-archive marker; Go's archive/tar
  // (containerd, umoci) and GNU tar stop there, and so does the reader now.
  it('stops at the end-of-archive marker where tar-stream reads on into an appended archive', async () => {
    const first = await buildTar([{ name: 'one', content: '1' }]);
    const second = await buildTar([{ name: 'two', content: '2' }]);
    const data = Buffer.concat([first, second]);
    expect((await readWithReader(data, 512)).map((e) => e.header.name)).toEqual(['one']);
    expect((await readWithTarStream(data)).map((e) => e.header.name)).toEqual(['one', 'two']);
  });
});

describe('TarReader failures', () => {
  it('a header whose checksum does not match', async () => {
    const data = Buffer.from(archives['tar-stream pack, pax records']!);
    data[0] = data[0]! ^ 0x01;
    await expect(readWithReader(data, 4096)).rejects.toThrow(/checksum mismatch/);
  });

  it('input that ends inside a header, a body or its padding', async () => {
    const data = await buildTar([{ name: 'file', content: 'x'.repeat(700) }]);
    for (const keep of [100, 512, 600, 1300]) {
      await expect(readWithReader(data.subarray(0, keep), 64), `keep ${keep}`).rejects.toThrow(/Unexpected end of data/);
    }
    // The end-of-archive blocks are optional: a tar cut right after an entry's padding is whole.
    expect(await readWithReader(data.subarray(0, 512 + 1024), 64)).toHaveLength(1);
  });

  it('a pax record over 1 MiB (Go refuses them since 1.19)', async () => {
    const block = Buffer.alloc(512);
    block.write('huge', 0);
    block.write('0000644\0', 100);
    block.write(`${(5 * 1024 * 1024).toString(8).padStart(11, '0')}\0`, 124);
    block.write('00000000000\0', 136);
    block[156] = 'x'.charCodeAt(0);
    block.write('ustar\0', 257);
    block.write('00', 263);
    block.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of block) sum += b;
    block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    await expect(readWithReader(block, 512)).rejects.toThrow(/5242880-byte extended header/);
  });
});
