/**
 * Ownership of new files as root: the chown is skipped only when the new inode already has the
 * entry's owner, which a setgid root (new files take its group) rules out. Runs as root (CI does).
 */
import { chmod, chown, mkdir, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { applyLayer, createApplyContext, finishApply } from '../src/apply/applier.js';
import { buildTar, makeTmp, removeTmp } from './helpers/tar.js';

const tmps: string[] = [];
afterEach(async () => {
  await Promise.all(tmps.splice(0).map(removeTmp));
});

async function applyInto(root: string, layer: Buffer): Promise<void> {
  const ctx = createApplyContext(root, { isRoot: true });
  await applyLayer(ctx, Readable.from([layer]));
  await finishApply(ctx);
}

describe('file ownership as root', () => {
  it('gives root-owned entries 0:0 even under a setgid root of another group', async () => {
    const base = await makeTmp();
    tmps.push(base);
    const root = join(base, 'root');
    await mkdir(root);
    await chown(root, 0, 4321);
    await chmod(root, 0o2755);
    const layer = await buildTar([
      { name: 'mine.txt', content: 'x', uid: 0, gid: 0 },
      { name: 'app.txt', content: 'y', uid: 1000, gid: 1000 },
    ]);
    await applyInto(root, layer);
    expect(await stat(join(root, 'mine.txt'))).toMatchObject({ uid: 0, gid: 0 });
    expect(await stat(join(root, 'app.txt'))).toMatchObject({ uid: 1000, gid: 1000 });
  });

  it('gives entries their recorded owner under a plain root', async () => {
    const base = await makeTmp();
    tmps.push(base);
    const layer = await buildTar([
      { name: 'root.txt', content: 'x', uid: 0, gid: 0 },
      { name: 'other.txt', content: 'y', uid: 7, gid: 8 },
    ]);
    await applyInto(base, layer);
    expect(await stat(join(base, 'root.txt'))).toMatchObject({ uid: 0, gid: 0 });
    expect(await stat(join(base, 'other.txt'))).toMatchObject({ uid: 7, gid: 8 });
  });
});
