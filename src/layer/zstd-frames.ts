/**
 * Cuts a zstd stream (RFC 8878 section 3) into the units a streaming decoder can take one at a
 * time: frame headers, whole blocks and checksums; skippable frames are dropped. It decodes
 * nothing itself. It lets decompress.ts bound the output of each decoder call to one block and
 * tell a stream that stops mid-frame from one that ends cleanly.
 */
import { PullUnpackError } from '../errors.js';

const FRAME_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
/** RFC 8878 3.1.1.2: Block_Maximum_Size is the smaller of the window size and 128 KiB. */
const MAX_BLOCK = 128 * 1024;
/**
 * The largest window we agree to allocate. The zstd CLI refuses more than 128 MiB unless told
 * otherwise; Go's klauspost decoder (containerd) allows 512 MiB by default, and so do we.
 */
export const MAX_WINDOW = 512 * 1024 * 1024;

type State = 'frame' | 'block' | 'checksum' | 'skip';

export class ZstdFrameReader {
  private readonly what: string;
  private pieces: Buffer[] = [];
  private buffered = 0;
  private state: State = 'frame';
  private checksum = false;
  private blockLimit = MAX_BLOCK;
  private skipLeft = 0;
  private afterSkip: State = 'frame';
  private frames = 0;
  private readonly scanOnly: boolean;

  /**
   * `what` names the layer in errors. With `scanOnly`, block contents are skipped as they
   * arrive instead of being returned: for checking the framing of a stream that another
   * decoder decodes.
   */
  constructor(what: string, options: { scanOnly?: boolean } = {}) {
    this.what = what;
    this.scanOnly = options.scanOnly ?? false;
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.pieces.push(chunk);
    this.buffered += chunk.length;
  }

  /** The next whole unit for the decoder, or undefined when more input is needed. */
  next(): Buffer | undefined {
    for (;;) {
      switch (this.state) {
        case 'skip':
          this.skipLeft -= this.discard(this.skipLeft);
          if (this.skipLeft > 0) return undefined;
          this.state = this.afterSkip;
          break;
        case 'frame': {
          const magic = this.peek(4);
          if (magic === undefined) return undefined;
          const word = magic.readUInt32LE(0);
          if (word === FRAME_MAGIC) return this.frameHeader();
          if ((word & SKIPPABLE_MAGIC_MASK) >>> 0 !== SKIPPABLE_MAGIC) {
            throw this.corrupt(`expected a zstd frame, found bytes ${hex(magic)}`);
          }
          const header = this.peek(8);
          if (header === undefined) return undefined;
          this.discard(8);
          this.skip(header.readUInt32LE(4), 'frame');
          break;
        }
        case 'block': {
          const unit = this.block();
          if (unit !== null) return unit;
          break;
        }
        case 'checksum': {
          const sum = this.take(4);
          if (sum !== undefined) this.state = 'frame';
          return sum;
        }
      }
    }
  }

  /** Call at the end of input: throws CORRUPT_LAYER unless the stream ended between frames. */
  finish(): void {
    if (this.state !== 'frame' || this.buffered > 0) {
      throw new PullUnpackError(
        'CORRUPT_LAYER',
        `${this.what}: the zstd data ends early, in the middle of a frame (truncated or corrupt layer)`,
      );
    }
    if (this.frames === 0) throw this.corrupt('the stream holds no zstd frame');
  }

  private frameHeader(): Buffer | undefined {
    const start = this.peek(5);
    if (start === undefined) return undefined;
    const descriptor = start[4]!;
    const fcsFlag = descriptor >> 6;
    const singleSegment = (descriptor >> 5) & 1;
    if (descriptor & 0x08) throw this.corrupt('a frame header has its reserved bit set');
    const dictBytes = [0, 1, 2, 4][descriptor & 3]!;
    const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
    const length = 5 + (singleSegment ? 0 : 1) + dictBytes + fcsBytes;
    const header = this.take(length);
    if (header === undefined) return undefined;
    if (dictBytes > 0 && readLE(header, 5 + (singleSegment ? 0 : 1), dictBytes) !== 0) {
      throw this.corrupt('a frame needs a zstd dictionary, which layers never use');
    }
    const window = singleSegment ? readLE(header, length - fcsBytes, fcsBytes) + (fcsBytes === 2 ? 256 : 0) : windowSize(header[5]!);
    if (window > MAX_WINDOW) {
      throw new PullUnpackError(
        'TOO_LARGE',
        `${this.what}: a zstd frame needs a ${window}-byte window, more than the ${MAX_WINDOW} allowed`,
        {
          hint: 'recompress the layer with a smaller window (zstd --long above 29 is not supported)',
        },
      );
    }
    this.checksum = (descriptor & 0x04) !== 0;
    this.blockLimit = Math.min(MAX_BLOCK, Math.max(window, 1));
    this.state = 'block';
    this.frames += 1;
    return header;
  }

  /** A whole block; undefined when more input is needed; null when scanOnly skips its content. */
  private block(): Buffer | undefined | null {
    const head = this.peek(3);
    if (head === undefined) return undefined;
    const word = head[0]! | (head[1]! << 8) | (head[2]! << 16);
    const last = word & 1;
    const type = (word >> 1) & 3;
    const size = word >>> 3;
    if (type === 3) throw this.corrupt('a block has the reserved block type');
    if (size > this.blockLimit) throw this.corrupt(`a block of ${size} bytes exceeds the ${this.blockLimit}-byte limit`);
    // An RLE block (type 1) carries one byte that is repeated `size` times.
    const contentSize = type === 1 ? 1 : size;
    const after: State = !last ? 'block' : this.checksum ? 'checksum' : 'frame';
    if (this.scanOnly) {
      this.discard(3);
      this.skip(contentSize, after);
      return null;
    }
    const unit = this.take(3 + contentSize);
    if (unit === undefined) return undefined;
    this.state = after;
    return unit;
  }

  private skip(count: number, then: State): void {
    this.skipLeft = count;
    this.afterSkip = then;
    this.state = 'skip';
  }

  private corrupt(why: string): PullUnpackError {
    return new PullUnpackError('CORRUPT_LAYER', `${this.what}: the zstd data is corrupt: ${why}`);
  }

  /** The first `n` buffered bytes without consuming them, or undefined when fewer are buffered. */
  private peek(n: number): Buffer | undefined {
    if (this.buffered < n) return undefined;
    let first = this.pieces[0]!;
    if (first.length < n) {
      // Coalesce just enough pieces: a copy of at most the unit plus the last piece it reaches into.
      let count = 0;
      let joined = 0;
      while (joined < n) joined += this.pieces[count++]!.length;
      first = Buffer.concat(this.pieces.slice(0, count), joined);
      this.pieces.splice(0, count, first);
    }
    return first.subarray(0, n);
  }

  private take(n: number): Buffer | undefined {
    const bytes = this.peek(n);
    if (bytes === undefined) return undefined;
    this.discard(n);
    return bytes;
  }

  /** Drops up to `n` buffered bytes; returns how many were dropped. */
  private discard(n: number): number {
    let dropped = 0;
    while (dropped < n && this.pieces.length > 0) {
      const first = this.pieces[0]!;
      const cut = Math.min(first.length, n - dropped);
      if (cut === first.length) this.pieces.shift();
      else this.pieces[0] = first.subarray(cut);
      dropped += cut;
    }
    this.buffered -= dropped;
    return dropped;
  }
}

/** RFC 8878 3.1.1.1.2: Window_Descriptor -> window size in bytes. */
function windowSize(descriptor: number): number {
  const base = 2 ** (10 + (descriptor >> 3));
  return base + (base / 8) * (descriptor & 7);
}

function readLE(bytes: Buffer, offset: number, length: number): number {
  let value = 0;
  for (let i = length - 1; i >= 0; i--) value = value * 256 + bytes[offset + i]!;
  return value;
}

function hex(bytes: Buffer): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}
