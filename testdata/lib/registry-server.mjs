/**
 * Runs a real registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1 at
 * a free port, with its own storage directory and a generated config. Types in
 * registry-server.d.mts; testdata/registry.mjs is the command-line front end.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const REGISTRY_BINARY = '/usr/bin/docker-registry';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const BIND_ATTEMPTS = 5;

/** A port that was free a moment ago (the kernel's pick for port 0). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts a registry and waits until GET /v2/ answers. `options.dir` is its directory (a new
 * temp directory by default; removed by stop() unless `keepDir`); `detached` lets it outlive
 * this process (the CLI). See registry-server.d.mts for the auth, TLS and proxy options.
 */
export async function startRegistry(options = {}) {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'pull-unpack-registry-')));
  await mkdir(join(dir, 'storage'), { recursive: true });
  let lastError;
  for (let attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
    const port = options.port ?? (await freePort());
    try {
      return await launch(dir, port, options);
    } catch (err) {
      lastError = err;
      // Another process took the port between our probe and the registry's bind: try another.
      if (!err.bindRace || options.port) break;
    }
  }
  if (!options.keepDir && !options.dir) await rm(dir, { recursive: true, force: true });
  throw lastError;
}

async function launch(dir, port, options) {
  const host = `127.0.0.1:${port}`;
  const scheme = options.tls ? 'https' : 'http';
  const configPath = join(dir, 'config.yml');
  const logPath = join(dir, 'registry.log');
  await writeFile(configPath, registryConfig(dir, host, options));
  const log = openSync(logPath, 'w');
  const child = spawn(REGISTRY_BINARY, ['serve', configPath], {
    stdio: ['ignore', log, log],
    detached: Boolean(options.detached),
    env: registryEnv(),
  });
  closeSync(log);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (err) => resolve({ code: err.message, signal: null }));
  });
  const killOnExit = () => child.kill('SIGKILL');
  if (options.detached) child.unref();
  else process.once('exit', killOnExit);
  const url = `${scheme}://${host}`;
  const ready = await waitReady(url, port, exited, options);
  if (ready !== true) {
    child.kill('SIGKILL');
    process.removeListener('exit', killOnExit);
    const text = await readFile(logPath, 'utf8').catch(() => '');
    const err = new Error(`docker-registry did not start on ${host} (${ready}); its log:\n${text}`);
    err.bindRace = /address already in use/.test(text);
    throw err;
  }
  let stopped;
  const stop = () => {
    stopped ??= (async () => {
      process.removeListener('exit', killOnExit);
      await stopProcess(child.pid, exited);
      if (!options.keepDir) await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };
  return { url, host, dir, pid: child.pid, logPath, stop };
}

/** The environment without REGISTRY_* variables, which would override the generated config. */
function registryEnv() {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('REGISTRY_')) env[key] = value;
  return env;
}

async function waitReady(url, port, exited, options) {
  const timeout = options.startTimeoutMs ?? START_TIMEOUT_MS;
  const deadline = Date.now() + timeout;
  let gone;
  exited.then((how) => {
    gone = how;
  });
  while (Date.now() < deadline) {
    if (gone) return `it exited with ${gone.code ?? gone.signal}`;
    // A TLS registry's certificate is the caller's business: there, a TCP connect is enough.
    if (options.tls ? await acceptsConnections(port) : await answersV2(url)) return true;
    await sleep(50);
  }
  return `no answer to GET /v2/ within ${timeout} ms`;
}

async function answersV2(url) {
  try {
    const response = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    // 200, or 401 when auth is on: either way the registry is serving.
    return response.status === 200 || response.status === 401;
  } catch {
    return false;
  }
}

function acceptsConnections(port) {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** SIGTERM, then SIGKILL after a grace period; resolves when the process is gone. */
async function stopProcess(pid, exited) {
  if (!isAlive(pid)) return;
  signal(pid, 'SIGTERM');
  const waited = exited ? Promise.race([exited, sleep(STOP_TIMEOUT_MS)]) : waitGone(pid, STOP_TIMEOUT_MS);
  await waited;
  if (isAlive(pid)) {
    signal(pid, 'SIGKILL');
    await waitGone(pid, STOP_TIMEOUT_MS);
  }
}

/**
 * Stops a registry started elsewhere (the CLI's detached one) by pid. Only kills a process
 * whose command line is docker-registry's, so a recycled pid is left alone.
 */
export async function stopRegistryProcess(pid) {
  if (!isRegistryProcess(pid)) return false;
  await stopProcess(pid, undefined);
  return true;
}

/** True when `pid` runs and is not a zombie. */
export function isAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The state is the field after the parenthesised command name.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export function isRegistryProcess(pid) {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] === REGISTRY_BINARY;
  } catch {
    return false;
  }
}

function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}

async function waitGone(pid, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(25);
}

/** The registry's config.yml (JSON is valid YAML, and needs no quoting rules of our own). */
export function registryConfig(dir, host, options = {}) {
  const http = { addr: host, secret: 'pull-unpack-test-secret', headers: { 'X-Content-Type-Options': ['nosniff'] } };
  if (options.tls) {
    http.tls = { certificate: options.tls.cert, key: options.tls.key };
    if (options.tls.clientCA) http.tls.clientcas = [options.tls.clientCA];
  }
  const config = {
    version: 0.1,
    log: { level: options.logLevel ?? 'warn', accesslog: { disabled: true }, fields: { service: 'registry' } },
    storage: {
      filesystem: { rootdirectory: join(dir, 'storage') },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http,
    health: { storagedriver: { enabled: false } },
  };
  if (options.htpasswd && options.tokenAuth) throw new Error('choose htpasswd or tokenAuth, not both');
  if (options.htpasswd) config.auth = { htpasswd: { realm: 'pull-unpack-test', path: options.htpasswd } };
  if (options.tokenAuth) {
    const { realm, service, issuer, rootcertbundle } = options.tokenAuth;
    config.auth = { token: { realm, service, issuer, rootcertbundle } };
  }
  if (options.proxy) {
    config.proxy = { remoteurl: options.proxy.remoteurl };
    if (options.proxy.username !== undefined) config.proxy.username = options.proxy.username;
    if (options.proxy.password !== undefined) config.proxy.password = options.proxy.password;
  }
  return `${JSON.stringify(mergeDeep(config, options.extraConfig ?? {}), null, 2)}\n`;
}

function mergeDeep(base, extra) {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const isObject = value && typeof value === 'object' && !Array.isArray(value);
    out[key] = isObject && base[key] && typeof base[key] === 'object' ? mergeDeep(base[key], value) : value;
  }
  return out;
}
