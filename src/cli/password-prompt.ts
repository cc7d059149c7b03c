/**
 * `--password-stdin` when standard input is a terminal: prompt "Password: " on stderr and read
 * one line without echo, as `docker login` and `skopeo login` do, instead of echoing the
 * password and waiting for ^D. The terminal is put in raw mode only while the line is read and
 * restored however the read ends: Enter, ^D, ^C (an interrupt: exit 130) or the abort signal.
 */
import { Readable, type Writable } from 'node:stream';
import { abortError } from '../errors.js';

/** What a terminal's standard input offers (node:tty ReadStream). */
type TerminalInput = Readable & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };

const ENTER = new Set(['\r', '\n']);
const CTRL_C = '\x03';
const CTRL_D = '\x04';
const CTRL_U = '\x15';
const BACKSPACE = new Set(['\x7f', '\b']);

/**
 * The stream `--password-stdin` reads: `stdin` itself unless it is a terminal; for a terminal,
 * a stream that prompts on `stderr` when it is first read and yields the line typed, unechoed.
 */
export function passwordInput(stdin: TerminalInput | undefined, stderr: Writable, signal: AbortSignal | undefined): Readable | undefined {
  if (!stdin?.isTTY || typeof stdin.setRawMode !== 'function') return stdin;
  const terminal = stdin as TerminalInput & { setRawMode: (mode: boolean) => unknown };
  return Readable.from(
    (async function* () {
      yield `${await promptLine(terminal, stderr, signal)}\n`;
    })(),
  );
}

/** Prompts, then collects keys until Enter or ^D; ^C or `signal` rejects with ABORTED. Raw mode is always turned off again. */
function promptLine(
  stdin: TerminalInput & { setRawMode: (mode: boolean) => unknown },
  stderr: Writable,
  signal: AbortSignal | undefined,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let line = '';
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      signal?.removeEventListener('abort', onAbort);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write('\n');
      if (err) reject(err);
      else resolve(line);
    };
    const onAbort = (): void => finish(abortError(signal));
    const onData = (chunk: Buffer | string): void => {
      for (const key of chunk.toString('utf8')) {
        if (ENTER.has(key) || (key === CTRL_D && line === '')) return finish();
        if (key === CTRL_C) return finish(abortError(AbortSignal.abort(new Error('interrupted by Ctrl-C'))));
        if (BACKSPACE.has(key)) line = [...line].slice(0, -1).join('');
        else if (key === CTRL_U) line = '';
        else if (key !== CTRL_D) line += key;
      }
    };
    if (signal?.aborted) return reject(abortError(signal));
    stderr.write('Password: ');
    stdin.setRawMode(true);
    stdin.on('data', onData);
    stdin.resume();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
