/**
 * The registry the test command started (scripts/test.sh), and small servers for bad input.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { main } from '../../src/cli/main.js';

/** The real distribution registry started by `make test`, e.g. {host: '127.0.0.1:40123'}. */
export function testRegistry(): { host: string; url: string } {
  const host = process.env['PULL_UNPACK_TEST_REGISTRY'];
  if (!host) {
    throw new Error('PULL_UNPACK_TEST_REGISTRY is not set: run the suite with `make test`, which starts a registry');
  }
  return { host, url: `http://${host}` };
}

/** A unique repository name per test, so test files can share one registry. */
export function uniqueRepo(prefix: string): string {
  return `test/${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Buffer;
}

/**
 * Runs the CLI in-process with captured output. Unless the caller chooses a cache (an env with
 * XDG_CACHE_HOME, --cache-dir or --no-cache), each run gets its own empty blob cache, removed
 * afterwards, so tests that count downloads do not see each other's blobs.
 */
export async function runCli(argv: string[], env?: NodeJS.ProcessEnv, stdin?: Readable): Promise<CliRun> {
  const choosesCache = env?.['XDG_CACHE_HOME'] !== undefined || argv.some((a) => a === '--no-cache' || a.startsWith('--cache-dir'));
  const cache = choosesCache ? undefined : await mkdtemp(join(tmpdir(), 'pull-unpack-test-cache-'));
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  try {
    const runEnv = cache ? { ...(env ?? process.env), XDG_CACHE_HOME: cache } : (env ?? process.env);
    const code = await main(argv, { stdout, stderr, env: runEnv, stdin });
    const stdoutBytes = Buffer.concat(out);
    return { code, stdout: stdoutBytes.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), stdoutBytes };
  } finally {
    if (cache) await rm(cache, { recursive: true, force: true });
  }
}

export interface TestServer {
  host: string;
  url: string;
  close(): Promise<void>;
}

/** A plain HTTP server on 127.0.0.1 (a hostile or broken "registry" for bad-input tests). */
export async function startServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TestServer> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const host = `127.0.0.1:${port}`;
  return {
    host,
    url: `http://${host}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
