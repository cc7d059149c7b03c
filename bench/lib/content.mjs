/**
 * File contents for the benchmark images, all from one Prng/RandomBytes pair so a layer's bytes
 * depend only on its seed. Text compresses about 3.3x with gzip -6 (lines of words from a skewed
 * vocabulary, many lines repeated, like docs and config), "binaries" about 2.5x (random runs,
 * low-entropy runs and repeats of nearby bytes, like code and data sections).
 */

const VOCABULARY_SIZE = 6000;
const LETTERS = 'etaoinshrdlcumwfgypbvkjxqz';
const LINE_POOL_SIZE = 1500;
const NEWLINE = Buffer.from('\n');
const PUNCTUATION = [' ', ' ', ' ', ' ', ' ', ' ', ' ', ', ', '. ', '.\n', '\n', ' = ', ': ', '/', '_', '-'];

export class ContentGenerator {
  /** @param {import('./prng.mjs').Prng} prng @param {import('./prng.mjs').RandomBytes} random */
  constructor(prng, random) {
    this.prng = prng;
    this.random = random;
    this.words = [];
    for (let i = 0; i < VOCABULARY_SIZE; i++) {
      const length = 2 + prng.int(9);
      let word = '';
      // Letters skewed towards the front of LETTERS, like English.
      for (let j = 0; j < length; j++) word += LETTERS[Math.floor(LETTERS.length * prng.float() ** 2)];
      this.words.push(Buffer.from(word, 'latin1'));
    }
    this.punctuation = PUNCTUATION.map((p) => Buffer.from(p, 'latin1'));
    this.lines = [];
    for (let i = 0; i < LINE_POOL_SIZE; i++) this.lines.push(this.#freshLine());
  }

  /** `size` bytes of text-like content. */
  text(size) {
    const out = Buffer.allocUnsafe(size);
    const { prng, lines } = this;
    let at = 0;
    while (at < size) {
      // Mostly stock lines (skewed: u^3 favours the first ones), like docs and config files
      // repeating phrases; some fresh lines of words.
      const line = prng.chance(0.15) ? this.#freshLine() : lines[Math.floor(lines.length * prng.float() ** 3)];
      at += line.copy(out, at);
    }
    return out;
  }

  #freshLine() {
    const { prng, words, punctuation } = this;
    const parts = [];
    const count = 4 + prng.int(10);
    for (let i = 0; i < count; i++) {
      parts.push(words[Math.floor(words.length * prng.float() ** 3)]);
      parts.push(i === count - 1 ? NEWLINE : punctuation[prng.int(punctuation.length)]);
    }
    return Buffer.concat(parts);
  }

  /** `size` bytes that look like a compiled binary to a compressor. */
  binary(size) {
    const out = Buffer.allocUnsafe(size);
    const { prng } = this;
    let at = 0;
    while (at < size) {
      const run = Math.min(size - at, 256 + prng.int(3840));
      const kind = prng.float();
      if (kind < 0.1) {
        this.random.take(run).copy(out, at);
      } else if (kind < 0.5) {
        // Low entropy: 3 random bits per byte over a per-run alphabet, like opcodes and offsets.
        const base = prng.int(248);
        for (let i = 0; i < run; i++) out[at + i] = base + (prng.u32() & 7);
      } else if (at >= 8192) {
        // A repeat of earlier bytes of this file: what LZ77 finds in real code.
        // Within gzip's 32 KiB window, as most of a linker's repetition is.
        const from = at - run - prng.int(Math.min(at - run, 28672) + 1);
        out.copy(out, at, from, from + run);
      } else {
        out.fill(0, at, at + run);
      }
      at += run;
    }
    return out;
  }
}
