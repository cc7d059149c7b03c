/**
 * A content-addressed blob store laid out as an OCI image layout (`oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>`), shared by concurrent processes.
 *
 * A blob enters only through `ingest` or `putBytes`: bytes are hashed and counted on the way
 * into `ingest/<hex>.partial`, and renamed to `blobs/` only when size and digest match
 * (containerd's content store does the same). One lock file per blob makes concurrent pulls of
 * the same blob wait for each other instead of downloading it twice. A download cut short keeps
 * its partial file, and the next `ingest` resumes it from where it stopped.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseDigest, verifyBytes } from './digest.js';
import { abortError, isPullUnpackError, PullUnpackError } from './errors.js';
import { withFileLock } from './lock.js';
import type { Descriptor } from './oci.js';

/** Opens the blob's bytes from `offset` on (the registry answers with a Range request). */
export type BlobOpener = (offset: number) => Promise<Readable>;

export interface IngestOptions {
  signal?: AbortSignal | undefined;
  /** Sees the running byte count of the blob (resumed bytes included). */
  onBytes?: ((received: number) => void) | undefined;
  /** Called when another process is downloading the same blob and this one waits for it. */
  onWait?: (() => void) | undefined;
}

export interface IngestResult {
  path: string;
  /** Bytes that came from `open` in this call (0 when another process had finished it). */
  fetched: number;
  /** Bytes of an earlier partial download that were reused. */
  resumed: number;
}

const LAYOUT_FILE = JSON.stringify({ imageLayoutVersion: '1.0.0' });

export class BlobStore {
  /** The layout's root directory. */
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** Where the verified blob lives (whether or not it is there yet). */
  path(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, 'blobs', algorithm, hex);
  }

  /** True when the verified blob is present with the descriptor's size. */
  async has(descriptor: Descriptor): Promise<boolean> {
    try {
      const info = await stat(this.path(descriptor.digest));
      return info.isFile() && info.size === descriptor.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Marks a blob as used now (`cache prune --older-than` goes by this time). */
  async touch(digest: string): Promise<void> {
    const now = new Date();
    await utimes(this.path(digest), now, now).catch(() => undefined);
  }

  /** Opens a stored blob for reading. */
  read(digest: string, offset = 0): Readable {
    return createReadStream(this.path(digest), { start: offset, highWaterMark: 1 << 20 });
  }

  /**
   * Stores a blob from `open`, verifying size and digest while it streams; only a verified blob
   * reaches `blobs/`. Waits for another process downloading the same blob, resumes an earlier
   * partial download, and keeps the partial file when the transfer fails part-way.
   */
  async ingest(descriptor: Descriptor, open: BlobOpener, what: string, options: IngestOptions = {}): Promise<IngestResult> {
    const { hex } = parseDigest(descriptor.digest);
    await this.prepare();
    const lock = join(this.root, 'ingest', `${hex}.lock`);
    return withFileLock(
      lock,
      async () => {
        const path = this.path(descriptor.digest);
        if (await this.has(descriptor)) return { path, fetched: 0, resumed: 0 };
        return this.download(descriptor, open, what, options);
      },
      { signal: options.signal, onWait: options.onWait },
    );
  }

  /** Stores small bytes (a manifest, a config) under their digest, verifying them first. */
  async putBytes(descriptor: Descriptor, bytes: Buffer, what: string): Promise<string> {
    verifyBytes(bytes, descriptor.digest, what, descriptor.size);
    const path = this.path(descriptor.digest);
    if (await this.has(descriptor)) return path;
    await this.prepare();
    const tmp = join(this.root, 'ingest', `${parseDigest(descriptor.digest).hex}.${process.pid}.${Date.now()}.tmp`);
    await writeFile(tmp, bytes);
    await rename(tmp, path);
    return path;
  }

  /** Creates the layout's skeleton once: oci-layout, blobs/sha256, ingest/. */
  private async prepare(): Promise<void> {
    await mkdir(join(this.root, 'blobs', 'sha256'), { recursive: true });
    await mkdir(join(this.root, 'blobs', 'sha512'), { recursive: true });
    await mkdir(join(this.root, 'ingest'), { recursive: true });
    await writeFile(join(this.root, 'oci-layout'), LAYOUT_FILE, { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }

  private async download(descriptor: Descriptor, open: BlobOpener, what: string, options: IngestOptions): Promise<IngestResult> {
    const partial = join(this.root, 'ingest', `${parseDigest(descriptor.digest).hex}.partial`);
    const hasher = new HashingCounter(descriptor, what, options.onBytes);
    const resumed = await hasher.hashExisting(partial);
    let keepPartial = true;
    try {
      if (options.signal?.aborted) throw abortError(options.signal);
      const body = await open(resumed);
      await pipeline(body, hasher, createWriteStream(partial, { flags: resumed > 0 ? 'a' : 'w', highWaterMark: 1 << 20 }), {
        signal: options.signal,
      });
      if (hasher.bytes < descriptor.size) {
        throw new PullUnpackError('NETWORK', `${what}: the transfer stopped after ${hasher.bytes} of ${descriptor.size} bytes`, {
          hint: 'run the pull again: it resumes from where this one stopped',
        });
      }
      keepPartial = false;
      hasher.check();
      const path = this.path(descriptor.digest);
      await rename(partial, path);
      return { path, fetched: hasher.bytes - resumed, resumed };
    } catch (err) {
      // Wrong bytes are never kept; a transfer that merely stopped is resumed next time.
      const corrupt = isPullUnpackError(err, 'DIGEST_MISMATCH') || isPullUnpackError(err, 'SIZE_MISMATCH');
      if (corrupt || !keepPartial) await rm(partial, { force: true });
      if (options.signal?.aborted) throw abortError(options.signal);
      throw err;
    }
  }
}

/**
 * Hashes and counts a blob's bytes as they pass, failing as soon as there are too many.
 * `resume` feeds it an earlier partial file first, so the digest covers the whole blob.
 */
class HashingCounter extends Transform {
  private readonly hash;
  private received = 0;

  constructor(
    private readonly descriptor: Descriptor,
    private readonly what: string,
    private readonly onBytes: ((received: number) => void) | undefined,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.hash = createHash(parseDigest(descriptor.digest).algorithm);
  }

  get bytes(): number {
    return this.received;
  }

  /** Hashes the usable prefix of `partial` (truncating anything past the blob size); returns its length. */
  async hashExisting(partial: string): Promise<number> {
    let size: number;
    try {
      size = (await stat(partial)).size;
    } catch {
      return 0;
    }
    if (size >= this.descriptor.size) {
      await rm(partial, { force: true });
      return 0;
    }
    const handle = await open(partial, 'r');
    try {
      for await (const chunk of handle.createReadStream({ highWaterMark: 1 << 20, autoClose: false })) {
        this.hash.update(chunk as Buffer);
        this.received += (chunk as Buffer).length;
      }
    } finally {
      await handle.close();
    }
    return this.received;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    if (this.received > this.descriptor.size) {
      callback(new PullUnpackError('SIZE_MISMATCH', `${this.what}: received more than the ${this.descriptor.size} bytes its descriptor declares`));
      return;
    }
    this.hash.update(chunk);
    this.onBytes?.(this.received);
    callback(null, chunk);
  }

  /** Throws unless the bytes received (exactly the blob's size) hash to its digest. */
  check(): void {
    const actual = `${parseDigest(this.descriptor.digest).algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.descriptor.digest) {
      throw new PullUnpackError('DIGEST_MISMATCH', `${this.what}: content hashes to ${actual}, expected ${this.descriptor.digest}`, {
        hint: 'the registry served different bytes than the digest names; nothing was kept',
      });
    }
  }
}
