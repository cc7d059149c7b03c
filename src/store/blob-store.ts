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
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open as openFile, rename, rm, stat, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import { parseDigest, verifyBytes } from '../image/digest.js';
import { abortError, isPullUnpackError, PullUnpackError } from '../errors.js';
import { withFileLock } from './lock.js';
import type { Descriptor } from '../image/oci.js';

/** Opens the blob's bytes from `offset` on (the registry answers with a Range request). */
export type BlobOpener = (offset: number) => Promise<Readable>;

export interface IngestOptions {
  signal?: AbortSignal | undefined;
  /** Sees the running byte count of the blob (resumed bytes included). */
  onBytes?: ((received: number) => void) | undefined;
  /** Called when another process is downloading the same blob and this one waits for it. */
  onWait?: (() => void) | undefined;
  /**
   * Sees the partial file grow: called after each write with its length; `fresh` when this
   * transfer started it at byte 0 (see blob-follow.ts).
   */
  onWritten?: ((partial: string, length: number, fresh: boolean) => void) | undefined;
}

export interface IngestResult {
  path: string;
  /** Bytes that came from `open` in this call (0 when another process had finished it). */
  fetched: number;
  /** Bytes of an earlier partial download that were reused. */
  resumed: number;
}

const LAYOUT_FILE = JSON.stringify({ imageLayoutVersion: '1.0.0' });
/** Downloaded bytes are written to the partial file in batches of about this size. */
const WRITE_BATCH_BYTES = 256 * 1024;

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
    await this.prepare();
    return withFileLock(
      this.lockPath(descriptor.digest),
      async () => {
        const path = this.path(descriptor.digest);
        if (await this.has(descriptor)) {
          await this.touch(descriptor.digest);
          return { path, fetched: 0, resumed: 0 };
        }
        return this.download(descriptor, open, what, options);
      },
      { signal: options.signal, onWait: options.onWait },
    );
  }

  /**
   * Stores small bytes (a manifest, a config) under their digest, verifying them first. A blob
   * already there is marked as used now, so that `cache prune --older-than` keeps it.
   */
  async putBytes(descriptor: Descriptor, bytes: Buffer, what: string): Promise<string> {
    verifyBytes(bytes, descriptor.digest, what, descriptor.size);
    const path = this.path(descriptor.digest);
    if (await this.has(descriptor)) {
      await this.touch(descriptor.digest);
      return path;
    }
    await this.prepare();
    const tmp = join(this.root, 'ingest', `${parseDigest(descriptor.digest).hex}.${process.pid}.${randomUUID()}.tmp`);
    try {
      await writeFile(tmp, bytes);
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return path;
  }

  /** Where an interrupted download of the blob is kept until it is resumed. */
  partialPath(digest: string): string {
    return join(this.root, 'ingest', `${parseDigest(digest).hex}.partial`);
  }

  /** The lock file that serializes downloads of the blob across processes. */
  lockPath(digest: string): string {
    return join(this.root, 'ingest', `${parseDigest(digest).hex}.lock`);
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

  /**
   * Downloads into the partial file (resuming it) and renames it into blobs/ once verified. When
   * a resumed download does not verify, the fault may lie in the bytes an earlier transfer left
   * (not in this one's), so it starts over from byte 0, once.
   */
  private async download(descriptor: Descriptor, open: BlobOpener, what: string, options: IngestOptions): Promise<IngestResult> {
    try {
      return await this.transfer(descriptor, open, what, options);
    } catch (err) {
      if (!(err instanceof ResumedCorrupt)) throw err;
      return this.transfer(descriptor, open, what, options);
    }
  }

  /** One attempt: hash the partial file's bytes, append the rest from `open`, verify, rename. */
  private async transfer(descriptor: Descriptor, open: BlobOpener, what: string, options: IngestOptions): Promise<IngestResult> {
    const partial = this.partialPath(descriptor.digest);
    const hasher = new HashingCounter(descriptor, what, options.onBytes);
    const resumed = await hasher.hashExisting(partial);
    let keepPartial = true;
    try {
      if (options.signal?.aborted) throw abortError(options.signal);
      // A partial file that is already complete (killed before its rename) needs no request.
      if (resumed < descriptor.size) await appendFrom(open, resumed, hasher, partial, options);
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
      if (corrupt && resumed > 0) throw new ResumedCorrupt(err);
      throw err;
    }
  }
}

/** A resumed download failed verification: the caller starts over from byte 0. */
class ResumedCorrupt extends Error {
  constructor(cause: unknown) {
    super('a resumed download did not verify', { cause });
  }
}

/**
 * Streams the blob from `offset` through `hasher` onto the end of `partial`, in writes of up to
 * WRITE_BATCH_BYTES (one thread-pool round trip each instead of one per network chunk). What was
 * received is written before this settles, also when the transfer stops (an error, an abort), so
 * the next attempt resumes from it; nothing is written after this settles.
 */
async function appendFrom(
  open: BlobOpener,
  offset: number,
  hasher: HashingCounter,
  partial: string,
  options: IngestOptions,
): Promise<void> {
  const { signal, onWritten } = options;
  const body = await open(offset);
  let file: FileHandle | undefined;
  let length = offset;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async (): Promise<void> => {
    if (file === undefined || pendingBytes === 0) return;
    const buffers = pending;
    const size = pendingBytes;
    pending = [];
    pendingBytes = 0;
    await writeAll(file, buffers, size);
    length += size;
    onWritten?.(partial, length, offset === 0);
  };
  try {
    if (signal) addAbortSignal(signal, body);
    file = await openFile(partial, offset > 0 ? 'a' : 'w');
    for await (const chunk of body as AsyncIterable<Buffer>) {
      hasher.add(chunk);
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= WRITE_BATCH_BYTES) await flush();
    }
    await flush();
  } finally {
    body.destroy();
    // Keep what arrived for a resume; a failing write here leaves a shorter (still valid) prefix.
    await flush().catch(() => undefined);
    await file?.close();
  }
}

/** Writes `buffers` (`size` bytes in all) at the end of `file`, finishing a short writev. */
async function writeAll(file: FileHandle, buffers: Buffer[], size: number): Promise<void> {
  const { bytesWritten } = await file.writev(buffers);
  if (bytesWritten === size) return;
  const rest = Buffer.concat(buffers, size).subarray(bytesWritten);
  for (let written = 0; written < rest.length;) written += (await file.write(rest, written)).bytesWritten;
}

/**
 * Hashes and counts a blob's bytes, failing as soon as there are too many. `hashExisting`
 * feeds it an earlier partial file first, so the digest covers the whole blob.
 */
class HashingCounter {
  private readonly hash;
  private received = 0;

  constructor(
    private readonly descriptor: Descriptor,
    private readonly what: string,
    private readonly onBytes: ((received: number) => void) | undefined,
  ) {
    this.hash = createHash(parseDigest(descriptor.digest).algorithm);
  }

  get bytes(): number {
    return this.received;
  }

  /** Hashes the bytes of an earlier partial download (one longer than the blob is removed); returns their count. */
  async hashExisting(partial: string): Promise<number> {
    let size: number;
    try {
      size = (await stat(partial)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    if (size > this.descriptor.size) {
      await rm(partial, { force: true });
      return 0;
    }
    const handle = await openFile(partial, 'r');
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

  /** Counts and hashes the next chunk; SIZE_MISMATCH once the blob has more bytes than declared. */
  add(chunk: Buffer): void {
    this.received += chunk.length;
    if (this.received > this.descriptor.size) {
      throw new PullUnpackError(
        'SIZE_MISMATCH',
        `${this.what}: received more than the ${this.descriptor.size} bytes its descriptor declares`,
      );
    }
    this.hash.update(chunk);
    this.onBytes?.(this.received);
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
