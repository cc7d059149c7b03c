/**
 * zstd through the system's `zstd` program (Debian package zstd), as GNU tar's --zstd does:
 * native speed in its own process, which leaves the main thread to the layer applier. Used on
 * Node versions whose node:zlib has no zstd decoder, when the program is installed; fzstd on a
 * worker thread (zstd-worker.ts) is the fallback.
 *
 * The program only ever sees the blob on stdin and writes the tar to stdout. Its stdout is read
 * with backpressure (a paused consumer stops it through the pipe), and its memory is capped at
 * the same window size the frame reader allows.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { captureText, describeExit, findProgram, plainEnvironment } from '../programs.js';
import { MAX_WINDOW } from './zstd-frames.js';
import type { Emit } from './zstd-worker.js';

let found: string | null | undefined;

/** The zstd program on PATH, or null; looked up once per process. */
export function zstdProgram(): string | null {
  found ??= findProgram('zstd');
  return found;
}

/** A failure of the zstd program, with what it printed. */
export class ZstdProgramError extends Error {}

export class ZstdProcess {
  private readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  private readonly pump: Promise<void>;

  constructor(program: string, emit: Emit) {
    const child = spawn(program, ['-d', '-c', '-q', `--memory=${MAX_WINDOW / (1024 * 1024)}MB`], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: plainEnvironment(),
    });
    this.child = child;
    const stderr = captureText(child.stderr, 4096);
    // Writing to a program that died fails with EPIPE: the exit status below says why.
    child.stdin.on('error', () => undefined);
    const spawned = once(child, 'spawn');
    const exited = (async () => {
      const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
      if (code === 0) return;
      const said = stderr()
        .trim()
        .replace(/^zstd: /, '')
        .replace(/^\/\*stdin\*\\ ?: ?/, '');
      throw new ZstdProgramError(`zstd ${describeExit(code, signal)}${said ? `: ${said}` : ''}`);
    })();
    exited.catch(() => undefined);
    this.pump = (async () => {
      await spawned;
      for await (const out of child.stdout as AsyncIterable<Buffer>) await emit(out);
      await exited;
    })();
    this.pump.catch(() => undefined);
  }

  write(chunk: Buffer): Promise<void> | undefined {
    if (this.child.stdin.write(chunk)) return undefined;
    return Promise.race([once(this.child.stdin, 'drain').then(() => undefined), this.pump]);
  }

  end(): Promise<void> {
    this.child.stdin.end();
    return this.pump;
  }

  destroy(): void {
    this.child.kill('SIGKILL');
  }
}
