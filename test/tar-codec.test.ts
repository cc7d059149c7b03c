/**
 * The tar header codec (src/tar): what `--output tar` encodes decodes back to the same fields,
 * numbers in every encoding (octal, base-256, negative base-256, PAX) included; and the layer
 * reader and the archive index (oci-archive:, docker-archive:), which share the codec, see the
 * same entries in the same archives, hostile ones included, or both refuse them.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeHeader, type HeaderFields } from '../src/tar/encode.js';
import { BLOCK, numberAt, type TarHeader } from '../src/tar/header.js';
import { numeric } from '../src/tar/encode.js';
import { bytesToName } from '../src/tar/names.js';
import { STEP, TarParser } from '../src/tar/parser.js';
import { TarReader } from '../src/tar/reader.js';
import { normalizeName, TarIndex } from '../src/tar/archive-index.js';
import { buildLayer, hostileLayer } from './helpers/hostile-tars.js';

const SEED = 0xc0_dec;

/** Decodes encodeHeader's blocks with the parser the reader and the index use. */
function decode(blocks: Buffer): TarHeader {
  const parser = new TarParser();
  let offset = 0;
  for (;;) {
    const step = parser.block(blocks.subarray(offset, offset + BLOCK));
    offset += BLOCK;
    if (step === STEP.ENTRY) return parser.header!;
    if (step !== STEP.META) throw new Error(`unexpected step ${step}`);
    parser.meta(blocks.subarray(offset, offset + parser.size));
    offset += Math.ceil(parser.size / BLOCK) * BLOCK;
  }
}

const nameBytes = fc
  .array(
    fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom(...'abcdefghij-_.0123456789') },
      { weight: 1, arbitrary: fc.constantFrom('/', 'é', '\u20ac', '\udcff') },
    ),
    {
      minLength: 1,
      maxLength: 260,
    },
  )
  .map((chars) => {
    // '\udcff' stands for the byte 0xff (not UTF-8); a name never holds NUL nor ends in '/'.
    const parts = chars.map((c) => (c === '\udcff' ? Buffer.of(0xff) : Buffer.from(c)));
    return Buffer.concat([Buffer.from('n'), ...parts, Buffer.from('e')]);
  });

const fields: fc.Arbitrary<HeaderFields> = fc
  .record({
    name: nameBytes,
    type: fc.constantFrom<HeaderFields['type']>('file', 'link', 'symlink', 'character-device', 'block-device', 'directory', 'fifo'),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    uid: fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 0xfffffffe })),
    gid: fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 0xfffffffe })),
    size: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 0, max: 2 ** 45 })),
    mtimeNs: fc.oneof(
      fc.bigInt({ min: -(2n ** 40n), max: 2n ** 35n }).map((s) => s * 1_000_000_000n),
      fc.bigInt({ min: -(2n ** 40n) * 1_000_000_000n, max: 2n ** 35n * 1_000_000_000n }),
    ),
    linkname: nameBytes,
    devmajor: fc.integer({ min: 0, max: 0o7777777 }),
    devminor: fc.integer({ min: 0, max: 0o7777777 }),
    xattrs: fc.option(
      fc.array(fc.tuple(fc.constantFrom('user.a', 'user.note', 'security.capability', 'trusted.x'), fc.uint8Array({ maxLength: 40 })), {
        maxLength: 3,
      }),
    ),
  })
  .map((f) => ({
    ...f,
    name: f.type === 'directory' ? Buffer.concat([f.name, Buffer.from('/')]) : f.name,
    size: f.type === 'file' ? f.size : 0,
    linkname: f.type === 'link' || f.type === 'symlink' ? f.linkname : undefined,
    devmajor: f.type === 'character-device' || f.type === 'block-device' ? f.devmajor : 0,
    devminor: f.type === 'character-device' || f.type === 'block-device' ? f.devminor : 0,
    xattrs: f.xattrs === null ? undefined : new Map(f.xattrs.map(([k, v]) => [k, Buffer.from(v)])),
  }));

describe('the tar header codec', () => {
  it('round-trips every field through encodeHeader and the parser: names as bytes, large ids and sizes, times before 1970 and after 2038', () => {
    fc.assert(
      fc.property(fields, (f) => {
        const h = decode(encodeHeader(f));
        const expectedXattrs = f.xattrs === undefined || f.xattrs.size === 0 ? null : f.xattrs;
        const { mtimeNs: _mtime, name, linkname, xattrs: _xattrs, ...numbers } = f;
        expect(h).toMatchObject({
          ...numbers,
          name: bytesToName(name),
          linkname: linkname === undefined ? null : bytesToName(linkname),
          xattrs: expectedXattrs,
          sparse: null,
        });
        // Seconds as a double: exact for whole seconds, else to the microsecond (or the double's
        // own precision, far from 1970).
        let whole = f.mtimeNs / 1_000_000_000n;
        if (whole * 1_000_000_000n > f.mtimeNs) whole -= 1n;
        const seconds = Number(whole) + Number(f.mtimeNs - whole * 1_000_000_000n) / 1e9;
        const tolerance = f.mtimeNs % 1_000_000_000n === 0n ? 1e-9 : Math.max(1e-6, Math.abs(seconds) * 1e-15);
        expect(Math.abs(h.mtime - seconds)).toBeLessThan(tolerance);
      }),
      { numRuns: 3000, seed: SEED },
    );
  });

  it('reads GNU base-256 numbers, negative ones as two\u2019s complement (-1 is all ones)', () => {
    fc.assert(
      fc.property(fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }), (n) => {
        const field = Buffer.alloc(12);
        numeric(field, 0, 12, n);
        expect(numberAt(field, 0, 12, 'n')).toBe(n);
      }),
      { numRuns: 2000, seed: SEED },
    );
    expect(numberAt(Buffer.alloc(12, 0xff), 0, 12, 'n')).toBe(-1);
    // GNU tar reads only 0x80 and 0xff as base-256 markers; Go any byte with the high bit.
    expect(() => numberAt(Buffer.from([0x81, ...Buffer.alloc(11)]), 0, 12, 'size')).toThrow(/bad size field/);
  });
});

describe('the layer reader and the archive index read the same entries', () => {
  let work: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'pu-tar-codec-'));
  });

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** name -> body of the last entry of that name, or 'refused'. */
  async function viaReader(layer: Buffer): Promise<Map<string, string> | 'refused'> {
    const seen = new Map<string, string>();
    try {
      for await (const entry of new TarReader(Readable.from([layer]))) {
        const parts: Buffer[] = [];
        for await (const chunk of entry) parts.push(chunk);
        const name = normalizeName(entry.header.name);
        if (name === undefined) continue;
        const plain = (entry.header.type === 'file' || entry.header.type === 'contiguous-file') && entry.header.sparse === null;
        seen.set(name, plain ? Buffer.concat(parts).toString('base64') : `(${entry.header.type})`);
      }
    } catch {
      return 'refused';
    }
    return seen;
  }

  /** name -> body of a regular file (by what the reader saw), 'other' for any other name; or 'refused'. */
  async function viaIndex(layer: Buffer, n: number, reader: Map<string, string> | 'refused'): Promise<Map<string, string> | 'refused'> {
    const file = join(work, `archive-${n}.tar`);
    await writeFile(file, layer);
    let index: TarIndex;
    try {
      index = await TarIndex.open(file);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('CORRUPT_LAYER');
      return 'refused';
    }
    try {
      const seen = new Map<string, string>();
      for (const name of index.names()) {
        // lookup follows links: only a name that is itself a regular file reads as its own body.
        const plain = reader !== 'refused' && reader.get(name)?.startsWith('(') === false;
        const member = plain ? index.lookup(name) : undefined;
        seen.set(name, member === undefined ? 'other' : (await index.read(member)).toString('base64'));
      }
      return seen;
    } finally {
      await index.close();
    }
  }

  it('on hostile archives: the same names and regular-file bodies, or both refuse', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(hostileLayer, async (parts) => {
        const layer = buildLayer(parts);
        const reader = await viaReader(layer);
        const index = await viaIndex(layer, n++, reader);
        if (reader === 'refused' || index === 'refused') {
          expect(index).toBe(reader);
          return;
        }
        const readerView = new Map([...reader].map(([k, v]) => [k, v.startsWith('(') ? 'other' : v]));
        expect(new Map([...index].sort())).toEqual(new Map([...readerView].sort()));
      }),
      { numRuns: 300, seed: SEED },
    );
  });
});
