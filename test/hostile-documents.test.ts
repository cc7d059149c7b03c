/**
 * Hostile documents (issue 11, section 4): indexes that amplify requests, docker save archives
 * that amplify hashing. Against the real registry, through a proxy that counts requests, and
 * real archive files.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { inspect } from '../src/index.js';
import { openLocalSource } from '../src/sources/layout.js';
import { parseLocalReference } from '../src/image/local-reference.js';
import { resolveImage } from '../src/sources/resolve.js';
import { parsePlatform } from '../src/image/platform.js';
import { TarIndex } from '../src/tar/archive-index.js';
import { pushImage, pushIndex, tarLayer, type PushedImage } from '../testdata/lib/image-builder.mjs';
import { startRegistryProxy, type RegistryProxy } from './helpers/proxy.js';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';
import { failure } from './helpers/errors.js';

const { url } = testRegistry();
const amd64 = { os: 'linux', architecture: 'amd64' };

let root: string;
let proxy: RegistryProxy;
let repo: string;
let leaf: PushedImage;
/** An index listing `leaf` for linux/amd64 and nothing else. */
let inner: { digest: string; size: number; mediaType: string };

/** GETs of the manifest `digest` the proxy has seen. */
function manifestGets(digest: string): number {
  return proxy.requests.filter((r) => r === `GET /v2/${repo}/manifests/${digest}`).length;
}

/** An index entry naming the index `d` (no platform: a nested index has none). */
const nestedEntry = (d: { digest: string; size: number; mediaType: string }) => ({ descriptor: d });

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'hostile-documents-'));
  repo = uniqueRepo('amplify');
  leaf = await pushImage(url, repo, null, { layers: [{ tar: await tarLayer([{ name: 'leaf.txt', content: 'leaf\n' }]) }] });
  inner = await pushIndex(url, repo, null, [{ descriptor: leaf.descriptor, platform: amd64 }]);
  proxy = await startRegistryProxy(url);
});

afterAll(async () => {
  await proxy.close();
  await rm(root, { recursive: true, force: true });
});

describe('index amplification', () => {
  it('inspect fetches a nested index listed 300 times once, and lists its entries once', async () => {
    await pushIndex(
      url,
      repo,
      'wide',
      Array.from({ length: 300 }, () => nestedEntry(inner)),
    );
    const r = await inspect(`${proxy.host}/${repo}:wide`, { platform: 'linux/amd64' });
    expect(manifestGets(inner.digest)).toBe(1);
    expect(r.platforms.map((p) => p.digest)).toEqual([leaf.descriptor.digest]);
    expect(r.pick).toMatchObject({ digest: leaf.descriptor.digest, platform: 'linux/amd64' });
  });

  it('a pull fetches each nested index and the chosen manifest once (--no-cache)', async () => {
    await pushIndex(
      url,
      repo,
      'wide-pull',
      Array.from({ length: 200 }, () => nestedEntry(inner)),
    );
    const before = { inner: manifestGets(inner.digest), leaf: manifestGets(leaf.descriptor.digest) };
    const r = await runCli(['--no-cache', '--platform', 'linux/amd64', `${proxy.host}/${repo}:wide-pull`, join(root, 'wide-pull')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(manifestGets(inner.digest) - before.inner).toBe(1);
    expect(manifestGets(leaf.descriptor.digest) - before.leaf).toBe(1);
  });

  it('three levels each listing the next 30 times cost one request per index, not 30 x 30', async () => {
    const middle = await pushIndex(
      url,
      repo,
      null,
      Array.from({ length: 30 }, () => nestedEntry(inner)),
    );
    await pushIndex(
      url,
      repo,
      'cube',
      Array.from({ length: 30 }, () => nestedEntry(middle)),
    );
    const before = { middle: manifestGets(middle.digest), inner: manifestGets(inner.digest) };
    const r = await inspect(`${proxy.host}/${repo}:cube`, { platform: 'linux/amd64' });
    expect(r.pick).toMatchObject({ digest: leaf.descriptor.digest });
    expect(manifestGets(middle.digest) - before.middle).toBe(1);
    expect(manifestGets(inner.digest) - before.inner).toBe(1);
  });

  it('refuses an index listing 5000 manifests (TOO_LARGE, --max-manifests) before fetching any of them', async () => {
    await pushIndex(
      url,
      repo,
      'huge',
      Array.from({ length: 5000 }, () => nestedEntry(inner)),
    );
    const before = manifestGets(inner.digest);
    const r = await runCli(['inspect', '--platform', 'linux/amd64', `${proxy.host}/${repo}:huge`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/5000 manifests: over the limit of 1000\nhint: raise it with --max-manifests/);
    expect(manifestGets(inner.digest)).toBe(before);
    const raised = await runCli(['inspect', '--max-manifests', '6000', '--platform', 'linux/amd64', `${proxy.host}/${repo}:huge`]);
    expect(raised.code).toBe(0);
    expect(manifestGets(inner.digest)).toBe(before + 1);
  });

  it('refuses indexes nested deeper than --max-index-depth (TOO_LARGE); the default takes 4 levels', async () => {
    // top -> level2 -> level3 -> inner (level 4) -> leaf
    const level3 = await pushIndex(url, repo, null, [nestedEntry(inner)]);
    const level2 = await pushIndex(url, repo, null, [nestedEntry(level3)]);
    await pushIndex(url, repo, 'deep4', [nestedEntry(level2)]);
    await pushIndex(url, repo, 'deep5', [nestedEntry(await pushIndex(url, repo, null, [nestedEntry(level2)]))]);
    const four = await runCli(['inspect', '--platform', 'linux/amd64', `${proxy.host}/${repo}:deep4`]);
    expect(four.code).toBe(0);
    const five = await runCli(['inspect', '--platform', 'linux/amd64', `${proxy.host}/${repo}:deep5`]);
    expect(five.code).toBe(1);
    expect(five.stderr).toMatch(/indexes nested 5 levels deep: over the limit of 4\nhint: raise it with --max-index-depth/);
    const lowered = await runCli(['inspect', '--max-index-depth', '3', '--platform', 'linux/amd64', `${proxy.host}/${repo}:deep4`]);
    expect(lowered.code).toBe(1);
    expect(lowered.stderr).toMatch(/nested 4 levels deep: over the limit of 3/);
    const raised = await runCli(['inspect', '--max-index-depth', '5', '--platform', 'linux/amd64', `${proxy.host}/${repo}:deep5`]);
    expect(raised.code).toBe(0);
  });
});

/** A `docker save` archive whose manifest.json names `layer` (one file) `times` times. */
async function amplifyingArchive(name: string, layer: Buffer, times: number): Promise<string> {
  const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
  const config = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: Array.from({ length: times }, () => diffId) } };
  const manifest = [{ Config: 'config.json', RepoTags: ['amp:1'], Layers: Array.from({ length: times }, () => 'l/layer.tar') }];
  const p = pack();
  p.entry({ name: 'manifest.json' }, JSON.stringify(manifest));
  p.entry({ name: 'config.json' }, JSON.stringify(config));
  p.entry({ name: 'l/layer.tar' }, layer);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  const file = join(root, name);
  await writeFile(file, Buffer.concat(chunks));
  return file;
}

describe('docker-archive amplification', () => {
  it('checks --max-layers before hashing: one 20 MiB layer listed 5000 times is refused without reading it', async () => {
    const big = Buffer.alloc(20 * 1024 * 1024, 0x61);
    const file = await amplifyingArchive('amplify-5000.tar', big, 5000);
    const streams = vi.spyOn(TarIndex.prototype, 'stream');
    try {
      const err = await failure(openLocalSource(parseLocalReference(`docker-archive:${file}`)!));
      expect(err).toMatchObject({ code: 'TOO_LARGE', hint: expect.stringContaining('--max-layers') });
      expect(err.message).toMatch(/5000 layers: over the limit of 500/);
      expect(streams).not.toHaveBeenCalled();
    } finally {
      streams.mockRestore();
    }
  });

  it('hashes a layer file that manifest.json names 400 times once, and the image still pulls', async () => {
    const layer = await tarLayer([{ name: 'once.txt', content: 'once\n' }]);
    const file = await amplifyingArchive('amplify-400.tar', layer, 400);
    const streams = vi.spyOn(TarIndex.prototype, 'stream');
    let opened;
    try {
      opened = await openLocalSource(parseLocalReference(`docker-archive:${file}`)!);
      expect(streams).toHaveBeenCalledTimes(1);
    } finally {
      streams.mockRestore();
    }
    try {
      const resolved = await resolveImage(opened.source, opened.reference, parsePlatform('linux/amd64'));
      expect(resolved.manifest.layers).toHaveLength(400);
      expect(new Set(resolved.manifest.layers.map((l) => l.digest)).size).toBe(1);
    } finally {
      await opened.close();
    }
    const r = await runCli(['--no-cache', `docker-archive:${file}`, join(root, 'amplify-400')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});
