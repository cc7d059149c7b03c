/**
 * `--bundle` end to end (issue 4): images built here with a static busybox are pushed to the real
 * registry, pulled with the CLI into runc bundles, checked field by field and against the
 * runtime-spec schema, and then RUN with runc 1.1: the container prints its ids, cwd, hostname,
 * environment, argv and mounts, and the assertions read that output.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ACCOUNT_FILE_BYTES } from '../src/outputs/bundle.js';
import { pullBundle } from '../src/pull.js';
import { isPullUnpackError, PullUnpackError } from '../src/errors.js';
import { DEFAULT_PATH, VOLUME_TMPFS_OPTIONS, type RuntimeSpec } from '../src/outputs/runtime-config.js';
import { pushImage, tarLayer, type TarEntry } from '../testdata/lib/image-builder.mjs';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';
import { runtimeSchemaErrors } from './helpers/runtime-schema.js';

const { host, url } = testRegistry();
const repo = uniqueRepo('bundle');
const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'id', 'pwd', 'env', 'echo', 'cat', 'hostname', 'grep', 'sed', 'touch', 'ls'];
const RUN_TIMEOUT_MS = 30_000;

/** Prints one `key=value` line per fact; parseProbe() reads them back. */
const PROBE = [
  'echo "uid=$(id -u)"',
  'echo "gid=$(id -g)"',
  'echo "groups=$(id -G)"',
  'echo "id=$(id)"',
  'echo "cwd=$(pwd)"',
  'echo "hostname=$(hostname)"',
  'env | sed "s/^/env=/"',
  'echo "arg0=$0"',
  'for a in "$@"; do echo "arg=$a"; done',
  'grep " /data " /proc/mounts | sed "s/^/mount=/"',
  'if touch /data/probe 2>/dev/null; then echo data=writable; else echo data=unwritable; fi',
].join('; ');

const PASSWD = ['root:x:0:0:root:/root:/bin/sh', 'app:x:1000:1000:App:/home/app:/bin/sh', ''].join('\n');
// audio before staff: additionalGids keep /etc/group order.
const GROUP = ['root:x:0:', 'wheel:x:10:root', 'audio:x:63:app', 'staff:x:50:app', 'app:x:1000:', 'data:x:2000:', ''].join('\n');

let work: string;
let busybox: Buffer;
const refs: Record<string, string> = {};
const digests: Record<string, string> = {};
let runSeq = 0;

/** The base filesystem: busybox and its applet links, passwd/group, /srv/app and /home/app owned by app. */
function baseEntries(extra: TarEntry[] = [], etc: TarEntry[] = defaultEtc()): TarEntry[] {
  return [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', content: busybox, mode: 0o755 },
    ...APPLETS.map((a): TarEntry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'etc/', type: 'directory' },
    ...etc,
    { name: 'home/', type: 'directory' },
    { name: 'home/app/', type: 'directory', uid: 1000, gid: 1000 },
    { name: 'srv/', type: 'directory' },
    { name: 'srv/app/', type: 'directory', uid: 1000, gid: 1000 },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
    ...extra,
  ];
}

function defaultEtc(): TarEntry[] {
  return [
    { name: 'etc/passwd', content: PASSWD },
    { name: 'etc/group', content: GROUP },
  ];
}

/** Pushes a one-layer image as repo:tag; `config` is its run config, `top` extra image-config fields. */
async function push(
  tag: string,
  config: Record<string, unknown>,
  entries: TarEntry[] = baseEntries(),
  top: Record<string, unknown> = {},
): Promise<void> {
  const pushed = await pushImage(url, repo, tag, { layers: [{ tar: await tarLayer(entries) }], config: { ...top, config } });
  refs[tag] = `${host}/${repo}:${tag}`;
  digests[tag] = pushed.descriptor.digest;
}

beforeAll(async () => {
  // Fail, never skip, with the reason: these tests need what CI has.
  if (process.getuid?.() !== 0) {
    throw new Error(`bundle.test.ts starts containers with runc as root (as CI does); this runs as uid ${process.getuid?.()}`);
  }
  const version = await spawnCapture('runc', ['--version']).catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
  if (version.code !== 0) throw new Error(`runc is not usable (scripts/setup.sh installs it): ${version.stderr}`);
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} is missing: install busybox-static (scripts/setup.sh does)`);
  busybox = readFileSync(BUSYBOX);
  work = await mkdtemp(join(tmpdir(), 'pull-unpack-bundle-'));
  await push(
    'a',
    {
      User: 'app',
      WorkingDir: '/srv/app',
      Entrypoint: ['/bin/sh', '-c'],
      Cmd: [PROBE, 'probe-a', 'first arg', 'two  spaces'],
      Env: ['PATH=/opt/tools/bin:/usr/bin:/bin', 'FOO=bar'],
      Volumes: { '/data': {} },
      Labels: { 'org.opencontainers.image.author': 'Label Author', 'com.example.kind': 'probe' },
    },
    baseEntries(),
    { author: 'Config Author' },
  );
  await push('b', { User: 'app:data', Entrypoint: ['/bin/sh', '-c'], Cmd: [PROBE, 'probe-b'] });
  await push('c', { User: '1000:2000', Cmd: ['/bin/sh', '-c', PROBE, 'probe-c'] });
  await push('d', { Cmd: ['/bin/sh', '-c', PROBE, 'probe-d'] });
  await push('e', { User: 'ghost', Cmd: ['/bin/sh', '-c', PROBE] });
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

// ---- helpers ----

interface RuncResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `runc [--rootless=true] run --bundle DIR ID` with captured stdio; always deletes ID. */
async function runc(dir: string, rootless = false): Promise<RuncResult> {
  const id = `pull-unpack-test-${process.pid}-${++runSeq}`;
  const global = rootless ? ['--rootless=true'] : [];
  try {
    return await spawnCapture('runc', [...global, 'run', '--bundle', dir, id]);
  } finally {
    await spawnCapture('runc', [...global, 'delete', '-f', id]);
  }
}

function spawnCapture(cmd: string, args: string[]): Promise<RuncResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL' });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8') + (signal ? `\n[killed by ${signal} after ${RUN_TIMEOUT_MS} ms]` : '');
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr });
    });
  });
}

/** Runs the bundle and fails with runc's own words when the container did not exit 0. */
async function runOk(dir: string, rootless = false): Promise<string> {
  const r = await runc(dir, rootless);
  if (r.code !== 0) throw new Error(`runc ${rootless ? '--rootless=true ' : ''}run exited ${r.code}:\n${r.stderr}\nstdout:\n${r.stdout}`);
  return r.stdout;
}

interface Probe {
  uid: number;
  gid: number;
  groups: number[];
  id: string;
  cwd: string;
  hostname: string;
  env: string[];
  arg0: string;
  args: string[];
  mounts: string[];
  data: string;
}

function parseProbe(stdout: string): Probe {
  const p: Probe = { uid: -1, gid: -1, groups: [], id: '', cwd: '', hostname: '', env: [], arg0: '', args: [], mounts: [], data: '' };
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const [key, value] = [line.slice(0, eq), line.slice(eq + 1)];
    if (key === 'uid' || key === 'gid') p[key] = Number(value);
    else if (key === 'groups') p.groups = value.split(' ').filter(Boolean).map(Number);
    else if (key === 'id' || key === 'cwd' || key === 'hostname' || key === 'arg0' || key === 'data') p[key] = value;
    else if (key === 'env') p.env.push(value);
    else if (key === 'arg') p.args.push(value);
    else if (key === 'mount') p.mounts.push(value);
  }
  return p;
}

/** Pulls with the CLI; fails with its stderr when it does not exit 0. Returns DIR and config.json. */
async function bundle(tag: string, extra: string[] = [], trailing: string[] = []): Promise<{ dir: string; spec: RuntimeSpec }> {
  const dir = join(work, `${tag}-${++runSeq}`);
  const cli = await runCli(['--bundle', refs[tag]!, dir, '--quiet', ...extra, ...(trailing.length ? ['--', ...trailing] : [])]);
  expect(cli.stderr).toBe('');
  expect(cli.code).toBe(0);
  const text = await readFile(join(dir, 'config.json'), 'utf8');
  expect(text.endsWith('}\n')).toBe(true);
  expect((await stat(join(dir, 'config.json'))).mode & 0o777).toBe(0o644);
  const spec = JSON.parse(text) as RuntimeSpec;
  expect(runtimeSchemaErrors(spec)).toEqual([]);
  return { dir, spec };
}

function expectPathOnce(env: string[], path: string): void {
  expect(env.filter((e) => e.startsWith('PATH='))).toEqual([path]);
}

async function expectNoStaging(parent: string): Promise<void> {
  expect((await readdir(parent)).filter((n) => n.includes('.pull-unpack-'))).toEqual([]);
}

// ---- images as built ----

describe('image a: named user, workdir, entrypoint + cmd, env, volume, labels', () => {
  let dir: string;
  let spec: RuntimeSpec;
  beforeAll(async () => ({ dir, spec } = await bundle('a')));

  it('writes config.json from the image config', async () => {
    expect(spec.ociVersion).toBe('1.0.2-dev');
    expect(spec.root).toEqual({ path: 'rootfs', readonly: false });
    expect(spec.hostname).toBe('runc');
    expect(spec.process.terminal).toBe(false);
    expect(spec.process.args).toEqual(['/bin/sh', '-c', PROBE, 'probe-a', 'first arg', 'two  spaces']);
    expect(spec.process.cwd).toBe('/srv/app');
    expect(spec.process.env).toEqual(['PATH=/opt/tools/bin:/usr/bin:/bin', 'FOO=bar', 'HOME=/home/app']);
    expectPathOnce(spec.process.env, 'PATH=/opt/tools/bin:/usr/bin:/bin');
    expect(spec.process.user).toEqual({ uid: 1000, gid: 1000, additionalGids: [63, 50] });
    expect(spec.annotations).toEqual({
      'org.opencontainers.image.os': 'linux',
      'org.opencontainers.image.architecture': 'amd64',
      'org.opencontainers.image.created': '2024-01-01T00:00:00.000Z',
      'org.opencontainers.image.author': 'Label Author',
      'com.example.kind': 'probe',
      'org.opencontainers.image.ref.name': refs['a'],
      'pull-unpack.manifest.digest': digests['a'],
    });
    expect(spec.mounts.find((m) => m.destination === '/data')).toEqual({
      destination: '/data',
      type: 'tmpfs',
      source: 'tmpfs',
      options: [...VOLUME_TMPFS_OPTIONS, 'uid=1000', 'gid=1000'],
    });
    expect(spec.linux.namespaces.map((n) => n.type)).toEqual(['pid', 'network', 'ipc', 'uts', 'mount']);
    expect(spec.linux.uidMappings).toBeUndefined();
  });

  it('creates the volume mount point in the rootfs and nothing beside rootfs and config.json', async () => {
    expect((await lstat(join(dir, 'rootfs', 'data'))).isDirectory()).toBe(true);
    expect((await readdir(dir)).sort()).toEqual(['config.json', 'rootfs']);
    expect((await stat(join(dir, 'rootfs', 'srv', 'app'))).uid).toBe(1000);
  });

  it('runs under runc as app with its groups, cwd, env, argv and a writable tmpfs volume', async () => {
    const p = parseProbe(await runOk(dir));
    expect(p.uid).toBe(1000);
    expect(p.gid).toBe(1000);
    expect([...p.groups].sort((x, y) => x - y)).toEqual([50, 63, 1000]);
    expect(p.id).toMatch(/^uid=1000\(app\) gid=1000\(app\) groups=/);
    expect(p.id).toContain('63(audio)');
    expect(p.id).toContain('50(staff)');
    expect(p.cwd).toBe('/srv/app');
    expect(p.hostname).toBe('runc');
    expect(p.env).toEqual(expect.arrayContaining(['FOO=bar', 'HOME=/home/app', 'PATH=/opt/tools/bin:/usr/bin:/bin']));
    expectPathOnce(p.env, 'PATH=/opt/tools/bin:/usr/bin:/bin');
    expect(p.arg0).toBe('probe-a');
    expect(p.args).toEqual(['first arg', 'two  spaces']);
    expect(p.mounts).toHaveLength(1);
    expect(p.mounts[0]).toMatch(/^tmpfs \/data tmpfs rw,nosuid,nodev,relatime,.*uid=1000,gid=1000/);
    expect(p.data).toBe('writable');
  });
});

describe('images b, c, d: user forms and defaults', () => {
  it('b: User app:data runs as 1000:2000 with no supplementary groups', async () => {
    const { dir, spec } = await bundle('b');
    expect(spec.process.user).toEqual({ uid: 1000, gid: 2000 });
    expect(spec.process.args).toEqual(['/bin/sh', '-c', PROBE, 'probe-b']);
    expect(spec.process.cwd).toBe('/');
    expect(spec.process.env).toEqual([DEFAULT_PATH, 'HOME=/home/app']);
    const p = parseProbe(await runOk(dir));
    expect([p.uid, p.gid, p.groups]).toEqual([1000, 2000, [2000]]);
    // busybox prints no groups= when getgroups() is empty: runc cleared root's own groups.
    expect(p.id).toBe('uid=1000(app) gid=2000(data)');
    expect(p.arg0).toBe('probe-b');
    expect(p.mounts).toEqual([]);
  });

  it('c: User 1000:2000 (numeric) runs as 1000:2000, HOME from passwd', async () => {
    const { dir, spec } = await bundle('c');
    expect(spec.process.user).toEqual({ uid: 1000, gid: 2000 });
    expect(spec.process.env).toEqual([DEFAULT_PATH, 'HOME=/home/app']);
    const p = parseProbe(await runOk(dir));
    expect([p.uid, p.gid, p.groups]).toEqual([1000, 2000, [2000]]);
    expect(p.id).toBe('uid=1000(app) gid=2000(data)');
    expect(p.env).toContain('HOME=/home/app');
    expectPathOnce(p.env, DEFAULT_PATH);
  });

  it("d: no User, no Entrypoint runs Cmd as root in /, default PATH once, root's groups", async () => {
    const { dir, spec } = await bundle('d');
    expect(spec.process.user).toEqual({ uid: 0, gid: 0, additionalGids: [10] });
    expect(spec.process.args).toEqual(['/bin/sh', '-c', PROBE, 'probe-d']);
    expect(spec.process.env).toEqual([DEFAULT_PATH, 'HOME=/root']);
    expect(spec.mounts.map((m) => m.destination)).toEqual([
      '/proc',
      '/dev',
      '/dev/pts',
      '/dev/shm',
      '/dev/mqueue',
      '/sys',
      '/sys/fs/cgroup',
    ]);
    const p = parseProbe(await runOk(dir));
    expect([p.uid, p.gid]).toEqual([0, 0]);
    expect([...p.groups].sort((x, y) => x - y)).toEqual([0, 10]);
    expect(p.cwd).toBe('/');
    expectPathOnce(p.env, DEFAULT_PATH);
    expect(p.env).toContain('HOME=/root');
    expect(p.arg0).toBe('probe-d');
  });
});

describe('image e: a user the image does not define', () => {
  it('fails with USER_NOT_FOUND and leaves an existing DIR untouched', async () => {
    const dir = join(work, 'e-existing');
    await mkdir(dir);
    await writeFile(join(dir, 'keep.txt'), 'mine\n');
    const cli = await runCli(['--bundle', refs['e']!, dir, '--force', '--quiet']);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('user "ghost" not found in the image\'s /etc/passwd');
    expect(cli.stderr).toContain('hint: ');
    const err = await pullBundle(refs['e']!, dir, { force: true }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isPullUnpackError(err) && err.code).toBe('USER_NOT_FOUND');
    expect(await readdir(dir)).toEqual(['keep.txt']);
    expect(await readFile(join(dir, 'keep.txt'), 'utf8')).toBe('mine\n');
    await expectNoStaging(work);
  });

  it('fails without creating a missing DIR; --user app makes the same image work', async () => {
    const dir = join(work, 'e-missing');
    const cli = await runCli(['--bundle', refs['e']!, dir, '--quiet']);
    expect(cli.code).toBe(1);
    expect(existsSync(dir)).toBe(false);
    await expectNoStaging(work);
    const { spec } = await bundle('e', ['--user', 'app']);
    expect(spec.process.user).toEqual({ uid: 1000, gid: 1000, additionalGids: [63, 50] });
  });
});

// ---- overrides ----

describe('CLI overrides, each visible in the running container', () => {
  it('--env, --workdir, --user, --hostname and trailing args', async () => {
    const { dir, spec } = await bundle(
      'a',
      ['--env', 'FOO=baz', '-e', 'NEW=1', '--workdir', '/tmp', '--user', 'root', '--hostname', 'probe-host'],
      [PROBE, 'over-zero', 'x y'],
    );
    expect(spec.process.args).toEqual(['/bin/sh', '-c', PROBE, 'over-zero', 'x y']);
    expect(spec.process.env).toEqual(['PATH=/opt/tools/bin:/usr/bin:/bin', 'FOO=baz', 'NEW=1', 'HOME=/root']);
    expect(spec.process.cwd).toBe('/tmp');
    expect(spec.process.user).toEqual({ uid: 0, gid: 0, additionalGids: [10] });
    expect(spec.hostname).toBe('probe-host');
    // Root owns the volume, so no uid=/gid= options.
    expect(spec.mounts.find((m) => m.destination === '/data')?.options).toEqual(VOLUME_TMPFS_OPTIONS);
    const p = parseProbe(await runOk(dir));
    expect([p.uid, p.gid]).toEqual([0, 0]);
    expect(p.cwd).toBe('/tmp');
    expect(p.hostname).toBe('probe-host');
    expect(p.env).toEqual(expect.arrayContaining(['FOO=baz', 'NEW=1', 'HOME=/root']));
    expect(p.env).not.toContain('FOO=bar');
    expect(p.arg0).toBe('over-zero');
    expect(p.args).toEqual(['x y']);
  });

  it('--entrypoint with trailing args replaces both', async () => {
    const { dir, spec } = await bundle('a', ['--entrypoint', '/bin/echo'], ['hello', 'big  world']);
    expect(spec.process.args).toEqual(['/bin/echo', 'hello', 'big  world']);
    expect(await runOk(dir)).toBe('hello big  world\n');
  });

  it('--entrypoint alone (JSON) clears the image Cmd', async () => {
    const { dir, spec } = await bundle('a', ['--entrypoint', '["/bin/sh","-c","echo entry-only: $# $(id -un)"]']);
    expect(spec.process.args).toEqual(['/bin/sh', '-c', 'echo entry-only: $# $(id -un)']);
    expect(await runOk(dir)).toBe('entry-only: 0 app\n');
  });

  it('--tty sets process.terminal and TERM', async () => {
    const { spec } = await bundle('d', ['--tty']);
    expect(spec.process.terminal).toBe(true);
    expect(spec.process.env).toEqual([DEFAULT_PATH, 'TERM=xterm', 'HOME=/root']);
  });

  it('--volume-mode none: no volume mount, no mount point', async () => {
    const { dir, spec } = await bundle('a', ['--volume-mode', 'none']);
    expect(spec.mounts.map((m) => m.destination)).not.toContain('/data');
    expect(spec.mounts.filter((m) => m.type === 'tmpfs').map((m) => m.destination)).toEqual(['/dev', '/dev/shm']);
    expect(existsSync(join(dir, 'rootfs', 'data'))).toBe(false);
    const p = parseProbe(await runOk(dir));
    expect(p.mounts).toEqual([]);
    expect(p.data).toBe('unwritable');
  });

  it('a digest reference is recorded as given', async () => {
    const ref = `${host}/${repo}@${digests['d']!}`;
    const dir = join(work, 'by-digest');
    const result = await pullBundle(ref, dir);
    const spec = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as RuntimeSpec;
    expect(spec).toEqual(result.spec);
    expect(spec.annotations?.['org.opencontainers.image.ref.name']).toBe(ref);
    expect(spec.annotations?.['pull-unpack.manifest.digest']).toBe(digests['d']);
  });
});

// ---- rootless ----

describe('--rootless', () => {
  it('shapes config.json like `runc spec --rootless` and runs with runc --rootless=true', async () => {
    const { dir, spec } = await bundle('d', ['--rootless']);
    const uid = process.getuid!();
    const gid = process.getgid!();
    expect(spec.linux.uidMappings).toEqual([{ containerID: 0, hostID: uid, size: 1 }]);
    expect(spec.linux.gidMappings).toEqual([{ containerID: 0, hostID: gid, size: 1 }]);
    expect(spec.linux.namespaces.map((n) => n.type)).toEqual(['pid', 'ipc', 'uts', 'mount', 'user']);
    expect(spec.linux.resources).toBeUndefined();
    expect(spec.mounts.find((m) => m.destination === '/sys')).toEqual({
      destination: '/sys',
      type: 'none',
      source: '/sys',
      options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'],
    });
    // setgroups is denied in an unprivileged user namespace.
    expect(spec.process.user).toEqual({ uid: 0, gid: 0 });
    const p = parseProbe(await runOk(dir, true));
    expect([p.uid, p.gid]).toEqual([0, 0]);
    expect(p.groups).toEqual([0]);
    expect(p.arg0).toBe('probe-d');
  });

  it('refuses an image user other than 0:0 (runc could not switch to it); --user 0:0 runs', async () => {
    const dir = join(work, 'rootless-app');
    const cli = await runCli(['--bundle', refs['a']!, dir, '--rootless', '--quiet']);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('the user "app" is 1000:1000');
    expect(cli.stderr).toContain('--user 0:0');
    expect(existsSync(dir)).toBe(false);

    const { dir: ok, spec } = await bundle('a', ['--rootless', '--user', '0:0']);
    expect(spec.process.user).toEqual({ uid: 0, gid: 0 });
    expect(spec.mounts.find((m) => m.destination === '/data')?.options).toEqual(VOLUME_TMPFS_OPTIONS);
    const p = parseProbe(await runOk(ok, true));
    expect([p.uid, p.gid]).toEqual([0, 0]);
    expect(p.cwd).toBe('/srv/app');
    expect(p.args).toEqual(['first arg', 'two  spaces']);
    expect(p.mounts[0]).toMatch(/^tmpfs \/data tmpfs /);
    expect(p.data).toBe('writable');
  });
});

// ---- hostile or unusual images ----

describe('bundle path safety', () => {
  it('an /etc/passwd symlink pointing out of the rootfs is read inside it, never on the host', async () => {
    const outside = join(work, 'outside-passwd');
    await writeFile(outside, 'app:x:4242:4242::/escaped:/bin/sh\n');
    await push(
      'escape-passwd',
      { User: 'app', Cmd: ['/bin/id'] },
      baseEntries(
        [],
        [
          // rootfs/etc/passwd -> up through rootfs, the staging out/ dir, the staging dir, to `work`.
          { name: 'etc/passwd', type: 'symlink', linkname: '../../../../outside-passwd' },
          { name: 'etc/group', content: GROUP },
        ],
      ),
    );
    const err = await pullBundle(refs['escape-passwd']!, join(work, 'escape-passwd')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isPullUnpackError(err) && err.code).toBe('USER_NOT_FOUND');
  });

  it('an absolute /etc/passwd symlink is followed inside the rootfs', async () => {
    await push(
      'link-passwd',
      { User: 'app', Cmd: ['/bin/sh', '-c', PROBE] },
      baseEntries(
        [
          { name: 'usr/', type: 'directory' },
          { name: 'usr/lib/', type: 'directory' },
          { name: 'usr/lib/passwd', content: 'app:x:1234:1000:App:/home/app:/bin/sh\n' },
        ],
        [
          { name: 'etc/passwd', type: 'symlink', linkname: '/usr/lib/passwd' },
          { name: 'etc/group', content: GROUP },
        ],
      ),
    );
    const { dir, spec } = await bundle('link-passwd');
    expect(spec.process.user).toEqual({ uid: 1234, gid: 1000, additionalGids: [63, 50] });
    expect(parseProbe(await runOk(dir)).uid).toBe(1234);
  });

  it('a volume whose path is a symlink out of the rootfs gets its mount point inside it', async () => {
    await push(
      'escape-volume',
      { Volumes: { '/data': {} }, Cmd: ['/bin/sh', '-c', PROBE] },
      baseEntries([{ name: 'data', type: 'symlink', linkname: '../../../../victim/dir' }]),
    );
    const { dir } = await bundle('escape-volume');
    expect(existsSync(join(work, 'victim'))).toBe(false);
    expect((await lstat(join(dir, 'rootfs', 'victim', 'dir'))).isDirectory()).toBe(true);
    expect((await lstat(join(dir, 'rootfs', 'data'))).isSymbolicLink()).toBe(true);
    const p = parseProbe(await runOk(dir));
    expect(p.data).toBe('writable');
  });

  it('a volume on a path that is a file in the image fails as INVALID_CONFIG, DIR not created', async () => {
    await push('file-volume', { Volumes: { '/etc/passwd/sub': {} }, Cmd: ['/bin/sh'] });
    const dir = join(work, 'file-volume');
    const err = await pullBundle(refs['file-volume']!, dir).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PullUnpackError);
    expect((err as PullUnpackError).code).toBe('INVALID_CONFIG');
    expect((err as PullUnpackError).message).toContain('/etc/passwd/sub');
    expect(existsSync(dir)).toBe(false);
    await expectNoStaging(work);
  });

  it('an /etc/passwd that is a FIFO does not hang the pull', async () => {
    await push(
      'fifo-passwd',
      { Cmd: ['/bin/sh', '-c', PROBE] },
      baseEntries(
        [],
        [
          { name: 'etc/passwd', type: 'fifo' },
          { name: 'etc/group', content: GROUP },
        ],
      ),
    );
    const warnings: string[] = [];
    const dir = join(work, 'fifo-passwd');
    const result = await Promise.race([
      pullBundle(refs['fifo-passwd']!, dir, { onEvent: (e) => e.type === 'warning' && warnings.push(e.message) }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('pullBundle hung on a FIFO /etc/passwd')), 10_000).unref()),
    ]);
    expect(result.spec.process.user).toEqual({ uid: 0, gid: 0 });
    expect(warnings.some((w) => w.includes('/etc/passwd') && w.includes('not a regular file'))).toBe(true);
    // Not run: runc 1.1.5 itself opens the container's /etc/passwd (GetExecUserPath) and blocks
    // on the FIFO forever, whatever config.json says.
  });

  it('an /etc/group over MAX_ACCOUNT_FILE_BYTES is TOO_LARGE, not read into memory', async () => {
    const huge = Buffer.alloc(MAX_ACCOUNT_FILE_BYTES + 1, 0x23); // '#': all comment
    await push(
      'huge-group',
      { Cmd: ['/bin/sh'] },
      baseEntries(
        [],
        [
          { name: 'etc/passwd', content: PASSWD },
          { name: 'etc/group', content: huge },
        ],
      ),
    );
    const dir = join(work, 'huge-group');
    const err = await pullBundle(refs['huge-group']!, dir).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isPullUnpackError(err) && err.code).toBe('TOO_LARGE');
    expect(existsSync(dir)).toBe(false);
  });
});

describe('the summary after --bundle says how to run it', () => {
  /** The `run it:` line of a --bundle pull, split into words (the test paths need no quoting). */
  async function runHint(tag: string, extra: string[]): Promise<{ dir: string; words: string[] }> {
    const dir = join(work, `${tag}-hint-${++runSeq}`);
    const cli = await runCli(['--bundle', refs[tag]!, dir, ...extra]);
    expect(cli.code).toBe(0);
    const lines = cli.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain(`-> ${dir} (`);
    const hint = /^run it: (.*)$/.exec(lines[1]!);
    expect(hint).not.toBeNull();
    return { dir, words: hint![1]!.split(' ') };
  }

  /** Runs the hinted runc command as it is (root runs these tests), then deletes the container. */
  async function runWords(words: string[]): Promise<RuncResult> {
    const global = words.slice(1, words.indexOf('run'));
    try {
      return await spawnCapture('runc', words.slice(1));
    } finally {
      await spawnCapture('runc', [...global, 'delete', '-f', words.at(-1)!]);
    }
  }

  it('a bundle made as root for root: "sudo runc run --bundle DIR NAME", which runs it', async () => {
    const { dir, words } = await runHint('d', []);
    const name = refs['d']!.split('/').at(-1)!.replace(/:.*$/, '');
    expect(words).toEqual(['sudo', 'runc', 'run', '--bundle', dir, name]);
    // sudo itself is not installed here, and root needs none: the words after it run the bundle.
    const r = await runWords(words.slice(1));
    expect(r.code).toBe(0);
    expect(parseProbe(r.stdout).arg0).toBe('probe-d');
  });

  it('a rootless bundle: "runc run --bundle DIR NAME" without sudo or a --rootless flag, which runs it', async () => {
    const { dir, words } = await runHint('d', ['--rootless']);
    expect(words.slice(0, 4)).toEqual(['runc', 'run', '--bundle', dir]);
    const r = await runWords(words);
    expect(r.code).toBe(0);
    expect(parseProbe(r.stdout).arg0).toBe('probe-d');
  });

  it('--quiet and --json print no run hint', async () => {
    const quiet = await runCli(['--bundle', refs['d']!, join(work, `d-quiet-${++runSeq}`), '--quiet']);
    expect(quiet.stdout).toBe('');
    const json = await runCli(['--bundle', refs['d']!, join(work, `d-json-${++runSeq}`), '--json']);
    expect(json.stdout).not.toContain('run it:');
    expect(JSON.parse(json.stdout.trimEnd().split('\n').at(-1)!)).toMatchObject({ type: 'done', rootless: false });
  });
});

describe('the library and the CLI share the name tty', () => {
  it("pullBundle's tty is the CLI's --tty, and terminal (deprecated) still sets process.terminal", async () => {
    const spec = async (settings: Parameters<typeof pullBundle>[2]): Promise<RuntimeSpec> => {
      const dir = join(work, `tty-${++runSeq}`);
      await pullBundle(refs['d']!, dir, settings);
      return JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as RuntimeSpec;
    };
    expect((await spec({ tty: true })).process.terminal).toBe(true);
    expect((await spec({ terminal: true })).process.terminal).toBe(true);
    expect((await spec({ tty: false, terminal: true })).process.terminal).toBe(false);
    expect((await spec({})).process.terminal).toBe(false);
    expect((await bundle('d', ['--tty'])).spec.process.terminal).toBe(true);
  });
});
