import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { digestOf, parseDigest, verifyBytes, VerifyingStream } from '../src/image/digest.js';
import type { PullUnpackError } from '../src/errors.js';
import { HashingCounter } from '../src/store/ingest.js';
import { rejection } from './helpers/errors.js';

const hello = Buffer.from('hello');
const helloDigest = digestOf(hello);

async function run(chunks: Buffer[], opts: ConstructorParameters<typeof VerifyingStream>[0]): Promise<number> {
  let n = 0;
  await pipeline(
    Readable.from(chunks),
    new VerifyingStream(opts),
    new Writable({
      write(c, _e, cb) {
        n += c.length;
        cb();
      },
    }),
  );
  return n;
}

describe('parseDigest', () => {
  it('accepts sha256 and sha512', () => {
    expect(parseDigest(helloDigest).hex).toHaveLength(64);
    expect(parseDigest(digestOf(hello, 'sha512')).algorithm).toBe('sha512');
  });
  it.each([
    ['sha256:abc', 'INVALID_DIGEST'],
    ['sha256:' + 'A'.repeat(64), 'INVALID_DIGEST'],
    ['sha256' + 'a'.repeat(64), 'INVALID_DIGEST'],
    ['', 'INVALID_DIGEST'],
    ['md5:' + 'a'.repeat(32), 'UNSUPPORTED_DIGEST_ALGORITHM'],
    ['blake3:' + 'a'.repeat(64), 'UNSUPPORTED_DIGEST_ALGORITHM'],
  ])('rejects %j with %s', (text, code) => {
    expect(() => parseDigest(text)).toThrow(expect.objectContaining({ code }));
  });
});

describe('verifyBytes', () => {
  it('passes matching bytes and fails others', () => {
    expect(() => verifyBytes(hello, helloDigest, 'x', 5)).not.toThrow();
    expect(() => verifyBytes(Buffer.from('hellO'), helloDigest, 'x')).toThrow(expect.objectContaining({ code: 'DIGEST_MISMATCH' }));
    expect(() => verifyBytes(hello, helloDigest, 'x', 6)).toThrow(expect.objectContaining({ code: 'SIZE_MISMATCH' }));
  });
});

describe('VerifyingStream', () => {
  it('passes verified content through', async () => {
    expect(await run([Buffer.from('he'), Buffer.from('llo')], { digest: helloDigest, size: 5, what: 'blob' })).toBe(5);
  });
  it('fails at the end on a digest mismatch', async () => {
    await expect(run([Buffer.from('hellO')], { digest: helloDigest, size: 5, what: 'blob' })).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
    });
  });
  it('reports DiffID mismatches with their own code', async () => {
    await expect(run([Buffer.from('hellO')], { digest: helloDigest, what: 'layer', code: 'DIFFID_MISMATCH' })).rejects.toMatchObject({
      code: 'DIFFID_MISMATCH',
    });
  });
  it('fails as soon as too many bytes arrive, and on short content', async () => {
    await expect(run([hello, hello], { digest: helloDigest, size: 5, what: 'blob' })).rejects.toMatchObject({ code: 'SIZE_MISMATCH' });
    await expect(run([Buffer.from('hell')], { digest: helloDigest, size: 5, what: 'blob' })).rejects.toMatchObject({
      code: 'SIZE_MISMATCH',
    });
  });
});

describe('one verification, wherever content is checked', () => {
  /** The error `check` throws or rejects with, as the fields a user sees. */
  async function seen(check: () => unknown): Promise<{ code: string; message: string; hint: string | undefined }> {
    const err = await rejection(Promise.resolve().then(check));
    return { code: (err as PullUnpackError).code, message: err.message, hint: (err as PullUnpackError).hint };
  }
  const bad = Buffer.from('hellO');
  const descriptor = { mediaType: 'application/octet-stream', digest: helloDigest, size: 5 };

  it('bytes, a verifying stream and the blob store report a digest mismatch with the same message and hint', async () => {
    const inStore = (chunks: Buffer[]) => (): void => {
      const counter = new HashingCounter(descriptor, 'blob', undefined);
      for (const c of chunks) counter.add(c);
      counter.check();
    };
    const expected = await seen(() => verifyBytes(bad, helloDigest, 'blob', 5));
    expect(expected.code).toBe('DIGEST_MISMATCH');
    expect(await seen(() => run([bad], { digest: helloDigest, size: 5, what: 'blob' }))).toEqual(expected);
    expect(await seen(inStore([bad]))).toEqual(expected);
    const tooLong = await seen(() => run([hello, hello], { digest: helloDigest, size: 5, what: 'blob' }));
    expect(tooLong.code).toBe('SIZE_MISMATCH');
    expect(await seen(inStore([hello, hello]))).toEqual(tooLong);
  });
});
