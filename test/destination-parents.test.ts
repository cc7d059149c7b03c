/**
 * A DIR whose parent directories do not exist (issue 14): they are created, as `umoci unpack`
 * and `skopeo copy` create theirs, and the pull stays all or nothing: a failed pull removes the
 * parents it created (and only those), and the destination guard still refuses what it refused.
 */
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { createStaging, discardStaging } from '../src/outputs/staging.js';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';

let work: string;
let good: string;
let bad: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-parents-'));
  const { url, host } = testRegistry();
  const layer = { tar: await tarLayer([{ name: 'etc/hello', content: 'hello\n' }]) };
  const goodRepo = uniqueRepo('parents-good');
  await pushImage(url, goodRepo, 'v1', { layers: [layer] });
  good = `${host}/${goodRepo}:v1`;
  const badRepo = uniqueRepo('parents-bad');
  await pushImage(url, badRepo, 'v1', {
    layers: [layer, { tar: await tarLayer([{ name: 'x', content: 'x' }]), diffId: `sha256:${'ab'.repeat(32)}` }],
  });
  bad = `${host}/${badRepo}:v1`;
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('missing parents of DIR', () => {
  it('a DIR whose parents do not exist: they are created and the pull succeeds', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    const dir = join(parent, 'a', 'b', 'rootfs');
    const r = await runCli([good, dir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await readFile(join(dir, 'etc', 'hello'), 'utf8')).toBe('hello\n');
    expect(await readdir(join(parent, 'a', 'b'))).toEqual(['rootfs']);
  });

  it('--output tar FILE and --output oci DIR with missing parents: created too', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    const tar = await runCli([good, '--output', 'tar', join(parent, 'x', 'image.tar')]);
    expect(tar.code).toBe(0);
    expect(await readdir(join(parent, 'x'))).toEqual(['image.tar']);
    const oci = await runCli([good, '--output', 'oci', join(parent, 'y', 'z', 'layout')]);
    expect(oci.code).toBe(0);
    expect(await readdir(join(parent, 'y', 'z', 'layout'))).toContain('oci-layout');
  });

  it('a failed pull removes the parents it created, and nothing else', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    await mkdir(join(parent, 'kept'));
    const r = await runCli([bad, join(parent, 'kept', 'new1', 'new2', 'rootfs')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/DiffID/);
    expect(await readdir(parent)).toEqual(['kept']);
    expect(await readdir(join(parent, 'kept'))).toEqual([]);
  });

  it('a failed pull leaves a parent that existed before it, with what it holds', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    await mkdir(join(parent, 'shared'));
    await writeFile(join(parent, 'shared', 'other-file'), 'x');
    const r = await runCli([bad, join(parent, 'shared', 'rootfs')]);
    expect(r.code).toBe(1);
    expect(await readdir(join(parent, 'shared'))).toEqual(['other-file']);
  });

  it('discarding a staging directory keeps a parent it created that something else was written into meanwhile', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    const staging = await createStaging(join(parent, 'new', 'deeper', 'rootfs'));
    await writeFile(join(parent, 'new', 'other-file'), 'x');
    await discardStaging(staging);
    expect(await readdir(join(parent, 'new'))).toEqual(['other-file']);
  });

  it('a parent that is a file: refused before anything is fetched, the file untouched', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    await writeFile(join(parent, 'file'), 'data\n');
    const r = await runCli([good, join(parent, 'file', 'sub', 'rootfs')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${join(parent, 'file')} is not a directory`);
    expect(await readFile(join(parent, 'file'), 'utf8')).toBe('data\n');
    expect(await readdir(parent)).toEqual(['file']);
  });

  it('the destination guard still refuses a DIR with missing parents inside the blob cache, creating nothing', async () => {
    const parent = await mkdtemp(join(work, 'case-'));
    const cache = join(parent, 'cache');
    await mkdir(cache);
    const r = await runCli([good, '--cache-dir', cache, join(cache, 'missing', 'rootfs')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('inside the blob cache');
    expect(await readdir(cache)).toEqual([]);
  });
});
