#!/usr/bin/env node
/**
 * `make bench`: pull-unpack side by side with curl | tar, GNU tar on local blobs and
 * skopeo + umoci, on four generated images (issue 7). See docs/performance.md.
 *
 *   node bench/run.mjs [--runs N] [--runs-big N] [--quick] [--images a,b] [--work-dir DIR]
 *                      [--baseline DIR] [--delete-between-runs]
 *
 * --runs N      rounds per image (default 5; 1 with --quick)
 * --runs-big N  rounds for small-files and large-files (default min(N, 3))
 * --quick       the small image set (seconds, for smoke tests) and 1 round
 * --images      only these images (distro-gzip, distro-zstd, small-files, large-files)
 * --work-dir    where the contenders write (default: a new directory in the temp dir)
 * --baseline DIR
 *               also run the pull-unpack of DIR (a checkout of another commit, built with
 *               `npm ci && npm run build`) cold and warm in the same rounds, and check that this
 *               build is not slower
 * --delete-between-runs
 *               delete each run's output right after it (before 2024-12: always), instead of
 *               keeping it in a trash directory until the end (lib/retire.mjs says why)
 *
 * Starts its own registry on loopback (stopped at the end, also on failure or Ctrl-C), pushes
 * the images (generated once into .tmp/bench/), checks once per image that pull-unpack's tree
 * equals GNU tar's, then runs every contender N times, alternating them within each round.
 * Prints the tables and issue 7's targets; writes bench/results/latest.json.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startRegistry } from '../testdata/lib/registry-server.mjs';
import { ALL_CONTENDERS, contendersFor, pullUnpackFeatures, treeOf } from './lib/contenders.mjs';
import { prepareImages } from './lib/images.mjs';
import { measure, stopCurrent } from './lib/measure.mjs';
import { pushBenchImage } from './lib/push.mjs';
import {
  checkTargets,
  formatCreateCost,
  formatRatios,
  formatStartup,
  formatTable,
  formatTargets,
  ratios,
  summarize,
} from './lib/report.mjs';
import { compareTrees, describeTree } from './lib/tree.mjs';
import { probeCreateCost, Trash } from './lib/retire.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CACHE = join(ROOT, '.tmp', 'bench');
// Filled by snapshotBuild(): the CLI that every run uses.
let BIN = join(ROOT, 'bin', 'pull-unpack.js');
const RESULTS = join(ROOT, 'bench', 'results', 'latest.json');
const LABELS = {
  'pull-unpack-cold': 'pull-unpack cold',
  'pull-unpack-warm': 'pull-unpack warm',
  'curl-tar': 'curl | tar',
  'tar-local': 'GNU tar (local)',
  'skopeo-umoci': 'skopeo + umoci',
  'baseline-cold': 'baseline cold',
  'baseline-warm': 'baseline warm',
};
const BIG_IMAGES = ['small-files', 'large-files'];
const TOOLS = { 'curl-tar': ['curl', 'tar'], 'tar-local': ['tar'], 'skopeo-umoci': ['skopeo', 'umoci'] };

const log = (text) => process.stderr.write(`bench: ${text}\n`);

function options() {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      'runs-big': { type: 'string' },
      quick: { type: 'boolean', default: false },
      images: { type: 'string' },
      'work-dir': { type: 'string' },
      'delete-between-runs': { type: 'boolean', default: false },
      baseline: { type: 'string' },
    },
  });
  const count = (text, fallback) => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--runs takes a positive integer, not ${text}`);
    return n;
  };
  const runs = count(values.runs, values.quick ? 1 : 5);
  // (iii) and (iv) take most of the time: 3 runs each by default keeps `make bench` near 20 minutes.
  const runsBig = count(values['runs-big'], Math.min(runs, 3));
  // Outputs go to the temp dir by default: on the VM this was written on, file creation under
  // /work was 2-3x slower than under /tmp on the same ext4 (see docs/performance.md).
  const work = resolve(values['work-dir'] ?? join(tmpdir(), `pull-unpack-bench-${process.pid}`));
  return {
    quick: values.quick,
    runs,
    runsBig,
    only: values.images?.split(','),
    work,
    deleteBetweenRuns: values['delete-between-runs'],
    baseline: values.baseline && resolve(values.baseline),
  };
}

let registry;
let workRoot;
let trash;
let snapshotDir;
let interrupted = false;

async function main() {
  const opts = options();
  checkSetup();
  const build = await snapshotBuild();
  const started = Date.now();
  await rm(opts.work, { recursive: true, force: true });
  await mkdir(opts.work, { recursive: true });
  workRoot = opts.work;
  trash = new Trash(join(opts.work, '.trash'));
  const images = (await prepareImages(CACHE, opts.quick ? 'quick' : 'full', log)).filter((i) => !opts.only || opts.only.includes(i.name));
  registry = await startRegistry({ dir: join(CACHE, `registry-${process.pid}`) });
  log(`registry on ${registry.host}`);
  const features = pullUnpackFeatures(BIN);
  log(`pull-unpack --cache-dir: ${features.cacheDir ? 'yes' : 'no'}, --offline: ${features.offline ? 'yes' : 'no'}`);
  if (opts.baseline) {
    const bin = join(opts.baseline, 'bin', 'pull-unpack.js');
    opts.baselineContender = { bin, features: pullUnpackFeatures(bin) };
    log(
      `baseline: ${bin} (${version(process.execPath, [bin, '--version'])}, commit ${version('git', ['-C', opts.baseline, 'rev-parse', '--short', 'HEAD'])})`,
    );
  }
  const startup = images.length > 0 ? await benchStartup(images[0], opts.quick ? 3 : STARTUP_RUNS) : undefined;
  const results = [];
  let broken = false;
  for (const image of images) {
    const runs = BIG_IMAGES.includes(image.name) ? opts.runsBig : opts.runs;
    const result = await benchImage(image, runs, features, opts);
    broken ||= !result.verify.ok || result.contenders['pull-unpack-cold']?.failed !== undefined;
    results.push(result);
  }
  const byName = Object.fromEntries(results.map((r) => [r.name, r]));
  const report = {
    meta: { ...environment(opts, features, (Date.now() - started) / 1000), distHash: build },
    startup,
    images: results,
    ratios: ratios(byName),
    targets: checkTargets(byName),
  };
  printReport(report);
  await mkdir(dirname(RESULTS), { recursive: true });
  await writeFile(RESULTS, `${JSON.stringify(report, null, 2)}\n`);
  log(`results in ${RESULTS}; total ${report.meta.totalSeconds.toFixed(0)} s`);
  return broken ? 1 : 0;
}

/**
 * Copies bin/, dist/ and package.json into .tmp/bench/build-<pid>/ and runs that copy, so a
 * rebuild of dist/ during the benchmark (other work in the tree) cannot change or break what
 * is measured. Inside the repository, so node_modules still resolves. Returns a hash of dist/.
 */
async function snapshotBuild() {
  const dir = join(CACHE, `build-${process.pid}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  for (const part of ['bin', 'dist', 'package.json']) await cp(join(ROOT, part), join(dir, part), { recursive: true });
  snapshotDir = dir;
  BIN = join(dir, 'bin', 'pull-unpack.js');
  const hash = createHash('sha256');
  for (const file of (await readdir(join(dir, 'dist'), { recursive: true })).sort()) {
    if (file.endsWith('.js')) hash.update(file).update(await readFile(join(dir, 'dist', file)));
  }
  return `sha256:${hash.digest('hex').slice(0, 16)}`;
}

function checkSetup() {
  if (!existsSync(join(ROOT, 'dist', 'cli', 'bin.js'))) throw new Error('dist/ is missing: run `make bench` (or `npm run build`) first');
  if (existsSync('/usr/bin/time')) return;
  if (process.getuid?.() !== 0) throw new Error('/usr/bin/time is missing: apt-get install time');
  log('installing GNU time (/usr/bin/time) with apt-get');
  execFileSync('apt-get', ['install', '-y', '-qq', 'time'], {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
}

const STARTUP_RUNS = 10;

/**
 * Start-up figures (issue 15): `pull-unpack --version` (loading the CLI) and `inspect` of an
 * image (one manifest and one config over loopback), each `runs` times; medians.
 */
async function benchStartup(image, runs) {
  const repo = await pushBenchImage(registry.url, image);
  const node = `exec '${process.execPath}' '${BIN}'`;
  const commands = [
    { id: 'version', label: 'pull-unpack --version', script: `${node} --version` },
    {
      id: 'inspect',
      label: `pull-unpack inspect (${image.name})`,
      script: `${node} inspect --insecure-registry ${registry.host} ${registry.host}/${repo}:v1`,
    },
  ];
  const out = {};
  for (const command of commands) {
    const list = [];
    for (let i = 0; i < runs; i++) {
      const run = await measure(command.script, { cwd: ROOT, workDir: workRoot });
      if (!run.ok) throw new Error(`${command.label} failed: ${run.output}`);
      list.push(run);
    }
    out[command.id] = { label: command.label, summary: summarize(list) };
    log(
      `${command.label}: median ${(out[command.id].summary.medianMs / 1000).toFixed(3)} s, CPU ${out[command.id].summary.medianCpuS.toFixed(3)} s`,
    );
  }
  return out;
}

/** Trees of at least this many entries go to the trash instead of being deleted (lib/retire.mjs). */
const TRASH_MIN_ENTRIES = 1000;

/** Push, verify, then `runs` alternating rounds of every contender on one image. */
async function benchImage(image, runs, features, opts) {
  const repo = await pushBenchImage(registry.url, image);
  const work = join(opts.work, image.name);
  const entries = image.layers.reduce((n, l) => n + l.entries, 0);
  // Kept (in the trash) until the end: see lib/retire.mjs.
  const keep = !opts.deleteBetweenRuns && entries >= TRASH_MIN_ENTRIES;
  await mkdir(work, { recursive: true });
  const contenders = contendersFor({ image, repo, host: registry.host, work, bin: BIN, features, baseline: opts.baselineContender });
  const ids = [...ALL_CONTENDERS, ...(opts.baselineContender ? ['baseline-cold', 'baseline-warm'] : [])];
  const result = {
    name: image.name,
    label: image.label,
    layers: image.layers.map(({ digest, size, tarSize, entries, mediaType }) => ({ digest, size, tarSize, entries, mediaType })),
    verify: undefined,
    contenders: Object.fromEntries(ids.map((id) => [id, { reason: id.endsWith('-warm') ? 'n/a (no cache yet)' : 'n/a' }])),
  };
  const active = contenders.filter((c) => {
    const missing = (TOOLS[c.id] ?? []).filter((tool) => !onPath(tool));
    if (missing.length) result.contenders[c.id] = { reason: `n/a (${missing.join(', ')} not installed)` };
    return missing.length === 0;
  });
  const runsOf = Object.fromEntries(active.map((c) => [c.id, []]));
  for (const c of active) if (c.fill) await fillCache(c, keep);
  result.verify = await verify(image, active, work, keep);
  result.createMicros = await probeCreateCost(work, trash);
  log(`[${image.name}] filesystem: ${result.createMicros.toFixed(0)} us to create a small file (2,000 in one directory)`);
  const timed = active.filter((c) => result.verify.ok || !c.id.startsWith('pull-unpack'));
  if (!result.verify.ok)
    for (const c of active)
      if (c.id.startsWith('pull-unpack')) result.contenders[c.id] = { reason: 'not timed: tree differs from GNU tar' };
  for (let round = 0; round < runs; round++) {
    const order = roundOrder(timed, round).filter((c) => result.contenders[c.id].failed === undefined);
    for (const c of order) {
      const run = await timedRun(c, work, keep);
      if (!run.ok) {
        result.contenders[c.id] = { failed: `exit ${run.code}: ${run.output.slice(-800)}`, reason: failureReason(run) };
        log(`[${image.name}] ${c.label} FAILED (exit ${run.code}):\n${run.output.slice(-800)}`);
        continue;
      }
      runsOf[c.id].push(run);
      log(
        `[${image.name}] round ${round + 1}/${runs} ${c.label}: ${(run.wallMs / 1000).toFixed(2)} s, CPU ${run.cpuS.toFixed(2)} s, ${(run.treeRssKiB / 1024).toFixed(0)} MiB (load ${run.loadBefore.toFixed(1)})`,
      );
    }
  }
  for (const c of timed) {
    if (result.contenders[c.id].failed === undefined && runsOf[c.id].length > 0) {
      const runs = runsOf[c.id].map(({ wallMs, maxRssKiB, treeRssKiB, cpuS, loadBefore }) => ({
        wallMs,
        maxRssKiB,
        treeRssKiB,
        cpuS,
        loadBefore,
      }));
      result.contenders[c.id] = { runs, summary: summarize(runsOf[c.id]) };
    }
  }
  await rm(work, { recursive: true, force: true });
  return result;
}

/**
 * One measured run from clean paths; moves its output to the trash (or deletes it when `keep`
 * is false) and syncs (untimed).
 */
async function timedRun(c, work, keep) {
  if (interrupted) throw new Error('interrupted');
  await clean(c.paths);
  for (const dir of c.prepare) await mkdir(dir, { recursive: true });
  const load = loadavg()[0];
  const run = await measure(c.script, { cwd: ROOT, workDir: work });
  run.loadBefore = load;
  await trash.retire(c.paths, keep);
  // Dirty pages of this run are written back now, not during the next contender's run.
  execFileSync('sync');
  return run;
}

async function clean(paths) {
  for (const p of paths) await rm(p, { recursive: true, force: true });
}

async function fillCache(c, keep) {
  await clean(c.fillPaths);
  const run = await measure(c.fill, { cwd: ROOT, workDir: dirname(c.paths[0]) });
  if (!run.ok) throw new Error(`filling the warm cache failed: ${run.output}`);
  await trash.retire([c.fillPaths[1]], keep);
}

/** Unpacks once with pull-unpack (cold) and GNU tar and compares the trees. */
async function verify(image, active, work, keep) {
  const pu = active.find((c) => c.id === 'pull-unpack-cold');
  const tar = active.find((c) => c.id === 'tar-local');
  const trees = [];
  for (const c of [tar, pu]) {
    await clean(c.paths);
    for (const dir of c.prepare) await mkdir(dir, { recursive: true });
    const run = await measure(c.script, { cwd: ROOT, workDir: work });
    if (!run.ok) {
      const error = `${c.label} failed (exit ${run.code}): ${run.output.slice(-800)}`;
      log(`[${image.name}] verify: ${error}`);
      return { ok: false, errors: [error], warnings: [] };
    }
    trees.push(await describeTree(treeOf(c, work)));
    await trash.retire(c.paths, keep);
  }
  const verdict = compareTrees(trees[0], trees[1]);
  log(
    `[${image.name}] verify: ${verdict.ok ? 'pull-unpack tree == GNU tar tree' : 'TREES DIFFER'} (${verdict.entries} entries, ${verdict.files} files, ${(verdict.bytes / 2 ** 20).toFixed(1)} MiB)`,
  );
  for (const line of [...verdict.errors, ...verdict.warnings]) log(`[${image.name}]   ${line}`);
  return verdict;
}

/** A one-line reason for a failed contender: its last line of output, shortened. */
function failureReason(run) {
  const last = run.output.split('\n').filter(Boolean).pop() ?? '';
  const known = /not correct mediatype: (\S+)/.exec(last);
  if (known) return `n/a (cannot unpack ${known[1]})`;
  return `failed (exit ${run.code}): ${last.length > 100 ? `${last.slice(0, 100)}...` : last}`;
}

function onPath(tool) {
  try {
    execFileSync('bash', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function version(command, args) {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
      .split('\n')[0]
      .trim();
  } catch {
    return 'n/a';
  }
}

function environment(opts, features, totalSeconds) {
  return {
    date: new Date().toISOString(),
    totalSeconds,
    quick: opts.quick,
    runs: opts.runs,
    runsBig: opts.runsBig,
    workDir: opts.work,
    node: process.version,
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown'}`,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    pullUnpack: {
      version: version(process.execPath, [BIN, '--version']),
      commit: version('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
      ...features,
    },
    baseline: opts.baseline && { dir: opts.baseline, commit: version('git', ['-C', opts.baseline, 'rev-parse', '--short', 'HEAD']) },
    tools: {
      tar: version('tar', ['--version']),
      curl: version('curl', ['--version']),
      zstd: version('zstd', ['--version']),
      skopeo: version('skopeo', ['--version']),
      umoci: version('umoci', ['--version']),
    },
    pageCache: 'warm for every contender (nothing dropped); sync after every run, untimed',
    outputs: opts.deleteBetweenRuns
      ? 'deleted after each run (--delete-between-runs)'
      : `trees of >= ${TRASH_MIN_ENTRIES} entries kept in a trash directory until the end; emptied ${trash.emptied} time(s) for space`,
  };
}

function printReport(report) {
  const labels = Object.fromEntries(report.images.map((i) => [i.name, i.label]));
  const out = [
    '',
    `pull-unpack benchmark (${report.meta.quick ? 'quick' : 'full'}; ${report.meta.runs} runs, ${report.meta.runsBig} for small-files and large-files; median wall time)`,
    '',
    formatTable(report.images, LABELS),
    '',
    formatCreateCost(report.images),
    '',
    ...(report.startup ? [formatStartup(report.startup), ''] : []),
    formatRatios(report.ratios, labels),
    '',
    formatTargets(report.targets),
    '',
  ];
  process.stdout.write(`${out.join('\n')}\n`);
}

const stop = async () => {
  await registry?.stop().catch(() => undefined);
  if (workRoot) await rm(workRoot, { recursive: true, force: true }).catch(() => undefined);
  if (snapshotDir) await rm(snapshotDir, { recursive: true, force: true }).catch(() => undefined);
};
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    interrupted = true;
    stopCurrent();
    log(`${signal}: stopping`);
    stop().finally(() => process.exit(130));
  });
}

try {
  process.exitCode = await main();
} catch (err) {
  log(`error: ${err instanceof Error ? err.stack : String(err)}`);
  process.exitCode = 1;
} finally {
  await stop();
}

/**
 * The order of round `round`: a different start and a different stride each round. A rotating
 * start alone keeps every contender right after the same one (the one that pays for its
 * predecessor's writeback, e.g. skopeo + umoci's two copies of the image); with strides coprime
 * to the count, each contender follows a different one from round to round.
 */
export function roundOrder(items, round) {
  const n = items.length;
  const gcd = (a, b) => (b === 0 ? a : gcd(b, a % b));
  const strides = [];
  for (let s = 1; s < n; s++) if (gcd(s, n) === 1) strides.push(s);
  const stride = strides.length > 0 ? strides[round % strides.length] : 1;
  return items.map((_, i) => items[(round + i * stride) % n]);
}
