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
  private state: State = { kind: 'waiting' };
  private outcome: { path: string } | { error: unknown } | undefined;
  private wake: (() => void) | undefined;
  /** Counts the reports, so that a reader waits only when nothing happened since it looked. */
  private version = 0;

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
    let handle: FileHandle | undefined;
    let closed = false;
    let position = 0;
    const open = async (): Promise<FileHandle | undefined> => {
      const outcome = this.outcome;
      if (outcome && 'path' in outcome) return openFile(outcome.path, 'r');
      if (this.state.kind !== 'growing') return undefined;
      try {
        return await openFile(this.state.partial, 'r');
      } catch (err) {
        // Renamed into place a moment ago: the outcome with the final path follows.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    };
    const next = async (): Promise<Buffer | null> => {
      while (!closed) {
        const seen = this.version;
        const outcome = this.outcome;
        if (outcome && 'error' in outcome) throw outcome.error;
        if (handle === undefined) {
          handle = await open();
          if (closed) await handle?.close();
          if (handle === undefined) await this.changed(seen);
          continue;
        }
        const state = this.state;
        const available = outcome ? Number.POSITIVE_INFINITY : state.kind === 'growing' ? state.length : 0;
        if (position < available) {
          const size = Math.min(CHUNK, available - position);
          const { bytesRead, buffer } = await handle.read(Buffer.allocUnsafe(size), 0, size, position);
          if (bytesRead > 0) {
            position += bytesRead;
            return buffer.subarray(0, bytesRead);
          }
          // End of the file: only a settled download gets here (a growing one stops at `length`).
          if (outcome) return null;
        }
        await this.changed(seen);
      }
      return null;
    };
    const wakeReader = (): void => this.notify();
    return new Readable({
      highWaterMark: CHUNK,
      read() {
        next().then(
          (chunk) => this.push(chunk),
          (err: unknown) => this.destroy(err as Error),
        );
      },
      destroy(err, callback) {
        closed = true;
        const closing = handle?.close() ?? Promise.resolve();
        handle = undefined;
        closing.then(
          () => callback(err),
          () => callback(err),
        );
        wakeReader();
      },
    });
  }

  /** Resolves at the next report, or at once when there was one after `seen`. */
  private changed(seen: number): Promise<void> {
    if (this.version !== seen) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.wake;
      this.wake = () => {
        previous?.();
        resolve();
      };
    });
  }

  private notify(): void {
    this.version++;
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
