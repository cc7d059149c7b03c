/**
 * runc bundles: DIR/rootfs + DIR/config.json, all or nothing. The file I/O around the pure
 * conversion in runtime-config.ts: read passwd/group inside the rootfs, create volume mount
 * points, write config.json.
 */
import { constants } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PullUnpackError } from '../errors.js';
import { REF_NAME_ANNOTATION } from '../image/oci.js';
import type { Output } from './output.js';
import { applyOverrides, toRuntimeConfig, volumeMountPoints, type ConfigOverrides, type RuntimeSpec } from './runtime-config.js';
import { checkDestination, commitStaging } from './staging.js';
import { fsPath, resolveInRoot } from '../apply/safe-path.js';

export interface BundleSettings {
  /** Entrypoint, Cmd, Env, WorkingDir and User changes, applied before conversion. */
  overrides?: ConfigOverrides | undefined;
  /** Hostname inside the container (default "runc", as `runc spec`). */
  hostname?: string | undefined;
  /** process.terminal (default false). */
  terminal?: boolean | undefined;
  /** Image volumes as tmpfs mounts (default) or not mounted. */
  volumeMode?: 'tmpfs' | 'none' | undefined;
  /** Shape the config for `runc --rootless`; default: when not running as root. */
  rootless?: boolean | undefined;
}

// No spec key names the manifest digest; this one is ours.
const PROVENANCE_DIGEST = 'pull-unpack.manifest.digest';

/**
 * A runc bundle in the directory `dir`: DIR/rootfs and DIR/config.json, converted from the image
 * config (runtime-config.ts) with the users and groups of the image's own /etc/passwd and
 * /etc/group. `rootless` says whether it is shaped for `runc --rootless` (then the layers are
 * unpacked without applying ownership). `onWarning` hears about account files that are ignored.
 */
export function bundleOutput(
  dir: string,
  settings: BundleSettings,
  onWarning: (message: string) => void,
): Output<{ spec: RuntimeSpec }> & { rootless: boolean } {
  const rootless = settings.rootless ?? !isRoot();
  return {
    destination: dir,
    rootless,
    check: checkDestination,
    async rootfs(staging) {
      const rootfs = join(staging.out, 'rootfs');
      await mkdir(rootfs, { mode: 0o755 });
      return rootfs;
    },
    async finish(staging, image) {
      const rootfs = image.rootfs!;
      const spec = toRuntimeConfig(applyOverrides(image.config.parsed, settings.overrides ?? {}), {
        passwd: await readAccountFile(rootfs, 'etc/passwd', onWarning),
        group: await readAccountFile(rootfs, 'etc/group', onWarning),
        rootless: rootless ? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 } : undefined,
        terminal: settings.terminal,
        hostname: settings.hostname,
        volumeMode: settings.volumeMode,
        annotations: { [REF_NAME_ANNOTATION]: image.reference.toString(), [PROVENANCE_DIGEST]: image.manifest.descriptor.digest },
      });
      for (const mountPoint of volumeMountPoints(spec)) await createMountPoint(rootfs, mountPoint);
      await writeFile(join(staging.out, 'config.json'), `${JSON.stringify(spec, null, '\t')}\n`, { mode: 0o644 });
      return { spec };
    },
    commit: commitStaging,
  };
}

/** The most of /etc/passwd or /etc/group read into memory; real ones are far smaller. */
export const MAX_ACCOUNT_FILE_BYTES = 16 * 1024 * 1024;

/**
 * Reads /etc/passwd or /etc/group of the rootfs, resolving symlinks inside it; undefined when
 * absent. Only a regular file is read: the image may make it a FIFO (reading would block forever)
 * or, unpacked as root, a device such as /dev/zero (endless), so anything else is ignored with a
 * warning; one over MAX_ACCOUNT_FILE_BYTES is TOO_LARGE. O_NONBLOCK keeps open() of a FIFO from
 * waiting for a writer.
 */
async function readAccountFile(rootfs: string, relPath: string, warn: (message: string) => void): Promise<string | undefined> {
  let file;
  try {
    const path = fsPath(resolveInRoot(rootfs, relPath, { followFinal: true }));
    file = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    const info = await file.stat();
    if (!info.isFile()) {
      if (!info.isDirectory()) warn(`ignoring the image's /${relPath}: not a regular file`);
      return undefined;
    }
    if (info.size > MAX_ACCOUNT_FILE_BYTES) {
      throw new PullUnpackError(
        'TOO_LARGE',
        `the image's /${relPath} is ${info.size} bytes, more than the ${MAX_ACCOUNT_FILE_BYTES} read to resolve the user`,
      );
    }
    return await file.readFile('utf8');
  } finally {
    await file.close();
  }
}

/**
 * Creates the directory a volume is mounted on, resolving the path inside the rootfs (an image
 * symlink cannot send it out). A path that crosses or ends at a non-directory is INVALID_CONFIG:
 * runc could not mount there either.
 */
async function createMountPoint(rootfs: string, mountPoint: string): Promise<void> {
  const path = fsPath(resolveInRoot(rootfs, mountPoint.replace(/^\/+/, ''), { followFinal: true }));
  try {
    await mkdir(path, { recursive: true, mode: 0o755 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTDIR' && code !== 'EEXIST') throw err;
    const what = `the image volume ${JSON.stringify(mountPoint)}`;
    throw new PullUnpackError('INVALID_CONFIG', `${what} cannot be mounted: the image has a non-directory on that path`, {
      hint: "run with --volume-mode none to ignore the image's volumes",
      cause: err,
    });
  }
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}
