/**
 * The option tables of the pull and inspect commands (node:util parseArgs form). The parser,
 * shell completion and the manual page test all read these, so they cannot drift apart.
 */
import type { ParseArgsConfig } from 'node:util';
import { NETWORK_FLAGS } from './options.js';
import { TRUST_FLAGS } from './trust-options.js';

const COMMON = {
  ...NETWORK_FLAGS,
  ...TRUST_FLAGS,
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const satisfies ParseArgsConfig['options'];

/** The options that only a bundle takes (with --bundle). */
export const BUNDLE_ONLY = ['entrypoint', 'env', 'workdir', 'user', 'hostname', 'tty', 'rootless', 'volume-mode'] as const;

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
