/**
 * The arguments of a pull (`pull-unpack IMAGE DIR`, `--bundle`, `--output tar|oci`), parsed and
 * checked against each other before anything is read or fetched.
 */
import { parseCommandLine, usageError, type OptionsTable } from './args.js';
import { BUNDLE_ONLY, PULL_OPTIONS } from './tables.js';
import { parseDuration } from '../store/cache-index.js';
import { checkLockTimeout } from '../store/lock.js';

export type PullValues = ReturnType<typeof parseCommandLine<typeof PULL_OPTIONS>>['values'];

/** A pull the command line asks for, every value checked. */
export interface PullRequest {
  image: string;
  dir: string;
  output: 'rootfs' | 'tar' | 'oci';
  /** The words after DIR (after `--`): the bundle's Cmd. */
  cmd: string[];
  values: PullValues;
  concurrency: number | undefined;
  volumeMode: 'tmpfs' | 'none' | undefined;
  entrypoint: string[] | undefined;
  lockTimeoutMs: number | undefined;
  /** True for `--output tar -`: the tar goes to stdout. */
  toStdout: boolean;
}

/** What the words of a pull command ask for: a pull, or only its help or the version. */
export type PullArgs = { help: true } | { version: true } | PullRequest;

/** Where the pull's output would go, for the checks that depend on it. */
export interface PullTerminals {
  /** Standard output is a terminal: a tar is never written there. */
  stdoutIsTerminal: boolean;
}

/** Parses the words of a pull command; USAGE errors for every inconsistency. */
export function parsePullArgs(args: string[], others: Record<'inspect' | 'cache', OptionsTable>, terminals: PullTerminals): PullArgs {
  const { values, positionals } = parseCommandLine(args, PULL_OPTIONS, { command: 'pull', others });
  if (values.help) return { help: true };
  if (values.version) return { version: true };
  if (positionals.length < 2) {
    throw usageError(
      'pull',
      positionals.length === 0 ? 'expected IMAGE and DIR (or a command: inspect, cache, help)' : 'expected DIR after IMAGE',
    );
  }
  const [image, dir, ...cmd] = positionals as [string, string, ...string[]];
  if (values.offline && values['no-cache']) throw usageError('pull', '--offline reads the cache: it cannot go with --no-cache');
  checkBundleOnly(values, cmd);
  const output = values.output ?? 'rootfs';
  if (output !== 'rootfs' && output !== 'tar' && output !== 'oci') throw usageError('pull', '--output takes rootfs, tar or oci');
  if (output !== 'rootfs' && values.bundle) throw usageError('pull', `--output ${output} cannot go with --bundle`);
  const toStdout = output === 'tar' && dir === '-';
  if (toStdout && values.json) throw usageError('pull', '--output tar - writes the tar to stdout: --json cannot share it');
  // As `docker save` does: a tar is binary, and a terminal would be flooded (and driven) by it.
  if (toStdout && terminals.stdoutIsTerminal) {
    throw usageError(
      'pull',
      'refusing to write a tar to the terminal',
      'redirect it (> file.tar), pipe it, or write a file: --output tar FILE',
    );
  }
  return {
    image,
    dir,
    output,
    cmd,
    values,
    concurrency: concurrencyFrom(values.concurrency),
    volumeMode: volumeModeFrom(values['volume-mode']),
    entrypoint: values.entrypoint === undefined ? undefined : parseEntrypoint(values.entrypoint),
    lockTimeoutMs: values['lock-timeout'] === undefined ? undefined : checkLockTimeout(parseDuration(values['lock-timeout'])),
    toStdout,
  };
}

/** Bundle options and a command after DIR need --bundle. */
function checkBundleOnly(values: PullValues, cmd: string[]): void {
  if (values.bundle) return;
  const misplaced = BUNDLE_ONLY.find((name) => values[name] !== undefined);
  if (misplaced) throw usageError('pull', `--${misplaced} needs --bundle`);
  if (cmd.length > 0) {
    throw usageError('pull', `unexpected arguments after DIR: ${cmd.join(' ')}`, 'a command for the bundle goes after DIR with --bundle');
  }
}

function volumeModeFrom(text: string | undefined): 'tmpfs' | 'none' | undefined {
  if (text !== undefined && text !== 'tmpfs' && text !== 'none') throw usageError('pull', '--volume-mode takes tmpfs or none');
  return text;
}

function concurrencyFrom(text: string | undefined): number | undefined {
  const concurrency = text === undefined ? undefined : Number(text);
  if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 64)) {
    throw usageError('pull', '--concurrency takes a whole number from 1 to 64');
  }
  return concurrency;
}

/** `--entrypoint sh` or, as JSON, `--entrypoint '["sh","-c"]'`; an empty string clears it. */
function parseEntrypoint(text: string): string[] {
  if (text === '') return [];
  if (!text.trimStart().startsWith('[')) return [text];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw usageError('pull', '--entrypoint: not a valid JSON array');
  }
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) {
    throw usageError('pull', '--entrypoint: a JSON entrypoint must be an array of strings');
  }
  return parsed;
}
