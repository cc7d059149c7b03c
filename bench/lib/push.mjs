/**
 * Pushes the benchmark images to a loopback registry. Layer blobs are streamed from disk in one
 * monolithic upload each (POST /v2/<name>/blobs/uploads/, then PUT <Location>?digest= with a
 * Content-Length and the file as the body), so a 1 GiB layer never sits in memory; the small
 * config and manifest go through testdata's image-builder.
 */
import { createReadStream } from 'node:fs';
import { request } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { hasBlob, pushBlob, pushManifest } from '../../testdata/lib/image-builder.mjs';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const TAG = 'v1';

/** Pushes `image` as `bench/<name>:v1` to `registryUrl` ('http://127.0.0.1:PORT'); returns the repo. */
export async function pushBenchImage(registryUrl, image) {
  const repo = `bench/${image.name}`;
  for (const layer of image.layers) {
    if (!(await hasBlob(registryUrl, repo, layer.digest))) await uploadFile(registryUrl, repo, layer.blob, layer.digest, layer.size);
  }
  const config = {
    created: '2024-01-01T00:00:00Z',
    architecture: hostArchitecture(),
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: image.layers.map((l) => l.diffId) },
    history: image.layers.map(() => ({ created: '2024-01-01T00:00:00Z', created_by: 'bench/run.mjs' })),
  };
  const configBlob = await pushBlob(registryUrl, repo, Buffer.from(JSON.stringify(config)));
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, ...configBlob },
    layers: image.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  await pushManifest(registryUrl, repo, TAG, manifest, OCI_MANIFEST);
  return repo;
}

/** The image config's architecture for this host (Go's names). */
function hostArchitecture() {
  const names = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return names[process.arch] ?? process.arch;
}

async function uploadFile(registryUrl, repo, path, digest, size) {
  const started = await send(registryUrl, 'POST', `/v2/${repo}/blobs/uploads/`, {});
  if (started.status !== 202 || !started.location) throw new Error(`POST upload for ${repo}: HTTP ${started.status} ${started.body}`);
  const target = new URL(started.location, registryUrl);
  target.searchParams.set('digest', digest);
  const done = await send(registryUrl, 'PUT', `${target.pathname}${target.search}`, {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    file: path,
  });
  if (done.status !== 201) throw new Error(`PUT ${digest} to ${repo}: HTTP ${done.status} ${done.body}`);
}

/** One HTTP request; `file` is streamed as the body. Resolves with status, Location and body text. */
function send(registryUrl, method, path, { headers = {}, file }) {
  const base = new URL(registryUrl);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: base.hostname, port: base.port, method, path, headers: file ? headers : { ...headers, 'content-length': '0' } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode, location: res.headers.location, body: Buffer.concat(chunks).toString('utf8').slice(0, 500) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (file) pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), req).catch(reject);
    else req.end();
  });
}
