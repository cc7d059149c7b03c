/**
 * The sources' part of signature lookup: the registry client's referrers call (against the real
 * registry, which has no referrers API, and a loopback server that adds one), fallback and
 * caching sources passing it on, attachment tags recorded for --offline, and readBlob's caps.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { RegistryClient } from '../src/registry/client.js';
import { cachingSource, offlineSource } from '../src/store/cached-source.js';
import { fallbackSource, readBlob, registrySource, type ImageSource } from '../src/sources/source.js';
import { BlobStore } from '../src/store/blob-store.js';
import { readRefs, recordRef } from '../src/store/cache-index.js';
import { pushImage, sha256 } from '../testdata/lib/image-builder.mjs';
import { failure } from './helpers/errors.js';
import { startReferrersProxy, type ReferrersProxy } from './helpers/referrers-proxy.js';
import { startServer, testRegistry, uniqueRepo } from './helpers/registry.js';
import { keyPair, keySignature, pushSignatures, signatureTag, simpleSigningPayload } from './helpers/sigstore-fixtures.js';

const { host, url } = testRegistry();
let proxy: ReferrersProxy;
let cache: string;

beforeAll(async () => {
  proxy = await startReferrersProxy(url);
  cache = await mkdtemp(join(tmpdir(), 'sigstore-sources-'));
});
afterAll(async () => {
  await proxy.close();
  await rm(cache, { recursive: true, force: true });
});

const referrer = {
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: sha256(Buffer.from('x')),
  size: 1,
  artifactType: 'application/example',
};

describe('the referrers API in the sources', () => {
  it('RegistryClient.getReferrers is undefined on a registry without the referrers API (the real registry answers 404)', async () => {
    const repo = uniqueRepo('referrers');
    const { descriptor } = await pushImage(url, repo, 'v1', {});
    expect(await new RegistryClient({ registry: host }).getReferrers(repo, descriptor.digest)).toBeUndefined();
  });

  it('RegistryClient.getReferrers returns the referrers index where the API exists', async () => {
    const repo = uniqueRepo('referrers');
    const { descriptor } = await pushImage(url, repo, 'v1', {});
    proxy.add(repo, descriptor.digest, referrer);
    const fetched = await new RegistryClient({ registry: proxy.host }).getReferrers(repo, descriptor.digest);
    expect(fetched?.contentType).toBe('application/vnd.oci.image.index.v1+json');
    expect(JSON.parse(fetched!.bytes.toString()).manifests).toEqual([referrer]);
  });

  it('a fallback source asks the next source for referrers when a mirror fails', async () => {
    const repo = uniqueRepo('referrers');
    const { descriptor } = await pushImage(url, repo, 'v1', {});
    proxy.add(repo, descriptor.digest, referrer);
    const broken = await startServer((_req, res) => res.writeHead(500).end());
    try {
      const notices: string[] = [];
      const mirror = registrySource(new RegistryClient({ registry: broken.host, attempts: 1 }), repo);
      const upstream = registrySource(new RegistryClient({ registry: proxy.host }), repo);
      const fetched = await fallbackSource([mirror, upstream], (m) => notices.push(m)).getReferrers!(descriptor.digest);
      expect(JSON.parse(fetched!.bytes.toString()).manifests).toEqual([referrer]);
      expect(notices[0]).toContain(`mirror ${broken.host}/${repo} failed for the referrers of ${descriptor.digest}`);
    } finally {
      await broken.close();
    }
  });
});

describe('signature material in the cache', () => {
  it('records attachment tags in the cache index, and leaves image tags to the pull that succeeds', async () => {
    const repo = uniqueRepo('attachments');
    const { descriptor } = await pushImage(url, repo, 'v1', {});
    const key = keyPair();
    const sig = await pushSignatures(url, repo, descriptor.digest, [keySignature(key, simpleSigningPayload(descriptor.digest, 'x'))]);
    const store = new BlobStore(cache);
    const source = cachingSource(registrySource(new RegistryClient({ registry: host }), repo), store);
    await source.getManifest('v1');
    await source.getManifest(signatureTag(descriptor.digest));
    const refs = (await readRefs(store)).filter((r) => r.reference.includes(repo));
    expect(refs.map((r) => [r.reference, r.descriptor.digest])).toEqual([
      [`${host}/${repo}:${signatureTag(descriptor.digest)}`, sig.digest],
    ]);
  });

  it('offline, an attachment tag that was never fetched is not found, not the image the reference names', async () => {
    const repo = uniqueRepo('attachments');
    const { descriptor } = await pushImage(url, repo, 'v1', {});
    const store = new BlobStore(await mkdtemp(join(cache, 'offline-')));
    const online = cachingSource(registrySource(new RegistryClient({ registry: host }), repo), store);
    await online.getManifest('v1');
    await recordRef(store, `${host}/${repo}:v1`, descriptor);
    const offline = offlineSource(store, `${host}/${repo}`, `${host}/${repo}:v1`);
    expect((await offline.getManifest('v1')).digest).toBe(descriptor.digest);
    const err = await failure(offline.getManifest(signatureTag(descriptor.digest)));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain(`${host}/${repo}:${signatureTag(descriptor.digest)} was never fetched into the cache`);
  });
});

describe('readBlob', () => {
  const bytes = Buffer.from('signature payload');
  const descriptor = { mediaType: 'application/octet-stream', digest: sha256(bytes), size: bytes.length };
  /** A source whose blob never ends: a hostile registry ignoring the descriptor's size. */
  const endless: ImageSource = {
    name: 'endless',
    getManifest: () => Promise.reject(new Error('unused')),
    fetchBlob: async () =>
      new Readable({
        read() {
          this.push(Buffer.alloc(64 * 1024, 'x'));
        },
      }),
  };

  it('refuses a blob whose descriptor is over the cap without fetching it', async () => {
    const err = await failure(readBlob(endless, { ...descriptor, size: 2048 }, 1024));
    expect(err.code).toBe('TOO_LARGE');
  });

  it('stops reading a blob that runs past its descriptor size', async () => {
    const err = await failure(readBlob(endless, descriptor, 1024));
    expect(err.code).toBe('SIZE_MISMATCH');
  });

  it('returns a blob that matches its descriptor, and refuses one that does not hash to it', async () => {
    const source = (served: Buffer): ImageSource => ({ ...endless, fetchBlob: async () => Readable.from([served]) });
    expect(await readBlob(source(bytes), descriptor, 1024)).toEqual(bytes);
    const err = await failure(readBlob(source(Buffer.from('signature PAYLOAD')), descriptor, 1024));
    expect(err.code).toBe('DIGEST_MISMATCH');
  });
});
