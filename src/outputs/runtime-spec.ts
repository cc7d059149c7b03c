/**
 * The OCI runtime-spec config.json as pull-unpack writes it (config.md, config-linux.md): only
 * the fields a converted image config fills in. ../shared/oci-schemas/runtime-spec validates it
 * in the tests.
 */
export interface RuntimeUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface RuntimeCapabilities {
  bounding: string[];
  effective: string[];
  permitted: string[];
  ambient: string[];
}

export interface RuntimeRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface RuntimeProcess {
  terminal: boolean;
  user: RuntimeUser;
  args: string[];
  env: string[];
  cwd: string;
  capabilities: RuntimeCapabilities;
  rlimits: RuntimeRlimit[];
  noNewPrivileges: boolean;
}

export interface RuntimeMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export type NamespaceType = 'pid' | 'network' | 'ipc' | 'uts' | 'mount' | 'user' | 'cgroup';

export interface LinuxIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface LinuxDeviceCgroup {
  allow: boolean;
  access?: string;
}

export interface RuntimeLinux {
  uidMappings?: LinuxIdMapping[];
  gidMappings?: LinuxIdMapping[];
  resources?: { devices: LinuxDeviceCgroup[] };
  namespaces: Array<{ type: NamespaceType }>;
  maskedPaths: string[];
  readonlyPaths: string[];
}

/** The runtime-spec config.json document, keys in the order runc writes them. */
export interface RuntimeSpec {
  ociVersion: string;
  process: RuntimeProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: RuntimeMount[];
  annotations?: Record<string, string>;
  linux: RuntimeLinux;
}
