/** Types for registry-server.mjs: a real docker-registry (distribution 2.8) for tests. */

export declare const REGISTRY_BINARY: '/usr/bin/docker-registry';

export interface RegistryOptions {
  /** The registry's directory (config.yml, registry.log, storage/); a new temp dir by default. */
  dir?: string;
  /** Keep `dir` on stop(). By default stop() removes it. */
  keepDir?: boolean;
  /** Listen on this port instead of a free one (no retry when it is taken). */
  port?: number;
  /** Let the registry outlive this process (the CLI); otherwise it is killed when Node exits. */
  detached?: boolean;
  /** distribution's log level; default 'warn'. */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** How long to wait for GET /v2/ to answer; default 20 s. */
  startTimeoutMs?: number;
  /** Basic auth from an htpasswd file of bcrypt entries (testdata/auth/htpasswd: tester / pull-unpack-test-password). */
  htpasswd?: string;
  /** Serve HTTPS with this certificate and key (PEM paths); `clientCA` requires client certificates. */
  tls?: { cert: string; key: string; clientCA?: string };
  /**
   * Run as a pull-through cache of `remoteurl`. distribution 2.8 uses the credentials only
   * against a token-auth upstream: an upstream with Basic auth answers 401 to the cache.
   */
  proxy?: { remoteurl: string; username?: string; password?: string };
  /**
   * Bearer token auth (distribution's auth.token section). distribution 2.8 accepts a JWT whose
   * `iss` is `issuer`, `aud` is `service`, and whose header carries the signing certificate
   * chain as `x5c` verifying against `rootcertbundle` (test/helpers/network-fixtures.ts has a
   * token server that does this).
   */
  tokenAuth?: { realm: string; service: string; issuer: string; rootcertbundle: string };
  /** Merged over the generated config (objects deeply). */
  extraConfig?: Record<string, unknown>;
}

export interface RunningRegistry {
  /** 'http://127.0.0.1:PORT' (https with `tls`). */
  url: string;
  /** '127.0.0.1:PORT'. */
  host: string;
  dir: string;
  pid: number;
  logPath: string;
  /** SIGTERM (SIGKILL after 5 s), wait until gone, remove `dir` unless keepDir. Safe to call twice. */
  stop(): Promise<void>;
}

/** Starts docker-registry on 127.0.0.1 and waits until it serves; the error carries its log. */
export declare function startRegistry(options?: RegistryOptions): Promise<RunningRegistry>;

/** A port that was free a moment ago. */
export declare function freePort(): Promise<number>;

/** Stops a docker-registry process by pid (false when `pid` is not a live docker-registry). */
export declare function stopRegistryProcess(pid: number): Promise<boolean>;

/** True when `pid` runs and is not a zombie. */
export declare function isAlive(pid: number): boolean;

/** True when `pid` is a live docker-registry process. */
export declare function isRegistryProcess(pid: number): boolean;

/** The generated config.yml text. */
export declare function registryConfig(dir: string, host: string, options?: RegistryOptions): string;
