/**
 * The layer applier's tar reader: entries and their bodies, read straight from the chunks of the
 * uncompressed layer stream (no Readable per entry, no events: tar-stream's extractor spent more
 * per entry on that than creating the file on tmpfs).
 *
 * Which entries a layer holds is decided by the shared assembler (parser.ts), as Go's
 * archive/tar reads them, or the layer is refused where GNU tar would read other entries. The
 * reader stops at the end-of-archive marker and then reads the rest of the stream without
 * looking at it, so that a caller hashing the stream (the DiffID) sees every byte. It fails when
 * the input ends inside a header, a record, a body or its padding.
 */
import { BLOCK, type TarHeader } from './header.js';
import { STEP, TarParser } from './parser.js';

export type { TarEntryType, TarHeader, SparseFragment } from './header.js';
export { parsePaxXattrs } from './pax.js';

/**
 * One entry: its header, and its body as chunks (read at most once, before the next entry). For
 * a sparse file (header.sparse) the body is the fragments' data back to back.
 */
export interface TarEntry extends AsyncIterable<Buffer> {
  readonly header: TarHeader;
}

export class TarReader implements AsyncIterable<TarEntry> {
  private readonly source: AsyncIterator<Buffer>;
  private chunk: Buffer = Buffer.alloc(0);
  private offset = 0;
  private ended = false;
  /** Body bytes of the current entry not yet read, and the padding after them. */
  private bodyLeft = 0;
  private paddingLeft = 0;

  constructor(source: AsyncIterable<Buffer | Uint8Array | string>) {
    this.source = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TarEntry> {
    const parser = new TarParser();
    for (;;) {
      await this.skip(this.bodyLeft + this.paddingLeft);
      this.bodyLeft = 0;
      this.paddingLeft = 0;
      const block = await this.read(BLOCK);
      // Go accepts an archive that ends without its end-of-archive blocks.
      if (block === null) return;
      const step = parser.block(block);
      if (step === STEP.ZERO) continue;
      if (step === STEP.END) return this.drain();
      if (step === STEP.META) {
        const size = parser.size;
        const data = size === 0 ? Buffer.alloc(0) : await this.read(size);
        if (data === null) throw unexpectedEnd();
        await this.skip(padding(size));
        parser.meta(data);
        continue;
      }
      if (step === STEP.SPARSE_MAP) {
        for (;;) {
          const mapBlock = await this.read(BLOCK);
          if (mapBlock === null) throw unexpectedEnd();
          if (parser.sparseBlock(mapBlock)) break;
        }
      }
      // A 1.0 sparse map fills whole blocks: the padding is the data's.
      this.bodyLeft = parser.size;
      this.paddingLeft = padding(parser.size);
      yield this.entry(parser.header!);
    }
  }

  /** Reads the rest of the source without looking at it (it is not part of the archive). */
  private async drain(): Promise<void> {
    this.offset = this.chunk.length;
    while (await this.fill()) this.offset = this.chunk.length;
  }

  private entry(header: TarHeader): TarEntry {
    // The body iterator reads through the reader's buffer state; an arrow cannot be a generator.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const reader = this;
    return {
      header,
      async *[Symbol.asyncIterator]() {
        while (reader.bodyLeft > 0) {
          const piece = await reader.readSome(reader.bodyLeft);
          reader.bodyLeft -= piece.length;
          yield piece;
        }
      },
    };
  }

  /** Up to `max` bytes (at least one), as a view of the current chunk. */
  private async readSome(max: number): Promise<Buffer> {
    if (this.offset >= this.chunk.length && !(await this.fill())) throw unexpectedEnd();
    const end = Math.min(this.chunk.length, this.offset + max);
    const piece = this.chunk.subarray(this.offset, end);
    this.offset = end;
    return piece;
  }

  /** Exactly `size` bytes; null when the input ended cleanly before any of them. */
  private async read(size: number): Promise<Buffer | null> {
    if (this.offset + size <= this.chunk.length) {
      const bytes = this.chunk.subarray(this.offset, this.offset + size);
      this.offset += size;
      return bytes;
    }
    const pieces: Buffer[] = [];
    let have = 0;
    while (have < size) {
      if (this.offset >= this.chunk.length && !(await this.fill())) {
        if (have === 0) return null;
        throw unexpectedEnd();
      }
      const piece = this.chunk.subarray(this.offset, Math.min(this.chunk.length, this.offset + size - have));
      this.offset += piece.length;
      have += piece.length;
      pieces.push(piece);
    }
    return Buffer.concat(pieces, size);
  }

  private async skip(count: number): Promise<void> {
    while (count > 0) {
      if (this.offset >= this.chunk.length && !(await this.fill())) throw unexpectedEnd();
      const step = Math.min(count, this.chunk.length - this.offset);
      this.offset += step;
      count -= step;
    }
  }

  /** Takes the next non-empty chunk from the source; false at its end. */
  private async fill(): Promise<boolean> {
    while (!this.ended) {
      const next = await this.source.next();
      if (next.done) {
        this.ended = true;
        break;
      }
      const value = next.value as Buffer | Uint8Array | string;
      const chunk =
        typeof value === 'string'
          ? Buffer.from(value)
          : Buffer.isBuffer(value)
            ? value
            : Buffer.from(value.buffer, value.byteOffset, value.length);
      if (chunk.length === 0) continue;
      this.chunk = chunk;
      this.offset = 0;
      return true;
    }
    return false;
  }
}

function unexpectedEnd(): Error {
  return new Error('Unexpected end of data');
}

function padding(size: number): number {
  const over = size % BLOCK;
  return over === 0 ? 0 : BLOCK - over;
}
