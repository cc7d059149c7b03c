/**
 * A real pseudo-terminal for CLI tests: a tmux server of its own (its own socket, so nothing
 * touches the user's tmux), one window of a chosen size running /bin/sh, keys sent to it, and its
 * screen and scrollback read back with capture-pane. Tests wait on what the screen shows: a
 * control-mode client (tmux -C) reports every write to the pane (%output), and the screen is
 * read again after each one until it shows what is awaited.
 */
import { execFile, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Terminal {
  /** Types `line` and presses Enter. */
  type(line: string): Promise<void>;
  /** Sends tmux key names, e.g. 'C-c'. */
  keys(...keys: string[]): Promise<void>;
  /** Resizes the window (the program gets SIGWINCH). */
  resize(columns: number, rows: number): Promise<void>;
  /**
   * The screen (or with `history` the scrollback too) as lines, trailing blanks removed. Lines
   * the terminal wrapped are joined back into one (capture-pane -J), so a line longer than the
   * window shows up as such; `escapes` keeps the colour codes.
   */
  capture(options?: { history?: boolean; escapes?: boolean }): Promise<string[]>;
  /** Resolves at the next output of the program in the pane (once tmux has processed it). */
  nextOutput(): Promise<void>;
  /** Resolves with the screen once `match` accepts it; rejects after `timeoutMs` with the screen in the message. */
  waitFor(match: (lines: string[]) => boolean, what: string, timeoutMs?: number): Promise<string[]>;
  close(): Promise<void>;
}

/** Starts a detached tmux window of `columns` x `rows` running `shell` with `env` in `cwd`. */
export async function openTerminal(options: {
  columns: number;
  rows: number;
  env: Record<string, string>;
  cwd: string;
  /** The program the window runs (default /bin/sh). */
  shell?: string[] | undefined;
}): Promise<Terminal> {
  const socket = `pull-unpack-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const tmux = (...args: string[]) => run('tmux', ['-L', socket, '-f', '/dev/null', ...args], { cwd: options.cwd });
  const env = Object.entries(options.env).map(([k, v]) => `${k}=${v}`);
  await tmux(
    'new-session',
    '-d',
    '-x',
    String(options.columns),
    '-y',
    String(options.rows),
    '-c',
    options.cwd,
    'env',
    '-i',
    ...env,
    'PS1=$ ',
    ...(options.shell ?? ['/bin/sh']),
  );
  // A window keeps the size it is given (not that of a client, there is none) and keeps its
  // scrollback in a predictable state; the status line would take a row.
  await tmux('set-option', '-g', 'status', 'off');
  await tmux('set-option', '-g', 'window-size', 'manual');
  await tmux('set-option', '-g', 'history-limit', '5000');
  await tmux('resize-window', '-x', String(options.columns), '-y', String(options.rows));
  // The control-mode client: one 'output' event per batch of pane output.
  const watcher = spawn('tmux', ['-L', socket, '-C', 'attach-session'], { stdio: ['pipe', 'pipe', 'ignore'], cwd: options.cwd });
  const output = new EventEmitter();
  watcher.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    if (chunk.includes('%output')) output.emit('output');
  });
  const capture = async (o: { history?: boolean; escapes?: boolean } = {}): Promise<string[]> => {
    const args = ['capture-pane', '-p', '-J', ...(o.history ? ['-S', '-', '-E', '-'] : []), ...(o.escapes ? ['-e'] : [])];
    const { stdout } = await tmux(...args);
    const lines = stdout.split('\n').map((l) => l.replace(/\s+$/, ''));
    while (lines.length > 0 && lines.at(-1) === '') lines.pop();
    return lines;
  };
  return {
    type: async (line) => void (await tmux('send-keys', '-l', line).then(() => tmux('send-keys', 'Enter'))),
    keys: async (...keys) => void (await tmux('send-keys', ...keys)),
    resize: async (columns, rows) => void (await tmux('resize-window', '-x', String(columns), '-y', String(rows))),
    capture,
    // Below the 60 s test timeout, so a screen that never comes fails the wait (with the screen), not the test runner.
    waitFor: (match, what, timeoutMs = 30_000) => waitForScreen(output, capture, match, what, timeoutMs),
    nextOutput: () => new Promise((resolve) => output.once('output', () => resolve())),
    close: async () => {
      watcher.stdin.end();
      await tmux('kill-server').catch(() => undefined);
      if (watcher.exitCode === null) await new Promise((resolve) => watcher.once('close', resolve));
    },
  };
}

/** Reads the screen now and after every pane output until `match` accepts it (checks never overlap). */
function waitForScreen(
  output: EventEmitter,
  capture: () => Promise<string[]>,
  match: (lines: string[]) => boolean,
  what: string,
  timeoutMs: number,
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    let busy = false;
    let again = false;
    let last: string[] = [];
    const finish = (err: Error | undefined, lines?: string[]): void => {
      output.off('output', check);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(lines!);
    };
    const check = (): void => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      void (async () => {
        try {
          do {
            again = false;
            last = await capture();
            if (match(last)) return finish(undefined, last);
          } while (again);
        } catch (err) {
          finish(err as Error);
        } finally {
          busy = false;
        }
      })();
    };
    const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}; the screen:\n${last.join('\n')}`)), timeoutMs);
    output.on('output', check);
    check();
  });
}
