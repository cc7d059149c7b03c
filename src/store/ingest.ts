/**
 * One transfer of a blob into the store's partial file: the bytes of an earlier partial download
 * are hashed first, the rest is appended from the source while it is hashed and counted, and
 * the caller renames the file into place once `check` passes (blob-store.ts).
 */
import { open as openFile, rm, type FileHandle } from 'node:fs/promises';
import { addAbortSignal, type Readable } from 'node:stream';
import { DigestVerifier } from '../image/digest.js';
import type { Descriptor } from '../image/oci.js';
import { NotRegularFileError, openRegularFile } from './regular-file.js';

/** Opens the blob's bytes from `offset` on (the registry answers with a Range request). */
export type BlobOpener = (offset: number) => Promise<Readable>;

export interface AppendOptions {
  signal?: AbortSignal | undefined;
  /** See IngestOptions.onWritten in blob-store.ts. */
  onWritten?: ((partial: string, length: number, fresh: boolean) => void) | undefined;
}

/** Downloaded bytes are written to the partial file in batches of about this size. */
const WRITE_BATCH_BYTES = 256 * 1024;

/**
 * Streams the blob from `offset` through `hasher` onto the end of `partial`, in writes of up to
 * WRITE_BATCH_BYTES (one thread-pool round trip each instead of one per network chunk). What was
 * received is written before this settles, also when the transfer stops (an error, an abort), so
 * the next attempt resumes from it; nothing is written after this settles. A failed write is
 * thrown as a WriteFailure, so that it is never mistaken for the source's failure.
 */
export async function appendFrom(
  open: BlobOpener,
  offset: number,
  hasher: HashingCounter,
  partial: string,
  options: AppendOptions,
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
    await writeAll(file, buffers, size).catch((err: unknown) => Promise.reject(new WriteFailure(err)));
    length += size;
    onWritten?.(partial, length, offset === 0);
  };
  try {
    if (signal) addAbortSignal(signal, body);
    file = await openFile(partial, offset > 0 ? 'a' : 'w').catch((err: unknown) => Promise.reject(new WriteFailure(err)));
    // Leaving this loop (a failed write, too many bytes) must not destroy `body` with an error:
    // a source's generator would take that error for its connection's and retry in the
    // background. `body.destroy()` below ends it without one.
    for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
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

/** Writing the partial file failed (its `cause` is the errno error): the store's filesystem, not the source. */
export class WriteFailure extends Error {
  constructor(cause: unknown) {
    super((cause as Error).message, { cause });
    this.name = 'WriteFailure';
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
 * Hashes and counts a blob's bytes (a DigestVerifier, as the verifying stream uses), failing as
 * soon as there are too many. `hashExisting` feeds it an earlier partial file first, so the
 * digest covers the whole blob.
 */
export class HashingCounter {
  private readonly verifier: DigestVerifier;

  constructor(
    private readonly descriptor: Descriptor,
    what: string,
    private readonly onBytes: ((received: number) => void) | undefined,
  ) {
    this.verifier = new DigestVerifier({ digest: descriptor.digest, size: descriptor.size, what });
  }

  get bytes(): number {
    return this.verifier.bytes;
  }

  /**
   * Hashes the bytes of an earlier partial download; returns their count. One longer than the
   * blob, or that is not a regular file (a FIFO would block the read), is removed instead.
   */
  async hashExisting(partial: string): Promise<number> {
    let handle: FileHandle;
    try {
      handle = await openRegularFile(partial);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      if (!(err instanceof NotRegularFileError)) throw err;
      await rm(partial, { force: true, recursive: true });
      return 0;
    }
    try {
      if ((await handle.stat()).size > this.descriptor.size) {
        await rm(partial, { force: true });
        return 0;
      }
      for await (const chunk of handle.createReadStream({ highWaterMark: 1 << 20, autoClose: false }))
        this.verifier.update(chunk as Buffer);
    } finally {
      await handle.close();
    }
    return this.verifier.bytes;
  }

  /** Counts and hashes the next chunk; SIZE_MISMATCH once the blob has more bytes than declared. */
  add(chunk: Buffer): void {
    this.verifier.update(chunk);
    this.onBytes?.(this.verifier.bytes);
  }

  /** Throws unless the bytes received are exactly the blob's and hash to its digest. */
  check(): void {
    this.verifier.check();
  }
}
