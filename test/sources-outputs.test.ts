/**
 * Issue 6 end to end: a registry pull, an oci: pull and a docker-archive: pull (both made by
 * skopeo) give identical trees and config.json; --output tar and --output oci give the same
 * tree as a directory pull once extracted by GNU tar and umoci; resource limits stop a pull.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';

const run = promisify(execFile);
const { host, url } = testRegistry();
let work: string;
let image: string;
let repo: string;

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n';
const GROUP = 'root:x:0:\napp:x:1000:\nstaff:x:50:app\n';

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-sources-'));
  repo = uniqueRepo('sources');
  const base = await tarLayer([
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: PASSWD },
    { name: 'etc/group', content: GROUP },
    { name: 'bin/', type: 'directory' },
    { name: 'bin/tool', content: 'tool\n', mode: 0o4755 },
    { name: 'bin/tool-link', type: 'link', linkname: 'bin/tool' },
    { name: 'srv/', type: 'directory', uid: 1000, gid: 1000 },
    { name: 'srv/data.txt', content: 'data\n', uid: 1000, gid: 1000, pax: { 'SCHILY.xattr.user.note': 'hello' } },
    { name: 'gone.txt', content: 'removed above\n' },
  ]);
  const top = await tarLayer([
    { name: '.wh.gone.txt' },
    { name: 'srv/more.txt', content: 'more\n' },
    { name: 'usr/', type: 'directory' },
    { name: 'usr/bin/', type: 'directory' },
    { name: 'usr/bin/sh', type: 'symlink', linkname: '/bin/tool' },
  ]);
  await pushImage(url, repo, 'v1', {
    // gzip: skopeo 1.9's docker-archive and umoci 0.4 do not take zstd layers.
    layers: [
      { tar: base, compression: 'gzip' },
      { tar: top, compression: 'gzip' },
    ],
    config: { config: { User: 'app', WorkingDir: '/srv', Cmd: ['/bin/tool'], Env: ['A=1'], Labels: { team: 'x' } } },
  });
  image = `${host}/${repo}:v1`;
});

async function out(name: string): Promise<string> {
  const parent = join(work, `${name}-${Math.random().toString(36).slice(2, 8)}`);
  await mkdir(parent);
  return join(parent, 'out');
}

async function cli(args: string[]): Promise<void> {
  const r = await runCli(args);
  expect(r.code, r.stderr).toBe(0);
}

/** config.json without the two provenance annotations that name where the image came from. */
async function specWithoutProvenance(bundle: string): Promise<unknown> {
  const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
  delete spec.annotations?.['org.opencontainers.image.ref.name'];
  delete spec.annotations?.['pull-unpack.manifest.digest'];
  return spec;
}

describe('local sources made by skopeo', () => {
  it('registry, oci: and docker-archive: pulls give identical trees and config.json', async () => {
    const layout = join(work, 'layout');
    const archive = join(work, 'image.tar');
    const src = ['--src-tls-verify=false', `docker://${image}`];
    await run('skopeo', ['copy', ...src, `oci:${layout}:v1`]);
    await run('skopeo', ['copy', ...src, `docker-archive:${archive}:${repo}:v1`]);
    const fromRegistry = await out('registry');
    const fromLayout = await out('oci');
    const fromArchive = await out('archive');
    await cli(['--bundle', image, fromRegistry]);
    await cli(['--bundle', `oci:${layout}:v1`, fromLayout]);
    await cli(['--bundle', `docker-archive:${archive}`, fromArchive]);
    const expected = await snapshotTree(join(fromRegistry, 'rootfs'));
    expect(expected.has('gone.txt')).toBe(false);
    // The root's mtime is when each pull made it: the image has no entry for it.
    const rootTime = (d: string): boolean => !/^\.: mtime/.test(d);
    expect(diffTrees(expected, await snapshotTree(join(fromLayout, 'rootfs'))).filter(rootTime)).toEqual([]);
    expect(diffTrees(expected, await snapshotTree(join(fromArchive, 'rootfs'))).filter(rootTime)).toEqual([]);
    const spec = await specWithoutProvenance(fromRegistry);
    expect(spec).toMatchObject({ process: { user: { uid: 1000, gid: 1000, additionalGids: [50] }, cwd: '/srv', args: ['/bin/tool'] } });
    expect(await specWithoutProvenance(fromLayout)).toEqual(spec);
    expect(await specWithoutProvenance(fromArchive)).toEqual(spec);
  });
});

describe('other outputs', () => {
  it('--output tar, extracted by GNU tar, equals the directory pull', async () => {
    const dir = await out('dir');
    await cli([image, dir]);
    const tarFile = join(work, 'flat.tar');
    await cli([image, '--output', 'tar', tarFile]);
    const extracted = await out('extracted');
    await mkdir(extracted);
    await run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', tarFile, '-C', extracted]);
    const listing = (await run('tar', ['-tvf', tarFile])).stdout;
    expect(listing).toMatch(/bin\/tool-link link to bin\/tool/);
    expect(listing).not.toMatch(/\.wh\./);
    // The root directory itself is not in the tar (as crane export writes it).
    expect(diffTrees(await snapshotTree(dir), await snapshotTree(extracted)).filter((d) => !d.startsWith('.:'))).toEqual([]);
  });

  it('--output oci, unpacked by umoci, equals the directory pull', async () => {
    const dir = await out('dir2');
    await cli([image, dir]);
    const layout = await out('layout');
    await cli([image, '--output', 'oci', layout]);
    const bundle = await out('umoci');
    await run('umoci', ['unpack', '--image', `${layout}:v1`, bundle]);
    // umoci gives the root its own mode and time (the image has no entry for it).
    const diffs = diffTrees(await snapshotTree(dir), await snapshotTree(join(bundle, 'rootfs'))).filter((d) => !d.startsWith('.:'));
    expect(diffs).toEqual([]);
  });
});

describe('resource limits', () => {
  it.each([
    ['maxLayers', { maxLayers: 1 }, /2 layers: over the limit of 1/],
    ['maxConfigBytes', { maxConfigBytes: 16 }, /over the 16-byte limit/],
    ['maxUncompressedBytes', { maxUncompressedBytes: 4096 }, /uncompressed layers: over the limit of 4096/],
  ])('%s stops the pull with TOO_LARGE and leaves nothing behind', async (_name, limits, message) => {
    const dest = await out('limits');
    await expect(pull(image, dest, { limits })).rejects.toMatchObject({ code: 'TOO_LARGE', message: expect.stringMatching(message) });
    expect(await readdir(join(dest, '..'))).toEqual([]);
  });

  it('the CLI flags set them, and name the flag in the hint', async () => {
    const r = await runCli(['--max-uncompressed-size', '4k', image, await out('flag')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/hint: raise it with --max-uncompressed-size/);
  });
});
