/**
 * A content-addressed blob store laid out as an OCI image layout (`oci-layout`, `index.json`,
 * `blobs/<alg>/<hex>`), shared by concurrent processes.
 *
 * A blob enters only through `ingest` or `putBytes`: bytes are hashed and counted on the way
 * into `ingest/<hex>.partial`, and renamed to `blobs/` only when size and digest match
 * (containerd's content store does the same). One lock file per blob makes concurrent pulls of
 * the same blob wait for each other instead of downloading it twice. A download cut short keeps
 * its partial file, and the next `ingest` resumes it from where it stopped.
 *
 * A blob already stored is trusted only after `verify` hashed it again: a damaged copy (a disk
 * error, a stray write) is evicted and fetched again instead of failing every later pull.
 * A filesystem that refuses writes fails with one STORAGE_ERROR naming the store (storage-error.ts).
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { parseDigest, verifyBytes } from '../image/digest.js';
import { abortError, isPullUnpackError, PullUnpackError } from '../errors.js';
import { OCI_LAYOUT_VERSION, type Descriptor } from '../image/oci.js';
import { appendFrom, HashingCounter, WriteFailure, type BlobOpener } from './ingest.js';
import { checkLockTimeout, DEFAULT_LOCK_TIMEOUT_MS, withFileLock, type LockHolder, type LockOptions } from './lock.js';
import { openRegularFile, readRegularFile } from './regular-file.js';
import { isOutOfSpace, makeDirectories, storageError, type StoragePlace } from './storage-error.js';

export type { BlobOpener } from './ingest.js';

export interface BlobStoreOptions {
  /** What the store is, for error messages: a cache at `root` (default), or scratch space of the destination. */
  place?: StoragePlace | undefined;
  /** Take over a blob lock not refreshed for this long (lock.ts; default 60 s). */
  lockTimeoutMs?: number | undefined;
  /** What the user should know: a wait for another process's lock, a damaged blob evicted. */
  onNotice?: ((message: string) => void) | undefined;
}

export interface IngestOptions {
  signal?: AbortSignal | undefined;
  /** Sees the running byte count of the blob (resumed bytes included). */
  onBytes?: ((received: number) => void) | undefined;
  /** Called when another process is downloading the same blob and this one waits for it. */
  onWait?: ((message: string) => void) | undefined;
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

const LAYOUT_FILE = JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION });

export class BlobStore {
  /** The layout's root directory. */
  readonly root: string;
  private readonly place: StoragePlace;
  private readonly lockTimeoutMs: number | undefined;
  private readonly evicted = new Set<string>();
  /** What the user should know about this store (see BlobStoreOptions.onNotice). */
  readonly onNotice: ((message: string) => void) | undefined;

  constructor(root: string, options: BlobStoreOptions = {}) {
    this.root = root;
    this.place = options.place ?? { kind: 'cache', path: root };
    this.lockTimeoutMs = options.lockTimeoutMs === undefined ? undefined : checkLockTimeout(options.lockTimeoutMs);
    this.onNotice = options.onNotice;
  }

  /** Where the verified blob lives (whether or not it is there yet). */
  path(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, 'blobs', algorithm, hex);
  }

  /** True when a regular file with the descriptor's size is stored for it (see `verify`). */
  async has(descriptor: Descriptor): Promise<boolean> {
    try {
      const info = await stat(this.path(descriptor.digest));
      return info.isFile() && info.size === descriptor.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Hashes the stored blob: 'verified' when it matches its digest (it is marked as used now),
   * 'absent' when there is none, 'evicted' when it did not match and was removed (with a notice
   * naming `what`), so that the caller fetches it again.
   */
  async verify(descriptor: Descriptor, what: string, signal?: AbortSignal): Promise<'verified' | 'absent' | 'evicted'> {
    try {
      if (!(await this.has(descriptor))) return 'absent';
      const hashed = await hashFile(this.path(descriptor.digest), parseDigest(descriptor.digest).algorithm, signal);
      if (hashed.digest === descriptor.digest && hashed.info.size === descriptor.size) {
        await this.touch(descriptor.digest);
        return 'verified';
      }
      await this.evict(descriptor.digest, hashed.info, signal);
      this.evicted.add(descriptor.digest);
      this.onNotice?.(`${what}: the copy in the cache ${this.root} was damaged (it hashes to ${hashed.digest}); removed it`);
      return 'evicted';
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      throw storageError(err, this.place);
    }
  }

  /** True when `verify` removed this blob as damaged during this process's use of the store. */
  wasEvicted(digest: string): boolean {
    return this.evicted.has(digest);
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
    try {
      await this.prepare();
      return await withFileLock(
        this.lockPath(descriptor.digest),
        async () => {
          const path = this.path(descriptor.digest);
          if (await this.has(descriptor)) {
            await this.touch(descriptor.digest);
            return { path, fetched: 0, resumed: 0 };
          }
          return this.download(descriptor, open, what, options);
        },
        this.lockOptions(what, options.signal, options.onWait),
      );
    } catch (err) {
      throw storageError(err, this.place);
    }
  }

  /**
   * Stores small bytes (a manifest, a config) under their digest, verifying them first. A blob
   * already there is marked as used now, so that `cache prune --older-than` keeps it; one that
   * differs from `bytes` (damaged) is replaced.
   */
  async putBytes(descriptor: Descriptor, bytes: Buffer, what: string): Promise<string> {
    verifyBytes(bytes, descriptor.digest, what, descriptor.size);
    const path = this.path(descriptor.digest);
    try {
      const stored = await readRegularFile(path, bytes.length + 1).catch(() => undefined);
      if (stored?.equals(bytes)) {
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
      if (stored !== undefined) this.onNotice?.(`${what}: replaced the damaged cached copy in ${this.root}`);
      return path;
    } catch (err) {
      throw storageError(err, this.place);
    }
  }

  /** Where an interrupted download of the blob is kept until it is resumed. */
  partialPath(digest: string): string {
    return join(this.root, 'ingest', `${parseDigest(digest).hex}.partial`);
  }

  /** The lock file that serializes downloads of the blob across processes. */
  lockPath(digest: string): string {
    return join(this.root, 'ingest', `${parseDigest(digest).hex}.lock`);
  }

  /**
   * Options for a lock of this store: the timeout, and notices that say what is waited for
   * (`what`, e.g. 'layer 2/3 of IMAGE' or 'the cache index') and when a lock is taken over.
   */
  lockOptions(what: string, signal?: AbortSignal, onWait?: (message: string) => void): LockOptions {
    const seconds = (ms: number): string => `${Math.round(ms / 1000)} s`;
    const limit = `taken over if not refreshed for ${seconds(this.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS)} (--lock-timeout)`;
    return {
      signal,
      timeoutMs: this.lockTimeoutMs,
      onWait: (holder: LockHolder) => {
        const message = `${what}: waiting for ${holder.description}, which holds its lock in ${this.root} (refreshed ${seconds(holder.ageMs)} ago; ${limit})`;
        // A caller that reports the wait itself (a progress line) gets the words; else a notice.
        if (onWait) onWait(message);
        else this.onNotice?.(message);
      },
      onTakeover: (holder: LockHolder) =>
        this.onNotice?.(
          `${what}: took over the lock in ${this.root} from ${holder.description} (not refreshed for ${seconds(holder.ageMs)})`,
        ),
    };
  }

  /**
   * Creates what is missing of the layout's skeleton (oci-layout, blobs/sha256, blobs/sha512,
   * ingest/); called before every write, so a cache emptied meanwhile is made again.
   */
  private async prepare(): Promise<void> {
    await makeDirectories(join(this.root, 'blobs', 'sha256'));
    await makeDirectories(join(this.root, 'blobs', 'sha512'));
    await makeDirectories(join(this.root, 'ingest'));
    await writeFile(join(this.root, 'oci-layout'), LAYOUT_FILE, { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }

  /** Removes the damaged blob `hashed` was taken from, unless another process has replaced it meanwhile. */
  private async evict(digest: string, hashed: Stats, signal: AbortSignal | undefined): Promise<void> {
    const path = this.path(digest);
    await this.prepare();
    await withFileLock(
      this.lockPath(digest),
      async () => {
        const now = await lstat(path).catch(() => undefined);
        if (now && now.ino === hashed.ino && now.dev === hashed.dev) await rm(path, { force: true });
      },
      this.lockOptions(`blob ${digest}`, signal),
    );
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
      // Wrong bytes are never kept; a transfer that merely stopped is resumed next time, unless
      // the disk is full: then nothing of it stays on the full filesystem.
      const corrupt = isPullUnpackError(err, 'DIGEST_MISMATCH') || isPullUnpackError(err, 'SIZE_MISMATCH');
      const full = isOutOfSpace(err) || (options.signal?.aborted === true && isOutOfSpace(options.signal.reason));
      if (corrupt || full || !keepPartial || err instanceof WriteFailure) await rm(partial, { force: true }).catch(() => undefined);
      if (options.signal?.aborted) throw abortError(options.signal);
      if (err instanceof WriteFailure) throw err.cause;
      if (corrupt && resumed > 0) throw new ResumedCorrupt(err);
      throw err;
    }
  }
}

/** The digest of the regular file at `path` and what fstat said of it while it was read. */
async function hashFile(path: string, algorithm: string, signal: AbortSignal | undefined): Promise<{ digest: string; info: Stats }> {
  const handle = await openRegularFile(path);
  try {
    const info = await handle.stat();
    const hash = createHash(algorithm);
    for await (const chunk of handle.createReadStream({ highWaterMark: 1 << 20, autoClose: false, signal })) hash.update(chunk as Buffer);
    return { digest: `${algorithm}:${hash.digest('hex')}`, info };
  } finally {
    await handle.close();
  }
}

/** A resumed download failed verification: the caller starts over from byte 0. */
class ResumedCorrupt extends Error {
  constructor(cause: unknown) {
    super('a resumed download did not verify', { cause });
  }
}
