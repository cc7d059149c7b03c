/**
 * Unit tests of BlobFollower: reading a blob's partial file while its download appends to it.
 * (The whole chain, a pull applying a layer before its blob has arrived, is in faults.test.ts.)
 */
import { appendFile, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
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

/** Lets the reader's file reads and callbacks run. */
const settleIo = (): Promise<void> => sleep(30);

describe('BlobFollower', () => {
  it('delivers the bytes of a fresh download as they are written, and ends only once it is verified', async () => {
    const follower = new BlobFollower();
    const reader = collect(follower.stream());
    let ended = false;
    void reader.ended.then(() => (ended = true));

    await writeFile(partial, 'first ');
    follower.written(partial, 6, true);
    await settleIo();
    expect(reader.text()).toBe('first ');

    await appendFile(partial, 'second');
    // Bytes on disk beyond the reported length are not read yet.
    await settleIo();
    expect(reader.text()).toBe('first ');
    follower.written(partial, 12, true);
    await settleIo();
    expect(reader.text()).toBe('first second');

    // Everything was read, but the download has not verified the blob: no end yet.
    await settleIo();
    expect(ended).toBe(false);
    await rename(partial, final);
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('first second');
  });

  it('fails with the download error, even after delivering bytes', async () => {
    const follower = new BlobFollower();
    const reader = collect(follower.stream());
    await writeFile(partial, 'unverified');
    follower.written(partial, 10, true);
    await settleIo();
    expect(reader.text()).toBe('unverified');
    const error = new PullUnpackError('DIGEST_MISMATCH', 'layer 1/1: content hashes to sha256:00, expected sha256:11');
    follower.settle({ error });
    await expect(reader.ended).rejects.toBe(error);
  });

  it('does not read a resumed download before it is verified (it may start over from byte 0)', async () => {
    const follower = new BlobFollower();
    const reader = collect(follower.stream());
    await writeFile(partial, 'old bytes + new');
    follower.written(partial, 15, false);
    await settleIo();
    expect(reader.received).toEqual([]);
    // The resumed bytes were wrong: the transfer starts over (now fresh) and writes the blob again.
    await writeFile(partial, 'good');
    follower.written(partial, 4, true);
    await settleIo();
    expect(reader.received).toEqual([]);
    await rename(partial, final);
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('good');
  });

  it('reads a blob that was already stored (no download reported) from its final path', async () => {
    const follower = new BlobFollower();
    const reader = collect(follower.stream());
    await settleIo();
    expect(reader.received).toEqual([]);
    await writeFile(final, 'from the cache');
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('from the cache');
  });

  it('finds the blob at its final path when the partial file was renamed before the reader opened it', async () => {
    const follower = new BlobFollower();
    await writeFile(final, 'renamed already');
    follower.written(partial, 15, true);
    const reader = collect(follower.stream());
    await settleIo();
    expect(reader.received).toEqual([]);
    follower.settle({ path: final });
    expect((await reader.ended).toString()).toBe('renamed already');
  });

  it('keeps reading through the rename into the store, in chunks of at most 1 MiB', async () => {
    const follower = new BlobFollower();
    const reader = collect(follower.stream());
    const big = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
    await writeFile(partial, big.subarray(0, 1024));
    follower.written(partial, 1024, true);
    await settleIo();
    await appendFile(partial, big.subarray(1024));
    follower.written(partial, big.length, true);
    await rename(partial, final);
    follower.settle({ path: final });
    expect((await reader.ended).equals(big)).toBe(true);
    expect(Math.max(...reader.received.map((c) => c.length))).toBeLessThanOrEqual(1024 * 1024);
  });

  it('a reader destroyed while it waits lets go of the file and reads nothing more', async () => {
    const follower = new BlobFollower();
    const stream = follower.stream();
    const reader = collect(stream);
    await writeFile(partial, 'abc');
    follower.written(partial, 3, true);
    await settleIo();
    stream.destroy();
    await new Promise((resolve) => stream.once('close', resolve));
    await appendFile(partial, 'def');
    follower.written(partial, 6, true);
    follower.settle({ path: partial });
    await settleIo();
    expect(reader.text()).toBe('abc');
  });
});
