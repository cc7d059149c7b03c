#!/usr/bin/env node
/**
 * Profiles one cold pull-unpack per image, for whoever optimizes it next:
 *
 *   node bench/profile.mjs [--quick] [--images distro-gzip,small-files]
 *
 * Uses the benchmark's images and its own loopback registry (like bench/run.mjs), then runs
 * pull-unpack once under `node --cpu-prof` and once under `strace -c -f`, and prints the top
 * self-time functions and the syscall counts per tar entry. Raw files (.cpuprofile, strace
 * summaries) go to bench/results/profile/<image>/.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startRegistry } from '../testdata/lib/registry-server.mjs';
import { prepareImages } from './lib/images.mjs';
import { pushBenchImage, TAG } from './lib/push.mjs';
import { align } from './lib/report.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CACHE = join(ROOT, '.tmp', 'bench');
const BIN = join(ROOT, 'bin', 'pull-unpack.js');
const OUT = join(ROOT, 'bench', 'results', 'profile');
const SCRATCH = join(tmpdir(), `pull-unpack-profile-${process.pid}`);
const TOP = 25;
const log = (text) => process.stderr.write(`profile: ${text}\n`);

/** Self time per function (and per script) from a .cpuprofile: [{name, ms, percent}] sorted. */
export function selfTimes(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const functions = new Map();
  const scripts = new Map();
  for (const [id, micros] of self) {
    const { functionName, url, lineNumber } = byId.get(id).callFrame;
    const file = url.replace(`file://${ROOT}/`, '') || '(native)';
    const name = `${functionName || '(anonymous)'} ${url ? `${file}:${lineNumber + 1}` : ''}`.trim();
    functions.set(name, (functions.get(name) ?? 0) + micros);
    scripts.set(file, (scripts.get(file) ?? 0) + micros);
  }
  const rank = (map) =>
    [...map].sort((a, b) => b[1] - a[1]).map(([name, micros]) => ({ name, ms: micros / 1000, percent: (100 * micros) / total }));
  return { totalMs: total / 1000, functions: rank(functions), scripts: rank(scripts) };
}

/** The rows of `strace -c` output: [{syscall, calls, errors, seconds}]. */
export function parseStraceSummary(text) {
  const rows = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)?\s*(\w+)\s*$/.exec(line);
    if (m && m[6] !== 'total') rows.push({ syscall: m[6], seconds: Number(m[2]), calls: Number(m[4]), errors: Number(m[5] ?? 0) });
  }
  return rows.sort((a, b) => b.calls - a.calls);
}

async function profileImage(registry, image) {
  const repo = await pushBenchImage(registry.url, image);
  const dir = join(OUT, image.name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const ref = `${registry.host}/${repo}:${TAG}`;
  const target = join(SCRATCH, image.name);
  await mkdir(SCRATCH, { recursive: true });
  const args = [BIN, '--quiet', '--insecure-registry', registry.host, ref, target];
  const entries = image.layers.reduce((n, l) => n + l.entries, 0);

  await rm(target, { recursive: true, force: true });
  run(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...args]);
  const [profileFile] = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  const times = selfTimes(JSON.parse(await readFile(join(dir, profileFile), 'utf8')));
  await rm(target, { recursive: true, force: true });

  const straceFile = join(dir, 'strace-c.txt');
  run('strace', ['-c', '-f', '-o', straceFile, process.execPath, ...args]);
  const syscalls = parseStraceSummary(await readFile(straceFile, 'utf8'));
  await rm(target, { recursive: true, force: true });

  const text = [
    `== ${image.label}: ${entries} tar entries, ${image.layers.length} layer(s); CPU profile ${times.totalMs.toFixed(0)} ms sampled`,
    '',
    align([['self ms', '%', 'function'], ...times.functions.slice(0, TOP).map((f) => [f.ms.toFixed(0), f.percent.toFixed(1), f.name])]),
    '',
    align([['self ms', '%', 'script'], ...times.scripts.slice(0, 12).map((f) => [f.ms.toFixed(0), f.percent.toFixed(1), f.name])]),
    '',
    align([
      ['calls', 'per entry', 'errors', 'syscall'],
      ...syscalls.slice(0, TOP).map((s) => [s.calls, (s.calls / entries).toFixed(2), s.errors, s.syscall]),
    ]),
    '',
  ].join('\n');
  await writeFile(join(dir, 'summary.txt'), `${text}\n`);
  process.stdout.write(`${text}\n`);
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${result.status ?? result.signal}`);
}

async function main() {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean', default: false }, images: { type: 'string', default: 'distro-gzip,small-files' } },
  });
  if (!existsSync(join(ROOT, 'dist', 'cli', 'bin.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  if (spawnSync('strace', ['-V']).status !== 0) {
    if (process.getuid?.() !== 0) throw new Error('strace is missing: apt-get install strace');
    execFileSync('apt-get', ['install', '-y', '-qq', 'strace'], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  }
  const wanted = values.images.split(',');
  const images = (await prepareImages(CACHE, values.quick ? 'quick' : 'full', log)).filter((i) => wanted.includes(i.name));
  const registry = await startRegistry({ dir: join(CACHE, `registry-${process.pid}`) });
  const stop = () => registry.stop().catch(() => undefined);
  process.once('SIGINT', () => stop().finally(() => process.exit(130)));
  try {
    for (const image of images) await profileImage(registry, image);
  } finally {
    await stop();
    await rm(SCRATCH, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    await main();
  } catch (err) {
    log(`error: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
