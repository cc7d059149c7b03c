/**
 * One timed creation of a synthetic layer's files (bench/file-creation.mjs runs it in a fresh
 * child process per run, so that UV_THREADPOOL_SIZE applies and no run inherits another's JIT
 * or pool state).
 *
 * The shape is generated from a fixed seed: directories first (each inside the root or an earlier
 * directory), then files spread over them with log-uniform sizes. Every variant creates the
 * directories the same way, one `mkdir` at a time, before any file; only the files' creation
 * differs:
 *
 * - `sync`: one file at a time, with the applier's calls (src/apply/entries.ts):
 *   open(O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, mode), write, futimes, close; as GNU tar does.
 * - `async-N`: the same calls through node:fs/promises (FileHandle), N files in flight, on a
 *   libuv pool of N threads (the parent sets UV_THREADPOOL_SIZE=N).
 * - `cb-N`: as `async-N` with fs's callback functions (no FileHandle, no promise per call).
 * - `workers-N`: N worker threads, each making the synchronous calls, taking the next file's
 *   index from a shared counter (a bounded queue of one file per worker).
 * - `tar`: GNU tar `-xf` of an uncompressed tar of the same tree (made once by the parent), for
 *   comparison; it creates the directories too, so only its total is comparable.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Prng, RandomBytes } from './prng.mjs';

const O_CREATE_NEW = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
const MAX_BODY = 64 * 1024;

/** The layer shapes: directory count, file count and the largest file size. */
export const SHAPES = {
  // Bench image (i): 13,630 tar entries; here 3,400 directories and 10,000 files of 0-64 KiB.
  distro: { dirs: 3400, files: 10000, maxBytes: 64 * 1024 },
  // Bench image (iii): 100,000 files in 1,000 directories; here files of 0-16 KiB.
  'small-files': { dirs: 1000, files: 100000, maxBytes: 16 * 1024 },
};

/**
 * The shape's directories (relative paths, parents first) and files ({path, size, mode, mtime}),
 * the same for the same shape name on every run.
 */
export function generateShape(name) {
  const shape = SHAPES[name];
  const prng = new Prng(`file-creation:${name}`);
  const dirs = [];
  for (let i = 0; i < shape.dirs; i++) {
    const parent = i < 20 || prng.chance(0.3) ? '' : `${prng.pick(dirs)}/`;
    dirs.push(`${parent}d${i}`);
  }
  const files = [];
  for (let i = 0; i < shape.files; i++) {
    // Log-uniform in [0, maxBytes): median sqrt(maxBytes), most files small, a few large.
    const size = Math.floor(Math.exp(prng.float() * Math.log(shape.maxBytes + 1))) - 1;
    const mode = prng.chance(0.1) ? 0o755 : 0o644;
    const mtime = 1_600_000_000 + prng.int(100_000_000);
    files.push({ path: `${prng.pick(dirs)}/f${i}`, size, mode, mtime });
  }
  return { dirs, files };
}

function createFileSync(root, body, f) {
  const fd = fs.openSync(join(root, f.path), O_CREATE_NEW, f.mode);
  try {
    if (f.size > 0) fs.writeSync(fd, body, 0, f.size);
    fs.futimesSync(fd, f.mtime, f.mtime);
  } finally {
    fs.closeSync(fd);
  }
}

async function createFileAsync(root, body, f) {
  const handle = await fsp.open(join(root, f.path), O_CREATE_NEW, f.mode);
  try {
    if (f.size > 0) await handle.write(body, 0, f.size);
    await handle.utimes(f.mtime, f.mtime);
  } finally {
    await handle.close();
  }
}

function createFileCallbacks(root, body, f, done) {
  fs.open(join(root, f.path), O_CREATE_NEW, f.mode, (err, fd) => {
    if (err) return done(err);
    const close = (err) => fs.close(fd, (closeErr) => done(err ?? closeErr));
    const times = () => fs.futimes(fd, f.mtime, f.mtime, close);
    if (f.size > 0) fs.write(fd, body, 0, f.size, null, (err) => (err ? close(err) : times()));
    else times();
  });
}

function createCallbacks(root, body, files, inFlight) {
  return new Promise((resolve, reject) => {
    let next = 0;
    let running = 0;
    let failed = false;
    const start = () => {
      if (failed) return;
      if (next >= files.length) return running === 0 && resolve();
      running++;
      createFileCallbacks(root, body, files[next++], (err) => {
        running--;
        if (err) return ((failed = true), reject(err));
        start();
      });
    };
    for (let i = 0; i < inFlight; i++) start();
  });
}

/** User + system ms of this process's waited-for children (/proc/self/stat cutime + cstime, 100 Hz ticks). */
function childrenCpuMs() {
  const fields = fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

function extractTar(root, tarFile) {
  const r = spawnSync('tar', ['-xf', tarFile, '-C', root], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`tar -xf exited with ${r.status ?? r.signal}`);
}

async function createAsync(root, body, files, inFlight) {
  let next = 0;
  const lane = async () => {
    while (next < files.length) await createFileAsync(root, body, files[next++]);
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
}

/** Starts `count` workers and resolves once each has generated the shape and is waiting. */
async function startWorkers(count, shapeName, root, counter) {
  const workers = [];
  for (let i = 0; i < count; i++) {
    const worker = new Worker(new URL(import.meta.url), { workerData: { createTree: { shapeName, root, counter } } });
    await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    workers.push(worker);
  }
  return workers;
}

function runWorkers(workers) {
  return Promise.all(
    workers.map(
      (worker) =>
        new Promise((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
          worker.postMessage('go');
        }),
    ),
  );
}

/** Worker side of `workers-N`: creates files by taking indexes from the shared counter until none is left. */
function workerMain({ shapeName, root, counter }) {
  const { files } = generateShape(shapeName);
  const body = new RandomBytes('file-creation').take(MAX_BODY);
  const next = new Int32Array(counter);
  parentPort.once('message', () => {
    for (let i = Atomics.add(next, 0, 1); i < files.length; i = Atomics.add(next, 0, 1)) createFileSync(root, body, files[i]);
    parentPort.postMessage('done');
  });
  parentPort.postMessage('ready');
}

/** The whole extraction as the file phase, its CPU that of the tar child; no separate directory phase. */
function timed(fn) {
  const wall = process.hrtime.bigint();
  const cpu = childrenCpuMs();
  fn();
  return { dirPhase: { wallMs: 0, cpuMs: 0 }, filePhase: { wallMs: elapsed(wall), cpuMs: childrenCpuMs() - cpu } };
}

const elapsed = (start) => Number(process.hrtime.bigint() - start) / 1e6;
const cpuMs = (start) => {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1e3;
};

/**
 * Creates the shape under `root` (which must not exist) with `variant`; returns the wall and CPU
 * milliseconds of the directory phase and of the file phase. CPU is process.cpuUsage(): every
 * thread of the process (main, libuv pool, workers). Worker start-up is outside the timing.
 */
export async function createTree(shapeName, root, variant, tarFile) {
  const { dirs, files } = generateShape(shapeName);
  const body = new RandomBytes('file-creation').take(MAX_BODY);
  const [kind, n] = variant.split('-');
  const inFlight = Number(n ?? 1);
  fs.mkdirSync(root);
  const counter = new SharedArrayBuffer(4);
  const workers = kind === 'workers' ? await startWorkers(inFlight, shapeName, root, counter) : [];

  const shape = { dirs: dirs.length, files: files.length, bytes: files.reduce((sum, f) => sum + f.size, 0) };
  if (kind === 'tar') return { ...shape, ...timed(() => extractTar(root, tarFile)) };

  let wall = process.hrtime.bigint();
  let cpu = process.cpuUsage();
  for (const d of dirs) fs.mkdirSync(join(root, d), 0o755);
  const dirPhase = { wallMs: elapsed(wall), cpuMs: cpuMs(cpu) };

  wall = process.hrtime.bigint();
  cpu = process.cpuUsage();
  if (kind === 'sync') for (const f of files) createFileSync(root, body, f);
  else if (kind === 'cb') await createCallbacks(root, body, files, inFlight);
  else if (kind === 'async') await createAsync(root, body, files, inFlight);
  else if (kind === 'workers') await runWorkers(workers);
  else throw new Error(`unknown variant ${variant}`);
  const filePhase = { wallMs: elapsed(wall), cpuMs: cpuMs(cpu) };
  await Promise.all(workers.map((w) => w.terminate()));
  return { ...shape, dirPhase, filePhase };
}

if (!isMainThread && workerData?.createTree) workerMain(workerData.createTree);
