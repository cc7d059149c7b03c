#!/usr/bin/env node
/**
 * Pushes the demo image REGISTRY_HOST/demo/hello:latest: an OCI index for linux/amd64,
 * linux/arm64 and linux/arm/v7 plus buildx-style attestation entries. Each platform's image
 * holds the files of testdata/demo/ and /platform.txt naming its platform, and, when the host
 * is x86_64 with Debian's static busybox (busybox-static), the images also get it as
 * /bin/busybox and /bin/sh, so that `chroot` and `runc run` can start /bin/hello on this host.
 * (Every platform's image then carries the same x86_64 binary: a demo, not a real image.)
 *
 *   node testdata/push-demo.mjs 127.0.0.1:5000
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { entriesFromDirectory, pushMultiPlatform } from './lib/image-builder.mjs';

const REPO = 'demo/hello';
const TAG = 'latest';
const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/arm/v7'];

const host = process.argv[2];
if (!host || process.argv.length > 3) {
  process.stderr.write('usage: node testdata/push-demo.mjs REGISTRY_HOST (e.g. 127.0.0.1:5000)\n');
  process.exit(2);
}

const demoDir = join(dirname(fileURLToPath(import.meta.url)), 'demo');
const files = await entriesFromDirectory(demoDir);
const BUSYBOX = '/bin/busybox';
if (process.arch === 'x64' && existsSync(BUSYBOX)) {
  // Only a static busybox runs inside an image that has no C library.
  files.push(
    { name: 'bin/busybox', mode: 0o755, content: readFileSync(BUSYBOX) },
    { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
    { name: 'bin/cat', type: 'symlink', linkname: 'busybox' },
  );
}
const pushed = await pushMultiPlatform(`http://${host}`, REPO, TAG, PLATFORMS, {
  format: 'oci',
  attestation: true,
  files,
  config: { config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/bin/hello'], WorkingDir: '/' } },
});

const lines = [`pushed ${host}/${REPO}:${TAG} ${pushed.descriptor.digest} (${pushed.descriptor.mediaType})`];
for (const image of pushed.images) {
  lines.push(`  ${image.platform.padEnd(14)} ${image.descriptor.digest} (${image.layers.length} layer, ${image.layers[0]?.size} bytes)`);
}
for (const attestation of pushed.attestations) lines.push(`  ${'attestation'.padEnd(14)} ${attestation.descriptor.digest}`);
process.stdout.write(`${lines.join('\n')}\n`);
