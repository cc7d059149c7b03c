/**
 * Fixtures for the crash-safety tests: a proxy that trickles blob bodies so a pull can be killed
 * in the middle of a download, the built CLI run as a real process whose --json events can be
 * watched (and the process killed after any of them), a seeded PRNG, a check that every blob in
 * a cache hashes to its name, and the staging directories a pull left beside DIR.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { onTestFinished } from 'vitest';
import { startServer, type TestServer } from './registry.js';

export const BIN = fileURLToPath(new URL('../../bin/pull-unpack.js', import.meta.url));
export const BUILT_CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** mulberry32: a small seeded PRNG, so a failing run can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface TrickleOptions {
  /** Bytes per write of a blob body. */
  chunkBytes: number;
  /** Pause after each write. */
  intervalMs: number;
}

export interface TrickleProxy extends TestServer {
  /** `GET <digest>` or `GET <digest> <range>` for every blob request, in order. */
  readonly blobRequests: string[];
  /** Stops sending blob bytes (connections stay open) until `release`. */
  hold(): void;
  release(): void;
}

const BLOB_PATH = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/;
const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'content-length']);

/**
 * A proxy in front of the registry at `targetUrl` that streams everything through and sends
 * blob bodies `chunkBytes` at a time, `intervalMs` apart (Range requests are forwarded, so a
 * resumed download is trickled too). A client that goes away stops the upstream transfer.
 */
export async function startTrickleProxy(targetUrl: string, options: TrickleOptions): Promise<TrickleProxy> {
  const blobRequests: string[] = [];
  let held: { promise: Promise<void>; release: () => void } | undefined;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const digest = BLOB_PATH.exec(req.url ?? '')?.[1];
    if (digest && req.method === 'GET') blobRequests.push(`GET ${digest}${req.headers.range ? ` ${req.headers.range}` : ''}`);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && typeof v === 'string') headers[k] = v;
    const up = await request(`${targetUrl}${req.url ?? '/'}`, { method: req.method as 'GET', headers });
    const outHeaders: Record<string, string> = {};
    for (const [k, v] of Object.entries(up.headers)) if (!HOP.has(k) && typeof v === 'string') outHeaders[k] = v;
    if (typeof up.headers['content-length'] === 'string') outHeaders['content-length'] = up.headers['content-length'];
    res.writeHead(up.statusCode, outHeaders);
    let gone = false;
    res.on('close', () => {
      gone = true;
      up.body.destroy();
    });
    try {
      for await (const chunk of up.body as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.length && !gone; i += digest ? options.chunkBytes : chunk.length) {
          if (digest && held) await held.promise;
          const piece = chunk.subarray(i, digest ? i + options.chunkBytes : chunk.length);
          if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
          if (digest) await sleep(options.intervalMs);
        }
        if (gone) return;
      }
    } catch {
      // The client went away mid-body (killed); nothing to answer any more.
      return;
    }
    res.end();
  };
  const server = await startServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
  });
  return {
    ...server,
    blobRequests,
    hold: () => {
      if (held) return;
      let release!: () => void;
      const promise = new Promise<void>((resolve) => (release = resolve));
      held = { promise, release };
    },
    release: () => {
      held?.release();
      held = undefined;
    },
  };
}

/** One --json event line of the CLI. */
export interface EventLine {
  type: string;
  [key: string]: unknown;
}

export interface SpawnedCli {
  child: ChildProcess;
  /** Parsed stdout lines so far (every line of a --json run is an event). */
  readonly events: EventLine[];
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** Resolves with the first event (already seen or still to come) that `match` accepts; rejects if the process ends first. */
  until(match: (event: EventLine) => boolean): Promise<EventLine>;
  /** Settles when the process has exited: its exit code, or the signal that ended it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `node bin/pull-unpack.js ...args` (the built CLI) with `env`, in `cwd`, as `user`. With `killWhen`, the process
 * gets SIGKILL from inside the stdout handler as soon as it accepts an event (it sees the event
 * and every event before it).
 */
export function spawnCli(
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    /** Run as this user and group (needs root), e.g. nobody's. */
    user?: { uid: number; gid: number };
    killWhen?: (event: EventLine, events: EventLine[]) => boolean;
  } = {},
): SpawnedCli {
  if (!existsSync(BUILT_CLI)) throw new Error('dist/ is missing: run npm run build first');
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: options.env ?? process.env,
    cwd: options.cwd,
    ...options.user,
  });
  let out = '';
  let err = '';
  let pending = '';
  const events: EventLine[] = [];
  const waiters: Array<{ match: (e: EventLine) => boolean; resolve: (e: EventLine) => void }> = [];
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    pending += chunk;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      // Only --json runs print events; the one summary line of a plain run is not one.
      if (!line.startsWith('{')) continue;
      const event = JSON.parse(line) as EventLine;
      events.push(event);
      if (options.killWhen?.(event, events)) child.kill('SIGKILL');
      for (const w of waiters.filter((x) => x.match(event))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(event);
      }
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    events,
    stdout: () => out,
    stderr: () => err,
    until: (match) => {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ match, resolve });
        void exited.then(() => reject(new Error(`the process ended before the awaited event; stderr: ${err}`)));
      });
    },
    exited,
  };
}

/**
 * Waits for the CLI to exit, from inside a test. One still running when the test ends (it hung,
 * and the test timed out) is killed, so that no process outlives its test.
 */
export async function finished(run: SpawnedCli): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  onTestFinished(() => {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
  });
  return run.exited;
}

/** sha256 hex of a file's bytes, streamed. */
export async function hashFile(path: string, algorithm = 'sha256'): Promise<string> {
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every blob under `cacheDir`/blobs whose content does not hash to its name (empty when all verify), and how many there are. */
export async function unverifiedBlobs(cacheDir: string): Promise<{ bad: string[]; count: number }> {
  const bad: string[] = [];
  let count = 0;
  const blobs = join(cacheDir, 'blobs');
  if (!existsSync(blobs)) return { bad, count };
  for (const algorithm of await readdir(blobs)) {
    for (const hex of await readdir(join(blobs, algorithm))) {
      const path = join(blobs, algorithm, hex);
      if (!(await stat(path)).isFile()) {
        bad.push(`${algorithm}/${hex}: not a file`);
        continue;
      }
      count++;
      const actual = await hashFile(path, algorithm);
      if (actual !== hex) bad.push(`${algorithm}/${hex}: hashes to ${actual}`);
    }
  }
  return { bad, count };
}

/** The staging directories (`.NAME.pull-unpack-*`) beside `dest`, as absolute paths. */
export async function stagingDirs(dest: string): Promise<string[]> {
  const prefix = `.${basename(dest)}.pull-unpack-`;
  return (await readdir(dirname(dest)))
    .filter((n) => n.startsWith(prefix))
    .sort()
    .map((n) => join(dirname(dest), n));
}
