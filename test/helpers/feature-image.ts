/**
 * A three-layer image that exercises what a layer applier must get right: special modes,
 * owners, binary and user xattrs, FIFOs, device nodes, symlinks, hardlinks (within and across
 * layers), whiteouts, an opaque directory, type changes, and metadata changes of a directory.
 * Shared by test/pull.test.ts (expected outcomes checked exactly) and test/differential.test.ts
 * (compared against umoci).
 */
import { createHash } from 'node:crypto';
import {
  pushImage,
  tarLayer,
  FIXED_MTIME,
  type ImageFormat,
  type LayerCompression,
  type PushedImage,
  type TarEntry,
} from '../../testdata/lib/image-builder.mjs';

/**
 * A real `setcap cap_net_raw+ep` value: vfs_cap_data revision 2 (magic 0x02000001 with the
 * effective flag), permitted low word 1 << 13 (CAP_NET_RAW), inheritable 0, high words 0.
 * `getfattr -n security.capability -e base64` on such a file prints exactly this.
 */
export const CAP_NET_RAW_EP_BASE64 = 'AQAAAgAgAAAAAAAAAAAAAAAAAAA=';

/** PAX values are written as (UTF-8) strings: every byte of the capability is < 0x80, so latin1 = UTF-8. */
const CAP_PAX_VALUE = Buffer.from(CAP_NET_RAW_EP_BASE64, 'base64').toString('latin1');

/** 2.5 MB of deterministic incompressible bytes: a file written in several batches. */
export function bigContent(): Buffer {
  const blocks: Buffer[] = [];
  let seed = Buffer.from('pull-unpack big file');
  for (let i = 0; i < (2.5 * 1024 * 1024) / 32; i++) {
    seed = createHash('sha256').update(seed).digest();
    blocks.push(seed);
  }
  return Buffer.concat(blocks);
}

export const LAYER1: TarEntry[] = [
  { name: 'etc/', type: 'directory' },
  { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
  { name: 'etc/removed.txt', content: 'to be whited out\n' },
  { name: 'etc/abs-link', type: 'symlink', linkname: '/etc/passwd' },
  { name: 'etc/dangling', type: 'symlink', linkname: '/does/not/exist' },
  {
    name: 'etc/userattr.txt',
    content: 'has user xattrs\n',
    pax: { 'SCHILY.xattr.user.comment': 'hello xattr', 'SCHILY.xattr.user.mime_type': 'text/plain' },
  },
  { name: 'usr/', type: 'directory' },
  { name: 'usr/bin/', type: 'directory' },
  { name: 'usr/bin/suid-root', mode: 0o4755, content: '#!/bin/sh\necho suid\n' },
  { name: 'usr/bin/sgid-games', mode: 0o2755, gid: 60, content: '#!/bin/sh\necho sgid\n' },
  { name: 'usr/bin/ping', mode: 0o755, content: 'not really ping\n', pax: { 'SCHILY.xattr.security.capability': CAP_PAX_VALUE } },
  { name: 'usr/bin/hard-a', content: 'shared content\n' },
  { name: 'usr/bin/hard-b', type: 'link', linkname: 'usr/bin/hard-a' },
  { name: 'usr/share/', type: 'directory' },
  { name: 'usr/share/big.bin', content: bigContent() },
  { name: 'bin', type: 'symlink', linkname: 'usr/bin' },
  { name: 'tmp/', type: 'directory', mode: 0o1777 },
  { name: 'srv/', type: 'directory' },
  { name: 'srv/owned/', type: 'directory', mode: 0o750, uid: 1000, gid: 1000 },
  { name: 'srv/owned/data', mode: 0o640, uid: 1000, gid: 1000, content: 'owned data\n' },
  { name: 'run/', type: 'directory' },
  { name: 'run/ctl.fifo', type: 'fifo', mode: 0o620, gid: 5 },
  { name: 'dev/', type: 'directory' },
  { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3 },
  { name: 'dev/loop0', type: 'block-device', mode: 0o660, gid: 6, devmajor: 7, devminor: 0 },
  { name: 'opq/', type: 'directory' },
  { name: 'opq/lower.txt', content: 'lower\n' },
  { name: 'opq/sub/', type: 'directory' },
  { name: 'opq/sub/lower2.txt', content: 'lower 2\n' },
  { name: 'lib/', type: 'directory' },
  { name: 'lib/target.txt', content: 'hardlink target\n' },
  { name: 'replace/', type: 'directory' },
  { name: 'replace/dir-becomes-file/', type: 'directory' },
  { name: 'replace/dir-becomes-file/inner.txt', content: 'inner\n' },
  { name: 'replace/file-becomes-dir', content: 'was a file\n' },
  { name: 'gone-dir/', type: 'directory' },
  { name: 'gone-dir/a.txt', content: 'a\n' },
  { name: 'gone-dir/deeper/', type: 'directory' },
  { name: 'gone-dir/deeper/b.txt', content: 'b\n' },
  // Children listed after their read-only directory: the applier must still write them.
  { name: 'ro/', type: 'directory', mode: 0o555 },
  { name: 'ro/file.txt', mode: 0o444, content: 'read only\n' },
];

export const LAYER2: TarEntry[] = [
  { name: 'etc/.wh.removed.txt' },
  { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' },
  { name: 'opq/', type: 'directory', mode: 0o711 },
  // Before and after the marker: layer.md says the opaque marker hides lower layers only.
  { name: 'opq/new-before.txt', content: 'same layer, before the marker\n' },
  { name: 'opq/.wh..wh..opq' },
  { name: 'opq/new-after.txt', content: 'same layer, after the marker\n' },
  { name: 'lib/link-to-target', type: 'link', linkname: 'lib/target.txt' },
  { name: 'replace/dir-becomes-file', content: 'now a file\n' },
  { name: 'replace/file-becomes-dir/', type: 'directory', mode: 0o700 },
  { name: 'replace/file-becomes-dir/child.txt', content: 'child\n' },
  { name: '.wh.gone-dir' },
];

export const LAYER3: TarEntry[] = [
  { name: 'etc/layer3.txt', content: 'layer three\n' },
  // A new file over one half of a lower hardlink pair: the other name keeps the old content.
  { name: 'usr/bin/hard-a', content: 'rewritten in layer 3\n' },
  // Metadata of an existing directory changes; its contents stay.
  { name: 'srv/owned/', type: 'directory', mode: 0o700, uid: 2000, gid: 2000 },
  { name: 'opq/.wh.new-after.txt' },
];

export interface ExpectedEntry {
  type: 'file' | 'directory' | 'symlink' | 'fifo' | 'char-device' | 'block-device';
  mode: number;
  uid?: number;
  gid?: number;
  content?: string | Buffer;
  linkTarget?: string;
  rdev?: { major: number; minor: number };
  xattrs?: Record<string, string>;
  nlink?: number;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** Every path of the unpacked image (besides '.') and what it must be, after all three layers. */
export const EXPECTED: Record<string, ExpectedEntry> = {
  etc: { type: 'directory', mode: 0o755 },
  'etc/passwd': { type: 'file', mode: 0o644, content: 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' },
  'etc/abs-link': { type: 'symlink', mode: 0o777, linkTarget: '/etc/passwd' },
  'etc/dangling': { type: 'symlink', mode: 0o777, linkTarget: '/does/not/exist' },
  'etc/userattr.txt': {
    type: 'file',
    mode: 0o644,
    content: 'has user xattrs\n',
    xattrs: { 'user.comment': b64('hello xattr'), 'user.mime_type': b64('text/plain') },
  },
  'etc/layer3.txt': { type: 'file', mode: 0o644, content: 'layer three\n' },
  usr: { type: 'directory', mode: 0o755 },
  'usr/bin': { type: 'directory', mode: 0o755 },
  'usr/bin/suid-root': { type: 'file', mode: 0o4755, content: '#!/bin/sh\necho suid\n' },
  'usr/bin/sgid-games': { type: 'file', mode: 0o2755, gid: 60, content: '#!/bin/sh\necho sgid\n' },
  'usr/bin/ping': { type: 'file', mode: 0o755, content: 'not really ping\n', xattrs: { 'security.capability': CAP_NET_RAW_EP_BASE64 } },
  'usr/bin/hard-a': { type: 'file', mode: 0o644, content: 'rewritten in layer 3\n', nlink: 1 },
  'usr/bin/hard-b': { type: 'file', mode: 0o644, content: 'shared content\n', nlink: 1 },
  'usr/share': { type: 'directory', mode: 0o755 },
  'usr/share/big.bin': { type: 'file', mode: 0o644, content: bigContent() },
  bin: { type: 'symlink', mode: 0o777, linkTarget: 'usr/bin' },
  tmp: { type: 'directory', mode: 0o1777 },
  srv: { type: 'directory', mode: 0o755 },
  'srv/owned': { type: 'directory', mode: 0o700, uid: 2000, gid: 2000 },
  'srv/owned/data': { type: 'file', mode: 0o640, uid: 1000, gid: 1000, content: 'owned data\n' },
  run: { type: 'directory', mode: 0o755 },
  'run/ctl.fifo': { type: 'fifo', mode: 0o620, gid: 5 },
  dev: { type: 'directory', mode: 0o755 },
  'dev/null': { type: 'char-device', mode: 0o666, rdev: { major: 1, minor: 3 } },
  'dev/loop0': { type: 'block-device', mode: 0o660, gid: 6, rdev: { major: 7, minor: 0 } },
  opq: { type: 'directory', mode: 0o711 },
  'opq/new-before.txt': { type: 'file', mode: 0o644, content: 'same layer, before the marker\n' },
  lib: { type: 'directory', mode: 0o755 },
  'lib/target.txt': { type: 'file', mode: 0o644, content: 'hardlink target\n', nlink: 2 },
  'lib/link-to-target': { type: 'file', mode: 0o644, content: 'hardlink target\n', nlink: 2 },
  replace: { type: 'directory', mode: 0o755 },
  'replace/dir-becomes-file': { type: 'file', mode: 0o644, content: 'now a file\n' },
  'replace/file-becomes-dir': { type: 'directory', mode: 0o700 },
  'replace/file-becomes-dir/child.txt': { type: 'file', mode: 0o644, content: 'child\n' },
  ro: { type: 'directory', mode: 0o555 },
  'ro/file.txt': { type: 'file', mode: 0o444, content: 'read only\n' },
};

/** Names that share an inode in the result. */
export const EXPECTED_HARDLINK_GROUPS = [['lib/link-to-target', 'lib/target.txt']];

/** The mtime every entry of the image carries. */
export const IMAGE_MTIME_NS = (BigInt(FIXED_MTIME.getTime()) * 1_000_000n).toString();

export interface FeatureImageOptions {
  format?: ImageFormat;
  compressions?: [LayerCompression, LayerCompression, LayerCompression];
  config?: Record<string, unknown>;
}

/** Pushes the three layers (gzip, zstd, none unless told otherwise) as `repo:tag` (or by digest). */
export async function pushFeatureImage(
  registryUrl: string,
  repo: string,
  tag: string | null,
  options: FeatureImageOptions = {},
): Promise<PushedImage> {
  const [c1, c2, c3] = options.compressions ?? ['gzip', 'zstd', 'none'];
  return pushImage(registryUrl, repo, tag, {
    format: options.format ?? 'oci',
    layers: [
      { tar: await tarLayer(LAYER1), compression: c1 },
      { tar: await tarLayer(LAYER2), compression: c2 },
      { tar: await tarLayer(LAYER3), compression: c3 },
    ],
    ...(options.config ? { config: options.config } : {}),
  });
}
