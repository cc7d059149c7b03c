#!/usr/bin/env node
/**
 * A real Debian image for end-to-end tests: a `debootstrap --variant=minbase bookworm` tree as
 * layer 1 and a hand-made change set as layer 2 (an opaque directory, whiteouts of a directory
 * tree, a file, a symlink and one name of a hardlink pair, a symlink replaced by a file, a
 * hardlink to a file of layer 1, a rewritten hardlinked file, new owners, modes and xattrs).
 * Written as OCI image layouts with gzip and with zstd layers and pushed by `skopeo copy`.
 *
 *   node testdata/debian-image.mjs --registry 127.0.0.1:PORT --repo debian [--work-dir DIR] [--cache-dir DIR]
 *
 * pushes REPO:gzip and REPO:zstd and prints both references. Needs root (debootstrap) and
 * Debian's package mirror. The debootstrap tree is cached as a tarball in --cache-dir
 * (default $PULL_UNPACK_TEST_CACHE or /var/cache/pull-unpack-tests) and rebuilt when missing;
 * the first build takes a few minutes, later runs seconds. Types in debian-image.d.mts.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { FIXED_MTIME, tarLayer } from './lib/tar-builder.mjs';

const run = promisify(execFile);

export const DEBIAN_SUITE = 'bookworm';
export const DEBIAN_MIRROR = 'http://deb.debian.org/debian';
export const CACHE_FILE = `debian-${DEBIAN_SUITE}-minbase.tar`;
export const COMPRESSIONS = ['gzip', 'zstd'];
export const LAYER_MEDIA_TYPES = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

/** Where the debootstrap tarball is cached: $PULL_UNPACK_TEST_CACHE or /var/cache/pull-unpack-tests. */
export function defaultCacheDir(env = process.env) {
  return env.PULL_UNPACK_TEST_CACHE || '/var/cache/pull-unpack-tests';
}

/** The new /etc/os-release of layer 2 (layer 1 has a symlink to ../usr/lib/os-release there). */
export const OS_RELEASE = [
  'PRETTY_NAME="Debian GNU/Linux 12 (bookworm), pull-unpack test"',
  'NAME="Debian GNU/Linux"',
  'VERSION_ID="12"',
  'VERSION="12 (bookworm)"',
  'VERSION_CODENAME=bookworm',
  'ID=debian',
  'VARIANT_ID=pull-unpack-test',
  '',
].join('\n');

/** The output of /usr/local/bin/hello, a script layer 2 adds. */
export const HELLO_OUTPUT = 'hello from layer 2';

const dir = (name, extra = {}) => ({ name, type: 'directory', mode: 0o755, ...extra });

/**
 * Layer 2, in tar order. Parent directories of every change come first, as `docker build`
 * writes them, except var/log/ and var/cache/apt/: a whiteout without its parent's entry.
 */
export const CHANGE_SET = [
  dir('etc/'),
  // A symlink (-> ../usr/lib/os-release) replaced by a regular file; the target stays as it was.
  { name: 'etc/os-release', content: OS_RELEASE },
  dir('home/'),
  dir('home/tester/', { mode: 0o750, uid: 1000, gid: 1000 }),
  { name: 'home/tester/.profile', mode: 0o640, uid: 1000, gid: 1000, content: 'export EDITOR=vi\n' },
  // An existing empty directory gets a new mode and group (50 = staff).
  dir('srv/', { mode: 0o2770, gid: 50 }),
  dir('usr/'),
  dir('usr/bin/'),
  // One name of the perl / perl5.36.0 hardlink pair goes; perl stays.
  { name: 'usr/bin/.wh.perl5.36.0', content: '' },
  // A symlink (-> /etc/alternatives/pager) goes.
  { name: 'usr/bin/.wh.pager', content: '' },
  // gunzip and uncompress are one inode in layer 1: uncompress is rewritten, gunzip keeps the old one.
  { name: 'usr/bin/uncompress', mode: 0o755, content: '#!/bin/sh\nexec gzip -d "$@"\n' },
  dir('usr/local/'),
  dir('usr/local/bin/'),
  {
    name: 'usr/local/bin/hello',
    mode: 0o755,
    content: `#!/bin/sh\necho '${HELLO_OUTPUT}'\n`,
    pax: { 'SCHILY.xattr.user.pull-unpack': 'layer 2' },
  },
  // A hardlink to a file of layer 1.
  { name: 'usr/local/bin/perl-link', type: 'link', linkname: 'usr/bin/perl' },
  dir('usr/share/'),
  // Every package's /usr/share/doc goes (opaque); only the README of this layer is left.
  dir('usr/share/doc/'),
  { name: 'usr/share/doc/.wh..wh..opq', content: '' },
  { name: 'usr/share/doc/README', content: 'Documentation was removed by layer 2.\n' },
  // A whole directory tree goes.
  { name: 'usr/share/.wh.locale', content: '' },
  { name: 'var/cache/apt/.wh.archives', content: '' },
  { name: 'var/log/.wh.bootstrap.log', content: '' },
];

/**
 * The path of the cached debootstrap tarball in `cacheDir`, built first when missing: GNU tar
 * (pax format, numeric owners, xattrs, names sorted, no "./" entry) of a fresh minbase tree.
 */
export async function debootstrapTarball({ cacheDir = defaultCacheDir(), log = () => {} } = {}) {
  const tarball = join(resolve(cacheDir), CACHE_FILE);
  if (await exists(tarball)) return tarball;
  if (process.getuid?.() !== 0) throw new Error(`${tarball} is missing and building it needs root (debootstrap)`);
  await ensureDebootstrap(log);
  await mkdir(cacheDir, { recursive: true });
  const build = await mkdtemp(join(resolve(cacheDir), 'build-'));
  const tree = join(build, 'rootfs');
  try {
    const started = Date.now();
    log(`debootstrap --variant=minbase ${DEBIAN_SUITE} (a few minutes, once)`);
    await run('debootstrap', ['--variant=minbase', DEBIAN_SUITE, tree, DEBIAN_MIRROR], { maxBuffer: 64 * 1024 * 1024 });
    log(`debootstrap took ${((Date.now() - started) / 1000).toFixed(0)} s`);
    const names = (await readdir(tree)).sort();
    const partial = join(build, CACHE_FILE);
    await run('tar', [
      '--create',
      `--file=${partial}`,
      `--directory=${tree}`,
      '--sort=name',
      '--numeric-owner',
      '--format=posix',
      '--pax-option=delete=atime,delete=ctime',
      '--xattrs',
      '--xattrs-include=*',
      '--',
      ...names,
    ]);
    await rename(partial, tarball);
    return tarball;
  } finally {
    await removeBuildDir(build);
  }
}

async function ensureDebootstrap(log) {
  const found = await run('sh', ['-c', 'command -v debootstrap']).then(
    () => true,
    () => false,
  );
  if (found) return;
  log('installing debootstrap');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update', '-qq'], { env });
  await run('apt-get', ['install', '-y', '-qq', 'debootstrap'], { env });
}

/** Removes a build directory after unmounting whatever a failed debootstrap left mounted in it. */
async function removeBuildDir(build) {
  const mounts = (await readFile('/proc/mounts', 'utf8'))
    .split('\n')
    .map((line) => line.split(' ')[1])
    .filter((point) => point !== undefined && (point === build || point.startsWith(`${build}/`)))
    .sort()
    .reverse();
  for (const point of mounts) await run('umount', ['--lazy', point]);
  await rm(build, { recursive: true, force: true });
}

/**
 * Writes an OCI image layout at `layoutDir` whose index tags `tag` as the image of `layerTars`
 * (uncompressed tar files, base first) with every layer compressed by `compression`.
 * Returns the manifest's digest.
 */
export async function writeLayout(layoutDir, tag, layerTars, compression) {
  const blobs = join(layoutDir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layers = [];
  const diffIds = [];
  for (const tar of layerTars) {
    diffIds.push(await hashFile(tar));
    const compressed = join(layoutDir, 'layer.tmp');
    await compressFile(tar, compressed, compression);
    const digest = await hashFile(compressed);
    const { size } = await stat(compressed);
    await rename(compressed, join(blobs, digest.slice('sha256:'.length)));
    layers.push({ mediaType: LAYER_MEDIA_TYPES[compression], digest, size });
  }
  const config = await putJson(blobs, 'application/vnd.oci.image.config.v1+json', imageConfig(diffIds, await goArch()));
  const manifest = await putJson(blobs, 'application/vnd.oci.image.manifest.v1+json', {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config,
    layers,
  });
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  };
  await writeFile(join(layoutDir, 'index.json'), JSON.stringify(index));
  return manifest.digest;
}

function imageConfig(diffIds, architecture) {
  const created = FIXED_MTIME.toISOString();
  return {
    created,
    architecture,
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['bash'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: [
      { created, created_by: `debootstrap --variant=minbase ${DEBIAN_SUITE} ${DEBIAN_MIRROR}` },
      { created, created_by: 'testdata/debian-image.mjs CHANGE_SET' },
    ],
  };
}

/** The image-spec architecture of the tree debootstrap built (the host's dpkg architecture). */
async function goArch() {
  const { stdout } = await run('dpkg', ['--print-architecture']);
  const arch = stdout.trim();
  const known = { amd64: 'amd64', arm64: 'arm64', i386: '386', ppc64el: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  if (!known[arch]) throw new Error(`no image-spec architecture known for dpkg architecture ${arch}`);
  return known[arch];
}

async function putJson(blobs, mediaType, value) {
  const bytes = Buffer.from(JSON.stringify(value));
  const hex = createHash('sha256').update(bytes).digest('hex');
  await writeFile(join(blobs, hex), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

async function compressFile(from, to, compression) {
  const args = compression === 'gzip' ? ['gzip', ['-n', '-6', '-c']] : ['zstd', ['-q', '-3', '-T0', '-c', '--no-progress']];
  const child = spawn(args[0], args[1], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolveExit, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolveExit() : reject(new Error(`${args[0]} exited with ${code}`))));
  });
  await Promise.all([pipeline(createReadStream(from), child.stdin), pipeline(child.stdout, createWriteStream(to)), exited]);
}

async function hashFile(path) {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return `sha256:${hash.digest('hex')}`;
}

async function exists(path) {
  return stat(path).then(
    () => true,
    (err) => (err.code === 'ENOENT' ? false : Promise.reject(err)),
  );
}

/**
 * Builds both layouts in `workDir` (layout-gzip/, layout-zstd/) and pushes them with
 * `skopeo copy` to `registry`/`repo`:gzip and :zstd. Returns what was pushed, with timings.
 */
export async function buildDebianImages({ registry, repo, workDir, cacheDir = defaultCacheDir(), log = () => {} }) {
  const started = Date.now();
  const base = await debootstrapTarball({ cacheDir, log });
  const baseReady = Date.now();
  await mkdir(workDir, { recursive: true });
  const changes = join(workDir, 'layer2.tar');
  await writeFile(changes, await tarLayer(CHANGE_SET));
  const images = {};
  for (const compression of COMPRESSIONS) {
    const layout = join(workDir, `layout-${compression}`);
    const manifestDigest = await writeLayout(layout, compression, [base, changes], compression);
    const ref = `${registry}/${repo}:${compression}`;
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:${compression}`, `docker://${ref}`]);
    log(`pushed ${ref}`);
    images[compression] = { ref, layout, manifestDigest };
  }
  const seconds = (from, to) => Number(((to - from) / 1000).toFixed(1));
  return { images, baseTarball: base, timings: { base: seconds(started, baseReady), layoutsAndPush: seconds(baseReady, Date.now()) } };
}

function parseArgs(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!['--registry', '--repo', '--work-dir', '--cache-dir'].includes(flag) || value === undefined) {
      throw new Error(
        `unknown argument ${flag}\nusage: node testdata/debian-image.mjs --registry HOST --repo REPO [--work-dir DIR] [--cache-dir DIR]`,
      );
    }
    options[flag.slice(2)] = value;
  }
  if (!options.registry || !options.repo) throw new Error('--registry and --repo are required');
  return options;
}

if (process.argv[1] && resolve(process.argv[1]) === new URL(import.meta.url).pathname) {
  try {
    const options = parseArgs(process.argv.slice(2));
    const workDir = options['work-dir'] ?? (await mkdtemp(join(tmpdir(), 'debian-image-')));
    const log = (line) => process.stderr.write(`debian-image: ${line}\n`);
    const result = await buildDebianImages({
      registry: options.registry,
      repo: options.repo,
      workDir,
      cacheDir: options['cache-dir'] ?? defaultCacheDir(),
      log,
    });
    for (const image of Object.values(result.images)) process.stdout.write(`${image.ref}\n`);
    log(`base ${result.timings.base} s, layouts and pushes ${result.timings.layoutsAndPush} s; layouts in ${workDir}`);
  } catch (err) {
    process.stderr.write(`debian-image: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
