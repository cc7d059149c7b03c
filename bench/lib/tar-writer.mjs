/**
 * A streaming ustar writer: entries go straight to a file in 4 MiB writes while the sha256 of
 * the whole tar (the layer's DiffID) is computed on the way, so a 1 GiB layer never sits in
 * memory. Names must fit ustar's 100-byte name field (the generators keep them short).
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

const BLOCK = 512;
const FLUSH_BYTES = 4 << 20;
const TYPE = { file: '0', link: '1', symlink: '2', directory: '5' };

export class TarWriter {
  /** Opens `path` for writing (truncating it); call close() to finish the archive. */
  static async create(path) {
    return new TarWriter(await open(path, 'w'), path);
  }

  constructor(handle, path) {
    this.handle = handle;
    this.path = path;
    this.hash = createHash('sha256');
    this.pending = [];
    this.pendingBytes = 0;
    this.size = 0;
    this.entries = 0;
  }

  /** A regular file whose whole content is `data`. */
  async file(name, data, { mode = 0o644, uid = 0, gid = 0, mtime } = {}) {
    await this.#header({ name, type: 'file', size: data.length, mode, uid, gid, mtime });
    await this.#push(data);
    await this.#pad(data.length);
  }

  /**
   * A regular file of `size` bytes produced by `chunks` (an iterable of buffers whose lengths
   * add up to exactly `size`), for files too big to build in memory.
   */
  async streamedFile(name, size, chunks, { mode = 0o644, uid = 0, gid = 0, mtime } = {}) {
    await this.#header({ name, type: 'file', size, mode, uid, gid, mtime });
    let written = 0;
    for await (const chunk of chunks) {
      written += chunk.length;
      await this.#push(chunk);
    }
    if (written !== size) throw new Error(`${name}: wrote ${written} bytes, declared ${size}`);
    await this.#pad(size);
  }

  async directory(name, { mode = 0o755, uid = 0, gid = 0, mtime } = {}) {
    await this.#header({ name: name.endsWith('/') ? name : `${name}/`, type: 'directory', size: 0, mode, uid, gid, mtime });
  }

  async symlink(name, target, { mtime } = {}) {
    await this.#header({ name, type: 'symlink', size: 0, mode: 0o777, uid: 0, gid: 0, mtime, linkname: target });
  }

  /** A hard link to `target`, an earlier entry of this archive (by its tar name). */
  async hardlink(name, target, { mode = 0o644, mtime } = {}) {
    await this.#header({ name, type: 'link', size: 0, mode, uid: 0, gid: 0, mtime, linkname: target });
  }

  /** Writes the two end blocks and closes the file; returns {path, size, diffId}. */
  async close() {
    await this.#push(Buffer.alloc(2 * BLOCK));
    await this.#flush();
    await this.handle.close();
    return { path: this.path, size: this.size, diffId: `sha256:${this.hash.digest('hex')}`, entries: this.entries };
  }

  async #header({ name, type, size, mode, uid, gid, mtime = 1704067200, linkname = '' }) {
    const block = Buffer.alloc(BLOCK);
    writeString(block, 0, 100, name);
    writeOctal(block, 100, 8, mode);
    writeOctal(block, 108, 8, uid);
    writeOctal(block, 116, 8, gid);
    writeOctal(block, 124, 12, size);
    writeOctal(block, 136, 12, mtime);
    block.write(TYPE[type], 156, 'latin1');
    writeString(block, 157, 100, linkname);
    block.write('ustar\x0000', 257, 'latin1');
    writeString(block, 265, 32, uid === 0 ? 'root' : '');
    writeString(block, 297, 32, gid === 0 ? 'root' : '');
    // The checksum is computed with its own field read as eight spaces.
    block.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of block) sum += byte;
    block.write(`${sum.toString(8).padStart(6, '0')}\x00 `, 148, 'latin1');
    this.entries++;
    await this.#push(block);
  }

  async #pad(size) {
    const rest = size % BLOCK;
    if (rest !== 0) await this.#push(Buffer.alloc(BLOCK - rest));
  }

  async #push(chunk) {
    this.hash.update(chunk);
    this.size += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= FLUSH_BYTES) await this.#flush();
  }

  async #flush() {
    if (this.pendingBytes === 0) return;
    const chunks = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    // One write of the joined chunks: a few copies of 4 MiB cost less than thousands of iovecs.
    const data = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
    let offset = 0;
    while (offset < data.length) {
      const { bytesWritten } = await this.handle.write(data, offset, data.length - offset);
      offset += bytesWritten;
    }
  }
}

function writeString(block, offset, length, text) {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > length) throw new Error(`tar field too long (${bytes.length} > ${length}): ${text}`);
  bytes.copy(block, offset);
}

function writeOctal(block, offset, length, value) {
  const text = Math.floor(value)
    .toString(8)
    .padStart(length - 1, '0');
  if (text.length > length - 1) throw new Error(`tar number too large for ${length} bytes: ${value}`);
  block.write(`${text}\x00`, offset, 'latin1');
}
