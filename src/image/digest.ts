/**
 * Strict digest parsing (OCI image-spec descriptor.md) and verification of bytes and streams.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PullUnpackError } from '../errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

/** A parsed, validated digest. `toString()` gives back `algorithm:hex`. */
export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  toString(): string;
}

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
// The image-spec grammar: algorithm-component (separator component)* ":" encoded.
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Parses `algorithm:hex`; throws INVALID_DIGEST or UNSUPPORTED_DIGEST_ALGORITHM saying what is wrong. */
export function parseDigest(text: string): Digest {
  if (!DIGEST_GRAMMAR.test(text)) {
    throw new PullUnpackError('INVALID_DIGEST', `invalid digest "${text}": expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>`);
  }
  const colon = text.indexOf(':');
  const algorithm = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new PullUnpackError('UNSUPPORTED_DIGEST_ALGORITHM', `unsupported digest algorithm "${algorithm}" in "${text}"`, {
      hint: 'pull-unpack verifies sha256 and sha512 digests',
    });
  }
  const want = HEX_LENGTH[algorithm];
  if (hex.length !== want || !/^[a-f0-9]+$/.test(hex)) {
    throw new PullUnpackError('INVALID_DIGEST', `invalid ${algorithm} digest "${text}": expected ${want} lowercase hex digits`);
  }
  return { algorithm, hex, toString: () => `${algorithm}:${hex}` };
}

/** The `algorithm:hex` digest of `bytes`. */
export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** Throws DIGEST_MISMATCH (or SIZE_MISMATCH) unless `bytes` hash to `expected`. */
export function verifyBytes(bytes: Uint8Array, expected: string, what: string, expectedSize?: number): void {
  if (expectedSize !== undefined && bytes.byteLength !== expectedSize) {
    throw sizeMismatch(what, expectedSize, bytes.byteLength);
  }
  const digest = parseDigest(expected);
  const actual = digestOf(bytes, digest.algorithm);
  if (actual !== expected) throw digestMismatch(what, expected, actual);
}

export interface VerifyOptions {
  /** The digest the stream must hash to. */
  digest: string;
  /** The exact byte count, when known; more bytes fail at once, fewer fail at the end. */
  size?: number | undefined;
  /** Names the content in errors, e.g. "layer 2 of docker.io/library/alpine:latest". */
  what: string;
  /** DIFFID_MISMATCH for decompressed layers, DIGEST_MISMATCH otherwise. */
  code?: 'DIGEST_MISMATCH' | 'DIFFID_MISMATCH';
}

/**
 * Counts and hashes content as it arrives and checks it against the digest (and size) it must
 * have: SIZE_MISMATCH as soon as there are more bytes than the size, and from `check()` when
 * there are fewer; DIGEST_MISMATCH (DIFFID_MISMATCH for a decompressed layer) from `check()`
 * when they hash to another digest. The verifying stream and the blob store's ingest share it.
 */
export class DigestVerifier {
  readonly expected: string;
  private readonly hash: Hash;
  private received = 0;

  constructor(private readonly options: VerifyOptions) {
    this.expected = options.digest;
    this.hash = createHash(parseDigest(options.digest).algorithm);
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.received;
  }

  /** Counts and hashes `chunk`; SIZE_MISMATCH once there are more bytes than the expected size. */
  update(chunk: Uint8Array): void {
    this.received += chunk.length;
    const { size } = this.options;
    if (size !== undefined && this.received > size) throw sizeMismatch(this.options.what, size, this.received, true);
    this.hash.update(chunk);
  }

  /** Throws unless the bytes seen are the expected size and hash to the expected digest. */
  check(): void {
    const { size, what } = this.options;
    if (size !== undefined && this.received !== size) throw sizeMismatch(what, size, this.received);
    const algorithm = this.expected.slice(0, this.expected.indexOf(':'));
    const actual = `${algorithm}:${this.hash.digest('hex')}`;
    if (actual === this.expected) return;
    throw this.options.code === 'DIFFID_MISMATCH'
      ? diffIdMismatch(what, this.expected, actual)
      : digestMismatch(what, this.expected, actual);
  }
}

/**
 * A pass-through stream that counts and hashes what flows through it and fails at the end
 * (or as soon as too many bytes arrive) when the size or digest is not the expected one.
 * Bytes pass on before verification: consumers must treat their output as unverified until
 * the stream finishes without error.
 */
export class VerifyingStream extends Transform {
  readonly expected: string;
  private readonly verifier: DigestVerifier;

  constructor(options: VerifyOptions) {
    super({ highWaterMark: 1 << 20 });
    this.verifier = new DigestVerifier(options);
    this.expected = options.digest;
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.verifier.bytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.verifier.update(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.verifier.check();
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback();
  }
}

/**
 * The one DIGEST_MISMATCH: content that does not hash to the digest that names it, whoever
 * served it (a registry, a mirror, a layout, an archive).
 */
export function digestMismatch(what: string, expected: string, actual: string): PullUnpackError {
  return new PullUnpackError('DIGEST_MISMATCH', `${what}: content hashes to ${actual}, expected ${expected}`, {
    hint: 'the content is not what its digest names: it was altered where it is kept or on the way; nothing was used',
  });
}

function diffIdMismatch(what: string, expected: string, actual: string): PullUnpackError {
  return new PullUnpackError('DIFFID_MISMATCH', `${what}: uncompressed content hashes to ${actual}, the config's DiffID is ${expected}`, {
    hint: 'the image is corrupt or was tampered with; nothing was written',
  });
}

function sizeMismatch(what: string, expected: number, actual: number, atLeast = false): PullUnpackError {
  return new PullUnpackError(
    'SIZE_MISMATCH',
    `${what}: received ${atLeast ? 'more than ' : ''}${atLeast ? expected : actual} bytes, expected ${expected}`,
    { hint: 'the download was cut short or the source served other content; nothing was kept' },
  );
}
