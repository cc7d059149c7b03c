/**
 * Fixtures for the output writers (test/output.test.ts): a root filesystem holding every kind
 * of entry and metadata a flattened image can have, and a tiny image (manifest, config, one
 * gzip layer) built in code.
 */
import { createHash } from 'node:crypto';
import { chmod, chown, link, lutimes, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { MediaType } from '../../src/image/oci.js';
import { buildTar, run, type TarEntrySpec } from './tar.js';

/** The 20-byte security.capability value of `setcap cap_net_raw+ep` (VFS_CAP_REVISION_2). */
export const CAP_NET_RAW_EP = Buffer.from('AQAAAgAgAAAAAAAAAAAAAAAAAAA=', 'base64');
/** 150 bytes: longer than ustar's 100-byte name field. */
export const LONG_BASENAME = `${'n'.repeat(146)}.txt`;
/** A name that is not UTF-8. */
export const NON_UTF8_NAME = Buffer.from([0x6c, 0x61, 0x74, 0x69, 0x6e, 0x31, 0x2d, 0xe9, 0xff]);
/** Above ustar's 7 octal digits (2097151): needs PAX (and base-256) fields. */
export const BIG_UID = 3_000_000;
export const BIG_GID = 4_000_000;
/** Every entry's mtime unless a test entry sets its own: 2020-01-02T03:04:05Z. */
export const BASE_MTIME = 1577934245;

const DEEP = join('deep', 'a'.repeat(60), 'b'.repeat(60));

/** Special mtimes: sub-second, before 1970, after ustar's 11 octal digits (year 2242). */
const MTIMES: Record<string, number> = {
  'times/subsecond': 1600000000.123456,
  'times/before-1970': -86400.25,
  'times/year-2300': 10_413_792_000,
};

/**
 * Fills the empty directory `root` (must run as root: devices, owners, trusted.* and
 * security.* xattrs). Names of the hardlink group: bin/hard-a, lib/hard-b, lib/hard-c.
 */
export async function buildRichTree(root: string): Promise<void> {
  for (const dir of ['bin', 'lib', 'etc', 'dev', 'run', 'names', 'times', DEEP, 'locked', 'usr/lib'])
    await mkdir(join(root, dir), { recursive: true });
  await file(root, 'bin/su', 'setuid program', 0o4755);
  await file(root, 'bin/wall', 'setgid program', 0o2711);
  await file(root, 'bin/hard-a', 'one inode, three names', 0o750);
  await link(join(root, 'bin/hard-a'), join(root, 'lib/hard-b'));
  await link(join(root, 'bin/hard-a'), join(root, 'lib/hard-c'));
  // A hardlink group whose first name is longer than ustar's linkname field.
  await file(root, join(DEEP, 'linked-target'), 'long-named inode');
  await link(join(root, DEEP, 'linked-target'), join(root, 'lib/z-link-to-deep'));
  await file(root, 'empty', '');
  await file(root, 'zero-mode', 'nobody may read this', 0o000);
  await file(root, 'usr/lib/os-release', 'ID=test\n');
  await symlink('../usr/lib/os-release', join(root, 'etc/os-release'));
  await symlink('/nonexistent/absolute/target', join(root, 'etc/dangling'));
  await symlink(`../${'t'.repeat(120)}/target`, join(root, 'etc/long-target'));
  await mkdir(join(root, 'tmp'), { mode: 0o1777 });
  await chmod(join(root, 'tmp'), 0o1777);
  await mkdir(join(root, 'shared'));
  await chmod(join(root, 'shared'), 0o2775);
  await chown(join(root, 'shared'), 1000, 1000);
  await file(root, 'owned', 'by a big uid', 0o640);
  await chown(join(root, 'owned'), BIG_UID, BIG_GID);
  await file(root, 'locked/inside', 'in a 000 directory');
  await run('mknod', ['-m', '0666', join(root, 'dev/null'), 'c', '1', '3']);
  await run('mknod', ['-m', '0660', join(root, 'dev/loop0'), 'b', '7', '0']);
  await run('mknod', ['-m', '0600', join(root, 'dev/big'), 'c', '4095', '1048575']);
  await run('mkfifo', ['-m', '0620', join(root, 'run/initctl')]);
  await file(root, 'bin/ping', 'needs raw sockets', 0o755);
  await run('setfattr', ['-n', 'security.capability', '-v', `0s${CAP_NET_RAW_EP.toString('base64')}`, join(root, 'bin/ping')]);
  await file(root, 'xattrs', 'has attributes');
  await run('setfattr', ['-n', 'user.binary', '-v', '0x00ff80fe0a3d', join(root, 'xattrs')]);
  await run('setfattr', ['-n', 'user.empty', join(root, 'xattrs')]);
  await run('setfattr', ['-n', 'user.text', '-v', 'héllo wörld', join(root, 'xattrs')]);
  await run('setfattr', ['-n', 'trusted.on-dir', '-v', 'dir value', join(root, 'etc')]);
  await run('setfattr', ['-h', '-n', 'trusted.on-link', '-v', 'link value', join(root, 'etc/os-release')]);
  await file(root, 'names/café-ü-日本.txt', 'non-ASCII name');
  await file(root, join('names', LONG_BASENAME), 'long name');
  // Byte order and JS string (UTF-16) order disagree on these two: U+FF21 sorts first by bytes.
  await file(root, 'names/\u{ff21}-fullwidth', 'U+FF21');
  await file(root, 'names/\u{1f600}-emoji', 'U+1F600');
  await writeFile(Buffer.concat([Buffer.from(join(root, 'names/')), NON_UTF8_NAME]), 'latin-1 name');
  await file(root, join(DEEP, 'file-in-deep-dir'), 'path longer than 100 bytes that ustar splits');
  await file(root, join(DEEP, LONG_BASENAME), 'path longer than 255 bytes');
  for (const name of Object.keys(MTIMES)) await file(root, name, name);
  await chmod(join(root, 'locked'), 0o000);
  await setTimes(Buffer.from(root), '');
}

async function file(root: string, name: string, content: string, mode = 0o644): Promise<void> {
  const path = join(root, name);
  await writeFile(path, content);
  await chmod(path, mode);
}

/** Sets every entry's times, children before their directory (creating a name changes its mtime). */
async function setTimes(dir: Buffer, rel: string): Promise<void> {
  for (const name of await readdir(dir, { encoding: 'buffer' })) {
    const path = Buffer.concat([dir, Buffer.from('/'), name]);
    const childRel = rel === '' ? name.toString('utf8') : `${rel}/${name.toString('utf8')}`;
    const entries = await readdir(path, { encoding: 'buffer' }).catch(() => null);
    if (entries !== null) await setTimes(path, childRel);
    const t = MTIMES[childRel] ?? BASE_MTIME;
    // Node turns negative times into "now": touch sets them.
    if (t < 0) await run('touch', ['-h', '-d', `@${t}`, path.toString()]);
    else await lutimes(path, t, t);
  }
}

export interface TinyImage {
  manifestBytes: Buffer;
  manifestDigest: string;
  configBytes: Buffer;
  configDigest: string;
  layerBytes: Buffer;
  layerDigest: string;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A linux/amd64 image with one gzip layer of `entries`; `docker` picks Docker schema 2 media types. */
export async function buildTinyImage(entries: TarEntrySpec[], options: { docker?: boolean } = {}): Promise<TinyImage> {
  const tar = await buildTar(entries);
  const layerBytes = gzipSync(tar);
  const config = {
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'], Env: ['PATH=/usr/bin:/bin'] },
    rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const docker = options.docker === true;
  const manifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: { mediaType: docker ? MediaType.DockerConfig : MediaType.OciConfig, digest: sha256(configBytes), size: configBytes.length },
    layers: [
      { mediaType: docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip, digest: sha256(layerBytes), size: layerBytes.length },
    ],
  };
  // Pretty-printed on purpose: the layout must keep these exact bytes, not re-serialize them.
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 3));
  return {
    manifestBytes,
    manifestDigest: sha256(manifestBytes),
    configBytes,
    configDigest: sha256(configBytes),
    layerBytes,
    layerDigest: sha256(layerBytes),
  };
}
