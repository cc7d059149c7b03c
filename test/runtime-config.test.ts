import { describe, expect, it } from 'vitest';
import type { ImageConfig, ImageRunConfig } from '../src/image/oci.js';
import { parseGroup, parsePasswd } from '../src/outputs/passwd.js';
import {
  applyOverrides,
  type ConfigOverrides,
  DEFAULT_PATH,
  type RuntimeConfigOptions,
  type RuntimeSpec,
  toRuntimeConfig,
  volumeMountPoints,
} from '../src/outputs/runtime-config.js';
import { validateConfig } from './helpers/runtime-schema.js';
import { thrown } from './helpers/errors.js';

// ---- schema: every config this file generates goes through validateSpec() ----

let validated = 0;

function validateSpec(spec: unknown): void {
  const ok = validateConfig(JSON.parse(JSON.stringify(spec)));
  expect(validateConfig.errors ?? [], 'runtime-spec schema errors').toEqual([]);
  expect(ok).toBe(true);
  validated++;
}

// ---- fixtures ----

function image(config: ImageRunConfig | undefined, extra: Partial<ImageConfig> = {}): ImageConfig {
  return { rootfs: { type: 'layers', diff_ids: [] }, ...(config === undefined ? {} : { config }), ...extra };
}

/** Converts and schema-checks; every successful conversion in this file goes through here. */
function convert(img: ImageConfig, options?: RuntimeConfigOptions, overrides?: ConfigOverrides): RuntimeSpec {
  const spec = toRuntimeConfig(overrides === undefined ? img : applyOverrides(img, overrides), options);
  validateSpec(spec);
  return spec;
}

const PASSWD = [
  '# local users',
  'root:x:0:0:root:/root:/bin/ash',
  '',
  'daemon:x:2:2:daemon:/sbin:/sbin/nologin',
  'this line is broken',
  'bad:x:notanumber:1:bad:/:/bin/false',
  '+nisuser::::::',
  'app:x:1000:1000:App User:/home/app:/bin/sh\r',
  'app:x:2000:2000:shadowed duplicate:/nope:/bin/sh',
  'nohome:x:1001:1001',
  'postgres:x:70:70:postgres:/var/lib/postgresql:/bin/sh',
].join('\n');

const GROUP = [
  'root:x:0:root',
  'bin:x:1:root,bin,daemon',
  '# comment',
  'wheel:x:10:root',
  'staff:x:50:',
  'video:x:27:root, app',
  'broken-group-line',
  'users:x:100:games,app',
  'app:x:1000:',
  'users2:x:100:app',
  'postgres:x:70:',
].join('\n');

const USERS = { passwd: PASSWD, group: GROUP };

/** `runc spec` of runc 1.1.5 on this machine, verbatim (key order included). */
const RUNC_SPEC = {
  ociVersion: '1.0.2-dev',
  process: {
    terminal: true,
    user: { uid: 0, gid: 0 },
    args: ['sh'],
    env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
    cwd: '/',
    capabilities: {
      bounding: ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
      effective: ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
      permitted: ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
      ambient: ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
    },
    rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
    noNewPrivileges: true,
  },
  root: { path: 'rootfs', readonly: true },
  hostname: 'runc',
  mounts: [
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
  ],
  linux: {
    resources: { devices: [{ allow: false, access: 'rwm' }] },
    namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
    maskedPaths: [
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
    ],
    readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
  },
};

/** `runc spec --rootless` of runc 1.1.5 run as root (host ids 0), verbatim. */
const RUNC_SPEC_ROOTLESS = {
  ...RUNC_SPEC,
  mounts: RUNC_SPEC.mounts.map((m) => {
    if (m.destination === '/dev/pts') return { ...m, options: m.options!.filter((o) => o !== 'gid=5') };
    if (m.destination === '/sys') {
      return { destination: '/sys', type: 'none', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] };
    }
    return m;
  }),
  linux: {
    uidMappings: [{ containerID: 0, hostID: 0, size: 1 }],
    gidMappings: [{ containerID: 0, hostID: 0, size: 1 }],
    namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'user' }],
    maskedPaths: RUNC_SPEC.linux.maskedPaths,
    readonlyPaths: RUNC_SPEC.linux.readonlyPaths,
  },
};

// ---- tests ----

describe('the schema validator itself', () => {
  it('rejects configs that break the runtime-spec schema', () => {
    const spec = convert(image({ Cmd: ['sh'] }));
    const bad = JSON.parse(JSON.stringify(spec)) as Record<string, any>;
    bad['process'].user.uid = -1;
    expect(validateConfig(bad)).toBe(false);
    const noVersion = JSON.parse(JSON.stringify(spec)) as Record<string, unknown>;
    delete noVersion['ociVersion'];
    expect(validateConfig(noVersion)).toBe(false);
  });
});

describe('runc spec parity', () => {
  it('a bare sh image with terminal and a read-only root is byte-for-byte `runc spec`', () => {
    const spec = convert(image({ Cmd: ['sh'] }), { terminal: true, readonlyRoot: true });
    expect(JSON.stringify(spec, null, '\t')).toBe(JSON.stringify(RUNC_SPEC, null, '\t'));
  });
  it("tty (the CLI's --tty) gives the same spec as terminal, its deprecated old name", () => {
    const spec = convert(image({ Cmd: ['sh'] }), { tty: true, readonlyRoot: true });
    expect(JSON.stringify(spec, null, '\t')).toBe(JSON.stringify(RUNC_SPEC, null, '\t'));
    expect(convert(image({ Cmd: ['sh'] }), { tty: false, terminal: true }).process.terminal).toBe(false);
  });
  it('rootless with host ids 0 is byte-for-byte `runc spec --rootless`', () => {
    const spec = convert(image({ Cmd: ['sh'] }), { terminal: true, readonlyRoot: true, rootless: { uid: 0, gid: 0 } });
    expect(JSON.stringify(spec, null, '\t')).toBe(JSON.stringify(RUNC_SPEC_ROOTLESS, null, '\t'));
  });
  it('defaults: terminal false, writable root, hostname runc, no annotations key', () => {
    const spec = convert(image({ Cmd: ['sh'] }));
    expect(spec.process.terminal).toBe(false);
    expect(spec.process.env).toEqual([DEFAULT_PATH]);
    expect(spec.root).toEqual({ path: 'rootfs', readonly: false });
    expect(spec.hostname).toBe('runc');
    expect(spec).not.toHaveProperty('annotations');
    expect(spec.process.user).toEqual({ uid: 0, gid: 0 });
  });
});

interface Case {
  name: string;
  config?: ImageRunConfig;
  extra?: Partial<ImageConfig>;
  options?: RuntimeConfigOptions;
  overrides?: ConfigOverrides;
  expect?: (spec: RuntimeSpec) => void;
  error?: { code: string; message?: RegExp };
}

const CASES: Case[] = [
  // process.args
  {
    name: 'args: Entrypoint + Cmd',
    config: { Entrypoint: ['/e', '-x'], Cmd: ['a', 'b'] },
    expect: (s) => expect(s.process.args).toEqual(['/e', '-x', 'a', 'b']),
  },
  {
    name: 'args: Cmd only',
    config: { Cmd: ['/bin/sh', '-c', 'echo hi'] },
    expect: (s) => expect(s.process.args).toEqual(['/bin/sh', '-c', 'echo hi']),
  },
  {
    name: 'args: Entrypoint only, Cmd null',
    config: { Entrypoint: ['/app'], Cmd: null },
    expect: (s) => expect(s.process.args).toEqual(['/app']),
  },
  {
    name: 'args: none at all',
    config: { Env: ['A=1'] },
    error: { code: 'INVALID_CONFIG', message: /^the image has no Entrypoint or Cmd; give a command after the image$/ },
  },
  {
    name: 'args: empty arrays and no config object',
    extra: { config: undefined },
    error: { code: 'INVALID_CONFIG', message: /no Entrypoint or Cmd/ },
  },
  { name: 'args: Cmd is not a string array', config: { Cmd: 'sh' as unknown as string[] }, error: { code: 'INVALID_CONFIG' } },
  {
    name: 'override: cmd replaces Cmd and keeps Entrypoint',
    config: { Entrypoint: ['/e'], Cmd: ['old'] },
    overrides: { cmd: ['new', 'args'] },
    expect: (s) => expect(s.process.args).toEqual(['/e', 'new', 'args']),
  },
  {
    name: 'override: entrypoint clears Cmd like docker',
    config: { Entrypoint: ['/e'], Cmd: ['old'] },
    overrides: { entrypoint: ['/bin/sh'] },
    expect: (s) => expect(s.process.args).toEqual(['/bin/sh']),
  },
  {
    name: 'override: entrypoint + cmd',
    config: { Entrypoint: ['/e'], Cmd: ['old'] },
    overrides: { entrypoint: ['/bin/sh'], cmd: ['-c', 'id'] },
    expect: (s) => expect(s.process.args).toEqual(['/bin/sh', '-c', 'id']),
  },
  {
    name: 'override: empty entrypoint with cmd',
    config: { Entrypoint: ['/e'], Cmd: ['old'] },
    overrides: { entrypoint: [], cmd: ['ls'] },
    expect: (s) => expect(s.process.args).toEqual(['ls']),
  },
  {
    name: 'override: empty entrypoint, no cmd -> no command',
    config: { Entrypoint: ['/e'], Cmd: ['old'] },
    overrides: { entrypoint: [] },
    error: { code: 'INVALID_CONFIG', message: /give a command after the image/ },
  },

  // process.cwd
  { name: 'cwd: default /', config: { Cmd: ['x'] }, expect: (s) => expect(s.process.cwd).toBe('/') },
  { name: 'cwd: empty WorkingDir is /', config: { Cmd: ['x'], WorkingDir: '' }, expect: (s) => expect(s.process.cwd).toBe('/') },
  {
    name: 'cwd: WorkingDir verbatim',
    config: { Cmd: ['x'], WorkingDir: '/srv/app' },
    expect: (s) => expect(s.process.cwd).toBe('/srv/app'),
  },
  {
    name: 'cwd: relative WorkingDir is rejected as docker does',
    config: { Cmd: ['x'], WorkingDir: 'app' },
    error: { code: 'INVALID_CONFIG', message: /"app" is not an absolute path/ },
  },
  {
    name: 'override: workdir',
    config: { Cmd: ['x'], WorkingDir: '/a' },
    overrides: { workdir: '/b' },
    expect: (s) => expect(s.process.cwd).toBe('/b'),
  },
  { name: 'override: relative workdir', config: { Cmd: ['x'] }, overrides: { workdir: 'b' }, error: { code: 'INVALID_CONFIG_OVERRIDE' } },

  // process.env
  {
    name: 'env: default PATH when the image sets none',
    config: { Cmd: ['x'], Env: ['A=1', 'B=2'] },
    expect: (s) => expect(s.process.env).toEqual(['A=1', 'B=2', DEFAULT_PATH]),
  },
  {
    name: 'env: no default PATH when the image sets one',
    config: { Cmd: ['x'], Env: ['PATH=/opt/bin', 'A=1'] },
    expect: (s) => expect(s.process.env).toEqual(['PATH=/opt/bin', 'A=1']),
  },
  {
    name: 'env: an empty PATH still counts as set',
    config: { Cmd: ['x'], Env: ['PATH='] },
    expect: (s) => expect(s.process.env).toEqual(['PATH=']),
  },
  {
    name: 'env: TERM=xterm added with a terminal',
    config: { Cmd: ['x'], Env: ['A=1'] },
    options: { terminal: true },
    expect: (s) => {
      expect(s.process.terminal).toBe(true);
      expect(s.process.env).toEqual(['A=1', DEFAULT_PATH, 'TERM=xterm']);
    },
  },
  {
    name: 'env: TERM never shadows the image',
    config: { Cmd: ['x'], Env: ['TERM=dumb'] },
    options: { terminal: true },
    expect: (s) => expect(s.process.env).toEqual(['TERM=dumb', DEFAULT_PATH]),
  },
  {
    name: 'env: no TERM without a terminal',
    config: { Cmd: ['x'] },
    options: { terminal: false },
    expect: (s) => {
      expect(s.process.terminal).toBe(false);
      expect(s.process.env).toEqual([DEFAULT_PATH]);
    },
  },
  {
    name: 'env: HOME from passwd, never shadowing the image',
    config: { Cmd: ['x'], User: 'app' },
    options: USERS,
    expect: (s) => expect(s.process.env).toEqual([DEFAULT_PATH, 'HOME=/home/app']),
  },
  {
    name: 'env: image HOME kept',
    config: { Cmd: ['x'], User: 'app', Env: ['HOME=/data'] },
    options: USERS,
    expect: (s) => expect(s.process.env).toEqual(['HOME=/data', DEFAULT_PATH]),
  },
  {
    name: 'env: no HOME for a user with no home field',
    config: { Cmd: ['x'], User: 'nohome' },
    options: USERS,
    expect: (s) => expect(s.process.env).toEqual([DEFAULT_PATH]),
  },
  {
    name: 'override: env replaces in place, drops later duplicates, appends new',
    config: { Cmd: ['x'], Env: ['A=1', 'B=2', 'A=3', 'C=4'] },
    overrides: { env: ['A=9', 'D=5', 'B='] },
    expect: (s) => expect(s.process.env).toEqual(['A=9', 'B=', 'C=4', 'D=5', DEFAULT_PATH]),
  },
  {
    name: 'override: env PATH suppresses the default',
    config: { Cmd: ['x'] },
    overrides: { env: ['PATH=/x'] },
    expect: (s) => expect(s.process.env).toEqual(['PATH=/x']),
  },
  {
    name: 'override: env value containing =',
    config: { Cmd: ['x'], Env: ['Q=a'] },
    overrides: { env: ['Q=a=b'] },
    expect: (s) => expect(s.process.env[0]).toBe('Q=a=b'),
  },
  { name: 'override: env without =', config: { Cmd: ['x'] }, overrides: { env: ['NOVALUE'] }, error: { code: 'INVALID_CONFIG_OVERRIDE' } },
  { name: 'override: env with empty name', config: { Cmd: ['x'] }, overrides: { env: ['=v'] }, error: { code: 'INVALID_CONFIG_OVERRIDE' } },
  { name: 'env: malformed image entry', config: { Cmd: ['x'], Env: ['JUSTNAME'] }, error: { code: 'INVALID_CONFIG' } },

  // process.user
  { name: 'user: "" without passwd is 0:0', config: { Cmd: ['x'] }, expect: (s) => expect(s.process.user).toEqual({ uid: 0, gid: 0 }) },
  {
    name: 'user: "" takes root\'s primary gid and groups from passwd/group',
    config: { Cmd: ['x'], User: '' },
    options: { passwd: 'root:x:0:3:root:/root:/bin/sh\n', group: 'sys:x:3:\nwheel:x:10:root\nadm:x:4:root\n' },
    expect: (s) => expect(s.process.user).toEqual({ uid: 0, gid: 3, additionalGids: [10, 4] }),
  },
  {
    name: 'user: "" with a passwd lacking root is 0:0',
    config: { Cmd: ['x'] },
    options: { passwd: 'app:x:1000:1000::/:/bin/sh' },
    expect: (s) => expect(s.process.user).toEqual({ uid: 0, gid: 0 }),
  },
  {
    name: 'user: numeric uid absent from passwd -> gid 0',
    config: { Cmd: ['x'], User: '4242' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 4242, gid: 0 }),
  },
  {
    name: 'user: numeric uid without any passwd',
    config: { Cmd: ['x'], User: '4242' },
    expect: (s) => expect(s.process.user).toEqual({ uid: 4242, gid: 0 }),
  },
  {
    name: 'user: numeric uid listed in passwd takes its gid, no additionalGids',
    config: { Cmd: ['x'], User: '1000' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 1000 }),
  },
  {
    name: 'user: uid:gid copied',
    config: { Cmd: ['x'], User: '1000:50' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 50 }),
  },
  {
    name: 'user: uid:gid copied without passwd',
    config: { Cmd: ['x'], User: '65532:65532' },
    expect: (s) => expect(s.process.user).toEqual({ uid: 65532, gid: 65532 }),
  },
  {
    name: 'user: name -> uid, primary gid, memberships by name',
    config: { Cmd: ['x'], User: 'app' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 1000, additionalGids: [27, 100] }),
  },
  {
    name: 'user: first passwd entry of a name wins',
    config: { Cmd: ['x'], User: 'app' },
    options: USERS,
    expect: (s) => expect(s.process.user.uid).toBe(1000),
  },
  {
    name: 'user: name:group',
    config: { Cmd: ['x'], User: 'app:staff' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 50 }),
  },
  {
    name: 'user: uid:group',
    config: { Cmd: ['x'], User: '1000:video' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 27 }),
  },
  {
    name: 'user: name:gid',
    config: { Cmd: ['x'], User: 'app:77' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 77 }),
  },
  {
    name: 'user: name: (empty group) behaves as name',
    config: { Cmd: ['x'], User: 'app:' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1000, gid: 1000, additionalGids: [27, 100] }),
  },
  {
    name: 'user: :group is root with that group',
    config: { Cmd: ['x'], User: ':staff' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 0, gid: 50 }),
  },
  {
    name: 'user: a user in no group gets no additionalGids',
    config: { Cmd: ['x'], User: 'nohome' },
    options: USERS,
    expect: (s) => expect(s.process.user).toEqual({ uid: 1001, gid: 1001 }),
  },
  {
    name: 'user: unknown user',
    config: { Cmd: ['x'], User: 'ghost' },
    options: USERS,
    error: { code: 'USER_NOT_FOUND', message: /^user "ghost" not found in the image's \/etc\/passwd$/ },
  },
  {
    name: 'user: a malformed passwd line does not resolve',
    config: { Cmd: ['x'], User: 'bad' },
    options: USERS,
    error: { code: 'USER_NOT_FOUND' },
  },
  {
    name: 'user: a name with no passwd file',
    config: { Cmd: ['x'], User: 'app' },
    error: { code: 'USER_NOT_FOUND', message: /the image has no \/etc\/passwd/ },
  },
  {
    name: 'user: unknown group',
    config: { Cmd: ['x'], User: 'app:ghosts' },
    options: USERS,
    error: { code: 'GROUP_NOT_FOUND', message: /^group "ghosts" not found in the image's \/etc\/group$/ },
  },
  {
    name: 'user: a group name with no group file',
    config: { Cmd: ['x'], User: '1000:staff' },
    options: { passwd: PASSWD },
    error: { code: 'GROUP_NOT_FOUND', message: /the image has no \/etc\/group/ },
  },
  { name: 'user: uid out of range', config: { Cmd: ['x'], User: '4294967296' }, error: { code: 'INVALID_CONFIG' } },
  {
    name: 'override: user',
    config: { Cmd: ['x'], User: 'app' },
    options: USERS,
    overrides: { user: 'postgres' },
    expect: (s) => expect(s.process.user).toEqual({ uid: 70, gid: 70 }),
  },
  {
    name: 'override: user "" means root',
    config: { Cmd: ['x'], User: 'app' },
    options: USERS,
    overrides: { user: '' },
    expect: (s) => expect(s.process.user).toEqual({ uid: 0, gid: 0, additionalGids: [0, 1, 10, 27] }),
  },

  // annotations
  {
    name: 'annotations: every implicit field',
    config: { Cmd: ['x'], StopSignal: 'SIGQUIT', ExposedPorts: { '8080/tcp': {}, '443/tcp': {}, '53/udp': {} } },
    extra: {
      os: 'linux',
      architecture: 'arm64',
      variant: 'v8',
      'os.version': '6.1',
      'os.features': ['a', 'b'],
      author: 'someone',
      created: '2024-01-02T03:04:05Z',
    },
    expect: (s) =>
      expect(s.annotations).toEqual({
        'org.opencontainers.image.os': 'linux',
        'org.opencontainers.image.architecture': 'arm64',
        'org.opencontainers.image.variant': 'v8',
        'org.opencontainers.image.os.version': '6.1',
        'org.opencontainers.image.os.features': 'a,b',
        'org.opencontainers.image.author': 'someone',
        'org.opencontainers.image.created': '2024-01-02T03:04:05Z',
        'org.opencontainers.image.stopSignal': 'SIGQUIT',
        'org.opencontainers.image.exposedPorts': '443/tcp,53/udp,8080/tcp',
      }),
  },
  {
    name: 'annotations: empty fields give no annotation',
    config: { Cmd: ['x'], StopSignal: '', ExposedPorts: {}, Labels: {} },
    extra: { architecture: '', author: '', 'os.features': [] },
    expect: (s) => expect(s).not.toHaveProperty('annotations'),
  },
  {
    name: 'annotations: labels win over implicit ones',
    config: {
      Cmd: ['x'],
      StopSignal: 'SIGTERM',
      Labels: { 'org.opencontainers.image.stopSignal': 'SIGINT', 'org.opencontainers.image.created': 'label-time', team: 'infra' },
    },
    extra: { os: 'linux', created: '2024-01-01T00:00:00Z' },
    expect: (s) =>
      expect(s.annotations).toEqual({
        'org.opencontainers.image.os': 'linux',
        'org.opencontainers.image.created': 'label-time',
        'org.opencontainers.image.stopSignal': 'SIGINT',
        team: 'infra',
      }),
  },
  {
    name: 'annotations: caller provenance wins over labels',
    config: { Cmd: ['x'], Labels: { 'org.opencontainers.image.ref.name': 'spoofed', 'org.opencontainers.image.version': '1.2' } },
    options: {
      annotations: { 'org.opencontainers.image.ref.name': 'docker.io/library/x:1', 'io.pull-unpack.manifest-digest': 'sha256:abc' },
    },
    expect: (s) =>
      expect(s.annotations).toEqual({
        'org.opencontainers.image.ref.name': 'docker.io/library/x:1',
        'org.opencontainers.image.version': '1.2',
        'io.pull-unpack.manifest-digest': 'sha256:abc',
      }),
  },
  {
    name: 'annotations: a non-string label value',
    config: { Cmd: ['x'], Labels: { n: 1 as unknown as string } },
    error: { code: 'INVALID_CONFIG' },
  },
  { name: 'annotations: an empty label key', config: { Cmd: ['x'], Labels: { '': 'v' } }, error: { code: 'INVALID_CONFIG' } },

  // volumes
  {
    name: 'volumes: tmpfs by default, normalized, sorted parents first',
    config: { Cmd: ['x'], Volumes: { '/var/lib/data/': {}, '/cache': {}, '/var/lib': {}, '/var//lib/data': {} } },
    expect: (s) => {
      const extra = s.mounts.slice(7);
      expect(extra).toEqual(
        ['/cache', '/var/lib', '/var/lib/data'].map((destination) => ({
          destination,
          type: 'tmpfs',
          source: 'tmpfs',
          options: ['rw', 'nosuid', 'nodev', 'relatime', 'mode=755'],
        })),
      );
      expect(volumeMountPoints(s)).toEqual(['/cache', '/var/lib', '/var/lib/data']);
    },
  },
  {
    name: 'volumes: owned by a non-root process user',
    config: { Cmd: ['x'], User: 'app', Volumes: { '/data': {} } },
    options: USERS,
    expect: (s) => expect(s.mounts[7]!.options).toEqual(['rw', 'nosuid', 'nodev', 'relatime', 'mode=755', 'uid=1000', 'gid=1000']),
  },
  {
    name: 'volumes: none mode adds no mounts',
    config: { Cmd: ['x'], Volumes: { '/data': {}, relative: {} } },
    options: { volumeMode: 'none' },
    expect: (s) => {
      expect(s.mounts).toEqual(RUNC_SPEC.mounts);
      expect(volumeMountPoints(s)).toEqual([]);
    },
  },
  { name: 'volumes: none declared', config: { Cmd: ['x'] }, expect: (s) => expect(volumeMountPoints(s)).toEqual([]) },
  {
    name: 'volumes: a relative volume',
    config: { Cmd: ['x'], Volumes: { data: {} } },
    error: { code: 'INVALID_CONFIG', message: /"data"/ },
  },
  { name: 'volumes: the root', config: { Cmd: ['x'], Volumes: { '/': {} } }, error: { code: 'INVALID_CONFIG' } },
  { name: 'volumes: a standard mount', config: { Cmd: ['x'], Volumes: { '/dev/shm/': {} } }, error: { code: 'INVALID_CONFIG' } },

  // rootless, terminal, hostname, root, os
  {
    name: 'rootless: maps container 0 to the host ids, no network ns, user ns, no resources',
    config: { Cmd: ['x'] },
    options: { rootless: { uid: 1000, gid: 1001 } },
    expect: (s) => {
      expect(s.linux.uidMappings).toEqual([{ containerID: 0, hostID: 1000, size: 1 }]);
      expect(s.linux.gidMappings).toEqual([{ containerID: 0, hostID: 1001, size: 1 }]);
      expect(s.linux.namespaces.map((n) => n.type)).toEqual(['pid', 'ipc', 'uts', 'mount', 'user']);
      expect(s.linux).not.toHaveProperty('resources');
      expect(s.mounts.find((m) => m.destination === '/sys')).toEqual({
        destination: '/sys',
        type: 'none',
        source: '/sys',
        options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'],
      });
      expect(s.mounts.find((m) => m.destination === '/dev/pts')!.options).not.toContain('gid=5');
      expect(s.mounts.find((m) => m.destination === '/dev/mqueue')).toEqual(RUNC_SPEC.mounts[4]);
    },
  },
  {
    name: 'rootless: drops additionalGids and volume uid/gid options',
    config: { Cmd: ['x'], Volumes: { '/v': {} } },
    options: { ...USERS, rootless: { uid: 1000, gid: 1000 } },
    expect: (s) => {
      expect(s.process.user).toEqual({ uid: 0, gid: 0 });
      expect(s.mounts[7]!.options).toEqual(['rw', 'nosuid', 'nodev', 'relatime', 'mode=755']);
    },
  },
  { name: 'rootless: invalid host id', config: { Cmd: ['x'] }, options: { rootless: { uid: -1, gid: 0 } }, error: { code: 'USAGE' } },
  { name: 'hostname: custom', config: { Cmd: ['x'] }, options: { hostname: 'box' }, expect: (s) => expect(s.hostname).toBe('box') },
  {
    name: 'root: read-only on request',
    config: { Cmd: ['x'] },
    options: { readonlyRoot: true },
    expect: (s) => expect(s.root).toEqual({ path: 'rootfs', readonly: true }),
  },
  { name: 'os: a windows image', config: { Cmd: ['x'] }, extra: { os: 'windows' }, error: { code: 'INVALID_CONFIG', message: /windows/ } },
];

describe('conversion table', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const img = image(c.config, c.extra);
    if (c.error) {
      const err = thrown(() => convert(img, c.options, c.overrides));
      expect(err.code).toBe(c.error.code);
      if (c.error.message) expect(err.message).toMatch(c.error.message);
      return;
    }
    c.expect!(convert(img, c.options, c.overrides));
  });
});

describe('passwd and group parsing', () => {
  it('keeps well-formed lines in order and skips the rest', () => {
    expect(parsePasswd(PASSWD).map((e) => [e.name, e.uid, e.gid, e.home])).toEqual([
      ['root', 0, 0, '/root'],
      ['daemon', 2, 2, '/sbin'],
      ['app', 1000, 1000, '/home/app'],
      ['app', 2000, 2000, '/nope'],
      ['nohome', 1001, 1001, ''],
      ['postgres', 70, 70, '/var/lib/postgresql'],
    ]);
    expect(parseGroup(GROUP).find((g) => g.name === 'video')).toEqual({ name: 'video', gid: 27, members: ['root', 'app'] });
    expect(parseGroup(GROUP).map((g) => g.name)).not.toContain('broken-group-line');
    expect(parsePasswd('')).toEqual([]);
  });
});

describe('applyOverrides', () => {
  it('returns a new config and leaves the input untouched', () => {
    const input = image({ Entrypoint: ['/e'], Cmd: ['c'], Env: ['A=1'], User: 'app', WorkingDir: '/w' });
    const before = structuredClone(input);
    const out = applyOverrides(input, { entrypoint: ['/x'], env: ['A=2', 'B=3'], workdir: '/y', user: '1:2' });
    expect(input).toEqual(before);
    expect(out.config).toEqual({ Entrypoint: ['/x'], Cmd: [], Env: ['A=2', 'B=3'], User: '1:2', WorkingDir: '/y' });
    expect(out.rootfs).toEqual(input.rootfs);
  });
  it('with no overrides is an equal copy', () => {
    const input = image({ Cmd: ['c'] });
    const out = applyOverrides(input, {});
    expect(out).toEqual(input);
    expect(out.config).not.toBe(input.config);
  });
});

describe('realistic images', () => {
  it('nginx-like: entrypoint script, labels, ports, stop signal, image PATH', () => {
    const spec = convert(
      image(
        {
          Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NGINX_VERSION=1.25.3'],
          Entrypoint: ['/docker-entrypoint.sh'],
          Cmd: ['nginx', '-g', 'daemon off;'],
          ExposedPorts: { '80/tcp': {} },
          StopSignal: 'SIGQUIT',
          Labels: { maintainer: 'NGINX Docker Maintainers <docker-maint@nginx.com>' },
        },
        { os: 'linux', architecture: 'amd64', created: '2023-11-01T00:00:00Z' },
      ),
      {
        ...USERS,
        annotations: { 'org.opencontainers.image.ref.name': 'nginx:1.25', 'org.opencontainers.image.base.digest': 'sha256:1' },
      },
    );
    expect(spec.process.args).toEqual(['/docker-entrypoint.sh', 'nginx', '-g', 'daemon off;']);
    expect(spec.process.env).toEqual([
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'NGINX_VERSION=1.25.3',
      'HOME=/root',
    ]);
    expect(spec.process.cwd).toBe('/');
    expect(spec.process.user).toEqual({ uid: 0, gid: 0, additionalGids: [0, 1, 10, 27] });
    expect(spec.annotations).toEqual({
      'org.opencontainers.image.os': 'linux',
      'org.opencontainers.image.architecture': 'amd64',
      'org.opencontainers.image.created': '2023-11-01T00:00:00Z',
      'org.opencontainers.image.stopSignal': 'SIGQUIT',
      'org.opencontainers.image.exposedPorts': '80/tcp',
      maintainer: 'NGINX Docker Maintainers <docker-maint@nginx.com>',
      'org.opencontainers.image.ref.name': 'nginx:1.25',
      'org.opencontainers.image.base.digest': 'sha256:1',
    });
    expect(spec.mounts).toEqual(RUNC_SPEC.mounts);
    expect(spec.linux).toEqual(RUNC_SPEC.linux);
  });

  it('postgres-like: named user, volume, working dir, labels overriding implicit annotations', () => {
    const spec = convert(
      image(
        {
          User: 'postgres',
          WorkingDir: '/var/lib/postgresql',
          Env: ['PGDATA=/var/lib/postgresql/data', 'PG_MAJOR=16'],
          Entrypoint: ['docker-entrypoint.sh'],
          Cmd: ['postgres'],
          Volumes: { '/var/lib/postgresql/data': {} },
          ExposedPorts: { '5432/tcp': {} },
          StopSignal: 'SIGINT',
          Labels: { 'org.opencontainers.image.author': 'label author', 'org.opencontainers.image.exposedPorts': '5432' },
        },
        { os: 'linux', architecture: 'arm', variant: 'v7', author: 'config author' },
      ),
      { ...USERS, terminal: true, hostname: 'pg' },
    );
    expect(spec.process).toMatchObject({
      terminal: true,
      user: { uid: 70, gid: 70 },
      args: ['docker-entrypoint.sh', 'postgres'],
      env: ['PGDATA=/var/lib/postgresql/data', 'PG_MAJOR=16', DEFAULT_PATH, 'TERM=xterm', 'HOME=/var/lib/postgresql'],
      cwd: '/var/lib/postgresql',
    });
    expect(spec.process.user).not.toHaveProperty('additionalGids');
    expect(spec.hostname).toBe('pg');
    expect(spec.mounts.slice(7)).toEqual([
      {
        destination: '/var/lib/postgresql/data',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['rw', 'nosuid', 'nodev', 'relatime', 'mode=755', 'uid=70', 'gid=70'],
      },
    ]);
    expect(volumeMountPoints(spec)).toEqual(['/var/lib/postgresql/data']);
    expect(spec.annotations).toEqual({
      'org.opencontainers.image.os': 'linux',
      'org.opencontainers.image.architecture': 'arm',
      'org.opencontainers.image.variant': 'v7',
      'org.opencontainers.image.author': 'label author',
      'org.opencontainers.image.stopSignal': 'SIGINT',
      'org.opencontainers.image.exposedPorts': '5432',
    });
  });

  it('distroless-like: numeric user, no passwd, entrypoint only, overridden by the CLI', () => {
    const img = image(
      {
        User: '65532',
        WorkingDir: '/home/nonroot',
        Entrypoint: ['/app/server'],
        Env: ['SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'],
      },
      { os: 'linux', architecture: 'amd64', created: '1970-01-01T00:00:00Z' },
    );
    const plain = convert(img);
    expect(plain.process.user).toEqual({ uid: 65532, gid: 0 });
    expect(plain.process.args).toEqual(['/app/server']);
    expect(plain.process.env).toEqual(['SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt', DEFAULT_PATH]);
    // A rootless user namespace maps only container 0: runc cannot switch to 65532 there.
    const rootless = { rootless: { uid: 1000, gid: 1000 } };
    expect(thrown(() => toRuntimeConfig(img, rootless))).toMatchObject({
      code: 'INVALID_CONFIG',
      message: expect.stringContaining('"65532" is 65532:0'),
    });
    const asRoot = convert(img, rootless, { user: '0' });
    expect(asRoot.process.user).toEqual({ uid: 0, gid: 0 });
    expect(asRoot.linux.namespaces).not.toContainEqual({ type: 'network' });

    const debug = convert(img, {}, { entrypoint: ['/busybox/sh'], cmd: ['-c', 'env'], user: '0', env: ['DEBUG=1'], workdir: '/' });
    expect(debug.process.args).toEqual(['/busybox/sh', '-c', 'env']);
    expect(debug.process.user).toEqual({ uid: 0, gid: 0 });
    expect(debug.process.cwd).toBe('/');
    expect(debug.process.env).toEqual(['SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt', 'DEBUG=1', DEFAULT_PATH]);
  });

  it('alpine-like: no User, root in many groups, docker-style config with nulls', () => {
    const alpineGroup =
      'root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\nsys:x:3:root,bin,adm\nadm:x:4:root,adm,daemon\n' +
      'tty:x:5:\ndisk:x:6:root,adm\nwheel:x:10:root\nfloppy:x:11:root\ndialout:x:20:root\ntape:x:26:root\nvideo:x:27:root\nnobody:x:65534:\n';
    const spec = convert(
      image(
        {
          Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
          Cmd: ['/bin/sh'],
          Entrypoint: null,
          WorkingDir: '',
          User: '',
          Labels: undefined as unknown as Record<string, string>,
        },
        { os: 'linux', architecture: 'amd64' },
      ),
      { passwd: 'root:x:0:0:root:/root:/bin/ash\n', group: alpineGroup, terminal: true },
    );
    // What `id` prints in a docker-run alpine: groups=0,1,2,3,4,6,10,11,20,26,27.
    expect(spec.process.user).toEqual({ uid: 0, gid: 0, additionalGids: [0, 1, 2, 3, 4, 6, 10, 11, 20, 26, 27] });
    expect(spec.process.env).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm', 'HOME=/root']);
    expect(spec.process.args).toEqual(['/bin/sh']);
    expect(spec.annotations).toEqual({ 'org.opencontainers.image.os': 'linux', 'org.opencontainers.image.architecture': 'amd64' });
  });
});

describe('schema coverage', () => {
  it('validated every config generated above', () => {
    const successes = CASES.filter((c) => !c.error).length;
    expect(validated).toBeGreaterThanOrEqual(successes + 8);
  });
});
