/**
 * Runs one contender's shell script and measures it:
 *
 *   wallMs      spawn to exit, from process.hrtime (includes bash and /usr/bin/time start-up, ~2 ms)
 *   maxRssKiB   GNU time's %M: the rusage max RSS of the largest single process of the tree
 *               (wait4 folds reaped descendants into it), exact but per process
 *   treeRssKiB  the peak of the summed RSS of every live process of the tree, sampled from
 *               /proc/<pid>/statm every SAMPLE_MS; catches pipelines (curl + gzip + tar at
 *               once) but can miss a spike shorter than the interval; never less than maxRssKiB
 *   cpuS        user + system CPU seconds of the whole tree (GNU time's %U + %S)
 *
 * The script runs in its own process group so an interrupt can stop all of it (stopCurrent).
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

const SAMPLE_MS = 50;
const PAGE_KIB = 4; // Linux x86-64 and arm64 with 4 KiB pages; statm counts pages.
const OUTPUT_CAP = 16 * 1024;
let current;

/** Runs `script` with `bash -c` under /usr/bin/time; resolves with the measurements above. */
export async function measure(script, { cwd, workDir }) {
  const timeFile = join(workDir, `time-${process.pid}.txt`);
  const started = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', ['-f', '%e %M %U %S', '-o', timeFile, 'bash', '-c', script], {
    cwd,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  current = child;
  let output = '';
  const keep = (chunk) => {
    if (output.length < OUTPUT_CAP) output += chunk.toString('utf8');
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let treePeak = 0;
  const sampler = setInterval(() => {
    treePeak = Math.max(treePeak, treeRssKiB(child.pid));
  }, SAMPLE_MS);
  const code = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, signal) => resolve(c ?? signal));
  });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  clearInterval(sampler);
  current = undefined;
  const timeText = await readFile(timeFile, 'utf8').catch(() => '');
  await rm(timeFile, { force: true });
  // On failure GNU time writes "Command exited with non-zero status N" before the format line.
  const fields = timeText.trim().split('\n').pop()?.split(' ').map(Number) ?? [];
  const [, maxRssKiB = 0, user = 0, sys = 0] = fields;
  return { ok: code === 0, code, wallMs, maxRssKiB, treeRssKiB: Math.max(treePeak, maxRssKiB), cpuS: user + sys, output: output.trim() };
}

/** Kills the running measurement's whole process group (for SIGINT); true when there was one. */
export function stopCurrent() {
  if (!current?.pid) return false;
  try {
    process.kill(-current.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
  return true;
}

/** The summed RSS (KiB) of every descendant of `rootPid` (not `rootPid` itself: that is GNU time). */
function treeRssKiB(rootPid) {
  let total = 0;
  const stack = childrenOf(rootPid);
  while (stack.length > 0) {
    const pid = stack.pop();
    try {
      total += Number(readFileSync(`/proc/${pid}/statm`, 'latin1').split(' ')[1]) * PAGE_KIB;
    } catch {
      continue; // Exited since we listed it.
    }
    stack.push(...childrenOf(pid));
  }
  return total;
}

function childrenOf(pid) {
  const out = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim();
      if (text) out.push(...text.split(' ').map(Number));
    }
  } catch {
    // Exited since we listed it.
  }
  return out;
}
