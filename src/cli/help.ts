/**
 * The usage texts: `pull-unpack --help` (every command and option: it stands in for the manual
 * page), and each command's own (`pull-unpack inspect --help`, `pull-unpack help cache`). They
 * are built from the same sections, so an option is described once.
 */
import { COMMAND_WORDS, usageError, type CommandName } from './args.js';
import { closestNames } from './similar.js';
import type { CliIo } from './io.js';

export const VERSION = '0.1.0';

const COMMANDS = `Usage:
  pull-unpack IMAGE DIR [options]      pull IMAGE and unpack its root filesystem into DIR
  pull-unpack --bundle IMAGE DIR [options] [-- CMD...]
                                       write a runc bundle: DIR/rootfs and DIR/config.json
  pull-unpack inspect IMAGE [options]  show what IMAGE names: index or manifest, platforms, our pick
  pull-unpack cache ls [--json]        what the blob cache holds, and its size
  pull-unpack cache prune --all | --older-than DURATION
                                       remove cached blobs (all, or unused for DURATION: 30m, 12h, 7d)
  pull-unpack completion bash|zsh      print a shell completion script (source it, or see man pull-unpack)
  pull-unpack help [COMMAND]           this help, or a command's own (pull, inspect, cache, completion)
`;

const COMMON = `Common options:
  --platform OS/ARCH[/VARIANT]   select this platform instead of the host's (e.g. linux/arm64)
  --username USER --password-stdin
                                 log in with USER and the password read from stdin (prompted
                                 for, without echo, when stdin is a terminal)
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
  -V, --version                  show the version
`;

const PULL = `pull options:
  --force                        replace DIR if it is not empty (still all or nothing)
  --cache-dir DIR                the blob cache (default $XDG_CACHE_HOME/pull-unpack or ~/.cache/pull-unpack)
  --no-cache                     keep nothing: downloads are removed when the pull ends
  --offline                      use only the cache; name what is missing instead of downloading
  --lock-timeout DURATION        take over a cache lock not refreshed for this long (default 60s)
  -o, --output rootfs|tar|oci    what to write at DIR: the rootfs (default), the flattened
                                 filesystem as one tar FILE (- for stdout, never a terminal),
                                 or an OCI image layout
  --concurrency N                parallel layer downloads (default 4)
  -q, --quiet                    print nothing but errors
  --no-progress                  no progress display on a terminal (warnings and the result still print)
  --json                         NDJSON events on stdout, ending with a summary
  DIR's missing parent directories are created (and removed again if the pull fails).
`;

const BUNDLE = `bundle options (with --bundle):
  --entrypoint CMD|JSON          replace the image's Entrypoint (JSON array for several words)
  -- CMD ARGS...                 after DIR: replace the image's Cmd
  -e, --env K=V                  set an environment variable; repeatable
  -w, --workdir DIR              working directory inside the container
  -u, --user USER[:GROUP]        user (and group) to run as, by name or number
  --hostname NAME                hostname inside the container (default runc)
  -t, --tty                      process.terminal: true
  --rootless                     shape config.json for runc --rootless (default when not root)
  --volume-mode tmpfs|none       how image Volumes are mounted (default tmpfs)
`;

const INSPECT = `inspect options:
  --raw                          print the manifest bytes exactly as served
`;

const EXAMPLES = `Examples:
  pull-unpack alpine ./rootfs
  pull-unpack alpine --output tar alpine.tar
  pull-unpack alpine --output oci ./alpine-layout && umoci unpack --image ./alpine-layout:latest ./bundle
  pull-unpack --platform linux/arm64 localhost:5000/app:1 ./rootfs
  pull-unpack inspect alpine
  pull-unpack inspect --platform linux/arm/v7 localhost:5000/demo/hello
`;

/** `pull-unpack --help`: every command and every option. */
export const USAGE = [COMMANDS, COMMON, PULL, BUNDLE, INSPECT, EXAMPLES].join('\n');

const COMMAND_USAGE: Record<Exclude<CommandName, 'help'>, string> = {
  pull: [
    `Usage:
  pull-unpack [pull] IMAGE DIR [options]
  pull-unpack [pull] --bundle IMAGE DIR [options] [-- CMD ARGS...]

Pull IMAGE and unpack its root filesystem into DIR (or, with --bundle, a runc bundle:
DIR/rootfs and DIR/config.json), all or nothing. IMAGE is a reference (alpine, host:5000/a/b:tag,
name@sha256:...) or a local source: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF].
`,
    PULL,
    BUNDLE,
    COMMON,
  ].join('\n'),
  inspect: [
    `Usage:
  pull-unpack inspect IMAGE [options]

Say whether IMAGE names an index or a single manifest, its media type, digest and size, its
platforms, and which one this host (or --platform) gets and why. Exit 1 when that platform has
no image.
`,
    INSPECT,
    COMMON,
  ].join('\n'),
  cache: `Usage:
  pull-unpack cache ls [--json] [--cache-dir DIR]
  pull-unpack cache prune --all | --older-than DURATION [--cache-dir DIR]

ls lists the references, blobs and partial downloads the blob cache holds, and its size; prune
removes all blobs, or those unused for DURATION (30m, 12h, 7d).

cache options:
  --cache-dir DIR                the blob cache (default $XDG_CACHE_HOME/pull-unpack or ~/.cache/pull-unpack)
  --json                         ls: one JSON document
  --all                          prune: remove every blob
  --older-than DURATION          prune: remove blobs unused for DURATION
  -h, --help                     show this help
`,
  completion: `Usage:
  pull-unpack completion bash|zsh

Print a completion script for the shell. Load it with: source <(pull-unpack completion bash)
`,
};

const HELP_TOPICS = COMMAND_WORDS.filter((word) => word !== 'help');

/** The usage text of `command`. */
export function usageOf(command: CommandName): string {
  return command === 'help' ? USAGE : COMMAND_USAGE[command];
}

/** `pull-unpack help [COMMAND]`: prints the usage asked for; an unknown command is a usage error. */
export function helpCommand(args: string[], io: CliIo): number {
  const [topic, ...rest] = args;
  if (rest.length > 0) throw usageError('help', `help takes one command, got ${args.length}`);
  if (topic === undefined || topic === 'help') {
    io.stdout.write(USAGE);
    return 0;
  }
  if (!HELP_TOPICS.includes(topic)) {
    const [guess] = closestNames(topic, HELP_TOPICS);
    throw usageError('help', `no help for "${topic}"${guess ? ` (did you mean ${guess}?)` : ''}: commands are ${HELP_TOPICS.join(', ')}`);
  }
  io.stdout.write(usageOf(topic as CommandName));
  return 0;
}
