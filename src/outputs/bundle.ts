/**
 * runc bundles: DIR/rootfs + DIR/config.json, all or nothing. The file I/O around the pure
 * conversion in runtime-config.ts: read passwd/group inside the rootfs, create volume mount
 * points, write config.json.
 */
import { constants } from 'node:fs';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { PullUnpackError } from '../errors.js';
import { applyOwners, OwnerRecord } from '../apply/owners.js';
import { removeInUserNamespace, type UserNamespace } from '../apply/userns.js';
import { REF_NAME_ANNOTATION } from '../image/oci.js';
import type { Output } from './output.js';
import {
  applyOverrides,
  rootlessMappings,
  toRuntimeConfig,
  volumeMountPoints,
  type ConfigOverrides,
  type RootlessIds,
  type RuntimeSpec,
} from './runtime-config.js';
import { checkDestination, commitStaging, type Staging } from './staging.js';
import { findSubordinateIds } from './subids.js';
import { fsPath, resolveInRoot } from '../apply/safe-path.js';

export interface BundleSettings {
  /** Entrypoint, Cmd, Env, WorkingDir and User changes, applied before conversion. */
  overrides?: ConfigOverrides | undefined;
  /** Hostname inside the container (default "runc", as `runc spec`). */
  hostname?: string | undefined;
  /** process.terminal, as the CLI's --tty (default false). */
  tty?: boolean | undefined;
  /** @deprecated The old name of `tty`, read when `tty` is not given. */
  terminal?: boolean | undefined;
  /** Image volumes as tmpfs mounts (default) or not mounted. */
  volumeMode?: 'tmpfs' | 'none' | undefined;
  /** Shape the config for `runc --rootless`; default: when not running as root. */
  rootless?: boolean | undefined;
  /**
   * In a rootless bundle, map container ids 1..N to the user's subordinate ids (/etc/subuid,
   * /etc/subgid) and give the rootfs the image's owners through them, so the image's own user
   * can run; default: when the user has ranges and newuidmap/newgidmap are installed. false
   * maps container 0 only.
   */
  subordinateIds?: boolean | undefined;
}

// No spec key names the manifest digest; this one is ours.
const PROVENANCE_DIGEST = 'pull-unpack.manifest.digest';

/**
 * A runc bundle in the directory `dir`: DIR/rootfs and DIR/config.json, converted from the image
 * config (runtime-config.ts) with the users and groups of the image's own /etc/passwd and
 * /etc/group. `rootless` says whether it is shaped for `runc --rootless` (then the layers are
 * unpacked without applying ownership, or, with subordinate ids, their owners are recorded and
 * set through the user's id maps before the commit). `onWarning` hears about account files that
 * are ignored. `env` is where newuidmap/newgidmap are looked up (PATH).
 */
export async function bundleOutput(
  dir: string,
  settings: BundleSettings,
  context: { onWarning: (message: string) => void; env?: NodeJS.ProcessEnv | undefined; signal?: AbortSignal | undefined },
): Promise<Output<{ spec: RuntimeSpec; rootless: boolean }> & { rootless: boolean }> {
  const { onWarning } = context;
  const rootless = settings.rootless ?? !isRoot();
  const ids = rootless ? await rootlessIds(settings.subordinateIds, context.env) : undefined;
  const namespace = ids?.subordinate && ids.helpers ? { ...rootlessMappings(ids), ...ids.helpers } : undefined;
  const owners = namespace ? new OwnerRecord() : undefined;
  return {
    destination: dir,
    rootless,
    owners,
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
        rootless: ids,
        tty: settings.tty ?? settings.terminal,
        hostname: settings.hostname,
        volumeMode: settings.volumeMode,
        annotations: { [REF_NAME_ANNOTATION]: image.reference.toString(), [PROVENANCE_DIGEST]: image.manifest.descriptor.digest },
      });
      for (const mountPoint of volumeMountPoints(spec)) await createMountPoint(rootfs, mountPoint);
      await writeFile(join(staging.out, 'config.json'), `${JSON.stringify(spec, null, '\t')}\n`, { mode: 0o644 });
      return { spec, rootless };
    },
    commit: owners && namespace ? (staging) => commitWithOwners(staging, owners, namespace, context.signal) : commitStaging,
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

/** The host ids a rootless bundle maps, with the user's subordinate ranges when there are any. */
async function rootlessIds(
  subordinateIds: boolean | undefined,
  env: NodeJS.ProcessEnv | undefined,
): Promise<RootlessIds & { helpers?: { newuidmap: string; newgidmap: string } }> {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  if (subordinateIds === false) return { uid, gid, noSubordinate: 'subordinate ids were turned off' };
  let name = String(uid);
  try {
    name = userInfo().username;
  } catch {
    // No passwd entry for this uid (e.g. in a container): subuid(5) also accepts the number.
  }
  const found = await findSubordinateIds({ user: { name, uid }, path: env?.['PATH'] });
  if ('missing' in found) return { uid, gid, noSubordinate: found.missing };
  return { uid, gid, subordinate: { uids: found.uids, gids: found.gids }, helpers: found };
}

/**
 * The last step of a rootless bundle with subordinate ids: the recorded owners are set (in a user
 * namespace, or directly as root), then the bundle is moved into place. Files owned by
 * subordinate ids can only be removed from inside such a namespace, so the replaced DIR and, on
 * failure, the unpacked rootfs are removed there.
 */
async function commitWithOwners(
  staging: Staging,
  owners: OwnerRecord,
  namespace: UserNamespace,
  signal: AbortSignal | undefined,
): Promise<void> {
  const direct = isRoot();
  const cwd = dirname(staging.dir);
  try {
    await applyOwners(owners, { root: join(staging.out, 'rootfs'), direct, namespace, workDir: staging.scratch, signal });
    await commitStaging(staging, direct ? undefined : (path) => removeInUserNamespace(namespace, path, cwd));
  } catch (err) {
    if (!direct) await removeInUserNamespace(namespace, staging.out, cwd).catch(() => undefined);
    throw err;
  }
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}
