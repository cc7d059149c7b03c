/**
 * Unit tests of BlobFollower: reading a blob's partial file while its download appends to it.
 * (The whole chain, a pull applying a layer before its blob has arrived, is in faults.test.ts.)
 */
import { appendFile, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobFollower } from '../src/store/blob-follow.js';
import { PullUnpackError } from '../src/errors.js';

let dir: string;
let partial: string;
let final: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blob-follow-'));
  partial = join(dir, 'blob.partial');
  final = join(dir, 'blob');
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Collects what `stream` delivers; `received` grows as chunks arrive. */
function collect(stream: Readable): { received: Buffer[]; ended: Promise<Buffer>; text: () => string } {
  const received: Buffer[] = [];
  const ended = new Promise<Buffer>((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => received.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(received)));
    stream.on('error', reject);
  });
  return { received, ended, text: () => Buffer.concat(received).toString() };
}

/**
 * A follower whose reader reports when it has read everything it may and waits for the next
 * report: `caughtUp()` resolves at the next such wait, so a test reads what arrived, no sooner.
 */
function follow(): { follower: BlobFollower; caughtUp: () => Promise<void> } {
  let waiters: Array<() => void> = [];
  const follower = new BlobFollower({
    onWait: () => {
      const ready = waiters;
      waiters = [];
      for (const resolve of ready) resolve();
    },
  });
  return { follower, caughtUp: () => new Promise((resolve) => waiters.push(resolve)) };
}

describe('BlobFollower', () => {
  it('delivers the bytes of a fresh download as they are written, and ends only once it is verified', async () => {
    const { follower, caughtUp } = follow();
    const reader = collect(follower.stream());
    let ended = false;
    void reader.ended.then(() => (ended = true));

    await writeFile(partial, 'first ');
    let read = caughtUp();
    follower.written(partial, 6, true);
    await read;
    expect(reader.text()).toBe('first ');

    // Bytes on disk beyond the reported length are not read: the reader waits for a report.
    await appendFile(partial, 'second');
    expect(reader.text()).toBe('first ');
    read = caughtUp();
    follower.written(partial, 12, true);
    await read;
    expect(reader.text()).toBe('first second');

    // Everything was read, but the download has not verified the blob: no end yet.
    expect(ended).toBe(false);
    await rename(partial, final);
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('first second');
  });

  it('fails with the download error, even after delivering bytes', async () => {
    const { follower, caughtUp } = follow();
    const reader = collect(follower.stream());
    await writeFile(partial, 'unverified');
    const read = caughtUp();
    follower.written(partial, 10, true);
    await read;
    expect(reader.text()).toBe('unverified');
    const error = new PullUnpackError('DIGEST_MISMATCH', 'layer 1/1: content hashes to sha256:00, expected sha256:11');
    follower.settle({ error });
    await expect(reader.ended).rejects.toBe(error);
  });

  it('does not read a resumed download before it is verified (it may start over from byte 0)', async () => {
    const { follower, caughtUp } = follow();
    const reader = collect(follower.stream());
    await writeFile(partial, 'old bytes + new');
    let looked = caughtUp();
    follower.written(partial, 15, false);
    await looked;
    expect(reader.received).toEqual([]);
    // The resumed bytes were wrong: the transfer starts over (now fresh) and writes the blob again.
    await writeFile(partial, 'good');
    looked = caughtUp();
    follower.written(partial, 4, true);
    await looked;
    expect(reader.received).toEqual([]);
    await rename(partial, final);
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('good');
  });

  it('reads a blob that was already stored (no download reported) from its final path', async () => {
    const { follower, caughtUp } = follow();
    const looked = caughtUp();
    const reader = collect(follower.stream());
    await looked;
    expect(reader.received).toEqual([]);
    await writeFile(final, 'from the cache');
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('from the cache');
  });

  it('finds the blob at its final path when the partial file was renamed before the reader opened it', async () => {
    const { follower, caughtUp } = follow();
    await writeFile(final, 'renamed already');
    follower.written(partial, 15, true);
    const looked = caughtUp();
    const reader = collect(follower.stream());
    await looked;
    expect(reader.received).toEqual([]);
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('renamed already');
  });

  it('keeps reading through the rename into the store, in chunks of at most 1 MiB', async () => {
    const { follower, caughtUp } = follow();
    const reader = collect(follower.stream());
    const big = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
    await writeFile(partial, big.subarray(0, 1024));
    const read = caughtUp();
    follower.written(partial, 1024, true);
    await read;
    expect(reader.received.map((c) => c.length)).toEqual([1024]);
    await appendFile(partial, big.subarray(1024));
    follower.written(partial, big.length, true);
    await rename(partial, final);
    follower.settle({ path: final });
    expect((await reader.ended).equals(big)).toBe(true);
    expect(Math.max(...reader.received.map((c) => c.length))).toBeLessThanOrEqual(1024 * 1024);
  });

  it('a reader destroyed while it waits lets go of the file and reads nothing more', async () => {
    const { follower, caughtUp } = follow();
    const stream = follower.stream();
    const reader = collect(stream);
    await writeFile(partial, 'abc');
    const read = caughtUp();
    follower.written(partial, 3, true);
    await read;
    stream.destroy();
    await new Promise((resolve) => stream.once('close', resolve));
    await appendFile(partial, 'def');
    // A reader that let go no longer waits for reports: none of these wakes it.
    let waited = false;
    void caughtUp().then(() => (waited = true));
    follower.written(partial, 6, true);
    follower.settle({ path: partial });
    await new Promise((resolve) => setImmediate(resolve));
    expect({ text: reader.text(), waited }).toEqual({ text: 'abc', waited: false });
  });
});
