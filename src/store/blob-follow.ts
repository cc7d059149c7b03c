/**
 * Reads a blob while it downloads: the bytes come from its partial file as the download appends
 * them, so a layer can be decompressed and applied during its own download instead of after it.
 *
 * What is read is not verified yet. The reader ends only after the download has verified the
 * blob (size and digest) and every byte was read; when the download fails, the reader fails with
 * its error. Callers apply into a staging directory that is discarded on any failure, so
 * unverified bytes never reach a result.
 *
 * Only a transfer that starts from byte 0 is followed: its partial file only ever grows. A
 * transfer that resumes an earlier partial file may start over from byte 0 when the resumed
 * bytes turn out wrong, so it is read only once verified (as is a blob already stored, or one
 * another process downloads).
 */
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

const CHUNK = 1 << 20;

type State = { kind: 'waiting' } | { kind: 'growing'; partial: string; length: number } | { kind: 'resuming' };

/** Follows one blob's download; the store and fetcher report to it, one reader consumes it. */
export class BlobFollower {
  /** @internal read by the reader */
  state: State = { kind: 'waiting' };
  /** @internal read by the reader */
  outcome: { path: string } | { error: unknown } | undefined;
  private wake: (() => void) | undefined;
  /** Counts the reports, so that a reader waits only when nothing happened since it looked. */
  private version = 0;

  /**
   * `onWait` is called each time the reader has read everything it may and waits for the next
   * report: what a progress display (or a test) needs to know that the reader is caught up.
   */
  constructor(private readonly options: { onWait?: (() => void) | undefined } = {}) {}

  /** The download wrote the partial file up to `length` bytes; `fresh` when it started at byte 0. */
  written(partial: string, length: number, fresh: boolean): void {
    if (this.state.kind === 'waiting') this.state = fresh ? { kind: 'growing', partial, length } : { kind: 'resuming' };
    else if (this.state.kind === 'growing') this.state.length = length;
    this.notify();
  }

  /** The download ended: the verified blob's path, or its error. */
  settle(outcome: { path: string } | { error: unknown }): void {
    this.outcome ??= outcome;
    this.notify();
  }

  /** The blob's bytes as they arrive (see the module comment for when they are verified). */
  stream(): Readable {
    const reader = new FollowReader(this);
    return new Readable({
      highWaterMark: CHUNK,
      read() {
        reader.next().then(
          (chunk) => this.push(chunk),
          (err: unknown) => this.destroy(err as Error),
        );
      },
      destroy(err, callback) {
        reader.close().then(
          () => callback(err),
          () => callback(err),
        );
      },
    });
  }

  /** @internal The number of reports so far; `changed` waits for the next one. */
  get reports(): number {
    return this.version;
  }

  /** @internal Resolves at the next report, or at once when there was one after `seen`. */
  changed(seen: number): Promise<void> {
    if (this.version !== seen) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.wake;
      this.wake = () => {
        previous?.();
        resolve();
      };
      this.options.onWait?.();
    });
  }

  /** @internal Wakes a waiting reader (also used when it is closed). */
  notify(): void {
    this.version++;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** The reading side of one BlobFollower: an open file, a position, and whether it was closed. */
class FollowReader {
  private handle: FileHandle | undefined;
  private closed = false;
  private position = 0;

  constructor(private readonly follower: BlobFollower) {}

  /** The next chunk: as soon as the download reports bytes past `position`; null at the verified end. */
  async next(): Promise<Buffer | null> {
    const follower = this.follower;
    while (!this.closed) {
      const seen = follower.reports;
      const outcome = follower.outcome;
      if (outcome && 'error' in outcome) throw outcome.error;
      if (this.handle === undefined) {
        this.handle = await this.open();
        if (this.closed) await this.handle?.close();
        if (this.handle === undefined) await follower.changed(seen);
        continue;
      }
      const state = follower.state;
      const available = outcome ? Number.POSITIVE_INFINITY : state.kind === 'growing' ? state.length : 0;
      if (this.position < available) {
        const chunk = await this.read(this.handle, Math.min(CHUNK, available - this.position));
        if (chunk) return chunk;
        // End of the file: only a settled download gets here (a growing one stops at `length`).
        if (outcome) return null;
      }
      await follower.changed(seen);
    }
    return null;
  }

  /** Lets go of the file; a pending `next` returns null. */
  async close(): Promise<void> {
    this.closed = true;
    const handle = this.handle;
    this.handle = undefined;
    this.follower.notify();
    await handle?.close();
  }

  /** The verified blob once there is one, else the growing partial file; undefined while neither can be read. */
  private async open(): Promise<FileHandle | undefined> {
    const { outcome, state } = this.follower;
    if (outcome && 'path' in outcome) return openFile(outcome.path, 'r');
    if (state.kind !== 'growing') return undefined;
    try {
      return await openFile(state.partial, 'r');
    } catch (err) {
      // Renamed into place a moment ago: the outcome with the final path follows.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  private async read(handle: FileHandle, size: number): Promise<Buffer | undefined> {
    const { bytesRead, buffer } = await handle.read(Buffer.allocUnsafe(size), 0, size, this.position);
    if (bytesRead === 0) return undefined;
    this.position += bytesRead;
    return buffer.subarray(0, bytesRead);
  }
}
