/**
 * The layer stream (decompress -> size budget -> DiffID check) as the ordered apply uses it:
 * its `done` settles whether or not the caller is awaiting it yet.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { openLayerTar, uncompressedBudget } from '../src/layer/layer-stream.js';

const GZIP_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

describe('openLayerTar', () => {
  it('a layer stream that fails while the applier is busy (its download hit a full disk) is no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const blob = new PassThrough();
      const { done } = openLayerTar(
        blob,
        { mediaType: GZIP_LAYER, diffId: `sha256:${'0'.repeat(64)}` },
        'layer 1/1',
        uncompressedBudget(1 << 30),
      );
      blob.destroy(new Error('the download failed: ENOSPC'));
      // The caller is still applying: it awaits `done` only afterwards.
      for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
      await expect(done).rejects.toThrow(/ENOSPC|premature/i);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
