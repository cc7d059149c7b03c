/**
 * argv -> library calls. The only module that prints, reads the environment or sets exit codes.
 * `main` is what bin/pull-unpack.js calls and what tests run in-process.
 */
import { isPullUnpackError, PullUnpackError, redactSecrets } from '../errors.js';
import { inspect, pull, pullBundle, pullOci, pullTar, type PullEvent, type PullResult } from '../index.js';
import { CACHE_OPTIONS, cacheCommand, defaultCacheDir } from './cache.js';
import { completionCommand } from './completion.js';
import { sourceOptionsFrom } from './options.js';
import { progressDisplayFor } from './progress.js';
import { formatPullReport } from './pull-output.js';
import { escapeControl, escapeStack } from './escape.js';
import { errorEvent, jsonEventLine, wantsJson } from './json-events.js';
import { EXIT_OUTPUT_CLOSED, guardOutput } from './output-guard.js';
import { trustOptionsFrom } from './trust-options.js';
import { printInspect } from './inspect-output.js';
import { parseCommandLine, usageError } from './args.js';
import { helpCommand, usageOf, USAGE, VERSION } from './help.js';
import { checkImageArgument, withCommandGuess, withHint } from './mistakes.js';
import { passwordInput } from './password-prompt.js';
import { parsePullArgs, type PullRequest } from './pull-args.js';
import type { SourceOptions } from '../sources/open.js';
import { INSPECT_OPTIONS, PULL_OPTIONS } from './tables.js';
import type { CliIo } from './io.js';

export { INSPECT_OPTIONS, PULL_OPTIONS } from './tables.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Runs the CLI; resolves to the process exit code. Never throws for expected failures. */
export async function main(argv: string[], cliIo: CliIo): Promise<number> {
  const output = guardOutput(cliIo.stdout, cliIo.stderr, cliIo.signal);
  const io = { ...cliIo, signal: output.signal };
  try {
    return await dispatch(argv, io);
  } catch (err) {
    const failure = output.failure();
    if (failure === 'closed') return EXIT_OUTPUT_CLOSED;
    // With --json, the failure is an event on stdout too (unless stdout itself failed).
    if (!failure && wantsJson(argv)) io.stdout.write(jsonEventLine(errorEvent(err)));
    return reportError(failure ?? err, io);
  }
}

/** The first word picks the command; anything else is a pull, whose IMAGE is always tried. */
async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    io.stdout.write(USAGE);
    return EXIT_USAGE;
  }
  if (command === '--help' || command === '-h' || command === 'help') return helpCommand(rest, io);
  if (command === '--version' || command === '-V') return printVersion(io);
  if (command === 'inspect') return await inspectCommand(rest, io);
  if (command === 'pull') return await pullCommand(rest, io);
  if (command === 'cache') return await cacheCommand(rest, io);
  if (command === 'completion') return completionCommand(rest, io, { pull: PULL_OPTIONS, inspect: INSPECT_OPTIONS, cache: CACHE_OPTIONS });
  return await pullCommand(argv, io).catch((err: unknown) => {
    throw withCommandGuess(err, command);
  });
}

function printVersion(io: CliIo): number {
  io.stdout.write(`pull-unpack ${VERSION}\n`);
  return EXIT_OK;
}

/** `pull-unpack [pull] IMAGE DIR`: parse and check the words, run the pull, print its result. */
async function pullCommand(args: string[], io: CliIo): Promise<number> {
  const request = parsePullArgs(args, { inspect: INSPECT_OPTIONS, cache: CACHE_OPTIONS }, { stdoutIsTerminal: io.stdout.isTTY === true });
  if ('help' in request) {
    io.stdout.write(usageOf('pull'));
    return EXIT_OK;
  }
  if ('version' in request) return printVersion(io);
  const hintOnFailure = await checkImageArgument(request.image, request.dir);
  const { values } = request;
  // Before the display starts: a password typed at the terminal is prompted for on stderr.
  const source = await sourceOptionsFrom(values, io.env, passwordInput(io.stdin, io.stderr, io.signal));
  const display = progressDisplayFor(io.stderr, io.env, { json: values.json, quiet: values.quiet, noProgress: values['no-progress'] });
  let result: PullResult;
  try {
    display?.start(request.image);
    result = await runPull(request, { ...io, source }, eventPrinter(request, io, display));
  } catch (err) {
    throw withHint(err, hintOnFailure);
  } finally {
    display?.stop();
  }
  // With the tar on stdout, the final line goes to stderr.
  const report = request.toStdout ? io.stderr : io.stdout;
  if (values.json) io.stdout.write(jsonEventLine({ type: 'done', ...result.summary }));
  else if (!values.quiet)
    report.write(formatPullReport(result, request.dir, { bundle: values.bundle, env: io.env, uid: process.getuid?.() }));
  return EXIT_OK;
}

type ProgressDisplay = ReturnType<typeof progressDisplayFor>;

/** Where a pull's events go: NDJSON on stdout with --json, else warnings on stderr and the display. */
function eventPrinter({ values }: PullRequest, io: CliIo, display: ProgressDisplay): (event: PullEvent) => void {
  return (event) => {
    if (values.json) io.stdout.write(jsonEventLine(event));
    else if (event.type === 'warning' && !values.quiet) {
      display?.clear();
      io.stderr.write(`warning: ${escapeControl(event.message)}\n`);
    } else if (event.type === 'blob-wait' && !values.quiet && !display) {
      // On a terminal the display's layer line says it; elsewhere a wait is never silent.
      io.stderr.write(`warning: ${escapeControl(event.message)}\n`);
    }
    display?.handle(event);
  };
}

/** Calls the library function for the output asked for, with the registry options already resolved. */
async function runPull(
  request: PullRequest,
  io: CliIo & { source: SourceOptions },
  onEvent: (event: PullEvent) => void,
): Promise<PullResult> {
  const { values, image, dir, cmd } = request;
  const common = {
    ...io.source,
    onNotice: (message: string) => onEvent({ type: 'warning', message }),
    force: values.force,
    cacheDir: values['no-cache'] ? undefined : (values['cache-dir'] ?? defaultCacheDir(io.env)),
    offline: values.offline,
    lockTimeoutMs: request.lockTimeoutMs,
    concurrency: request.concurrency,
    signal: io.signal,
    onEvent,
    trust: trustOptionsFrom(values, io.env, (message) => onEvent({ type: 'warning', message })),
  };
  if (request.output === 'tar') return await pullTar(image, dir, { ...common, stdout: io.stdout });
  if (request.output === 'oci') return await pullOci(image, dir, common);
  if (!values.bundle) return await pull(image, dir, common);
  return await pullBundle(image, dir, {
    ...common,
    overrides: {
      entrypoint: request.entrypoint,
      cmd: cmd.length > 0 ? cmd : undefined,
      env: values.env,
      workdir: values.workdir,
      user: values.user,
    },
    hostname: values.hostname,
    tty: values.tty,
    rootless: values.rootless ? true : undefined,
    volumeMode: request.volumeMode,
  });
}

async function inspectCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandLine(args, INSPECT_OPTIONS, {
    command: 'inspect',
    others: { pull: PULL_OPTIONS, cache: CACHE_OPTIONS },
  });
  if (values.help) {
    io.stdout.write(usageOf('inspect'));
    return EXIT_OK;
  }
  if (values.version) return printVersion(io);
  if (positionals.length !== 1) throw usageError('inspect', 'inspect takes exactly one IMAGE');
  await checkImageArgument(positionals[0]!, undefined);
  const notices: string[] = [];
  const result = await inspect(positionals[0]!, {
    ...(await sourceOptionsFrom(values, io.env, passwordInput(io.stdin, io.stderr, io.signal))),
    signal: io.signal,
    onNotice: (m) => notices.push(m),
    trust: trustOptionsFrom(values, io.env, (m) => notices.push(m)),
  });
  // Exit 1 when the platform has no image, so scripts can ask "does IMAGE have linux/arm/v6?".
  printInspect(result, notices, { raw: values.raw, json: values.json, platformGiven: values.platform !== undefined }, io);
  return 'error' in result.pick ? EXIT_FAILURE : EXIT_OK;
}

function reportError(err: unknown, io: CliIo): number {
  if (isPullUnpackError(err)) {
    io.stderr.write(`pull-unpack: ${escapeControl(err.message)}\n`);
    if (err.hint) io.stderr.write(`hint: ${escapeControl(err.hint)}\n`);
    return exitCodeFor(err);
  }
  io.stderr.write(`pull-unpack: unexpected error: ${redactSecrets(escapeStack(err))}\n`);
  return EXIT_FAILURE;
}

function exitCodeFor(err: PullUnpackError): number {
  if (err.code === 'ABORTED') return 130;
  if (err.code === 'USAGE') return EXIT_USAGE;
  return EXIT_FAILURE;
}
