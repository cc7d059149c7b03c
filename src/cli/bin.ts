/**
 * The process wrapper around `main`: real stdio and environment, and SIGINT (Ctrl-C) or SIGTERM
 * as an abort. The command stops through its AbortSignal, so a pull removes its staging
 * directory, keeps its partial downloads for the next pull to resume, and clears its progress
 * display before the process exits.
 */
import { EXIT_OK, main } from './main.js';

/** The shell's convention for a process ended by a signal: 128 + its number. */
const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
type HandledSignal = keyof typeof SIGNAL_EXIT_CODES;

/**
 * Runs the CLI for this process; resolves to the exit code: 130 after SIGINT, 143 after SIGTERM,
 * unless the command completed anyway (the signal came while it committed its result, which is
 * never cut short). A second signal exits at once (the next pull sweeps what is left).
 */
export async function run(argv: string[] = process.argv.slice(2)): Promise<number> {
  const controller = new AbortController();
  let received: HandledSignal | undefined;
  const onSignal = (signal: HandledSignal): void => {
    if (received) process.exit(SIGNAL_EXIT_CODES[signal]);
    received = signal;
    controller.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const code = await main(argv, {
      stdout: process.stdout,
      stderr: process.stderr,
      stdin: process.stdin,
      env: process.env,
      signal: controller.signal,
    });
    return received && code !== EXIT_OK ? SIGNAL_EXIT_CODES[received] : code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
