/**
 * The programs pull-unpack runs, in one place: short-lived ones (credential helpers,
 * getfattr/setfattr, mkfifo/mknod) through `runProgram`, which feeds their input and keeps at
 * most a cap of what they print; and what the long-running zstd decoder shares with them
 * (finding a program on PATH, capturing its stderr, saying how it ended). Programs are spawned
 * without a shell, so no argument is ever interpreted.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Readable } from 'node:stream';
import { abortError } from './errors.js';

export interface RunOptions {
  /** Written to the program's stdin, which is then closed (default: nothing). */
  input?: string | Buffer | undefined;
  /** The program's environment (default: this process's). */
  env?: NodeJS.ProcessEnv | undefined;
  /** An open file descriptor the program gets as its fd 3 (e.g. for /proc/self/fd/3). */
  fd3?: number | undefined;
  /** Kills the program and rejects with ABORTED. */
  signal?: AbortSignal | undefined;
  /** Kills the program (SIGKILL) after this many milliseconds: the result is 'timeout'. */
  timeoutMs?: number | undefined;
  /** Bytes of stdout kept (default 64 MiB); the rest is read and dropped, and `truncated` says so. */
  maxStdout?: number | undefined;
  /** Bytes of stderr kept (default 64 KiB); the rest is read and dropped. */
  maxStderr?: number | undefined;
}

export type RunResult =
  | { status: 'exited'; code: number; stdout: Buffer; stderr: string; truncated: boolean }
  /** Not installed (ENOENT). */
  | { status: 'missing' }
  | { status: 'killed'; signal: NodeJS.Signals }
  | { status: 'timeout' }
  /** It could not be started (e.g. EACCES): the errno code or message. */
  | { status: 'failed'; message: string };

const DEFAULT_MAX_STDOUT = 64 * 1024 * 1024;
const DEFAULT_MAX_STDERR = 64 * 1024;

/**
 * Runs `command` with `args` to completion. Resolves with how it ended (see RunResult); rejects
 * only with ABORTED when `options.signal` fires. A program that outlives its timeout or an abort
 * is killed, and the result does not wait for whatever it left holding its pipes.
 */
export function runProgram(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env,
      stdio: ['pipe', 'pipe', 'pipe', options.fd3 ?? 'ignore'],
    }) as ReturnType<typeof spawn> & { stdin: NodeJS.WritableStream; stdout: Readable; stderr: Readable };
    const stdout = captureBytes(child.stdout, options.maxStdout ?? DEFAULT_MAX_STDOUT);
    const stderr = captureText(child.stderr, options.maxStderr ?? DEFAULT_MAX_STDERR);
    let settled = false;
    const finish = (settle: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      settle();
    };
    const stop = (): void => {
      child.kill('SIGKILL');
      child.stdout.destroy();
      child.stderr.destroy();
    };
    const onAbort = (): void => {
      stop();
      finish(() => reject(abortError(signal)));
    };
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            stop();
            finish(() => resolve({ status: 'timeout' }));
          }, options.timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err: NodeJS.ErrnoException) => {
      finish(() => resolve(err.code === 'ENOENT' ? { status: 'missing' } : { status: 'failed', message: err.code ?? err.message }));
    });
    child.on('close', (code, killedBy) => {
      finish(() => {
        if (code === null) resolve({ status: 'killed', signal: killedBy ?? 'SIGKILL' });
        else resolve({ status: 'exited', code, stdout: stdout.bytes(), stderr: stderr(), truncated: stdout.truncated() });
      });
    });
    // A program that exits without reading its input makes this write fail with EPIPE: how it
    // exited (reported on 'close') is what matters, so the write error is dropped.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** `stream`'s bytes, up to `cap`; later bytes are read and dropped. */
function captureBytes(stream: Readable, cap: number): { bytes: () => Buffer; truncated: () => boolean } {
  const chunks: Buffer[] = [];
  let kept = 0;
  let dropped = false;
  stream.on('data', (chunk: Buffer) => {
    const room = cap - kept;
    if (chunk.length > room) dropped = true;
    if (room <= 0) return;
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    chunks.push(part);
    kept += part.length;
  });
  return { bytes: () => Buffer.concat(chunks, kept), truncated: () => dropped };
}

/** What a program prints on `stream` (UTF-8), up to `cap` bytes; later bytes are read and dropped. */
export function captureText(stream: Readable, cap: number): () => string {
  const captured = captureBytes(stream, cap);
  return () => captured.bytes().toString('utf8');
}

/** Why `result` is not a clean exit: what the program printed on stderr, else how it ended; undefined for exit 0. */
export function whyFailed(result: RunResult): string | undefined {
  switch (result.status) {
    case 'exited':
      return result.code === 0 ? undefined : result.stderr.trim() || describeExit(result.code, null);
    case 'killed':
      return describeExit(null, result.signal);
    case 'missing':
      return 'not installed';
    case 'timeout':
      return 'it did not finish in time';
    case 'failed':
      return result.message;
  }
}

/** How a program ended, for messages: 'failed (exit 2)' or 'was killed by SIGKILL'. */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return code === null ? `was killed by ${signal ?? 'a signal'}` : `failed (exit ${code})`;
}

/**
 * The absolute path of `name` in this process's PATH (relative PATH entries are skipped, as
 * they would depend on the current directory), or null.
 */
export function findProgram(name: string): string | null {
  for (const dir of programPath().split(delimiter)) {
    if (!dir.startsWith('/')) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return null;
}

/** A minimal environment for a program whose output is parsed: the C locale and this process's PATH. */
export function plainEnvironment(): NodeJS.ProcessEnv {
  return { LC_ALL: 'C', PATH: programPath() };
}

/** This process's PATH: the one piece of the environment the library reads, to find the programs it runs. */
function programPath(): string {
  return process.env['PATH'] ?? '';
}
