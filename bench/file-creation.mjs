#!/usr/bin/env node
/**
 * How much creating a layer's files concurrently could save over one at a time (issue 15,
 * "create files in parallel"), without the applier: see docs/performance.md, "Parallel file
 * creation: measured".
 *
 * Usage: HELP below (`--help`).
 *
 * Each run is a fresh child process; after it the tree goes to the trash and `sync` runs (both
 * untimed). Prints one table (medians over the rounds) to stdout, progress to stderr.
 */
import { execFileSync, execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { createTree, SHAPES } from './lib/create-tree.mjs';
import { probeCreateCost, Trash } from './lib/retire.mjs';

const DEFAULT_VARIANTS = 'sync,async-1,async-4,async-16,cb-4,workers-2,workers-4,tar';
const HELP = `usage: node bench/file-creation.mjs [--dir DIR] [--shape distro|small-files] [--rounds N]
                                    [--variants a,b,...] [--delete-between-runs] [--keep]

Creates a synthetic layer's directories (one at a time) and then its files, in fresh child
processes, in several variants interleaved over the rounds; prints the medians.

--dir DIR     the filesystem to measure: the trees go to a new directory inside DIR, removed
              at the end (default DIR: the temp dir, where bench/run.mjs's work directory goes)
--shape       distro (3,400 directories, 10,000 files of 0-64 KiB; default) or small-files
              (1,000 directories, 100,000 files of 0-16 KiB)
--rounds N    rounds (default 5); each round runs every variant once, in a rotated order
--variants    default ${DEFAULT_VARIANTS}
              sync        the applier's calls, one file at a time: open(O_CREAT|O_EXCL), write,
                          futimes, close
              async-N     the same calls through fs.promises, N files in flight, on a libuv pool
                          of UV_THREADPOOL_SIZE=N threads
              cb-N        the same with fs's callback functions, N in flight, UV_THREADPOOL_SIZE=N
              workers-N   N worker threads making the synchronous calls (shared index counter)
              tar         GNU tar -xf of an uncompressed tar of the same tree (made once, untimed)
--delete-between-runs
              delete each tree right after its run instead of keeping it in a trash directory
              until the end (lib/retire.mjs says why the trash); on tmpfs this is the default
--keep        leave the new directory and its trash in place at the end: for several invocations on the same
              filesystem in a row, since the deletion at the end slows the next invocation's
              creation on ext4 as it slows the next run's; delete it yourself after the last
`;
const TMPFS_MAGIC = 0x01021994;
const log = (text) => process.stderr.write(`file-creation: ${text}\n`);

async function child() {
  const [shape, root, variant, tarFile] = process.argv.slice(3);
  process.stdout.write(JSON.stringify(await createTree(shape, root, variant, tarFile)));
}

function options() {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' },
      shape: { type: 'string', default: 'distro' },
      rounds: { type: 'string', default: '5' },
      variants: { type: 'string', default: DEFAULT_VARIANTS },
      'delete-between-runs': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (!(values.shape in SHAPES)) throw new Error(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);
  const variants = values.variants.split(',');
  for (const v of variants) if (!/^(sync|tar|(async|cb|workers)-\d+)$/.test(v)) throw new Error(`unknown variant ${v}`);
  return {
    help: values.help,
    parent: resolve(values.dir ?? tmpdir()),
    shape: values.shape,
    rounds: positive(values.rounds, '--rounds'),
    variants,
    deleteBetween: values['delete-between-runs'],
    keep: values.keep,
  };
}

function positive(text, name) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

/** One run in a fresh child process; UV_THREADPOOL_SIZE=N for async-N (libuv's default, 4, otherwise). */
async function runOnce(opts, variant, root) {
  const env = { ...process.env };
  const m = /^(?:async|cb)-(\d+)$/.exec(variant);
  if (m) env.UV_THREADPOOL_SIZE = m[1];
  else delete env.UV_THREADPOOL_SIZE;
  const load = loadavg()[0];
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [import.meta.filename, '--child', opts.shape, root, variant, opts.tarFile],
    { env },
  );
  return { ...JSON.parse(stdout), load };
}

/** The shape as an uncompressed tar for the `tar` variant: created once with `sync`, then archived (untimed). */
async function makeTar(opts, trash) {
  const source = join(opts.dir, 'tar-source');
  await runOnce(opts, 'sync', source);
  execFileSync('tar', ['-cf', opts.tarFile, '-C', source, '.']);
  await trash.retire([source], true);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

function report(opts, fsType, results, probes) {
  const rows = [['variant', 'files: wall', 'min-max', 'CPU', 'us/file', 'vs sync', 'dirs: wall', 'us/dir', 'dirs + files', 'load']];
  const base = results.sync ? median(results.sync.map((r) => r.filePhase.wallMs)) : null;
  for (const v of opts.variants) {
    const runs = results[v];
    const walls = runs.map((r) => r.filePhase.wallMs);
    const wall = median(walls);
    const dirWall = median(runs.map((r) => r.dirPhase.wallMs));
    rows.push([
      v,
      `${(wall / 1e3).toFixed(2)} s`,
      `${(Math.min(...walls) / 1e3).toFixed(2)}-${(Math.max(...walls) / 1e3).toFixed(2)} s`,
      `${(median(runs.map((r) => r.filePhase.cpuMs)) / 1e3).toFixed(2)} s`,
      v === 'tar' ? '-' : ((wall * 1e3) / runs[0].files).toFixed(0),
      base && v !== 'tar' ? `${(wall / base).toFixed(2)}x` : '-',
      v === 'tar' ? '-' : `${(dirWall / 1e3).toFixed(2)} s`,
      v === 'tar' ? '-' : ((dirWall * 1e3) / runs[0].dirs).toFixed(0),
      `${(median(runs.map((r) => r.dirPhase.wallMs + r.filePhase.wallMs)) / 1e3).toFixed(2)} s`,
      `${Math.min(...runs.map((r) => r.load)).toFixed(1)}-${Math.max(...runs.map((r) => r.load)).toFixed(1)}`,
    ]);
  }
  const r = results[opts.variants[0]][0];
  console.log(
    `${opts.shape}: ${r.dirs} directories, ${r.files} files, ${(r.bytes / 2 ** 20).toFixed(1)} MiB; ${opts.rounds} rounds; ${opts.dir} (${fsType}); ` +
      `bench probe before each round (2,000 files of 100 B, lib/retire.mjs): ${probes.map((p) => p.toFixed(0)).join(', ')} us/file`,
  );
  console.log(rows.map((row) => `| ${row.join(' | ')} |`).join('\n'));
}

async function main() {
  const opts = options();
  if (opts.help) {
    process.stdout.write(HELP);
    return;
  }
  mkdirSync(opts.parent, { recursive: true });
  // Only this new directory is ever removed, never DIR itself.
  opts.dir = mkdtempSync(join(opts.parent, `pull-unpack-file-creation-${process.pid}-`));
  const tmpfs = statfsSync(opts.dir).type === TMPFS_MAGIC;
  // tmpfs has no inode tables to walk past (retire.mjs): deleting at once does not slow the next run.
  const keep = !opts.deleteBetween && !tmpfs;
  const trash = new Trash(join(opts.dir, 'trash'));
  const results = Object.fromEntries(opts.variants.map((v) => [v, []]));
  opts.tarFile = join(opts.dir, 'shape.tar');
  if (opts.variants.includes('tar')) await makeTar(opts, trash);
  const probes = [];
  let id = 0;
  try {
    for (let round = 0; round < opts.rounds; round++) {
      const order = opts.variants.map((_, i) => opts.variants[(i + round) % opts.variants.length]);
      probes.push(await probeCreateCost(opts.dir, trash));
      for (const v of order) {
        const root = join(opts.dir, `run-${id++}`);
        const r = await runOnce(opts, v, root);
        results[v].push(r);
        log(
          `round ${round + 1} ${v}: files ${(r.filePhase.wallMs / 1e3).toFixed(2)} s, CPU ${(r.filePhase.cpuMs / 1e3).toFixed(2)} s, load ${r.load.toFixed(1)}`,
        );
        await trash.retire([root], keep);
        execFileSync('sync');
      }
    }
    report(opts, tmpfs ? 'tmpfs' : 'not tmpfs', results, probes);
  } finally {
    if (opts.keep) log(`kept ${opts.dir}`);
    else log(`removing ${opts.dir}`);
    if (!opts.keep) rmSync(opts.dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child();
else await main();
