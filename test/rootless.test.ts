/**
 * Rootless bundles with subordinate ids (issue 14): a real unprivileged user (useradd), with and
 * then without ranges in /etc/subuid and /etc/subgid (restored afterwards), runs the built CLI
 * and then `runc run` of the bundle itself (runuser); the container prints `id` and the test
 * reads it, and the host owners of the rootfs are checked against the subordinate ranges.
 * The pure parts (the subuid file, the id maps) are tested first, as any user.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chown, lstat, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSubordinateFile } from '../src/outputs/subids.js';
import { rootlessMappings, toRuntimeConfig } from '../src/outputs/runtime-config.js';
import { hostIdOf, OwnerRecord } from '../src/apply/owners.js';
import { pushImage, tarLayer, type TarEntry } from '../testdata/lib/image-builder.mjs';
import { BIN } from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';

const run = promisify(execFile);
const IS_ROOT = process.getuid?.() === 0;
const NOT_ROOT = 'needs root: it adds a user (useradd) and edits /etc/subuid and /etc/subgid; CI runs the suite as root';
const RANGE = 65536;

describe('subordinate ids: the files and the maps', () => {
  it('reads the ranges of a user by name or uid, in file order, skipping malformed and empty ones', () => {
    const text = ['alice:100000:65536', 'bob:200000:10', '1001:300000:5', 'bob:x:1', 'bob:400000:0', ' bob:500000:20 ', ''].join('\n');
    expect(parseSubordinateFile(text, { name: 'bob', uid: 1001 })).toEqual([
      { start: 200000, count: 10 },
      { start: 300000, count: 5 },
      { start: 500000, count: 20 },
    ]);
    expect(parseSubordinateFile(undefined, { name: 'bob', uid: 1001 })).toEqual([]);
  });

  it('maps container 0 to the user and 1..N to the ranges in order, as podman does', () => {
    const maps = rootlessMappings({
      uid: 1001,
      gid: 1002,
      subordinate: {
        uids: [
          { start: 100000, count: 10 },
          { start: 200000, count: 5 },
        ],
        gids: [{ start: 300000, count: 65536 }],
      },
    });
    expect(maps.uidMappings).toEqual([
      { containerID: 0, hostID: 1001, size: 1 },
      { containerID: 1, hostID: 100000, size: 10 },
      { containerID: 11, hostID: 200000, size: 5 },
    ]);
    expect(maps.gidMappings).toEqual([
      { containerID: 0, hostID: 1002, size: 1 },
      { containerID: 1, hostID: 300000, size: 65536 },
    ]);
    expect([0, 1, 10, 11, 15, 16].map((id) => hostIdOf(maps.uidMappings, id))).toEqual([1001, 100000, 100009, 200000, 200004, undefined]);
  });

  it('a rootless config runs the image user when the ranges map it, keeps its volume ownership, and refuses one they do not', () => {
    const image = {
      os: 'linux',
      config: { User: 'app', Cmd: ['sh'], Volumes: { '/data': {} } },
      rootfs: { type: 'layers', diff_ids: [] },
    };
    const passwd = 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n';
    const subordinate = { uids: [{ start: 100000, count: RANGE }], gids: [{ start: 100000, count: RANGE }] };
    const spec = toRuntimeConfig(image, { passwd, rootless: { uid: 1001, gid: 1001, subordinate } });
    expect(spec.process.user).toEqual({ uid: 1000, gid: 1000 });
    expect(spec.mounts.find((m) => m.destination === '/data')?.options).toEqual(expect.arrayContaining(['uid=1000', 'gid=1000']));
    const small = { uids: [{ start: 100000, count: 100 }], gids: [{ start: 100000, count: 100 }] };
    expect(() => toRuntimeConfig(image, { passwd, rootless: { uid: 1001, gid: 1001, subordinate: small } })).toThrow(
      /maps container uids 0-100 and gids 0-100, but the user "app" is 1000:1000/,
    );
    expect(() =>
      toRuntimeConfig(image, { passwd, rootless: { uid: 1001, gid: 1001, noSubordinate: '/etc/subuid has no range for me' } }),
    ).toThrow(expect.objectContaining({ hint: expect.stringContaining('(now: /etc/subuid has no range for me)') }));
  });

  it('forgets the owners of removed paths and of everything below a removed directory', () => {
    const r = new OwnerRecord();
    r.set('/r/a', 1, 1);
    r.set('/r/a/b', 2, 2);
    r.set('/r/ab', 3, 3);
    r.set('/r/c', 4, 4);
    r.set('/r/c', 0, 0);
    r.removed('/r/a');
    expect([...r.entries()]).toEqual([['/r/ab', { uid: 3, gid: 3 }]]);
  });
});

// ---- a real unprivileged user, real newuidmap and runc ----

const USER = `purl${process.pid % 100000}`;
let work: string;
let userUid: number;
let ranges: { uid: number; gid: number };
let saved: Map<string, string | undefined>;
const refs: Record<string, string> = {};

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `argv` as USER (runuser), in `work`, with a small environment of its own. */
function asUser(argv: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const env = { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: work, NO_COLOR: '1' };
    const child = spawn('runuser', ['-u', USER, '--', 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv], {
      cwd: work,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const pullAs = (tag: string, dir: string, extra: string[] = []): Promise<Result> =>
  asUser([process.execPath, BIN, '--quiet', '--cache-dir', join(work, 'cache'), '--bundle', ...extra, refs[tag]!, dir]);

let runSeq = 0;
/** `runc run` of the bundle as USER (runc --root in the work dir: no XDG_RUNTIME_DIR here). */
async function runcAs(dir: string): Promise<Result> {
  const id = `pu-rootless-${process.pid}-${++runSeq}`;
  try {
    return await asUser(['runc', '--root', join(work, 'runc'), 'run', '--bundle', dir, id]);
  } finally {
    await asUser(['runc', '--root', join(work, 'runc'), 'delete', '-f', id]);
  }
}

/** Appends `USER:START:65536` to /etc/subuid and /etc/subgid, after every range already there. */
async function addRanges(): Promise<void> {
  const next = (file: string): number => {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    const ends = text.split('\n').flatMap((l) => {
      const [, start, count] = l.split(':');
      return start && count ? [Number(start) + Number(count)] : [];
    });
    return Math.max(200000, ...ends);
  };
  ranges = { uid: next('/etc/subuid'), gid: next('/etc/subgid') };
  for (const [file, start] of [
    ['/etc/subuid', ranges.uid],
    ['/etc/subgid', ranges.gid],
  ] as const) {
    await writeFile(file, `${saved.get(file) ?? ''}${USER}:${start}:${RANGE}\n`);
  }
}

/** A busybox image with bob (1000) and nobody (65534), files owned by bob:wheel, a setuid file and a root:shadow file. */
function busyboxEntries(extra: TarEntry[] = []): TarEntry[] {
  return [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
    ...['sh', 'id', 'stat', 'ls'].map((a): TarEntry => ({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' })),
    { name: 'etc/', type: 'directory' },
    {
      name: 'etc/passwd',
      content: 'root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n',
    },
    { name: 'etc/group', content: 'root:x:0:\nwheel:x:10:bob\nbob:x:1000:\nshadow:x:42:\nnogroup:x:65534:\n' },
    { name: 'etc/shadow', content: 'root:*::0:::::\n', mode: 0o640, gid: 42 },
    { name: 'home/', type: 'directory' },
    { name: 'home/bob/', type: 'directory', uid: 1000, gid: 10, mode: 0o700 },
    { name: 'home/bob/notes', content: 'mine\n', uid: 1000, gid: 10, mode: 0o600 },
    { name: 'usr/', type: 'directory' },
    { name: 'usr/bin/', type: 'directory' },
    { name: 'usr/bin/setuid-tool', content: '#!/bin/sh\n', uid: 1000, gid: 10, mode: 0o4755 },
    ...extra,
  ];
}

describe.skipIf(!IS_ROOT)(`rootless bundles run by an unprivileged user (skipped unless root: ${NOT_ROOT})`, () => {
  beforeAll(async () => {
    for (const tool of ['/usr/bin/newuidmap', '/usr/bin/newgidmap', '/usr/sbin/runc', '/bin/busybox']) {
      if (!existsSync(tool)) throw new Error(`${tool} is missing: scripts/setup.sh installs uidmap, runc and busybox-static`);
    }
    saved = new Map();
    for (const file of ['/etc/subuid', '/etc/subgid']) saved.set(file, existsSync(file) ? await readFile(file, 'utf8') : undefined);
    // -K SUB_*_COUNT=0: useradd adds no ranges of its own; the tests add them when they want them.
    await run('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', '-K', 'SUB_UID_COUNT=0', '-K', 'SUB_GID_COUNT=0', USER]);
    userUid = Number((await run('id', ['-u', USER])).stdout.trim());
    work = await mkdtemp(join(tmpdir(), 'pu-rootless-'));
    await chown(work, userUid, userUid);
    const { host, url } = testRegistry();
    const repo = uniqueRepo('rootless');
    const push = async (tag: string, config: Record<string, unknown>, extra: TarEntry[] = []): Promise<void> => {
      await pushImage(url, repo, tag, { layers: [{ tar: await tarLayer(busyboxEntries(extra)) }], config: { config } });
      refs[tag] = `${host}/${repo}:${tag}`;
    };
    const probe = 'id; stat -c "%u:%g %a %n" /home/bob /home/bob/notes /usr/bin/setuid-tool /etc/shadow';
    await push('bob', { User: 'bob:wheel', WorkingDir: '/home/bob', Cmd: ['/bin/sh', '-c', probe] });
    await push('nobody', { User: 'nobody', Cmd: ['/bin/id'] });
    await push('far', { Cmd: ['/bin/id'] }, [{ name: 'far-away', content: 'x\n', uid: 70000, gid: 70000 }]);
  });

  afterAll(async () => {
    for (const [file, text] of saved ?? []) {
      if (text === undefined) await rm(file, { force: true });
      else await writeFile(file, text);
    }
    await run('userdel', [USER]).catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("without subordinate ranges: today's refusal of a non-root image user, saying what is missing", async () => {
    const dir = join(work, 'no-ranges');
    const r = await pullAs('bob', dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('a rootless bundle maps only container uid/gid 0');
    expect(r.stderr).toContain(`/etc/subuid has no range for ${USER}`);
    expect(existsSync(dir)).toBe(false);
  });

  describe('with subordinate ranges for the user', () => {
    beforeAll(addRanges);

    it('with ranges: config.json maps 0 -> the user and 1..N -> the range, the rootfs has the mapped owners, and runc runs bob:wheel', async () => {
      const dir = join(work, 'bob');
      const r = await pullAs('bob', dir);
      expect(r).toMatchObject({ code: 0, stderr: '' });
      const spec = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as {
        process: { user: unknown };
        linux: { uidMappings: unknown; gidMappings: unknown };
      };
      expect(spec.process.user).toEqual({ uid: 1000, gid: 10 });
      expect(spec.linux.uidMappings).toEqual([
        { containerID: 0, hostID: userUid, size: 1 },
        { containerID: 1, hostID: ranges.uid, size: RANGE },
      ]);
      expect(spec.linux.gidMappings).toEqual([
        { containerID: 0, hostID: userUid, size: 1 },
        { containerID: 1, hostID: ranges.gid, size: RANGE },
      ]);
      // Container id U >= 1 is host id START + U - 1; container root is the user.
      const owner = async (path: string) => {
        const st = await lstat(join(dir, 'rootfs', path));
        return [st.uid, st.gid, (st.mode & 0o7777).toString(8)];
      };
      expect(await owner('home/bob')).toEqual([ranges.uid + 999, ranges.gid + 9, '700']);
      expect(await owner('home/bob/notes')).toEqual([ranges.uid + 999, ranges.gid + 9, '600']);
      expect(await owner('usr/bin/setuid-tool')).toEqual([ranges.uid + 999, ranges.gid + 9, '4755']);
      expect(await owner('etc/shadow')).toEqual([userUid, ranges.gid + 41, '640']);
      expect(await owner('bin/busybox')).toEqual([userUid, userUid, '755']);

      const c = await runcAs(dir);
      expect({ code: c.code, stderr: c.stderr.replace(/^.*unable to get oom kill count.*\n/m, '') }).toEqual({ code: 0, stderr: '' });
      const lines = c.stdout.trim().split('\n');
      expect(lines[0]).toMatch(/^uid=1000\(bob\) gid=10\(wheel\)/);
      expect(lines.slice(1)).toEqual([
        '1000:10 700 /home/bob',
        '1000:10 600 /home/bob/notes',
        '1000:10 4755 /usr/bin/setuid-tool',
        '0:42 640 /etc/shadow',
      ]);

      // The user cannot remove files owned by subordinate ids, but --force replaces the bundle.
      const again = await pullAs('bob', dir, ['--force']);
      expect(again).toMatchObject({ code: 0, stderr: '' });
      expect((await asUser(['ls', '-A', work])).stdout.split('\n').filter((n) => n.startsWith('.bob.'))).toEqual([]);
    });

    it('the summary says how to run the bundle (runc --root, with no XDG_RUNTIME_DIR), and that command runs it as the user', async () => {
      const dir = join(work, 'hinted');
      const r = await asUser([process.execPath, BIN, '--cache-dir', join(work, 'cache'), '--bundle', refs['nobody']!, dir]);
      expect(r).toMatchObject({ code: 0, stderr: '' });
      const hint = /^run it: (.*)$/m.exec(r.stdout);
      const name = refs['nobody']!.split('/').at(-1)!.replace(/:.*$/, '');
      expect(hint?.[1]).toBe(`runc --root /tmp/runc-${userUid} run --bundle ${dir} ${name}`);
      const words = hint![1]!.split(' ');
      try {
        const c = await asUser(words);
        expect(c.code).toBe(0);
        expect(c.stdout).toMatch(/^uid=65534\(nobody\) gid=65534\(nogroup\)/);
      } finally {
        await asUser(['runc', '--root', `/tmp/runc-${userUid}`, 'delete', '-f', name]);
        await rm(`/tmp/runc-${userUid}`, { recursive: true, force: true });
      }
    });

    it('runs an image whose User is nobody (65534, inside a 65536-id range)', async () => {
      const dir = join(work, 'nobody');
      expect(await pullAs('nobody', dir)).toMatchObject({ code: 0, stderr: '' });
      const c = await runcAs(dir);
      expect(c.code).toBe(0);
      expect(c.stdout).toMatch(/^uid=65534\(nobody\) gid=65534\(nogroup\)/);
    });

    it('a staging directory of a killed rootless pull that the user cannot remove is named with the way to remove it, and the pull goes on', async () => {
      const dir = join(work, 'swept');
      const stale = join(work, '.swept.pull-unpack-killed');
      const dead = spawn('true');
      await new Promise((resolve) => dead.on('close', resolve));
      await mkdir(join(stale, 'out', 'rootfs', 'home', 'bob'), { recursive: true });
      await writeFile(join(stale, 'owner'), `${dead.pid}\n${hostname()}\n`);
      await writeFile(join(stale, 'out', 'rootfs', 'home', 'bob', 'notes'), 'mine\n');
      await run('chown', ['-R', `${userUid}:${userUid}`, stale]);
      await chown(join(stale, 'out', 'rootfs', 'home', 'bob'), ranges.uid + 999, ranges.gid + 9);
      const r = await asUser([process.execPath, BIN, '--cache-dir', join(work, 'cache'), '--bundle', refs['nobody']!, dir]);
      expect(r.code).toBe(0);
      const quoted = `'${stale}'`;
      expect(r.stderr).toBe(
        `warning: cannot remove ${stale}, left by an interrupted pull (EPERM): remove it with unshare --map-root-user --map-auto rm -rf ${quoted}\n`,
      );
      expect(existsSync(join(dir, 'config.json'))).toBe(true);
      expect((await asUser(['unshare', '--map-root-user', '--map-auto', 'rm', '-rf', stale])).code).toBe(0);
      expect(existsSync(stale)).toBe(false);
    });

    it('hostile: a directory replaced by a symlink out of the rootfs in a later layer does not carry its owners outside', async () => {
      // Layer 1 makes escape/victim owned by 1000; layer 2 replaces escape with a symlink to a
      // directory of the user's outside the bundle holding a file of the same name. The owners
      // recorded under escape/ must go with it, never reach work/outside/victim.
      const outside = join(work, 'outside');
      await mkdir(outside);
      await writeFile(join(outside, 'victim'), "the user's own file\n");
      await run('chown', ['-R', `${userUid}:${userUid}`, outside]);
      const { host, url } = testRegistry();
      const repo = uniqueRepo('rootless-hostile');
      const layer1 = busyboxEntries([
        { name: 'escape/', type: 'directory', uid: 1000, gid: 1000 },
        { name: 'escape/victim', content: 'x\n', uid: 1000, gid: 1000 },
      ]);
      const layer2 = [{ name: 'escape', type: 'symlink' as const, linkname: '../../../outside' }];
      await pushImage(url, repo, 'v1', {
        layers: [{ tar: await tarLayer(layer1) }, { tar: await tarLayer(layer2) }],
        config: { config: { Cmd: ['/bin/id'] } },
      });
      const dir = join(work, 'hostile');
      expect(
        await asUser([process.execPath, BIN, '--quiet', '--cache-dir', join(work, 'cache'), '--bundle', `${host}/${repo}:v1`, dir]),
      ).toMatchObject({
        code: 0,
        stderr: '',
      });
      const victim = await lstat(join(outside, 'victim'));
      expect([victim.uid, victim.gid]).toEqual([userUid, userUid]);
      expect((await lstat(outside)).uid).toBe(userUid);
      expect((await lstat(join(dir, 'rootfs', 'escape'))).isSymbolicLink()).toBe(true);
      const spec = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { linux: { uidMappings: unknown[] } };
      expect(spec.linux.uidMappings).toHaveLength(2);
    });

    it('refuses a file owned by an id the range does not reach, and leaves nothing behind', async () => {
      const dir = join(work, 'far');
      const r = await pullAs('far', dir);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("the image's /far-away is owned by uid 70000, outside the 65537 container uids the bundle maps");
      expect(existsSync(dir)).toBe(false);
      expect((await asUser(['ls', '-A', work])).stdout.split('\n').filter((n) => n.startsWith('.far.'))).toEqual([]);
    });
  });
});
