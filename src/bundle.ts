/**
 * runc bundles: DIR/rootfs + DIR/config.json, all or nothing. The file I/O around the pure
 * conversion in runtime-config.ts: read passwd/group inside the rootfs, create volume mount
 * points, write config.json.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PullUnpackError } from './errors.js';
import { pullInto, type PullOptions, type PullResult } from './pull.js';
import { applyOverrides, toRuntimeConfig, volumeMountPoints, type ConfigOverrides, type RuntimeSpec } from './runtime-config.js';
import { resolveInRoot } from './safe-path.js';

export interface BundleOptions extends PullOptions {
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

export interface BundleResult extends PullResult {
  /** The generated runtime configuration, as written to DIR/config.json. */
  spec: RuntimeSpec;
}

const PROVENANCE_REFERENCE = 'org.opencontainers.image.ref.name';
// No spec key names the manifest digest; this one is ours.
const PROVENANCE_DIGEST = 'pull-unpack.manifest.digest';

/** Pulls `image` into `dir` as a runc bundle (rootfs + config.json), all or nothing. */
export async function pullBundle(image: string, dir: string, options: BundleOptions = {}): Promise<BundleResult> {
  let spec: RuntimeSpec | undefined;
  const rootless = options.rootless ?? !isRoot();
  const result = await pullInto(image, dir, { ...options, isRoot: options.isRoot ?? (rootless ? false : undefined) }, {
    rootfsIn: (staging) => join(staging.out, 'rootfs'),
    prepare: async (staging) => {
      await mkdir(join(staging.out, 'rootfs'), { mode: 0o755 });
    },
    finish: async (staging, rootfs, pulled) => {
      const image = applyOverrides(pulled.config, options.overrides ?? {});
      spec = toRuntimeConfig(image, {
        passwd: await readInRoot(rootfs, 'etc/passwd'),
        group: await readInRoot(rootfs, 'etc/group'),
        rootless: rootless ? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 } : undefined,
        terminal: options.terminal,
        hostname: options.hostname,
        volumeMode: options.volumeMode,
        annotations: { [PROVENANCE_REFERENCE]: pulled.reference, [PROVENANCE_DIGEST]: pulled.manifestDigest },
      });
      for (const mountPoint of volumeMountPoints(spec)) {
        await mkdir(await resolveInRoot(rootfs, mountPoint.replace(/^\/+/, ''), { followFinal: true }), { recursive: true, mode: 0o755 });
      }
      await writeFile(join(staging.out, 'config.json'), `${JSON.stringify(spec, null, '\t')}\n`, { mode: 0o644 });
    },
  });
  if (!spec) throw new PullUnpackError('INVALID_CONFIG', 'the bundle configuration was not written');
  return { ...result, spec };
}

/** Reads a small file of the rootfs, resolving symlinks inside it; undefined when absent. */
async function readInRoot(rootfs: string, relPath: string): Promise<string | undefined> {
  try {
    const path = await resolveInRoot(rootfs, relPath, { followFinal: true });
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
    throw err;
  }
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}
