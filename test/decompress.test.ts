import { describe, expect, it, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import {
  createDecompressor,
  layerCompression,
  zstdDecoders,
  type Compression,
  type DecompressorOptions,
  type ZstdDecoder,
} from '../src/layer/decompress.js';
import { ZstdFrameReader } from '../src/layer/zstd-frames.js';
import { MediaType } from '../src/image/oci.js';
import { failure } from './helpers/errors.js';

const WHAT = 'layer 1 of test/image:1';
const hasNativeZstd = typeof (zlib as unknown as { createZstdDecompress?: unknown }).createZstdDecompress === 'function';
/** fzstd always; node:zlib's decoder where this Node has one; the zstd program (the suite installs it). */
const zstdEngines: ZstdDecoder[] = ['fzstd', ...(hasNativeZstd ? (['native'] as const) : []), 'cli'];

function zstd(input: Buffer, ...args: string[]): Buffer {
  const result = spawnSync('zstd', ['-q', '-c', ...args], { input, maxBuffer: 1 << 30 });
  if (result.status !== 0) throw new Error(`zstd failed: ${result.stderr.toString()}`);
  return result.stdout;
}

function gzip(input: Buffer): Buffer {
  return zlib.gzipSync(input);
}

/** Deterministic, compressible text of `size` bytes. */
function sampleText(size: number, seed = 1): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const line = `line ${i} seed ${seed} ${((i * 2654435761) >>> 0).toString(36)}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, size);
}

function chunked(bytes: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

async function decompress(
  compression: Compression,
  input: Buffer,
  chunkSize = 64 * 1024,
  options: DecompressorOptions = {},
): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(chunked(input, chunkSize)),
    createDecompressor(compression, WHAT, options),
    new Writable({
      write(chunk: Buffer, _e, cb) {
        out.push(chunk);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

describe('layerCompression', () => {
  it.each([
    [MediaType.OciLayer, 'none'],
    [MediaType.OciLayerGzip, 'gzip'],
    [MediaType.OciLayerZstd, 'zstd'],
    [MediaType.OciLayerNondistributable, 'none'],
    [MediaType.OciLayerNondistributableGzip, 'gzip'],
    [MediaType.OciLayerNondistributableZstd, 'zstd'],
    [MediaType.DockerLayerGzip, 'gzip'],
    [MediaType.DockerLayer, 'none'],
    [MediaType.DockerForeignLayerGzip, 'gzip'],
    ['application/vnd.docker.image.rootfs.diff.tar.zstd', 'zstd'],
    ['application/vnd.docker.image.rootfs.foreign.diff.tar', 'none'],
  ])('%s is %s', (mediaType, compression) => {
    expect(layerCompression(mediaType)).toBe(compression);
  });

  it.each([
    'application/vnd.in-toto+json',
    'application/vnd.oci.image.layer.v1.tar+xz',
    'application/vnd.oci.image.config.v1+json',
    'application/octet-stream',
    '',
  ])('rejects %j with UNSUPPORTED_MEDIA_TYPE naming it', (mediaType) => {
    expect(() => layerCompression(mediaType)).toThrow(
      expect.objectContaining({ code: 'UNSUPPORTED_MEDIA_TYPE', message: expect.stringContaining(`"${mediaType}"`) }),
    );
  });

  it('says encrypted layers are not supported', () => {
    expect(() => layerCompression('application/vnd.oci.image.layer.v1.tar+gzip+encrypted')).toThrow(
      expect.objectContaining({ hint: expect.stringContaining('encrypted') }),
    );
  });
});

describe('gzip', () => {
  const text = sampleText(100_000);

  it.each([1, 7, 4096, 1 << 20])('decompresses one member fed in %i-byte chunks', async (size) => {
    expect((await decompress('gzip', gzip(text), size)).equals(text)).toBe(true);
  });

  it('decompresses a multi-member stream', async () => {
    const parts = [sampleText(10_000, 1), sampleText(70_000, 2), Buffer.alloc(0), sampleText(5, 3)];
    const input = Buffer.concat(parts.map(gzip));
    for (const size of [3, 65536]) {
      expect((await decompress('gzip', input, size)).equals(Buffer.concat(parts))).toBe(true);
    }
  });

  it('ignores NUL padding after the last member, as gunzip does', async () => {
    const input = Buffer.concat([gzip(text), Buffer.alloc(512)]);
    expect((await decompress('gzip', input)).equals(text)).toBe(true);
  });

  it.each([1, 10, 200, 5000])('reports a stream truncated by %i bytes as CORRUPT_LAYER', async (cut) => {
    const full = gzip(text);
    const err = await failure(decompress('gzip', full.subarray(0, full.length - cut)));
    expect(err.code).toBe('CORRUPT_LAYER');
    expect(err.message).toContain(WHAT);
    expect(err.message).toContain('ends early');
    expect((err.cause as { code?: string }).code).toBe('Z_BUF_ERROR');
  });

  it('reports garbage after the magic as CORRUPT_LAYER and keeps the zlib error', async () => {
    const err = await failure(decompress('gzip', Buffer.concat([Buffer.from([0x1f, 0x8b]), sampleText(1000)])));
    expect(err.code).toBe('CORRUPT_LAYER');
    expect(err.message).toContain(WHAT);
    expect(err.cause).toBeInstanceOf(Error);
    expect((err.cause as { code?: string }).code).toMatch(/^Z_/);
  });

  it('reports a corrupted deflate body as CORRUPT_LAYER', async () => {
    const bad = Buffer.from(gzip(text));
    bad.fill(0xff, 100, 400);
    const err = await failure(decompress('gzip', bad));
    expect(err.code).toBe('CORRUPT_LAYER');
  });

  it('reports an empty blob as CORRUPT_LAYER', async () => {
    const err = await failure(decompress('gzip', Buffer.alloc(0)));
    expect(err.code).toBe('CORRUPT_LAYER');
    expect(err.message).toContain('empty');
  });
});

describe.each(zstdEngines)('zstd with the %s decoder', (engine) => {
  const options: DecompressorOptions = { zstd: engine };
  const text = sampleText(1_000_000);

  it.each([1, 13, 4096, 1 << 20])('decompresses one frame fed in %i-byte chunks', async (size) => {
    const input = zstd(text);
    expect((await decompress('zstd', input, size, options)).equals(text)).toBe(true);
  });

  it('decompresses frames with and without checksums, content sizes and at high levels', async () => {
    for (const args of [['--no-check'], ['--no-content-size'], ['-19'], ['--fast=5'], ['-1', '--long=24']]) {
      const input = zstd(text, ...args);
      expect((await decompress('zstd', input, 1000, options)).equals(text), args.join(' ')).toBe(true);
    }
  });

  it('decompresses a multi-frame stream, including empty and tiny frames', async () => {
    const parts = [sampleText(200_000, 1), Buffer.alloc(0), Buffer.from('x'), sampleText(300_000, 2), Buffer.alloc(0)];
    const input = Buffer.concat(parts.map((p, i) => zstd(p, i % 2 ? '--no-check' : '-3')));
    for (const size of [1, 5, 17, 65536]) {
      expect((await decompress('zstd', input, size, options)).equals(Buffer.concat(parts))).toBe(true);
    }
  });

  it('skips skippable frames before, between and after data frames', async () => {
    const skippable = (n: number, size: number): Buffer => {
      const b = Buffer.alloc(8 + size, 0xaa);
      b.writeUInt32LE(0x184d2a50 + n, 0);
      b.writeUInt32LE(size, 4);
      return b;
    };
    const a = sampleText(50_000, 4);
    const b = sampleText(70_000, 5);
    const input = Buffer.concat([skippable(0, 10), zstd(a), skippable(15, 100_000), zstd(b), skippable(3, 0)]);
    for (const size of [7, 65536]) {
      expect((await decompress('zstd', input, size, options)).equals(Buffer.concat([a, b]))).toBe(true);
    }
  });

  it('reports every truncation point as CORRUPT_LAYER', async () => {
    const input = zstd(sampleText(20_000), '--no-content-size');
    // Cut inside the frame header, inside a block, between the last block and the checksum, in the checksum.
    for (const keep of [4, 5, 8, 30, Math.floor(input.length / 2), input.length - 5, input.length - 4, input.length - 1]) {
      const err = await failure(decompress('zstd', input.subarray(0, keep), 1000, options));
      expect(err.code, `keep ${keep}`).toBe('CORRUPT_LAYER');
      expect(err.message).toContain(WHAT);
    }
  });

  it('reports a second frame cut short as CORRUPT_LAYER', async () => {
    const first = zstd(sampleText(10_000, 1));
    const second = zstd(sampleText(10_000, 2));
    const input = Buffer.concat([first, second.subarray(0, 20)]);
    const err = await failure(decompress('zstd', input, 4096, options));
    expect(err.code).toBe('CORRUPT_LAYER');
  });

  it('reports garbage after the magic and garbage between frames as CORRUPT_LAYER', async () => {
    const afterMagic = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(64, 0xff)]);
    expect((await failure(decompress('zstd', afterMagic, 4096, options))).code).toBe('CORRUPT_LAYER');
    const between = Buffer.concat([zstd(sampleText(1000)), Buffer.from('trailing garbage')]);
    expect((await failure(decompress('zstd', between, 4096, options))).code).toBe('CORRUPT_LAYER');
  });

  it('reports an empty blob as CORRUPT_LAYER', async () => {
    expect((await failure(decompress('zstd', Buffer.alloc(0), 1, options))).code).toBe('CORRUPT_LAYER');
  });
});

describe('fzstd framing limits', () => {
  it('refuses a frame that declares a window over 512 MiB with TOO_LARGE', async () => {
    // Frame header: magic, descriptor 0x00 (no single segment), window descriptor 2^30, then junk.
    const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (30 - 10) << 3, 0x01, 0x00, 0x00]);
    const err = await failure(decompress('zstd', header, 4096, { zstd: 'fzstd' }));
    expect(err.code).toBe('TOO_LARGE');
  });

  it('refuses a block type 3 with CORRUPT_LAYER', async () => {
    const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x07, 0x00, 0x00]);
    const err = await failure(decompress('zstd', header, 4096, { zstd: 'fzstd' }));
    expect(err.code).toBe('CORRUPT_LAYER');
    expect(err.message).toContain('reserved block type');
  });
});

describe('ZstdFrameReader in scan mode (the framing check beside node:zlib)', () => {
  function scan(input: Buffer, chunkSize: number): void {
    const reader = new ZstdFrameReader(WHAT, { scanOnly: true });
    for (const chunk of chunked(input, chunkSize)) {
      reader.append(chunk);
      while (reader.next() !== undefined);
    }
    reader.finish();
  }
  const frames = Buffer.concat([zstd(sampleText(300_000, 1)), zstd(sampleText(1000, 2), '--no-check')]);

  it('accepts whole streams fed in any chunk size', () => {
    for (const size of [1, 100, 65536]) expect(() => scan(frames, size)).not.toThrow();
  });

  it('rejects a stream cut anywhere inside a frame', () => {
    for (const keep of [3, 6, 100, frames.length - 600, frames.length - 1]) {
      expect(() => scan(frames.subarray(0, keep), 4096), `keep ${keep}`).toThrow(expect.objectContaining({ code: 'CORRUPT_LAYER' }));
    }
  });
});

describe('decoder choice', () => {
  it(`'native' works only where node:zlib has zstd (here: ${hasNativeZstd})`, () => {
    const make = (): unknown => createDecompressor('zstd', WHAT, { zstd: 'native' });
    if (hasNativeZstd) expect(make()).toBeDefined();
    else expect(make).toThrow(/no zstd decoder/);
  });

  it('auto picks node:zlib, then the zstd program, then fzstd; without the program on PATH, fzstd', async () => {
    expect(zstdDecoders()).toEqual(hasNativeZstd ? ['native', 'cli', 'fzstd'] : ['cli', 'fzstd']);
    // A fresh module instance looks the program up again, on an empty PATH.
    const saved = process.env['PATH'];
    process.env['PATH'] = '/nonexistent';
    try {
      vi.resetModules();
      const fresh = await import('../src/layer/decompress.js');
      expect(fresh.zstdDecoders()).toEqual(hasNativeZstd ? ['native', 'fzstd'] : ['fzstd']);
      expect(() => fresh.createDecompressor('zstd', WHAT, { zstd: 'cli' })).toThrow(/no zstd program on PATH/);
    } finally {
      process.env['PATH'] = saved;
    }
  });

  it('reports what the zstd program says when it fails, as CORRUPT_LAYER', async () => {
    // A valid frame header and block framing around garbage that only decoding can reject.
    const good = zstd(sampleText(300_000));
    const bad = Buffer.from(good);
    for (let i = 40; i < bad.length - 40; i += 97) bad[i] = bad[i]! ^ 0x5a;
    const err = await failure(decompress('zstd', bad, 4096, { zstd: 'cli' }));
    expect(err).toMatchObject({ code: 'CORRUPT_LAYER', message: expect.stringMatching(/zstd failed \(exit \d+\)/) });
  });
});

describe('none', () => {
  it('passes an uncompressed tar through unchanged', async () => {
    const tar = Buffer.alloc(2048);
    tar.write('hello.txt', 0);
    tar.write('ustar\u000000', 257, 'latin1');
    tar.fill(1, 512, 600);
    for (const size of [1, 100, 4096]) expect((await decompress('none', tar, size)).equals(tar)).toBe(true);
  });

  it('passes an empty blob through as empty', async () => {
    expect((await decompress('none', Buffer.alloc(0))).length).toBe(0);
  });
});

describe('magic mismatches', () => {
  const text = sampleText(5000);
  const tarLike = Buffer.concat([Buffer.from('etc/os-release\u0000'), Buffer.alloc(1000)]);
  const xz = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0, 0, 0]);
  const cases: Array<[Compression, string, Buffer, RegExp]> = [
    ['gzip', 'zstd', zstd(text), /declares gzip compression but the content is zstd-compressed/],
    ['gzip', 'tar', tarLike, /declares gzip compression but the content is neither gzip nor zstd/],
    ['zstd', 'gzip', gzip(text), /declares zstd compression but the content is gzip-compressed/],
    ['zstd', 'tar', tarLike, /declares zstd compression but the content is neither gzip nor zstd/],
    ['none', 'gzip', gzip(text), /declares an uncompressed tar but the content is gzip-compressed/],
    ['none', 'zstd', zstd(text), /declares an uncompressed tar but the content is zstd-compressed/],
    ['none', 'xz', xz, /declares an uncompressed tar but the content is xz-compressed/],
    ['gzip', 'xz', xz, /declares gzip compression but the content is xz-compressed/],
  ];
  it.each(cases)('declared %s, content %s: COMPRESSION_MISMATCH', async (declared, _content, input, message) => {
    for (const size of [1, 65536]) {
      const err = await failure(decompress(declared, input, size));
      expect(err.code).toBe('COMPRESSION_MISMATCH');
      expect(err.message).toMatch(message);
      expect(err.message).toContain(WHAT);
    }
  });

  it('checks the magic of a blob shorter than the sniffing window', async () => {
    const err = await failure(decompress('none', Buffer.from([0x1f, 0x8b, 0x08])));
    expect(err.code).toBe('COMPRESSION_MISMATCH');
  });
});

describe('streaming', () => {
  const SIZE = 64 * 1024 * 1024;
  const big = sampleText(SIZE, 9);
  const bigDigest = createHash('sha256').update(big).digest('hex');
  const inputs: Array<[string, Compression, () => Buffer, DecompressorOptions]> = [
    ['gzip', 'gzip', () => zlib.gzipSync(big, { level: 1 }), {}],
    ...zstdEngines.map((engine): [string, Compression, () => Buffer, DecompressorOptions] => [
      `zstd (${engine})`,
      'zstd',
      () => zstd(big, '-1'),
      { zstd: engine },
    ]),
  ];

  it.each(inputs)('%s: 64 MiB flows through with bounded buffering', async (_name, compression, make, options) => {
    const input = make();
    const decompressor = createDecompressor(compression, WHAT, options);
    const hash = createHash('sha256');
    let maxBuffered = 0;
    let total = 0;
    await pipeline(
      Readable.from(chunked(input, 64 * 1024)),
      decompressor,
      new Writable({
        highWaterMark: 64 * 1024,
        write(chunk: Buffer, _e, cb) {
          maxBuffered = Math.max(maxBuffered, decompressor.readableLength);
          total += chunk.length;
          hash.update(chunk);
          // A slow consumer: the decompressor must wait rather than inflate ahead.
          setImmediate(cb);
        },
      }),
    );
    expect(total).toBe(SIZE);
    expect(hash.digest('hex')).toBe(bigDigest);
    expect(maxBuffered).toBeLessThanOrEqual(2 * 1024 * 1024);
  });

  const bombs: Array<[string, Compression, DecompressorOptions]> = [
    ['gzip', 'gzip', {}],
    ...zstdEngines.map((engine): [string, Compression, DecompressorOptions] => [`zstd (${engine})`, 'zstd', { zstd: engine }]),
  ];
  it.each(bombs)('%s: a slow reader keeps a 128 MiB bomb from inflating ahead of it', async (name, compression, options) => {
    const zeros = Buffer.alloc(128 * 1024 * 1024);
    const input = compression === 'gzip' ? zlib.gzipSync(zeros, { level: 9 }) : zstd(zeros, '-3');
    expect(input.length, name).toBeLessThan(1024 * 1024);
    const decompressor = createDecompressor(compression, WHAT, options);
    decompressor.end(input);
    // One chunk per turn of the event loop, so the decompressor has every chance to run ahead:
    // what it buffers while the reader lags is what a paused reader would let it inflate.
    let total = 0;
    let maxBuffered = 0;
    for await (const chunk of decompressor) {
      total += (chunk as Buffer).length;
      maxBuffered = Math.max(maxBuffered, decompressor.readableLength);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect({ total, bounded: maxBuffered <= 2 * 1024 * 1024 }).toEqual({ total: zeros.length, bounded: true });
  });

  it('stops cleanly when the pipeline is aborted', async () => {
    const controller = new AbortController();
    const decompressor = createDecompressor('zstd', WHAT, { zstd: 'fzstd' });
    let seen = 0;
    const done = pipeline(
      Readable.from(chunked(zstd(sampleText(8 * 1024 * 1024)), 4096)),
      decompressor,
      new Writable({
        write(chunk: Buffer, _e, cb) {
          seen += chunk.length;
          if (seen > 1024 * 1024) controller.abort();
          setImmediate(cb);
        },
      }),
      { signal: controller.signal },
    );
    await expect(done).rejects.toMatchObject({ name: 'AbortError' });
    expect(decompressor.destroyed).toBe(true);
  });
});
