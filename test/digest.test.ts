import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { digestOf, parseDigest, verifyBytes, VerifyingStream } from '../src/image/digest.js';

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
