/**
 * A content-addressed blob store laid out as an OCI image layout (`blobs/<alg>/<hex>`).
 * A blob enters only through `ingest`: written to a temp file, verified while streaming
 * (size and digest), then renamed into place. A blob present under its name is trusted.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { VerifyingStream, parseDigest } from './digest.js';
import { abortError } from './errors.js';
import type { Descriptor } from './oci.js';

export class BlobStore {
  /** The layout's root directory (holds `blobs/` and `tmp/`). */
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** Where the verified blob lives (whether or not it is there yet). */
  path(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return join(this.root, 'blobs', algorithm, hex);
  }

  /** True when the verified blob is present with the descriptor's size. */
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
   * Streams `body` into the store, verifying size and digest on the way; only a verified blob
   * is renamed into place. `onBytes` sees the running byte count. Destroys `body` on failure.
   */
  async ingest(descriptor: Descriptor, body: Readable, what: string, options: IngestOptions = {}): Promise<string> {
    const final = this.path(descriptor.digest);
    const tmpDir = join(this.root, 'tmp');
    await mkdir(tmpDir, { recursive: true });
    await mkdir(join(final, '..'), { recursive: true });
    const tmp = join(tmpDir, `${parseDigest(descriptor.digest).hex}.${randomBytes(6).toString('hex')}`);
    const verify = new VerifyingStream({ digest: descriptor.digest, size: descriptor.size, what });
    if (options.onBytes) {
      const report = options.onBytes;
      verify.on('data', () => report(verify.bytes));
    }
    try {
      if (options.signal?.aborted) throw abortError(options.signal);
      await pipeline(body, verify, createWriteStream(tmp, { highWaterMark: 1 << 20 }), { signal: options.signal });
      await rename(tmp, final);
      return final;
    } catch (err) {
      body.destroy();
      await rm(tmp, { force: true });
      if (options.signal?.aborted) throw abortError(options.signal);
      throw err;
    }
  }
}

export interface IngestOptions {
  signal?: AbortSignal | undefined;
  onBytes?: ((received: number) => void) | undefined;
}
