#!/usr/bin/env node
/**
 * Starts and stops a detached test registry for shell scripts.
 *
 *   node testdata/registry.mjs start --state-dir DIR   prints 127.0.0.1:PORT; writes DIR/pid, DIR/host
 *   node testdata/registry.mjs stop --state-dir DIR    kills it and removes its data (DIR/registry)
 *
 * `stop` is safe to run twice and after a failed start; it only kills a docker-registry process.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isRegistryProcess, startRegistry, stopRegistryProcess } from './lib/registry-server.mjs';

const USAGE = 'usage: node testdata/registry.mjs start|stop --state-dir DIR [--htpasswd FILE]';

function parseArgs(argv) {
  const [command, ...rest] = argv;
  const options = {};
  for (let i = 0; i < rest.length; i++) {
    const flag = rest[i];
    const value = rest[i + 1];
    if ((flag === '--state-dir' || flag === '--htpasswd') && value !== undefined) {
      options[flag.slice(2)] = value;
      i++;
    } else {
      throw new Error(`unknown argument ${flag}\n${USAGE}`);
    }
  }
  if ((command !== 'start' && command !== 'stop') || !options['state-dir']) throw new Error(USAGE);
  return { command, stateDir: resolve(options['state-dir']), htpasswd: options.htpasswd };
}

async function readPid(stateDir) {
  const text = await readFile(join(stateDir, 'pid'), 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

async function start(stateDir, htpasswd) {
  await mkdir(stateDir, { recursive: true });
  const running = await readPid(stateDir);
  if (running !== undefined && isRegistryProcess(running)) {
    throw new Error(`a registry (pid ${running}) already runs for ${stateDir}; stop it first`);
  }
  const registry = await startRegistry({
    dir: join(stateDir, 'registry'),
    keepDir: true,
    detached: true,
    htpasswd: htpasswd === undefined ? undefined : resolve(htpasswd),
  });
  await writeFile(join(stateDir, 'pid'), `${registry.pid}\n`);
  await writeFile(join(stateDir, 'host'), `${registry.host}\n`);
  process.stdout.write(`${registry.host}\n`);
}

async function stop(stateDir) {
  const pid = await readPid(stateDir);
  if (pid !== undefined && !(await stopRegistryProcess(pid))) {
    process.stderr.write(`registry pid ${pid} was not running\n`);
  }
  await rm(join(stateDir, 'registry'), { recursive: true, force: true });
  await rm(join(stateDir, 'pid'), { force: true });
  await rm(join(stateDir, 'host'), { force: true });
}

try {
  const { command, stateDir, htpasswd } = parseArgs(process.argv.slice(2));
  if (command === 'start') await start(stateDir, htpasswd);
  else await stop(stateDir);
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
