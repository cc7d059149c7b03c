/**
 * argv -> library calls. The only module that prints, reads the environment or sets exit codes.
 * `main` is what bin/pull-unpack.js calls and what tests run in-process.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isPullUnpackError, PullUnpackError, redactSecrets } from '../errors.js';
import { inspect, pull, pullBundle, pullOci, pullTar, type PullEvent, type PullResult } from '../index.js';
import { CACHE_OPTIONS, cacheCommand, defaultCacheDir } from './cache.js';
import { completionCommand } from './completion.js';
import { NETWORK_FLAGS, sourceOptionsFrom } from './options.js';
import { progressDisplayFor } from './progress.js';
import { formatPullReport } from './pull-output.js';
import { escapeControl, escapeStack } from './escape.js';
import { errorEvent, jsonEventLine, wantsJson } from './json-events.js';
import { EXIT_OUTPUT_CLOSED, guardOutput } from './output-guard.js';
import { parseDuration } from '../store/cache-index.js';
import { checkLockTimeout } from '../store/lock.js';
import { TRUST_FLAGS, trustOptionsFrom } from './trust-options.js';
import { printInspect } from './inspect-output.js';
import type { CliIo } from './io.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

const VERSION = '0.1.0';

const USAGE = `Usage:
  pull-unpack IMAGE DIR [options]      pull IMAGE and unpack its root filesystem into DIR
  pull-unpack --bundle IMAGE DIR [options] [-- CMD...]
                                       write a runc bundle: DIR/rootfs and DIR/config.json
  pull-unpack inspect IMAGE [options]  show what IMAGE names: index or manifest, platforms, our pick
  pull-unpack cache ls [--json]        what the blob cache holds, and its size
  pull-unpack cache prune --all | --older-than DURATION
                                       remove cached blobs (all, or unused for DURATION: 30m, 12h, 7d)
  pull-unpack completion bash|zsh      print a shell completion script (source it, or see man pull-unpack)

Common options:
  --platform OS/ARCH[/VARIANT]   select this platform instead of the host's (e.g. linux/arm64)
  --username USER --password-stdin
                                 log in with USER and the password read from stdin
  --insecure-registry HOST       allow plain HTTP and unverified TLS for HOST; repeatable
  --cacert FILE                  trust the CA certificates in FILE (PEM); repeatable
  --mirror REGISTRY=URL          try the mirror at URL before REGISTRY; repeatable
  --config FILE                  mirrors and insecure registries (default ~/.config/pull-unpack/config.json)
  --max-manifest-size SIZE       limits (see SECURITY.md): manifest (4M), config (8M),
  --max-config-size SIZE           uncompressed layers together (64G), layers (500),
  --max-uncompressed-size SIZE     tar entries together (10000000), path depth (256),
  --max-layers N                   name or link target length in bytes (4096)
  --max-entries N  --max-path-depth N  --max-name-length N
  --max-manifests N  --max-index-depth N
                                 manifests listed by an image's indexes (1000), index levels (4)
  --policy FILE                  containers-policy.json(5) to enforce (default: ~/.config/containers/policy.json,
                                 else /etc/containers/policy.json when present)
  --insecure-policy              ignore policy files: accept images without checking signatures
  --registries.d DIR             where signatures are found (containers-registries.d(5))
  --verify-key FILE              require a cosign signature by this PEM public key; repeatable
  --verify-identity EMAIL|URI --verify-issuer URL --trusted-root FILE
                                 require a keyless cosign signature by this identity
  --json                         machine-readable output
  -h, --help                     show this help
  --version                      show the version

pull options:
  --force                        replace DIR if it is not empty (still all or nothing)
  --cache-dir DIR                the blob cache (default $XDG_CACHE_HOME/pull-unpack or ~/.cache/pull-unpack)
  --no-cache                     keep nothing: downloads are removed when the pull ends
  --offline                      use only the cache; name what is missing instead of downloading
  --lock-timeout DURATION        take over a cache lock not refreshed for this long (default 60s)
  -o, --output rootfs|tar|oci    what to write at DIR: the rootfs (default), the flattened
                                 filesystem as one tar FILE (- for stdout), or an OCI image layout
  --concurrency N                parallel layer downloads (default 4)
  -q, --quiet                    print nothing but errors
  --no-progress                  no progress display on a terminal (warnings and the result still print)
  --json                         NDJSON events on stdout, ending with a summary

bundle options (with --bundle):
  --entrypoint CMD|JSON          replace the image's Entrypoint (JSON array for several words)
  -- CMD ARGS...                 after DIR: replace the image's Cmd
  -e, --env K=V                  set an environment variable; repeatable
  -w, --workdir DIR              working directory inside the container
  -u, --user USER[:GROUP]        user (and group) to run as, by name or number
  --hostname NAME                hostname inside the container (default runc)
  -t, --tty                      process.terminal: true
  --rootless                     shape config.json for runc --rootless (default when not root)
  --volume-mode tmpfs|none       how image Volumes are mounted (default tmpfs)

inspect options:
  --raw                          print the manifest bytes exactly as served

Examples:
  pull-unpack alpine ./rootfs
  pull-unpack alpine --output tar alpine.tar
  pull-unpack alpine --output oci ./alpine-layout && umoci unpack --image ./alpine-layout:latest ./bundle
  pull-unpack --platform linux/arm64 localhost:5000/app:1 ./rootfs
  pull-unpack inspect alpine
  pull-unpack inspect --platform linux/arm/v7 localhost:5000/demo/hello
`;

const COMMON = {
  ...NETWORK_FLAGS,
  ...TRUST_FLAGS,
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

class UsageError extends Error {}

/** Runs the CLI; resolves to the process exit code. Never throws for expected failures. */
export async function main(argv: string[], cliIo: CliIo): Promise<number> {
  const output = guardOutput(cliIo.stdout, cliIo.stderr, cliIo.signal);
  const io = { ...cliIo, signal: output.signal };
  try {
    const [command, ...rest] = argv;
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      io.stdout.write(USAGE);
      return command === undefined ? EXIT_USAGE : EXIT_OK;
    }
    if (command === '--version') {
      io.stdout.write(`pull-unpack ${VERSION}\n`);
      return EXIT_OK;
    }
    if (command === 'inspect') return await inspectCommand(rest, io);
    if (command === 'pull') return await pullCommand(rest, io);
    if (command === 'cache') return await cacheCommand(rest, io);
    if (command === 'completion')
      return completionCommand(rest, io, { pull: PULL_OPTIONS, inspect: INSPECT_OPTIONS, cache: CACHE_OPTIONS });
    return await pullCommand(argv, io);
  } catch (err) {
    const failure = output.failure();
    if (failure === 'closed') return EXIT_OUTPUT_CLOSED;
    // With --json, the failure is an event on stdout too (unless stdout itself failed).
    if (!failure && wantsJson(argv)) io.stdout.write(jsonEventLine(errorEvent(err, err instanceof UsageError)));
    return reportError(failure ?? err, io);
  }
}

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** The options of a pull (`pull-unpack IMAGE DIR`, `pull-unpack --bundle ...`). */
export const PULL_OPTIONS = {
  ...COMMON,
  force: { type: 'boolean' },
  concurrency: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  'no-progress': { type: 'boolean' },
  'cache-dir': { type: 'string' },
  'no-cache': { type: 'boolean' },
  offline: { type: 'boolean' },
  'lock-timeout': { type: 'string' },
  output: { type: 'string', short: 'o' },
  bundle: { type: 'boolean' },
  entrypoint: { type: 'string' },
  env: { type: 'string', multiple: true, short: 'e' },
  workdir: { type: 'string', short: 'w' },
  user: { type: 'string', short: 'u' },
  hostname: { type: 'string' },
  tty: { type: 'boolean', short: 't' },
  rootless: { type: 'boolean' },
  'volume-mode': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

/** The options of `inspect`. */
export const INSPECT_OPTIONS = { ...COMMON, raw: { type: 'boolean' } } as const satisfies ParseArgsConfig['options'];

async function pullCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, PULL_OPTIONS);
  if (values.help) {
    io.stdout.write(USAGE);
    return EXIT_OK;
  }
  if (positionals.length < 2) throw new UsageError('expected IMAGE and DIR (or a command: inspect)');
  const [image, dir, ...cmd] = positionals as [string, string, ...string[]];
  if (values.offline && values['no-cache']) throw new UsageError('--offline reads the cache: it cannot go with --no-cache');
  const bundleOnly = ['entrypoint', 'env', 'workdir', 'user', 'hostname', 'tty', 'rootless', 'volume-mode'] as const;
  const misplaced = bundleOnly.find((name) => values[name] !== undefined);
  if (!values.bundle && (misplaced || cmd.length > 0)) {
    throw new UsageError(
      misplaced
        ? `--${misplaced} needs --bundle`
        : `unexpected arguments after DIR: ${cmd.join(' ')} (a command for the bundle needs --bundle)`,
    );
  }
  const volumeMode = values['volume-mode'];
  if (volumeMode !== undefined && volumeMode !== 'tmpfs' && volumeMode !== 'none') {
    throw new UsageError('--volume-mode takes tmpfs or none');
  }
  const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
  if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 64)) {
    throw new UsageError('--concurrency takes a whole number from 1 to 64');
  }
  const output = values.output ?? 'rootfs';
  if (output !== 'rootfs' && output !== 'tar' && output !== 'oci') throw new UsageError('--output takes rootfs, tar or oci');
  if (output !== 'rootfs' && values.bundle) throw new UsageError(`--output ${output} cannot go with --bundle`);
  if (output === 'tar' && dir === '-' && values.json)
    throw new UsageError('--output tar - writes the tar to stdout: --json cannot share it');
  // With the tar on stdout, the final line goes to stderr.
  const report = output === 'tar' && dir === '-' ? io.stderr : io.stdout;
  const display = progressDisplayFor(io.stderr, io.env, { json: values.json, quiet: values.quiet, noProgress: values['no-progress'] });
  const onEvent = (event: PullEvent): void => {
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
  let result: PullResult;
  try {
    display?.start(image);
    const common = {
      ...(await sourceOptionsFrom(values, io.env, io.stdin)),
      onNotice: (message: string) => onEvent({ type: 'warning', message }),
      force: values.force,
      cacheDir: values['no-cache'] ? undefined : (values['cache-dir'] ?? defaultCacheDir(io.env)),
      offline: values.offline,
      lockTimeoutMs: lockTimeoutFrom(values['lock-timeout']),
      concurrency,
      signal: io.signal,
      onEvent,
      trust: trustOptionsFrom(values, io.env, (message) => onEvent({ type: 'warning', message })),
    };
    result =
      output === 'tar'
        ? await pullTar(image, dir, { ...common, stdout: io.stdout })
        : output === 'oci'
          ? await pullOci(image, dir, common)
          : values.bundle
            ? await pullBundle(image, dir, {
                ...common,
                overrides: {
                  entrypoint: values.entrypoint === undefined ? undefined : parseEntrypoint(values.entrypoint),
                  cmd: cmd.length > 0 ? cmd : undefined,
                  env: values.env,
                  workdir: values.workdir,
                  user: values.user,
                },
                hostname: values.hostname,
                tty: values.tty,
                rootless: values.rootless ? true : undefined,
                volumeMode,
              })
            : await pull(image, dir, common);
  } finally {
    display?.stop();
  }
  if (values.json) io.stdout.write(jsonEventLine({ type: 'done', ...result.summary }));
  else if (!values.quiet) report.write(formatPullReport(result, dir, { bundle: values.bundle, env: io.env, uid: process.getuid?.() }));
  return EXIT_OK;
}

/** `--lock-timeout 90s` (or 2m): at least the 10 s that live holders need to refresh their locks. */
function lockTimeoutFrom(text: string | undefined): number | undefined {
  return text === undefined ? undefined : checkLockTimeout(parseDuration(text));
}

/** `--entrypoint sh` or, as JSON, `--entrypoint '["sh","-c"]'`; an empty string clears it. */
function parseEntrypoint(text: string): string[] {
  if (text === '') return [];
  if (!text.trimStart().startsWith('[')) return [text];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError('--entrypoint: not a valid JSON array');
  }
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) {
    throw new UsageError('--entrypoint: a JSON entrypoint must be an array of strings');
  }
  return parsed;
}

async function inspectCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, INSPECT_OPTIONS);
  if (values.help) {
    io.stdout.write(USAGE);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('inspect takes exactly one IMAGE');
  const notices: string[] = [];
  const result = await inspect(positionals[0]!, {
    ...(await sourceOptionsFrom(values, io.env, io.stdin)),
    signal: io.signal,
    onNotice: (m) => notices.push(m),
    trust: trustOptionsFrom(values, io.env, (m) => notices.push(m)),
  });
  // Exit 1 when the platform has no image, so scripts can ask "does IMAGE have linux/arm/v6?".
  printInspect(result, notices, { raw: values.raw, json: values.json, platformGiven: values.platform !== undefined }, io);
  return 'error' in result.pick ? EXIT_FAILURE : EXIT_OK;
}

function reportError(err: unknown, io: CliIo): number {
  if (err instanceof UsageError) {
    io.stderr.write(`pull-unpack: ${escapeControl(err.message)}\nRun 'pull-unpack --help' for usage.\n`);
    return EXIT_USAGE;
  }
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
