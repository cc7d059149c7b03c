/**
 * Deterministic randomness for the benchmark images: a seeded xorshift128 generator for
 * choices (sizes, names, words) and an AES-128-CTR keystream for bulk incompressible bytes
 * (hardware AES: gigabytes per second, the same bytes for the same seed on every machine).
 */
import { createCipheriv, createHash } from 'node:crypto';

/** A small seeded PRNG (Marsaglia's xorshift128); the same seed gives the same sequence. */
export class Prng {
  /** @param {string} seed any text; hashed into the 128-bit state */
  constructor(seed) {
    const h = createHash('sha256').update(`prng:${seed}`).digest();
    this.x = h.readUInt32LE(0) | 1;
    this.y = h.readUInt32LE(4) | 0;
    this.z = h.readUInt32LE(8) | 0;
    this.w = h.readUInt32LE(12) | 0;
  }

  /** The next unsigned 32-bit value. */
  u32() {
    const t = this.x ^ (this.x << 11);
    this.x = this.y;
    this.y = this.z;
    this.z = this.w;
    this.w = (this.w ^ (this.w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return this.w;
  }

  /** A float in [0, 1). */
  float() {
    return this.u32() / 4294967296;
  }

  /** An integer in [0, n). */
  int(n) {
    return Math.floor(this.float() * n);
  }

  /** True with probability p. */
  chance(p) {
    return this.float() < p;
  }

  /** One element of `items`. */
  pick(items) {
    return items[this.int(items.length)];
  }

  /** A log-normal sample with the given median and shape (sigma of the underlying normal). */
  logNormal(median, sigma) {
    // Box-Muller; 1 - float() keeps the log argument in (0, 1].
    const u = 1 - this.float();
    const v = this.float();
    const normal = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    return median * Math.exp(sigma * normal);
  }
}

/** An endless deterministic stream of incompressible bytes (AES-128-CTR keystream of `seed`). */
export class RandomBytes {
  constructor(seed) {
    const key = createHash('sha256').update(`bytes:${seed}`).digest();
    this.cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
    this.zeros = Buffer.alloc(0);
  }

  /** The next `n` bytes of the keystream (a new buffer). */
  take(n) {
    if (this.zeros.length < n) this.zeros = Buffer.alloc(Math.max(n, 1 << 16));
    return this.cipher.update(this.zeros.subarray(0, n));
  }
}
