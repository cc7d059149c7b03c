/**
 * The CLI's network and credential flags, its config file and the environment variables it
 * honours, turned into library options. Part of the CLI: the library never reads these itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { readPasswordFromStream } from '../registry/credentials.js';
import { PullUnpackError } from '../errors.js';
import { parseJson } from '../image/json.js';
import type { SourceOptions } from '../sources/open.js';
import { parseSize, resolveLimits, type Limits } from '../limits.js';
import type { TransportOptions } from '../registry/transport.js';

/** Flags shared by every command that talks to a registry. */
export const NETWORK_FLAGS = {
  platform: { type: 'string' },
  'insecure-registry': { type: 'string', multiple: true },
  username: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  cacert: { type: 'string', multiple: true },
  mirror: { type: 'string', multiple: true },
  config: { type: 'string' },
  'max-manifest-size': { type: 'string' },
  'max-config-size': { type: 'string' },
  'max-manifests': { type: 'string' },
  'max-index-depth': { type: 'string' },
  'max-layers': { type: 'string' },
  'max-uncompressed-size': { type: 'string' },
  'max-entries': { type: 'string' },
  'max-path-depth': { type: 'string' },
  'max-name-length': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export interface NetworkFlagValues {
  platform?: string | undefined;
  'insecure-registry'?: string[] | undefined;
  username?: string | undefined;
  'password-stdin'?: boolean | undefined;
  cacert?: string[] | undefined;
  mirror?: string[] | undefined;
  config?: string | undefined;
  'max-manifest-size'?: string | undefined;
  'max-config-size'?: string | undefined;
  'max-manifests'?: string | undefined;
  'max-index-depth'?: string | undefined;
  'max-layers'?: string | undefined;
  'max-uncompressed-size'?: string | undefined;
  'max-entries'?: string | undefined;
  'max-path-depth'?: string | undefined;
  'max-name-length'?: string | undefined;
}

/** The optional config file: mirrors and insecure registries shared by every run. */
interface ConfigFile {
  mirrors?: Record<string, string[]>;
  insecureRegistries?: string[];
}

/** Debian's and Ubuntu's system CA bundle (update-ca-certificates writes it). */
const SYSTEM_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/** Resolves the flags, config file and environment into SourceOptions (reads stdin for a password). */
export async function sourceOptionsFrom(
  values: NetworkFlagValues,
  env: NodeJS.ProcessEnv,
  stdin: NodeJS.ReadableStream | undefined,
): Promise<SourceOptions> {
  const file = readConfigFile(values.config, env);
  // Mirrors given on the command line are tried before those of the config file.
  const mirrors: Record<string, string[]> = { ...file.mirrors };
  for (const spec of [...(values.mirror ?? [])].reverse()) {
    const eq = spec.indexOf('=');
    if (eq <= 0 || eq === spec.length - 1) {
      throw new PullUnpackError('USAGE', `--mirror takes REGISTRY=URL, e.g. docker.io=https://mirror.example (got "${spec}")`);
    }
    const registry = spec.slice(0, eq);
    mirrors[registry] = [spec.slice(eq + 1), ...(mirrors[registry] ?? [])];
  }
  return {
    platform: values.platform,
    insecureRegistries: [...(file.insecureRegistries ?? []), ...(values['insecure-registry'] ?? [])],
    credentials: await explicitCredentials(values, stdin),
    env,
    mirrors,
    transport: transportFrom(values, env),
    limits: limitsFrom(values),
  };
}

/** The --max-* flags: sizes take units (500M, 10G), counts plain numbers. */
function limitsFrom(values: NetworkFlagValues): Partial<Limits> {
  const count = (flag: keyof NetworkFlagValues): number | undefined => {
    const text = values[flag] as string | undefined;
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text)) throw new PullUnpackError('USAGE', `--${flag} takes a whole number (got "${text}")`);
    return Number(text);
  };
  const size = (text: string | undefined): number | undefined => (text === undefined ? undefined : parseSize(text));
  return resolveLimits({
    maxManifestBytes: size(values['max-manifest-size']),
    maxConfigBytes: size(values['max-config-size']),
    maxManifests: count('max-manifests'),
    maxIndexDepth: count('max-index-depth'),
    maxLayers: count('max-layers'),
    maxUncompressedBytes: size(values['max-uncompressed-size']),
    maxEntries: count('max-entries'),
    maxPathDepth: count('max-path-depth'),
    maxNameLength: count('max-name-length'),
  });
}

async function explicitCredentials(values: NetworkFlagValues, stdin: NodeJS.ReadableStream | undefined) {
  if (values['password-stdin'] && !values.username) {
    throw new PullUnpackError('USAGE', '--password-stdin needs --username');
  }
  if (!values.username) return undefined;
  if (!values['password-stdin'] || !stdin) {
    throw new PullUnpackError('USAGE', '--username needs --password-stdin (passwords are never taken as arguments)');
  }
  return { username: values.username, password: await readPasswordFromStream(stdin) };
}

function transportFrom(values: NetworkFlagValues, env: NodeJS.ProcessEnv): TransportOptions {
  const caFiles: string[] = [];
  const systemBundle = env['SSL_CERT_FILE'] || (existsSync(SYSTEM_CA_BUNDLE) ? SYSTEM_CA_BUNDLE : undefined);
  if (systemBundle) caFiles.push(systemBundle);
  if (env['NODE_EXTRA_CA_CERTS']) caFiles.push(env['NODE_EXTRA_CA_CERTS']);
  caFiles.push(...(values.cacert ?? []));
  const pick = (name: string): string | undefined => env[name] || env[name.toLowerCase()] || undefined;
  return {
    caFiles,
    certsDir: env['PULL_UNPACK_CERTS_DIR'] || undefined,
    proxy: { httpProxy: pick('HTTP_PROXY'), httpsProxy: pick('HTTPS_PROXY'), noProxy: pick('NO_PROXY') },
  };
}

/** --config FILE, else $XDG_CONFIG_HOME/pull-unpack/config.json or ~/.config/pull-unpack/config.json if present. */
function readConfigFile(explicit: string | undefined, env: NodeJS.ProcessEnv): ConfigFile {
  const home = env['HOME'] || homedir();
  const path = explicit ?? join(env['XDG_CONFIG_HOME'] || join(home, '.config'), 'pull-unpack', 'config.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (explicit === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new PullUnpackError('USAGE', `cannot read the config file ${path}: ${(err as Error).message}`);
  }
  return checkConfigFile(parseJson(text, `the config file ${path}`, { code: 'USAGE' }), path);
}

function checkConfigFile(doc: unknown, path: string): ConfigFile {
  const bad = (why: string): PullUnpackError =>
    new PullUnpackError('USAGE', `the config file ${path}: ${why}`, {
      hint: 'expected {"mirrors": {"docker.io": ["https://mirror.example"]}, "insecureRegistries": ["host:5000"]}',
    });
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw bad('not a JSON object');
  const { mirrors, insecureRegistries } = doc as Record<string, unknown>;
  const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (mirrors !== undefined && (typeof mirrors !== 'object' || mirrors === null || !Object.values(mirrors).every(isStrings))) {
    throw bad('"mirrors" must map registries to lists of URLs');
  }
  if (insecureRegistries !== undefined && !isStrings(insecureRegistries)) throw bad('"insecureRegistries" must be a list of hosts');
  return { mirrors: mirrors as Record<string, string[]> | undefined, insecureRegistries };
}
