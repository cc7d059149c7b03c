/**
 * `pull-unpack cache ls|prune`: the CLI side of the blob cache. Part of the CLI (it prints).
 */
import { join } from 'node:path';
import { homedir } from 'node:os';
import type { ParseArgsConfig } from 'node:util';
import { BlobStore } from '../store/blob-store.js';
import { listCache, parseDuration, pruneCache } from '../store/cache-index.js';
import { parseCommandLine, usageError } from './args.js';
import { usageOf } from './help.js';
import { closestNames } from './similar.js';
import { formatBytes } from './progress.js';
import type { CliIo } from './io.js';

/** $XDG_CACHE_HOME/pull-unpack, else ~/.cache/pull-unpack. */
export function defaultCacheDir(env: NodeJS.ProcessEnv): string {
  const base = env['XDG_CACHE_HOME'] || join(env['HOME'] || homedir(), '.cache');
  return join(base, 'pull-unpack');
}

/** The options of `cache ls` and `cache prune`. */
export const CACHE_OPTIONS = {
  'cache-dir': { type: 'string' },
  json: { type: 'boolean' },
  all: { type: 'boolean' },
  'older-than': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const CACHE_COMMANDS = ['ls', 'prune'];

/** Runs `cache ls` or `cache prune`; resolves to the exit code. */
export async function cacheCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommandLine(args, CACHE_OPTIONS, { command: 'cache' });
  const [sub, ...extra] = positionals;
  if (values.help || sub === undefined) {
    io.stdout.write(usageOf('cache'));
    return values.help ? 0 : 2;
  }
  if (extra.length > 0) throw usageError('cache', `unexpected argument "${extra[0]}"`);
  const store = new BlobStore(values['cache-dir'] ?? defaultCacheDir(io.env), {
    onNotice: (message) => io.stderr.write(`warning: ${message}\n`),
  });
  if (sub === 'ls') {
    const listing = await listCache(store);
    if (values.json) {
      io.stdout.write(`${JSON.stringify(listing, null, 2)}\n`);
      return 0;
    }
    const lines = [`cache ${listing.root}: ${formatBytes(listing.totalSize)} in ${listing.blobs.length} blobs`];
    for (const r of listing.refs) lines.push(`  ${r.reference}  ${r.descriptor.digest}`);
    for (const b of listing.blobs) lines.push(`  ${b.digest}  ${formatBytes(b.size).padStart(9)}  last used ${b.lastUsed}`);
    for (const p of listing.partial)
      lines.push(`  ${p.digest}  ${formatBytes(p.size).padStart(9)}  partial download (resumed by the next pull)`);
    io.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  }
  if (sub === 'prune') {
    if (!values.all && values['older-than'] === undefined) {
      throw usageError('cache', 'cache prune needs --all or --older-than DURATION (e.g. 7d)');
    }
    const olderThanMs = values['older-than'] === undefined ? undefined : parseDuration(values['older-than']);
    const { removed, freed } = await pruneCache(store, { all: values.all, olderThanMs });
    io.stdout.write(`removed ${removed} blobs, ${formatBytes(freed)} freed from ${store.root}\n`);
    return 0;
  }
  const [guess] = closestNames(sub, CACHE_COMMANDS);
  const mean = guess ? ` (did you mean cache ${guess}?)` : '';
  throw usageError('cache', `unknown cache command "${sub}"${mean}: use cache ls or cache prune`);
}
