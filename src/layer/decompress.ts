/**
 * Layer decompression: which compression a layer media type declares, and a streaming
 * decompressor that checks the content really is that compression before inflating it.
 * With zstd-worker.ts and zstd-cli.ts, the only files that know compression libraries and
 * programs (node:zlib, the zstd program, fzstd).
 */
import { once } from 'node:events';
import { Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { PullUnpackError } from '../errors.js';
import { MediaType } from '../image/oci.js';
import { ZstdFrameReader } from './zstd-frames.js';
import { FzstdWorker, type Emit } from './zstd-worker.js';
import { zstdProgram, ZstdProcess } from './zstd-cli.js';

export type Compression = 'gzip' | 'zstd' | 'none';

// Two layer types that oci.ts does not name: BuildKit writes Docker-schema zstd layers with the
// first (containerd and regclient accept it), and Docker's uncompressed foreign layer is the second.
const DOCKER_LAYER_ZSTD = 'application/vnd.docker.image.rootfs.diff.tar.zstd';
const DOCKER_FOREIGN_LAYER = 'application/vnd.docker.image.rootfs.foreign.diff.tar';

const LAYER_COMPRESSION: ReadonlyMap<string, Compression> = new Map<string, Compression>([
  [MediaType.OciLayer, 'none'],
  [MediaType.OciLayerGzip, 'gzip'],
  [MediaType.OciLayerZstd, 'zstd'],
  [MediaType.OciLayerNondistributable, 'none'],
  [MediaType.OciLayerNondistributableGzip, 'gzip'],
  [MediaType.OciLayerNondistributableZstd, 'zstd'],
  [MediaType.DockerLayer, 'none'],
  [MediaType.DockerLayerGzip, 'gzip'],
  [DOCKER_LAYER_ZSTD, 'zstd'],
  [MediaType.DockerForeignLayerGzip, 'gzip'],
  [DOCKER_FOREIGN_LAYER, 'none'],
]);

/**
 * The compression a layer media type declares. Throws UNSUPPORTED_MEDIA_TYPE naming the type
 * for anything that is not a known tar layer type: an unknown layer is never skipped silently.
 */
export function layerCompression(mediaType: string): Compression {
  const compression = LAYER_COMPRESSION.get(mediaType);
  if (compression !== undefined) return compression;
  const hint = mediaType.includes('encrypted')
    ? 'encrypted layers (ocicrypt) are not supported'
    : 'pull-unpack unpacks OCI and Docker tar layers that are uncompressed or compressed with gzip or zstd';
  throw new PullUnpackError('UNSUPPORTED_MEDIA_TYPE', `unsupported layer media type "${mediaType}"`, { hint });
}

export type ZstdDecoder = 'native' | 'cli' | 'fzstd';

export interface DecompressorOptions {
  /**
   * Which zstd decoder to use: node:zlib's (Node >= 22.15), the system's zstd program
   * (zstd-cli.ts), the pure-JS fzstd on a worker thread (zstd-worker.ts), or the first of those
   * that exists ('auto', the default). Tests and benchmarks pin one.
   */
  zstd?: 'auto' | ZstdDecoder;
}

/** The zstd decoders this process can use, best first. */
export function zstdDecoders(): ZstdDecoder[] {
  return [...(nativeZstd() ? (['native'] as const) : []), ...(zstdProgram() ? (['cli'] as const) : []), 'fzstd'];
}

/**
 * A Transform from the layer blob to the uncompressed tar. The first bytes must carry the
 * magic of `compression` (for 'none': neither gzip's nor zstd's, nor xz's or bzip2's), else it
 * fails with COMPRESSION_MISMATCH naming both; corrupt or truncated input fails with
 * CORRUPT_LAYER naming `what`. gzip streams may have several members and zstd streams several
 * frames. Output honours backpressure, so memory stays bounded whatever the ratio.
 */
export function createDecompressor(compression: Compression, what: string, options: DecompressorOptions = {}): Transform {
  const zstd = options.zstd ?? 'auto';
  if (zstd === 'native' && nativeZstd() === undefined) {
    throw new Error(`node:zlib has no zstd decoder in Node ${process.versions.node} (it needs 22.15 or later)`);
  }
  if (zstd === 'cli' && zstdProgram() === null) throw new Error('there is no zstd program on PATH');
  return new LayerDecompressor(compression, what, zstd);
}

type ZstdDecompressFactory = (options: zlib.ZlibOptions) => Transform;

/** node:zlib's zstd decoder (Node >= 22.15), absent from @types/node 20. */
function nativeZstd(): ZstdDecompressFactory | undefined {
  const factory = (zlib as unknown as { createZstdDecompress?: unknown }).createZstdDecompress;
  return typeof factory === 'function' ? (factory as ZstdDecompressFactory) : undefined;
}

interface Engine {
  write(chunk: Buffer): Promise<void> | undefined;
  end(): Promise<void> | undefined;
  destroy(): void;
}

const SNIFF_BYTES = 6;
const ZLIB_CHUNK = 256 * 1024;
const OUTPUT_HIGH_WATER_MARK = 1024 * 1024;

type Detected = Compression | 'xz' | 'bzip2';

const MAGIC: ReadonlyArray<[Detected, number[]]> = [
  ['gzip', [0x1f, 0x8b]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['bzip2', [0x42, 0x5a, 0x68]],
];

/** What the first bytes of a blob say it is; 'none' when no known compression magic matches. */
function detect(head: Buffer): Detected {
  for (const [kind, magic] of MAGIC) {
    if (head.length >= magic.length && magic.every((byte, i) => head[i] === byte)) return kind;
  }
  // A zstd stream may open with a skippable frame (magic 0x184D2A5?, little-endian).
  if (head.length >= 4 && (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18) {
    return 'zstd';
  }
  return 'none';
}

function checkMagic(head: Buffer, compression: Compression, what: string): void {
  if (head.length === 0) {
    if (compression === 'none') return;
    throw new PullUnpackError('CORRUPT_LAYER', `${what}: the layer is empty, expected ${compression} data`);
  }
  const detected = detect(head);
  if (detected === compression) return;
  const declared = compression === 'none' ? 'an uncompressed tar' : `${compression} compression`;
  const found = detected === 'none' ? 'neither gzip nor zstd data' : `${detected}-compressed`;
  const start = [...head.subarray(0, 4)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  throw new PullUnpackError(
    'COMPRESSION_MISMATCH',
    `${what}: the media type declares ${declared} but the content is ${found} (it starts with ${start})`,
    { hint: 'the tool that pushed this image labelled the layer with the wrong media type' },
  );
}

class LayerDecompressor extends Transform {
  private readonly compression: Compression;
  private readonly what: string;
  private readonly zstdChoice: 'auto' | ZstdDecoder;
  private head: Buffer[] = [];
  private headLength = 0;
  private engine: Engine | undefined;
  private resumeOutput: (() => void) | undefined;

  constructor(compression: Compression, what: string, zstdChoice: 'auto' | ZstdDecoder) {
    super({ readableHighWaterMark: OUTPUT_HIGH_WATER_MARK });
    this.compression = compression;
    this.what = what;
    this.zstdChoice = zstdChoice;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.settle(() => this.accept(chunk), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.settle(() => this.finish(), callback);
  }

  // Readable calls _read when the consumer wants more: an emit waiting for room may go on.
  override _read(size: number): void {
    this.wakeOutput();
    super._read(size);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.engine?.destroy();
    this.wakeOutput();
    callback(error);
  }

  /** Runs `step` and calls back once it is done, with its failure as a layer error. */
  private settle(step: () => Promise<void> | undefined, callback: TransformCallback): void {
    let work: Promise<void> | undefined;
    try {
      work = step();
    } catch (err) {
      callback(this.layerError(err));
      return;
    }
    if (work === undefined) {
      callback();
      return;
    }
    work.then(
      () => callback(),
      (err: unknown) => callback(this.layerError(err)),
    );
  }

  private accept(chunk: Buffer): Promise<void> | undefined {
    if (this.engine) return this.engine.write(chunk);
    this.head.push(chunk);
    this.headLength += chunk.length;
    return this.headLength < SNIFF_BYTES ? undefined : this.start();
  }

  private async finish(): Promise<void> {
    if (!this.engine) await this.start();
    await this.engine!.end();
  }

  private async start(): Promise<void> {
    const head = Buffer.concat(this.head);
    this.head = [];
    checkMagic(head, this.compression, this.what);
    this.engine = this.createEngine();
    if (head.length > 0) await this.engine.write(head);
  }

  private createEngine(): Engine {
    const emit: Emit = (out) => this.pushOutput(out);
    if (this.compression === 'none') return new PassThroughEngine(emit);
    if (this.compression === 'gzip') return new ZlibEngine(zlib.createGunzip({ chunkSize: ZLIB_CHUNK }), emit);
    const choice = this.zstdChoice === 'auto' ? zstdDecoders()[0]! : this.zstdChoice;
    const native = nativeZstd();
    if (choice === 'native' && native) return new ScannedEngine(new ZlibEngine(native({ chunkSize: ZLIB_CHUNK }), emit), this.what);
    const program = zstdProgram();
    if (choice === 'cli' && program !== null) return new ScannedEngine(new ZstdProcess(program, emit), this.what);
    return new FzstdEngine(this.what, emit);
  }

  private pushOutput(out: Uint8Array): Promise<void> | undefined {
    if (this.destroyed) throw new Error('the decompressor was destroyed');
    if (out.length === 0 || this.push(out)) return undefined;
    return new Promise((resolve) => {
      this.resumeOutput = resolve;
    });
  }

  private wakeOutput(): void {
    const resume = this.resumeOutput;
    this.resumeOutput = undefined;
    resume?.();
  }

  private layerError(err: unknown): Error {
    if (err instanceof PullUnpackError) return err;
    const message = err instanceof Error ? err.message : String(err);
    const codec = this.compression === 'none' ? 'layer' : this.compression;
    // zlib says Z_BUF_ERROR and fzstd ZstdErrorCode.UnexpectedEOF (5) when input ends mid-stream.
    const code = (err as { code?: unknown } | null)?.code;
    const truncated = code === 'Z_BUF_ERROR' || code === 5;
    const what = truncated ? `the ${codec} data ends early (truncated or corrupt layer)` : `the ${codec} data is corrupt`;
    return new PullUnpackError('CORRUPT_LAYER', `${this.what}: ${what}: ${message}`, { cause: err });
  }
}

class PassThroughEngine implements Engine {
  private readonly emit: Emit;
  constructor(emit: Emit) {
    this.emit = emit;
  }
  write(chunk: Buffer): Promise<void> | undefined {
    return this.emit(chunk);
  }
  end(): undefined {
    return undefined;
  }
  destroy(): void {}
}

/** gzip and native zstd: a zlib stream fed by write() and read by a pump that awaits each emit. */
class ZlibEngine implements Engine {
  private readonly inner: Transform;
  private readonly pump: Promise<void>;

  constructor(inner: Transform, emit: Emit) {
    this.inner = inner;
    this.pump = (async () => {
      for await (const out of inner as AsyncIterable<Buffer>) await emit(out);
    })();
    // The failure is reported through write() and end(); this only keeps it from being unhandled.
    this.pump.catch(() => undefined);
  }

  write(chunk: Buffer): Promise<void> | undefined {
    if (this.inner.write(chunk)) return undefined;
    return Promise.race([once(this.inner, 'drain').then(() => undefined), this.pump]);
  }

  end(): Promise<void> {
    this.inner.end();
    return this.pump;
  }

  destroy(): void {
    this.inner.destroy();
  }
}

/**
 * A native zstd decoder (node:zlib's or the zstd program) behind a scanning frame reader, which
 * checks the framing and the window size on the way in, so a stream cut off mid-frame fails the
 * same way whichever decoder runs (fzstd's engine reads the frames itself).
 */
class ScannedEngine implements Engine {
  private readonly inner: Engine;
  private readonly frames: ZstdFrameReader;

  constructor(inner: Engine, what: string) {
    this.inner = inner;
    this.frames = new ZstdFrameReader(what, { scanOnly: true });
  }

  write(chunk: Buffer): Promise<void> | undefined {
    this.frames.append(chunk);
    while (this.frames.next() !== undefined);
    return this.inner.write(chunk);
  }

  end(): Promise<void> | undefined {
    this.frames.finish();
    return this.inner.end();
  }

  destroy(): void {
    this.inner.destroy();
  }
}

/**
 * zstd through fzstd, decoding on a worker thread (zstd-worker.ts). The frame reader cuts the
 * input into whole blocks so each decodes to at most 128 KiB and backpressure can act between
 * batches of them; it also notices a stream that stops mid-frame, which fzstd on its own would
 * not report. fzstd does not check the optional content checksum: the DiffID check covers that.
 */
class FzstdEngine implements Engine {
  private readonly frames: ZstdFrameReader;
  private readonly decoder: FzstdWorker;

  constructor(what: string, emit: Emit) {
    this.frames = new ZstdFrameReader(what);
    this.decoder = new FzstdWorker(emit);
  }

  async write(chunk: Buffer): Promise<void> {
    this.frames.append(chunk);
    for (let unit = this.frames.next(); unit !== undefined; unit = this.frames.next()) await this.decoder.push(unit);
  }

  async end(): Promise<void> {
    this.frames.finish();
    await this.decoder.end();
  }

  destroy(): void {
    this.decoder.destroy();
  }
}
