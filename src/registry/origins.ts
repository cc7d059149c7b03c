/**
 * Which origins (scheme, host, port) a registry client may send credentials to, and which it
 * reaches without verifying TLS. Credentials are scoped to origins, not host names: a plain-HTTP
 * origin on the registry's host is another origin (issue 11).
 */

/** True for hosts docker reaches without TLS by default: localhost, 127.0.0.0/8, ::1. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = hostOnly(registry);
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** 'host:5000' -> 'host', '[::1]:5000' -> '::1'. */
function hostOnly(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const colon = registry.lastIndexOf(':');
  return colon === -1 ? registry : registry.slice(0, colon);
}

/** The names an --insecure-registry entry may give `url`'s origin: HOST, HOST:PORT, with or without the default port. */
function namesOf(url: URL): string[] {
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const bare = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return [url.host, url.hostname, bare, `${url.hostname}:${port}`];
}

export interface OriginPolicyOptions {
  /** The registry as named in the reference ('docker.io'). */
  registry: string;
  /** Its host[:port] ('registry-1.docker.io'). */
  endpoint: string;
  /** --insecure-registry entries: HOST (any port) or HOST:PORT. */
  insecureRegistries: readonly string[];
}

/**
 * The rules for one registry client. An origin is insecure (plain HTTP allowed, certificate not
 * verified) only when --insecure-registry names it; the registry itself also when it is named by
 * its reference name. Credentials go over TLS, to an insecure origin, or between loopback
 * addresses when the registry itself is a plain-HTTP loopback registry (a local test setup);
 * never over plain HTTP after the registry was reached over TLS.
 */
export class OriginPolicy {
  /** --insecure-registry names the registry. */
  readonly registryInsecure: boolean;
  /** The registry may be reached over plain HTTP (insecure, or on loopback), as docker does. */
  readonly registryMayUseHttp: boolean;
  private readonly listed: Set<string>;

  constructor(options: OriginPolicyOptions) {
    this.listed = new Set(options.insecureRegistries);
    const { registry, endpoint } = options;
    this.registryInsecure = this.listed.has(registry) || this.listed.has(endpoint) || this.listed.has(hostOnly(endpoint));
    if (this.registryInsecure) this.listed.add(endpoint);
    this.registryMayUseHttp = this.registryInsecure || isLoopbackRegistry(endpoint);
  }

  /** True when --insecure-registry names `url`'s origin: its certificate is not verified. */
  isInsecure(url: URL): boolean {
    return namesOf(url).some((name) => this.listed.has(name));
  }

  /** True when credentials may be sent to `url` for a registry reached at `base`. */
  maySendSecrets(url: URL, base: URL): boolean {
    if (url.protocol === 'https:') return true;
    if (url.protocol !== 'http:') return false;
    if (this.isInsecure(url)) return true;
    return base.protocol === 'http:' && isLoopbackRegistry(base.host) && isLoopbackRegistry(url.host);
  }
}
