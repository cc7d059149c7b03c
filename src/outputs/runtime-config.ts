/**
 * Image config -> OCI runtime-spec `config.json`: a pure function of the image config and the
 * rootfs's /etc/passwd and /etc/group texts; the bundle writer does the file I/O around it.
 *
 * Image fields are converted as the image-spec conversion.md says
 * (https://github.com/opencontainers/image-spec/blob/main/conversion.md); every other field is
 * what `runc spec` (runc 1.1.5) generates for Linux, and `runc spec --rootless` when rootless.
 * Where conversion.md is silent, umoci's oci/config/convert/runtime.go is followed.
 */
import { posix } from 'node:path';
import { PullUnpackError } from '../errors.js';
import type { ImageConfig, ImageRunConfig } from '../image/oci.js';
import { resolveUser } from './passwd.js';
import { toRootless, type RootlessIds } from './rootless-config.js';
import type { RuntimeUser, RuntimeMount, RuntimeSpec } from './runtime-spec.js';

export type {
  RuntimeUser,
  RuntimeCapabilities,
  RuntimeRlimit,
  RuntimeProcess,
  RuntimeMount,
  NamespaceType,
  LinuxIdMapping,
  LinuxDeviceCgroup,
  RuntimeLinux,
  RuntimeSpec,
} from './runtime-spec.js';

export { rootlessMappings, type RootlessIds } from './rootless-config.js';

/** CLI-level changes, applied to the image config BEFORE conversion so the same rules hold. */
export interface ConfigOverrides {
  /** Replaces Entrypoint (`[]` clears it); like docker, also clears Cmd unless `cmd` is given. */
  entrypoint?: string[] | undefined;
  /** Replaces Cmd. Pass undefined, not `[]`, when the user gave no trailing arguments. */
  cmd?: string[] | undefined;
  /** `K=V` entries; each replaces an existing K in place (dropping later duplicates) or is appended. */
  env?: string[] | undefined;
  /** Replaces WorkingDir; must be absolute. */
  workdir?: string | undefined;
  /** Replaces User (`""` means root). */
  user?: string | undefined;
}

export interface RuntimeConfigOptions {
  /** Contents of rootfs/etc/passwd; undefined when the file is absent. */
  passwd?: string | undefined;
  /** Contents of rootfs/etc/group; undefined when the file is absent. */
  group?: string | undefined;
  /**
   * Shape the config as `runc spec --rootless` does, mapping container 0 to this host uid/gid
   * and, with `subordinate` ranges, container ids 1..N to them (as podman does).
   */
  rootless?: RootlessIds | undefined;
  /** process.terminal (the CLI's --tty); default false. When true, `TERM=xterm` is added unless the image sets TERM. */
  tty?: boolean | undefined;
  /** @deprecated The old name of `tty`, read when `tty` is not given. */
  terminal?: boolean | undefined;
  /** Default "runc", as `runc spec`. */
  hostname?: string | undefined;
  /** How image `Volumes` become mounts: a fresh tmpfs each (default), or no mounts at all. */
  volumeMode?: 'tmpfs' | 'none' | undefined;
  /** Caller annotations (reference, manifest digest); they win over image labels. */
  annotations?: Record<string, string> | undefined;
  /** root.readonly; default false (see DEFAULT_READONLY_ROOT). */
  readonlyRoot?: boolean | undefined;
}

/** The version `runc spec` of runc 1.1.x writes. */
export const OCI_VERSION = '1.0.2-dev';
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/**
 * `runc spec` says readonly true; we follow umoci (the reference conversion) and docker instead:
 * images expect a writable root (package managers, /tmp, pid files), so a read-only default
 * would break most of them. `readonlyRoot: true` restores runc's choice.
 */
export const DEFAULT_READONLY_ROOT = false;
/** Options of the tmpfs mounted on each image volume (docker volumes are exec-able, so no noexec). */
export const VOLUME_TMPFS_OPTIONS = ['rw', 'nosuid', 'nodev', 'relatime', 'mode=755'];

const CAPABILITIES = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];
const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/sys/firmware',
  '/proc/scsi',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** The mounts of `runc spec`, in its order. */
function standardMounts(): RuntimeMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
  ];
}

const STANDARD_DESTINATIONS = new Set(standardMounts().map((m) => m.destination));

/** Returns a copy of `image` with the overrides applied; `image` is not modified. */
export function applyOverrides(image: ImageConfig, overrides: ConfigOverrides): ImageConfig {
  const config: ImageRunConfig = { ...(image.config ?? {}) };
  if (overrides.entrypoint !== undefined) {
    config.Entrypoint = [...overrides.entrypoint];
    config.Cmd = overrides.cmd === undefined ? [] : [...overrides.cmd];
  } else if (overrides.cmd !== undefined) {
    config.Cmd = [...overrides.cmd];
  }
  if (overrides.env !== undefined && overrides.env.length > 0) {
    const env = [...(stringArray(config.Env, 'Env') ?? [])];
    for (const entry of overrides.env) setEnv(env, entry);
    config.Env = env;
  }
  if (overrides.workdir !== undefined) {
    if (!overrides.workdir.startsWith('/')) {
      throw new PullUnpackError('INVALID_CONFIG_OVERRIDE', `the working directory "${overrides.workdir}" must be an absolute path`);
    }
    config.WorkingDir = overrides.workdir;
  }
  if (overrides.user !== undefined) config.User = overrides.user;
  return { ...image, config };
}

/**
 * Converts an image config (overrides already applied) to a runtime-spec config for Linux.
 * Throws INVALID_CONFIG (no command, relative WorkingDir, non-Linux image, malformed fields, a
 * rootless config whose user is not 0:0), USER_NOT_FOUND or GROUP_NOT_FOUND.
 * Volume mount points: see volumeMountPoints().
 */
export function toRuntimeConfig(image: ImageConfig, options: RuntimeConfigOptions = {}): RuntimeSpec {
  if (image.os !== undefined && image.os !== 'linux') {
    throw new PullUnpackError('INVALID_CONFIG', `the image is for "${image.os}"; only linux images can be converted to a runtime config`);
  }
  const config: ImageRunConfig = image.config ?? {};
  const args = [...(stringArray(config.Entrypoint, 'Entrypoint') ?? []), ...(stringArray(config.Cmd, 'Cmd') ?? [])];
  if (args.length === 0) {
    throw new PullUnpackError('INVALID_CONFIG', 'the image has no Entrypoint or Cmd; give a command after the image');
  }
  const user = resolveUser(config.User ?? '', options.passwd, options.group);
  const processUser: RuntimeUser = { uid: user.uid, gid: user.gid };
  // runc refuses supplementary groups in a rootless container (setgroups is denied), and
  // images like alpine list root in many groups, so rootless drops them.
  if (user.additionalGids.length > 0 && options.rootless === undefined) processUser.additionalGids = user.additionalGids;

  const tty = options.tty ?? options.terminal ?? false;
  const spec: RuntimeSpec = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: tty,
      user: processUser,
      args,
      env: processEnv(config, tty, user.home),
      cwd: workingDir(config.WorkingDir),
      capabilities: {
        bounding: [...CAPABILITIES],
        effective: [...CAPABILITIES],
        permitted: [...CAPABILITIES],
        ambient: [...CAPABILITIES],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: options.readonlyRoot ?? DEFAULT_READONLY_ROOT },
    hostname: options.hostname ?? 'runc',
    mounts: [...standardMounts(), ...volumeMounts(config, options.volumeMode ?? 'tmpfs', processUser)],
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
  const annotations = buildAnnotations(image, options.annotations);
  if (Object.keys(annotations).length > 0) spec.annotations = annotations;
  return options.rootless === undefined ? spec : toRootless(spec, options.rootless, config.User ?? '');
}

/**
 * Absolute, normalized in-container paths of the volume mounts of `spec` (every mount that is not
 * one of runc's standard mounts), parents before children. The caller creates each as a directory
 * in the rootfs, resolving it with the safe-path rules since the rootfs may hold symlinks.
 */
export function volumeMountPoints(spec: RuntimeSpec): string[] {
  return spec.mounts.filter((m) => !STANDARD_DESTINATIONS.has(m.destination)).map((m) => m.destination);
}

/**
 * Image Env in order, then PATH (only when the image sets none), TERM (terminal only) and HOME
 * (from passwd, as umoci does), each only when the image does not set that name (conversion.md
 * note 1: added entries never shadow an image variable).
 */
function processEnv(config: ImageRunConfig, terminal: boolean, home: string | undefined): string[] {
  const env = stringArray(config.Env, 'Env') ?? [];
  const names = new Set<string>();
  for (const entry of env) names.add(envName(entry, 'INVALID_CONFIG', 'image Env'));
  const out = [...env];
  const addDefault = (entry: string): void => {
    if (!names.has(envName(entry, 'INVALID_CONFIG', 'default'))) out.push(entry);
  };
  addDefault(DEFAULT_PATH);
  if (terminal) addDefault('TERM=xterm');
  if (home !== undefined) addDefault(`HOME=${home}`);
  return out;
}

/** WorkingDir or "/"; a relative one is an error, as docker's daemon rejects it at create time. */
function workingDir(dir: string | undefined): string {
  if (dir === undefined || dir === '') return '/';
  if (typeof dir !== 'string' || !dir.startsWith('/')) {
    throw new PullUnpackError('INVALID_CONFIG', `the image's working directory ${JSON.stringify(dir)} is not an absolute path`, {
      hint: 'give an absolute --workdir',
    });
  }
  return dir;
}

function volumeMounts(config: ImageRunConfig, mode: 'tmpfs' | 'none', user: RuntimeUser): RuntimeMount[] {
  if (mode === 'none' || config.Volumes === undefined || config.Volumes === null) return [];
  if (typeof config.Volumes !== 'object' || Array.isArray(config.Volumes)) {
    throw new PullUnpackError('INVALID_CONFIG', "the image config's Volumes is not an object");
  }
  const destinations = new Set<string>();
  for (const raw of Object.keys(config.Volumes)) {
    const destination = posix.normalize(raw).replace(/(.)\/+$/, '$1');
    if (!destination.startsWith('/') || destination === '/' || STANDARD_DESTINATIONS.has(destination)) {
      throw new PullUnpackError('INVALID_CONFIG', `the image volume ${JSON.stringify(raw)} cannot be mounted`, {
        hint: 'volumes must be absolute and not "/" or a standard mount; run with volumes disabled to ignore them',
      });
    }
    destinations.add(destination);
  }
  // A volume owned by the process user, as docker's copy-up of the image directory usually gives.
  const owner = user.uid === 0 && user.gid === 0 ? [] : [`uid=${user.uid}`, `gid=${user.gid}`];
  return [...destinations].sort().map((destination) => ({
    destination,
    type: 'tmpfs',
    source: 'tmpfs',
    options: [...VOLUME_TMPFS_OPTIONS, ...owner],
  }));
}

/**
 * Implicit annotations (only for fields the image has), then image Labels over them
 * (conversion.md: labels MUST take precedence), then the caller's. The caller's win because they
 * are provenance the tool verified (the reference pulled, the manifest digest); a label cannot
 * vouch for either, and conversion.md lets externally provided inputs modify the image config.
 */
function buildAnnotations(image: ImageConfig, extra: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  const set = (key: string, value: unknown): void => {
    if (typeof value === 'string' && value !== '') out[key] = value;
  };
  const config = image.config ?? {};
  set('org.opencontainers.image.os', image.os);
  set('org.opencontainers.image.architecture', image.architecture);
  set('org.opencontainers.image.variant', image.variant);
  set('org.opencontainers.image.os.version', image['os.version']);
  if (Array.isArray(image['os.features'])) set('org.opencontainers.image.os.features', image['os.features'].join(','));
  set('org.opencontainers.image.author', image.author);
  set('org.opencontainers.image.created', image.created);
  set('org.opencontainers.image.stopSignal', config.StopSignal);
  if (config.ExposedPorts && typeof config.ExposedPorts === 'object') {
    set('org.opencontainers.image.exposedPorts', Object.keys(config.ExposedPorts).sort().join(','));
  }
  copyStringMap(out, config.Labels, 'the image label');
  copyStringMap(out, extra, 'the annotation');
  return out;
}

function copyStringMap(out: Record<string, string>, map: unknown, what: string): void {
  if (map === undefined || map === null) return;
  if (typeof map !== 'object' || Array.isArray(map)) throw new PullUnpackError('INVALID_CONFIG', `${what}s are not an object`);
  for (const [key, value] of Object.entries(map)) {
    // The runtime spec forbids empty annotation keys; values must be strings.
    if (key === '' || typeof value !== 'string') {
      throw new PullUnpackError('INVALID_CONFIG', `${what} ${JSON.stringify(key)} must have a non-empty key and a string value`);
    }
    out[key] = value;
  }
}

function setEnv(env: string[], entry: string): void {
  const name = envName(entry, 'INVALID_CONFIG_OVERRIDE', '--env');
  const matches = (e: string): boolean => e === name || e.startsWith(`${name}=`);
  const first = env.findIndex(matches);
  if (first === -1) {
    env.push(entry);
    return;
  }
  env[first] = entry;
  for (let i = env.length - 1; i > first; i--) if (matches(env[i]!)) env.splice(i, 1);
}

function envName(entry: string, code: 'INVALID_CONFIG' | 'INVALID_CONFIG_OVERRIDE', what: string): string {
  const eq = entry.indexOf('=');
  if (eq <= 0) throw new PullUnpackError(code, `${what} entry ${JSON.stringify(entry)} is not of the form NAME=value`);
  return entry.slice(0, eq);
}

function stringArray(value: unknown, field: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
    throw new PullUnpackError('INVALID_CONFIG', `the image config's ${field} is not an array of strings`);
  }
  return value;
}
