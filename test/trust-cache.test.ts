/**
 * The caching source keeps what signature verification reads through it (signature tags, small
 * payload blobs), so that an --offline verification reads exactly what the online one read,
 * against the real registry.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../src/registry/client.js';
import { cachingSource, offlineSource } from '../src/store/cached-source.js';
import { readBlob, registrySource } from '../src/sources/source.js';
import { BlobStore } from '../src/store/blob-store.js';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { failure } from './helpers/errors.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';

const { host, url } = testRegistry();
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pull-unpack-trust-cache-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('the caching source and --offline for signature material', () => {
  it('answers a tag read online from the cache offline, and its small blobs too', async () => {
    const repo = uniqueRepo('sigtag');
    const image = await pushImage(url, repo, 'v1', { layers: [{ tar: await tarLayer([{ name: 'a', type: 'file', content: 'a\n' }]) }] });
    const sigTag = `sha256-${image.descriptor.digest.slice('sha256:'.length)}.sig`;
    const payload = await pushImage(url, repo, sigTag, {
      layers: [{ tar: await tarLayer([{ name: 'p', type: 'file', content: 'payload\n' }]) }],
    });
    const store = new BlobStore(join(root, 'cache-1'));
    const online = cachingSource(registrySource(new RegistryClient({ registry: host }), repo), store);
    const fetched = await online.getManifest(sigTag);
    // Signature payloads are read whole through readBlob (capped and verified), as the verifiers do.
    const blob = await online.readBlob!(payload.layers[0]!, 1 << 20);

    const offline = offlineSource(store, `${host}/${repo}`, `${host}/${repo}:v1`);
    const again = await offline.getManifest(sigTag);
    expect(again.digest).toBe(fetched.digest);
    expect(again.digest).toBe(payload.descriptor.digest);
    expect(await readAll(await offline.fetchBlob(payload.layers[0]!))).toEqual(blob);
    expect(await readBlob(offline, payload.layers[0]!, 1 << 20)).toEqual(blob);
  });

  it('offline, a tag never read is missing: it is not answered with the image own manifest', async () => {
    const repo = uniqueRepo('sigtag-missing');
    const image = await pushImage(url, repo, 'v1', { layers: [{ tar: await tarLayer([{ name: 'b', type: 'file', content: 'b\n' }]) }] });
    const store = new BlobStore(join(root, 'cache-2'));
    const online = cachingSource(registrySource(new RegistryClient({ registry: host }), repo), store);
    await online.getManifest('v1');
    const offline = offlineSource(store, `${host}/${repo}`, `${host}/${repo}:v1`);
    expect((await offline.getManifest(image.descriptor.digest)).digest).toBe(image.descriptor.digest);
    const err = await failure(offline.getManifest(`sha256-${image.descriptor.digest.slice(7)}.sig`));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain(`${host}/${repo}:sha256-`);
  });
});
