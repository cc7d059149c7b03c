/**
 * containers-registries.d(5): where GPG simple signatures of a docker image are looked up
 * (`lookaside`, or its old name `sigstore`) and whether sigstore attachments are
 * (`use-sigstore-attachments`). Every *.yaml file of the one directory used is read and merged;
 * `default-docker` or a `docker` namespace defined in two files is an error. A namespace is
 * matched as policy.json scopes are (scopes.ts), the most specific first, then default-docker;
 * a namespace without the setting asked for defers to the next one (c/image docker/registries_d.go).
 * `lookaside-staging` and `sigstore-staging` are for writing signatures: not used here.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PullUnpackError } from '../errors.js';

interface Namespace {
  lookaside?: string | undefined;
  useSigstoreAttachments?: boolean | undefined;
}

export interface RegistriesConfig {
  defaultDocker: Namespace | undefined;
  docker: Map<string, Namespace>;
}

export const EMPTY_REGISTRIES_CONFIG: RegistriesConfig = { defaultDocker: undefined, docker: new Map() };

/** Reads and merges `dir`/*.yaml; a missing directory configures nothing. */
export async function loadRegistriesDir(dir: string): Promise<RegistriesConfig> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.yaml')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_REGISTRIES_CONFIG;
    throw invalid(`cannot read the registries.d directory ${dir}: ${(err as Error).message}`, err);
  }
  const merged: RegistriesConfig = { defaultDocker: undefined, docker: new Map() };
  const origin = new Map<string, string>();
  for (const name of names) {
    const path = join(dir, name);
    const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined; // removed since the listing
      throw invalid(`cannot read ${path}: ${err.message}`, err);
    });
    if (text === undefined) continue;
    const file = parseFile(text, path, (await import('yaml')).parse);
    if (file.defaultDocker) {
      if (merged.defaultDocker) throw invalid(`"default-docker" is defined both in ${origin.get('')} and ${path}`);
      merged.defaultDocker = file.defaultDocker;
      origin.set('', path);
    }
    for (const [ns, config] of file.docker) {
      if (merged.docker.has(ns)) throw invalid(`"docker" namespace "${ns}" is defined both in ${origin.get(`/${ns}`)} and ${path}`);
      merged.docker.set(ns, config);
      origin.set(`/${ns}`, path);
    }
  }
  return merged;
}

/** One registries.d file; `parse` is the yaml package's (loaded only when a registries.d file is read). */
function parseFile(text: string, path: string, parse: typeof import('yaml').parse): RegistriesConfig {
  let doc: unknown;
  try {
    // Duplicate keys are errors, as in gopkg.in/yaml.v3; unknown keys are ignored, as there.
    doc = parse(text, { uniqueKeys: true, prettyErrors: false });
  } catch (err) {
    throw invalid(`${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, err);
  }
  if (doc === null || doc === undefined) return { defaultDocker: undefined, docker: new Map() };
  if (typeof doc !== 'object' || Array.isArray(doc)) throw invalid(`${path}: expected a mapping`);
  const { 'default-docker': defaultDocker, docker } = doc as Record<string, unknown>;
  const namespaces = new Map<string, Namespace>();
  if (docker !== undefined && docker !== null) {
    if (typeof docker !== 'object' || Array.isArray(docker)) throw invalid(`${path}: "docker" must map namespaces to settings`);
    for (const [ns, value] of Object.entries(docker)) namespaces.set(ns, parseNamespace(value, `${path}: docker "${ns}"`));
  }
  const parsedDefault =
    defaultDocker === undefined || defaultDocker === null ? undefined : parseNamespace(defaultDocker, `${path}: default-docker`);
  return { defaultDocker: parsedDefault, docker: namespaces };
}

function parseNamespace(value: unknown, what: string): Namespace {
  if (value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) throw invalid(`${what} must be a mapping`);
  const fields = value as Record<string, unknown>;
  const text = (key: string): string | undefined => {
    const v = fields[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw invalid(`${what}: "${key}" must be a string`);
    return v;
  };
  const use = fields['use-sigstore-attachments'];
  if (use !== undefined && use !== null && typeof use !== 'boolean')
    throw invalid(`${what}: "use-sigstore-attachments" must be true or false`);
  return { lookaside: text('lookaside') || text('sigstore') || undefined, useSigstoreAttachments: use ?? undefined };
}

function invalid(message: string, cause?: unknown): PullUnpackError {
  return new PullUnpackError('INVALID_POLICY', message, { cause, hint: 'see containers-registries.d(5)' });
}

/** The lookaside base URL for an image with this identity and namespaces, if any is configured. */
export function lookasideFor(config: RegistriesConfig, identity: string, namespaces: readonly string[]): string | undefined {
  return setting(config, identity, namespaces, (ns) => ns.lookaside);
}

/** Whether sigstore attachments are looked up for the image (default: no, as c/image). */
export function useSigstoreAttachments(config: RegistriesConfig, identity: string, namespaces: readonly string[]): boolean {
  return setting(config, identity, namespaces, (ns) => ns.useSigstoreAttachments) ?? false;
}

function setting<T>(
  config: RegistriesConfig,
  identity: string,
  namespaces: readonly string[],
  get: (ns: Namespace) => T | undefined,
): T | undefined {
  for (const scope of [identity, ...namespaces]) {
    const ns = config.docker.get(scope);
    const value = ns && get(ns);
    if (value !== undefined) return value;
  }
  return config.defaultDocker && get(config.defaultDocker);
}
