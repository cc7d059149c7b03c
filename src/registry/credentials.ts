/**
 * Credential lookup for one registry, in docker's order: explicit credentials, then
 * DOCKER_AUTH_CONFIG, then the docker config file (credHelpers, credsStore, auths), then
 * podman/skopeo's auth.json. A missing or broken source is a one-line notice, never an
 * error: a public pull must not fail because a keychain helper is absent.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Credentials } from './auth.js';
import { PullUnpackError, redactSecrets } from '../errors.js';
import { parseJson as parseJsonText } from '../image/json.js';
import { runProgram } from '../programs.js';

/** What running `docker-credential-NAME get` came to. */
export type HelperResult =
  | { status: 'exited'; exitCode: number; stdout: string; stderr: string }
  /** The executable is not on PATH (ENOENT). */
  | { status: 'missing' }
  | { status: 'timeout' }
  /** It could not be started for another reason, or a signal killed it. */
  | { status: 'failed'; message: string };

export interface CredentialLookupOptions {
  /** The environment to read (DOCKER_CONFIG, REGISTRY_AUTH_FILE, PATH...); the CLI passes process.env. */
  env: NodeJS.ProcessEnv;
  /** Default: env.HOME, else os.homedir(). */
  homeDir?: string | undefined;
  /** --username + --password-stdin: wins over every other source. */
  explicit?: Credentials | undefined;
  /** One-line notices: a helper missing, a malformed config file... Never contains a secret. */
  onNotice?: ((message: string) => void) | undefined;
  /** Runs a credential helper; default: `docker-credential-NAME get` on options.env's PATH. */
  runHelper?: ((name: string, serverUrl: string) => Promise<HelperResult>) | undefined;
}

/** Docker Hub's key in docker's config file, and the server URL its helpers are asked for. */
const DOCKER_HUB_SERVER = 'https://index.docker.io/v1/';
const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);
/** docker-credential-helpers: a helper's `get` exits 1 with this text when it has nothing. */
const NOT_FOUND_TEXT = 'credentials not found in native keychain';
/** docker's convention: a helper answering this username returns an identity token as Secret. */
const TOKEN_USERNAME = '<token>';
const HELPER_TIMEOUT_MS = 10_000;
const MAX_HELPER_OUTPUT = 1024 * 1024;
const MAX_PASSWORD_BYTES = 64 * 1024;
/** Helper names become part of an executable name; refuse anything that could be a path. */
const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

interface Found {
  credentials: Credentials;
  source: string;
}

interface Lookup {
  /** The registry in canonical form: lowercased, Docker Hub's aliases folded into 'docker.io'. */
  host: string;
  /** What a helper is asked for: Docker Hub's legacy URL, else the registry as named. */
  serverUrl: string;
  env: NodeJS.ProcessEnv;
  homeDir: string;
  notices: string[];
  runHelper: (name: string, serverUrl: string) => Promise<HelperResult>;
}

type KeyStyle = 'docker' | 'podman';

/**
 * Finds credentials for `registry` (as named in a reference: 'docker.io', 'ghcr.io',
 * '127.0.0.1:5000'); undefined means anonymous. Never throws: unreadable or malformed
 * sources and broken helpers become notices and the lookup moves on to the next source.
 */
export async function findCredentials(registry: string, options: CredentialLookupOptions): Promise<Credentials | undefined> {
  if (options.explicit) return options.explicit;
  const host = canonicalHost(registry);
  const lookup: Lookup = {
    host,
    serverUrl: host === 'docker.io' ? DOCKER_HUB_SERVER : registry,
    env: options.env,
    homeDir: options.homeDir ?? options.env['HOME'] ?? homedir(),
    notices: [],
    runHelper: options.runHelper ?? credentialHelperRunner(options.env),
  };
  const found = fromDockerAuthEnv(lookup) ?? (await fromDockerConfig(lookup)) ?? (await fromPodman(lookup));
  const outcome = found ? `using credentials from ${found.source}` : `pulling from ${registry} anonymously`;
  for (const notice of lookup.notices) options.onNotice?.(redactSecrets(`${notice} (${outcome})`));
  return found?.credentials;
}

/** A lazily-evaluated, memoized lookup for RegistryClientOptions.credentials. */
export function credentialProvider(registry: string, options: CredentialLookupOptions): () => Promise<Credentials | undefined> {
  let pending: Promise<Credentials | undefined> | undefined;
  return () => (pending ??= findCredentials(registry, options));
}

/**
 * Reads a password from `stream` for --password-stdin, as docker does: one trailing "\n" or
 * "\r\n" is removed. Throws USAGE for an empty password, TOO_LARGE past 64 KiB.
 */
export async function readPasswordFromStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk);
    size += buf.length;
    if (size > MAX_PASSWORD_BYTES) throw new PullUnpackError('TOO_LARGE', 'the password read from stdin is longer than 64 KiB');
    chunks.push(buf);
  }
  let password = Buffer.concat(chunks).toString('utf8');
  if (password.endsWith('\n')) password = password.slice(0, -1);
  if (password.endsWith('\r')) password = password.slice(0, -1);
  if (password === '') {
    throw new PullUnpackError('USAGE', 'the password read from stdin is empty', {
      hint: 'pipe the password, e.g. `echo "$TOKEN" | pull-unpack ... --password-stdin`',
    });
  }
  return password;
}

/** Host[:port] of a config key, as docker's ConvertToHostname: scheme and path dropped. */
function convertToHostname(key: string): string {
  const scheme = key.indexOf('://');
  const rest = scheme === -1 ? key : key.slice(scheme + 3);
  return rest.split('/')[0]!;
}

function canonicalHost(hostname: string): string {
  const host = hostname.toLowerCase();
  return DOCKER_HUB_HOSTS.has(host) ? 'docker.io' : host;
}

/**
 * The host a key names, or undefined for a key that names more than a host. Docker reduces
 * every key to its host; podman keys without a scheme may name a repository ('quay.io/org'),
 * which applies to that namespace only and so never to a whole-registry lookup.
 */
function keyHost(key: string, style: KeyStyle): string | undefined {
  if (style === 'podman' && !key.includes('://') && key.includes('/')) return undefined;
  return canonicalHost(convertToHostname(key));
}

/** The values of `map` whose key names the registry; an exact key (docker's own spelling) first. */
function matchingEntries(map: unknown, lookup: Lookup, style: KeyStyle): unknown[] {
  if (!isObject(map)) return [];
  const exact = lookup.host === 'docker.io' ? DOCKER_HUB_SERVER : lookup.serverUrl;
  const keys = Object.keys(map).filter((key) => keyHost(key, style) === lookup.host);
  keys.sort((a, b) => Number(b === exact) - Number(a === exact));
  return keys.map((key) => map[key]);
}

/** DOCKER_AUTH_CONFIG holds a config file's JSON; docker consults it before the file. */
function fromDockerAuthEnv(lookup: Lookup): Found | undefined {
  const text = lookup.env['DOCKER_AUTH_CONFIG'];
  if (!text) return undefined;
  const doc = parseJson(text, 'DOCKER_AUTH_CONFIG', lookup);
  return doc === undefined ? undefined : fromAuths(doc['auths'], 'DOCKER_AUTH_CONFIG', 'docker', lookup);
}

/**
 * The docker config file. As docker's GetCredentialsStore: a credHelpers entry for the
 * registry, else credsStore, decides the helper, and then only the helper is asked; the
 * file's auths are read only when no helper applies.
 * https://github.com/docker/cli/blob/master/cli/config/configfile/file.go
 */
async function fromDockerConfig(lookup: Lookup): Promise<Found | undefined> {
  const dir = lookup.env['DOCKER_CONFIG'] || join(lookup.homeDir, '.docker');
  const file = join(dir, 'config.json');
  const doc = await readJsonFile(file, lookup);
  if (doc === undefined) return undefined;
  const helper = matchingEntries(doc['credHelpers'], lookup, 'docker').find((name) => typeof name === 'string' && name !== '');
  const store = typeof doc['credsStore'] === 'string' && doc['credsStore'] !== '' ? doc['credsStore'] : undefined;
  const name = (helper as string | undefined) ?? store;
  if (name !== undefined) return fromHelper(name, lookup);
  return fromAuths(doc['auths'], file, 'docker', lookup);
}

/**
 * Podman/skopeo (containers-auth.json(5)): REGISTRY_AUTH_FILE when set; else
 * $XDG_RUNTIME_DIR/containers/auth.json, then $XDG_CONFIG_HOME/containers/auth.json.
 */
async function fromPodman(lookup: Lookup): Promise<Found | undefined> {
  const { env } = lookup;
  const files: string[] = [];
  if (env['REGISTRY_AUTH_FILE']) {
    files.push(env['REGISTRY_AUTH_FILE']);
  } else {
    if (env['XDG_RUNTIME_DIR']) files.push(join(env['XDG_RUNTIME_DIR'], 'containers', 'auth.json'));
    files.push(join(env['XDG_CONFIG_HOME'] || join(lookup.homeDir, '.config'), 'containers', 'auth.json'));
  }
  for (const file of files) {
    const doc = await readJsonFile(file, lookup);
    const found = doc && fromAuths(doc['auths'], file, 'podman', lookup);
    if (found) return found;
  }
  return undefined;
}

/** The first matching `auths` entry that holds credentials. */
function fromAuths(auths: unknown, source: string, style: KeyStyle, lookup: Lookup): Found | undefined {
  for (const entry of matchingEntries(auths, lookup, style)) {
    const credentials = entryCredentials(entry, source, lookup);
    if (credentials) return { credentials, source };
  }
  return undefined;
}

/** One `auths` entry: `auth` (base64 user:password), or `username` + `password`, and/or `identitytoken`. */
function entryCredentials(entry: unknown, source: string, lookup: Lookup): Credentials | undefined {
  if (!isObject(entry)) return undefined;
  const out: Credentials = {};
  const auth = stringField(entry, 'auth');
  if (auth !== undefined) {
    const decoded = Buffer.from(auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) {
      lookup.notices.push(`${source}: the "auth" entry for ${lookup.host} is not base64 "user:password"; ignoring it`);
      return undefined;
    }
    out.username = decoded.slice(0, colon);
    // Docker trims NULs that some writers pad the decoded value with.
    out.password = decoded.slice(colon + 1).replace(/^\0+|\0+$/g, '');
  } else if (stringField(entry, 'username') !== undefined && typeof entry['password'] === 'string') {
    out.username = stringField(entry, 'username');
    out.password = entry['password'];
  }
  const identityToken = stringField(entry, 'identitytoken');
  if (identityToken !== undefined) out.identityToken = identityToken;
  return Object.keys(out).length === 0 ? undefined : out;
}

/** Asks `docker-credential-NAME get`; a helper that has nothing or fails is a notice. */
async function fromHelper(name: string, lookup: Lookup): Promise<Found | undefined> {
  const program = `docker-credential-${name}`;
  if (!HELPER_NAME.test(name)) {
    lookup.notices.push(`ignoring credential helper "${name}": not a valid helper name`);
    return undefined;
  }
  let result: HelperResult;
  try {
    result = await lookup.runHelper(name, lookup.serverUrl);
  } catch (err) {
    result = { status: 'failed', message: err instanceof Error ? err.message : String(err) };
  }
  if (result.status === 'missing') {
    lookup.notices.push(`credential helper ${program} not found on PATH`);
  } else if (result.status === 'timeout') {
    lookup.notices.push(`credential helper ${program} timed out`);
  } else if (result.status === 'failed') {
    lookup.notices.push(`credential helper ${program} could not run: ${firstLine(result.message)}`);
  } else if (result.exitCode !== 0) {
    const output = `${result.stdout}\n${result.stderr}`;
    // Only stderr is quoted: a helper's stdout is its answer, and may hold the secret.
    const said = firstLine(result.stderr.trim());
    lookup.notices.push(
      output.includes(NOT_FOUND_TEXT)
        ? `credential helper ${program} has no credentials for ${lookup.serverUrl}`
        : `credential helper ${program} failed (exit ${result.exitCode})${said ? `: ${said}` : ''}`,
    );
  } else {
    const credentials = helperCredentials(result.stdout);
    if (credentials) return { credentials, source: program };
    lookup.notices.push(`credential helper ${program} answered without usable credentials for ${lookup.serverUrl}`);
  }
  return undefined;
}

/** A helper's `{"ServerURL","Username","Secret"}`; Username "<token>" marks an identity token. */
function helperCredentials(stdout: string): Credentials | undefined {
  let doc: unknown;
  try {
    doc = parseJsonText(stdout, 'the answer');
  } catch {
    return undefined; // the caller's notice says the answer was unusable; the text may hold a secret
  }
  if (!isObject(doc)) return undefined;
  const secret = stringField(doc, 'Secret');
  const username = typeof doc['Username'] === 'string' ? doc['Username'] : '';
  if (secret === undefined) return undefined;
  return username === TOKEN_USERNAME ? { identityToken: secret } : { username, password: secret };
}

/**
 * The default helper runner: runs `docker-credential-NAME get` with `env` (its PATH finds the
 * executable), writes the server URL to stdin, keeps at most MAX_HELPER_OUTPUT bytes of what it
 * prints, and gives up after `timeoutMs`.
 */
export function credentialHelperRunner(
  env: NodeJS.ProcessEnv,
  timeoutMs = HELPER_TIMEOUT_MS,
): (name: string, serverUrl: string) => Promise<HelperResult> {
  return async (name, serverUrl) => {
    const result = await runProgram(`docker-credential-${name}`, ['get'], {
      env,
      input: serverUrl,
      timeoutMs,
      maxStdout: MAX_HELPER_OUTPUT,
      maxStderr: MAX_HELPER_OUTPUT,
    });
    switch (result.status) {
      case 'exited':
        return { status: 'exited', exitCode: result.code, stdout: result.stdout.toString('utf8'), stderr: result.stderr };
      case 'killed':
        return { status: 'failed', message: `killed by ${result.signal}` };
      default:
        return result;
    }
  };
}

/** Reads and parses a JSON object file; absent -> undefined silently, anything else wrong -> a notice. */
async function readJsonFile(file: string, lookup: Lookup): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') lookup.notices.push(`cannot read ${file} (${code ?? 'error'}); ignoring it`);
    return undefined;
  }
  return parseJson(text, file, lookup);
}

/** Parses a JSON object. The parser's message is not repeated: it quotes the text, which holds secrets. */
function parseJson(text: string, source: string, lookup: Lookup): Record<string, unknown> | undefined {
  let doc: unknown;
  try {
    doc = parseJsonText(text, source);
  } catch {
    doc = undefined; // not JSON, or nested too deep to be a credential file
  }
  if (isObject(doc)) return doc;
  lookup.notices.push(`${source} is not a valid JSON object; ignoring it`);
  return undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A non-empty string field, else undefined. */
function stringField(doc: Record<string, unknown>, key: string): string | undefined {
  const value = doc[key];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function firstLine(text: string): string {
  return (text.split('\n')[0] ?? '').slice(0, 200);
}
