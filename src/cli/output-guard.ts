/**
 * The CLI's output streams when their reader misbehaves. A reader that goes away early
 * (`pull-unpack --json ... | head -1`, `--output tar - | head -c 1`) makes the next write fail
 * with EPIPE: the command is stopped through its AbortSignal (so the staging directory is
 * removed as for Ctrl-C) and ends quietly, as a program killed by SIGPIPE does. Any other
 * failure to write stdout (a full disk behind `> FILE`) stops it with that error.
 */
import type { Writable } from 'node:stream';
import { PullUnpackError } from '../errors.js';

/** The exit code after stdout's reader went away: 128 + SIGPIPE, what a shell reports for `yes | head -1`. */
export const EXIT_OUTPUT_CLOSED = 141;

export interface OutputGuard {
  /** Fires when the caller's signal does, or when stdout can no longer be written. */
  readonly signal: AbortSignal;
  /**
   * Why stdout failed, once it did: 'closed' when its reader went away (nothing more is to be
   * printed), else the error to report.
   */
  failure(): 'closed' | PullUnpackError | undefined;
}

/**
 * Watches `stdout` and `stderr` for write errors for as long as they live (a failed write is
 * reported after the command may have returned, so the listeners stay). Errors on stderr are
 * dropped: there is nowhere left to report them.
 */
export function guardOutput(stdout: Writable, stderr: Writable, signal: AbortSignal | undefined): OutputGuard {
  const controller = new AbortController();
  let failure: 'closed' | PullUnpackError | undefined;
  stdout.on('error', (err: NodeJS.ErrnoException) => {
    failure ??=
      err.code === 'EPIPE'
        ? 'closed'
        : new PullUnpackError('STORAGE_ERROR', `cannot write to standard output: ${err.message}`, { cause: err });
    controller.abort(err);
  });
  stderr.on('error', () => undefined);
  return {
    signal: signal ? AbortSignal.any([signal, controller.signal]) : controller.signal,
    failure: () => failure,
  };
}
