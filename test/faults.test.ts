/**
 * Network faults between the client and a real registry, injected by a loopback proxy that
 * streams the registry's answers through: a connection cut in the middle of a large blob
 * (resumed with Range), a proxy that ignores Range, bursts of 5xx and 429 with Retry-After, a
 * rate limit that never clears, bodies that trickle or stall. And pull-through mirrors: a
 * distribution registry in proxy mode in front of the upstream, the upstream gone, the mirror
 * gone.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import { startRegistry, freePort, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import {
  hashTree,
  isolatedEnv,
  listen,
  pushBigImage,
  pushSmallImage,
  runCliStdin,
  sha256hex,
  tempDir,
  type Listening,
} from './helpers/network-fixtures.js';

const MiB = 1024 * 1024;
const BIG = 8 * MiB;

let work: string;
let seed: RunningRegistry;
let bigLayer: { digest: string; size: number };
let bigContentHash: string;
let expectedBig: Record<string, string>;
let expectedSmall: Record<string, string>;
let smallConfig: string;
const cleanups: Array<() => Promise<void>> = [];
let counter = 0;
const out = (): string => join(work, `out-${++counter}`);

interface Logged {
  method: string;
  url: string;
  range: string | undefined;
  status: number;
  bytes: number;
}

interface ForwardOptions {
  /** Drop the Range header (the registry then answers 200 with the whole blob). */
  stripRange?: boolean;
  /** Close the connection once this many body bytes were written. */
  cutAfter?: number;
  /** Write this many body bytes, then send nothing more (the connection stays open). */
  stallAfter?: number;
  /** Re-chunk the body into `bytes`-sized writes `delayMs` apart. */
  trickle?: { bytes: number; delayMs: number };
}

/** What the proxy does with one request: answer it itself, or forward it with these options. */
type Plan = (req: IncomingMessage, res: ServerResponse, log: Logged[]) => ForwardOptions | 'handled';

interface FaultProxy extends Listening {
  log: Logged[];
  plan: Plan;
}

const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding']);

/** A proxy in front of `target` that streams answers through, misbehaving as `plan` says. */
async function startFaultProxy(target: string, port = 0): Promise<FaultProxy> {
  const log: Logged[] = [];
  const proxy = { log, plan: (() => ({})) as Plan };
  const forward = async (req: IncomingMessage, res: ServerResponse, options: ForwardOptions): Promise<void> => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && typeof v === 'string') headers[k] = v;
    if (options.stripRange) delete headers['range'];
    const up = await request(`${target}${req.url ?? '/'}`, { method: req.method as 'GET', headers });
    const entry: Logged = { method: req.method ?? '', url: req.url ?? '', range: req.headers.range, status: up.statusCode, bytes: 0 };
    log.push(entry);
    const outHeaders: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(up.headers)) if (!HOP.has(k) && v !== undefined) outHeaders[k] = v;
    res.writeHead(up.statusCode, outHeaders);
    const write = (chunk: Buffer): Promise<void> =>
      new Promise((resolve, reject) => res.write(chunk, (err) => (err ? reject(err) : resolve())));
    for await (const raw of up.body) {
      let chunk = raw as Buffer;
      const limit = options.cutAfter ?? options.stallAfter;
      if (limit !== undefined && entry.bytes + chunk.length >= limit) {
        chunk = chunk.subarray(0, limit - entry.bytes);
        await write(chunk);
        entry.bytes += chunk.length;
        up.body.destroy();
        if (options.cutAfter !== undefined) res.socket?.destroy();
        return;
      }
      const step = options.trickle?.bytes ?? chunk.length;
      for (let i = 0; i < chunk.length; i += step) {
        await write(chunk.subarray(i, i + step));
        entry.bytes += Math.min(step, chunk.length - i);
        if (options.trickle) await sleep(options.trickle.delayMs);
      }
    }
    res.end();
  };
  const listening = await listen(
    createServer((req, res) => {
      const plan = proxy.plan(req, res, log);
      if (plan === 'handled') return;
      forward(req, res, plan).catch(() => res.destroy());
    }),
    port,
  );
  return Object.assign(proxy, listening);
}

const blobDigest = (url: string): string | undefined => /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url)?.[1];
const isManifest = (url: string): boolean => url.includes('/manifests/');

/** Waits until a pull-through registry has linked `digests` into `repo` in its storage. */
async function waitForMirrorBlobs(registry: RunningRegistry, repo: string, digests: string[]): Promise<void> {
  const layers = join(registry.dir, 'storage/docker/registry/v2/repositories', repo, '_layers/sha256');
  const deadline = Date.now() + 10_000;
  for (const digest of digests) {
    const link = join(layers, digest.slice('sha256:'.length), 'link');
    while (!existsSync(link)) {
      if (Date.now() > deadline) throw new Error(`the mirror did not store ${digest} within 10 s`);
      await sleep(20);
    }
  }
}

let proxy: FaultProxy;

beforeAll(async () => {
  work = await tempDir('faults');
  seed = await startRegistry();
  cleanups.push(() => seed.stop());
  const big = await pushBigImage(seed.url, 'faults/big', 'v1', BIG);
  bigContentHash = sha256hex(big.content);
  const layer = big.image.layers[0]!;
  bigLayer = { digest: layer.digest, size: layer.size };
  smallConfig = (await pushSmallImage(seed.url, 'faults/small', 'v1')).configDescriptor.digest;
  const bigDir = out();
  await pull(`${seed.host}/faults/big:v1`, bigDir);
  expectedBig = await hashTree(bigDir);
  expect(expectedBig['big.bin']).toContain(bigContentHash);
  const smallDir = out();
  await pull(`${seed.host}/faults/small:v1`, smallDir);
  expectedSmall = await hashTree(smallDir);
  proxy = await startFaultProxy(seed.url);
  cleanups.push(() => proxy.close());
});

beforeEach(() => {
  proxy.log.length = 0;
  proxy.plan = () => ({});
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('a connection cut in the middle of a large blob', () => {
  it('resumes with Range from the byte reached: identical tree, far less than twice the blob sent', async () => {
    let cut = false;
    proxy.plan = (req) => {
      if (blobDigest(req.url ?? '') === bigLayer.digest && !cut) {
        cut = true;
        return { cutAfter: 3 * MiB };
      }
      return {};
    };
    const dir = out();
    const r = await runCliStdin([`${proxy.host}/faults/big:v1`, dir], isolatedEnv(work));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/connection lost at byte \d+ of \d+; resuming/);
    expect(await hashTree(dir)).toEqual(expectedBig);
    const gets = proxy.log.filter((l) => blobDigest(l.url) === bigLayer.digest);
    expect(gets).toHaveLength(2);
    expect(gets[0]).toMatchObject({ status: 200, range: undefined, bytes: 3 * MiB });
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(3 * MiB);
    expect(gets[1]).toMatchObject({ status: 206, bytes: bigLayer.size - resumedAt });
    const total = gets.reduce((n, g) => n + g.bytes, 0);
    expect(total).toBeLessThan(bigLayer.size * 1.2);
  });

  it('restarts and skips the known prefix when the server ignores Range (200 with the whole blob)', async () => {
    let cut = false;
    proxy.plan = (req) => {
      if (blobDigest(req.url ?? '') !== bigLayer.digest) return {};
      if (!cut) {
        cut = true;
        return { cutAfter: 3 * MiB };
      }
      return { stripRange: true };
    };
    const notices: string[] = [];
    const dir = out();
    await pull(`${proxy.host}/faults/big:v1`, dir, { onNotice: (m) => notices.push(m), backoffMs: 20 });
    expect(await hashTree(dir)).toEqual(expectedBig);
    const gets = proxy.log.filter((l) => blobDigest(l.url) === bigLayer.digest);
    expect(gets.map((g) => g.status)).toEqual([200, 200]);
    expect(gets[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(gets[1]!.bytes).toBe(bigLayer.size);
    expect(notices.some((w) => /resuming/.test(w))).toBe(true);
  });

  it('resumes a body that stalls longer than the idle timeout', async () => {
    let stalled = false;
    proxy.plan = (req) => {
      if (blobDigest(req.url ?? '') === bigLayer.digest && !stalled) {
        stalled = true;
        return { stallAfter: 2 * MiB };
      }
      return {};
    };
    const dir = out();
    const notices: string[] = [];
    await pull(`${proxy.host}/faults/big:v1`, dir, { transport: { idleTimeout: 1000 }, backoffMs: 20, onNotice: (m) => notices.push(m) });
    expect(await hashTree(dir)).toEqual(expectedBig);
    const gets = proxy.log.filter((l) => blobDigest(l.url) === bigLayer.digest);
    expect(gets).toHaveLength(2);
    expect(gets[1]).toMatchObject({ status: 206 });
    expect(gets[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(notices.some((w) => /connection lost at byte/.test(w))).toBe(true);
  });

  it('applies a layer while it downloads: its file grows in the staging directory before the blob has arrived', async () => {
    let stalled = false;
    proxy.plan = (req) => {
      if (blobDigest(req.url ?? '') === bigLayer.digest && !stalled) {
        stalled = true;
        return { stallAfter: BIG / 2 };
      }
      return {};
    };
    const dir = out();
    // While the blob is stalled at half its size, big.bin in the staging rootfs already holds most of that half.
    let seenWhileStalled = 0;
    const watch = setInterval(() => {
      if (proxy.log.filter((l) => blobDigest(l.url) === bigLayer.digest).length !== 1) return;
      for (const name of readdirSync(work)) {
        if (!name.startsWith(`.${basename(dir)}.pull-unpack-`)) continue;
        const size = statSync(join(work, name, 'out/big.bin'), { throwIfNoEntry: false })?.size ?? 0;
        seenWhileStalled = Math.max(seenWhileStalled, size);
      }
    }, 20);
    try {
      await pull(`${proxy.host}/faults/big:v1`, dir, { transport: { idleTimeout: 1500 }, backoffMs: 20, onNotice: () => undefined });
    } finally {
      clearInterval(watch);
    }
    expect(seenWhileStalled).toBeGreaterThan(BIG / 4);
    expect(await hashTree(dir)).toEqual(expectedBig);
    expect(readdirSync(work).filter((n) => n.startsWith(`.${basename(dir)}.`))).toEqual([]);
  });
});

describe('transient errors and rate limits', () => {
  it('retries a refused connection once, with one warning, and pulls from the registry that came up meanwhile', async () => {
    const port = await freePort();
    const notices: string[] = [];
    let late: Promise<FaultProxy> | undefined;
    const dir = out();
    try {
      // The registry comes up when the first refusal is reported, inside the backoff (1 to 2 s).
      await pull(`127.0.0.1:${port}/faults/small:v1`, dir, {
        backoffMs: 2000,
        onNotice: (m) => {
          notices.push(m);
          late ??= startFaultProxy(seed.url, port);
        },
      });
    } finally {
      await (await late)?.close();
    }
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/cannot reach .*ECONNREFUSED.*; retrying in .* \(attempt 2 of 2\)/);
  });

  it('retries a burst of 500 and 503, and waits as long as a 429 Retry-After asks', async () => {
    let manifestFailures = 0;
    let limited = false;
    proxy.plan = (req, res) => {
      const url = req.url ?? '';
      if (isManifest(url) && manifestFailures < 2) {
        res
          .writeHead(manifestFailures++ === 0 ? 500 : 503, { 'content-type': 'application/json' })
          .end('{"errors":[{"code":"UNKNOWN","message":"try later"}]}');
        return 'handled';
      }
      if (blobDigest(url) && !limited) {
        limited = true;
        res
          .writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' })
          .end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
        return 'handled';
      }
      return {};
    };
    const notices: string[] = [];
    const dir = out();
    const started = Date.now();
    await pull(`${proxy.host}/faults/small:v1`, dir, { onNotice: (m) => notices.push(m), backoffMs: 20, attempts: 4 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(notices.filter((w) => /HTTP 50[03]; retrying/.test(w))).toHaveLength(2);
    expect(notices.some((w) => /HTTP 429; retrying in 1\.0 s/.test(w))).toBe(true);
  });

  it('a rate limit that never clears fails with the limit in the message and a hint', async () => {
    let asked = 0;
    proxy.plan = (_req, res) => {
      asked++;
      res
        .writeHead(429, {
          'content-type': 'application/json',
          'ratelimit-limit': '100;w=21600',
          'ratelimit-remaining': '0;w=21600',
          'retry-after': '21600',
        })
        .end('{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}');
      return 'handled';
    };
    const r = await runCliStdin([`${proxy.host}/faults/small:v1`, out()], isolatedEnv(work));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /HTTP 429 TOOMANYREQUESTS: You have reached your pull rate limit\. \(rate limit: 0 of 100 pulls left per 6 h\)/,
    );
    expect(r.stderr).toMatch(/hint: the registry is rate limiting pulls; it asks to wait 21600 s/);
    // A Retry-After of 6 hours is not waited for: the one request is the only one.
    expect(asked).toBe(1);
  });

  it('without Retry-After a persistent 429 is retried with backoff, then reported', async () => {
    let asked = 0;
    proxy.plan = (_req, res) => {
      asked++;
      res.writeHead(429, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '0;w=21600' }).end();
      return 'handled';
    };
    await expect(pull(`${proxy.host}/faults/small:v1`, out(), { attempts: 3, backoffMs: 10 })).rejects.toMatchObject({
      code: 'REGISTRY_ERROR',
      message: expect.stringContaining('rate limit: 0 of 100 pulls left per 6 h'),
      hint: expect.stringContaining('rate limiting'),
    });
    expect(asked).toBe(3);
  });

  it('a body that trickles in for longer than the idle timeout still succeeds, without a resume', async () => {
    proxy.plan = (req) => (blobDigest(req.url ?? '') ? { trickle: { bytes: 64, delayMs: 150 } } : {});
    const notices: string[] = [];
    const dir = out();
    const started = Date.now();
    await pull(`${proxy.host}/faults/small:v1`, dir, { transport: { idleTimeout: 1000 }, onNotice: (m) => notices.push(m) });
    expect(Date.now() - started).toBeGreaterThan(1000);
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(notices).toEqual([]);
    expect(proxy.log.filter((l) => blobDigest(l.url)).every((l) => l.range === undefined)).toBe(true);
  });
});

describe('slow documents', () => {
  it('an image config trickled one byte at a time fails at the document deadline', async () => {
    proxy.plan = (req) => (blobDigest(req.url ?? '') === smallConfig ? { trickle: { bytes: 1, delayMs: 20 } } : {});
    const dir = out();
    await expect(pull(`${proxy.host}/faults/small:v1`, dir, { transport: { documentTimeout: 300 } })).rejects.toMatchObject({
      code: 'NETWORK',
      message: expect.stringMatching(/sent the config of .* too slowly: not complete within 0\.3 s/),
    });
    expect(proxy.log.filter((l) => blobDigest(l.url) === smallConfig)).toHaveLength(1);
    expect(existsSync(dir)).toBe(false);
  });

  it('layers that trickle in for longer than the document deadline are not cut: they have the idle timeout only', async () => {
    proxy.plan = (req) => {
      const digest = blobDigest(req.url ?? '');
      return digest && digest !== smallConfig ? { trickle: { bytes: 8, delayMs: 25 } } : {};
    };
    const notices: string[] = [];
    const dir = out();
    await pull(`${proxy.host}/faults/small:v1`, dir, { transport: { documentTimeout: 200 }, onNotice: (m) => notices.push(m) });
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(notices).toEqual([]);
  });
});

describe('pull-through mirror (distribution in proxy mode)', () => {
  let upstream: RunningRegistry;
  let mirror: RunningRegistry;
  let mirrorFront: FaultProxy;

  beforeAll(async () => {
    upstream = await startRegistry();
    cleanups.push(() => upstream.stop());
    await pushSmallImage(upstream.url, 'faults/small', 'v1');
    mirror = await startRegistry({ proxy: { remoteurl: upstream.url } });
    cleanups.push(() => mirror.stop());
    mirrorFront = await startFaultProxy(mirror.url);
    cleanups.push(() => mirrorFront.close());
  });

  it('pulls through the mirror, then from its cache once the upstream is gone', async () => {
    const ref = `${upstream.host}/faults/small:v1`;
    const argv = (dir: string): string[] => [ref, dir, '--mirror', `${upstream.host}=http://${mirrorFront.host}`];
    const first = out();
    const r1 = await runCliStdin(argv(first), isolatedEnv(work));
    expect(r1.stderr).toBe('');
    expect(r1.code).toBe(0);
    expect(await hashTree(first)).toEqual(expectedSmall);
    // Manifest, config and both layers came from the mirror.
    expect(mirrorFront.log.filter((l) => l.status === 200 && (isManifest(l.url) || blobDigest(l.url))).length).toBe(4);

    // The mirror stores a blob while streaming it and commits it after the response ends:
    // stop the upstream only once everything it served is in its own storage.
    const served = mirrorFront.log.filter((l) => l.status === 200).map((l) => blobDigest(l.url));
    await waitForMirrorBlobs(
      mirror,
      'faults/small',
      served.filter((d): d is string => d !== undefined),
    );
    await upstream.stop();
    const second = out();
    const r2 = await runCliStdin(argv(second), isolatedEnv(work));
    expect(r2.stderr).toBe('');
    expect(r2.code).toBe(0);
    expect(await hashTree(second)).toEqual(expectedSmall);
    // Without the mirror, the upstream is gone.
    await expect(pull(ref, out(), { backoffMs: 10 })).rejects.toMatchObject({
      code: 'NETWORK',
      message: expect.stringMatching(/cannot reach/),
    });
  });

  it('falls back to the registry, with a notice, when the mirror is down', async () => {
    const deadPort = await freePort();
    const dir = out();
    const started = Date.now();
    const r = await runCliStdin(
      [`${seed.host}/faults/small:v1`, dir, '--mirror', `${seed.host}=http://127.0.0.1:${deadPort}`],
      isolatedEnv(work),
    );
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(r.stderr).toMatch(new RegExp(`warning: mirror 127\\.0\\.0\\.1:${deadPort}.* failed .*cannot reach.*; not using it again`));
    // A dead mirror is given up on once, not retried with backoff for every blob.
    expect(new Set(r.stderr.split('\n').filter((l) => l.startsWith('warning: mirror'))).size).toBe(1);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('takes mirrors from the config file (--config), command-line mirrors first', async () => {
    const configured = await startFaultProxy(seed.url);
    cleanups.push(() => configured.close());
    const config = join(work, 'config.json');
    await writeFile(config, JSON.stringify({ mirrors: { [seed.host]: [`http://${configured.host}`] } }));
    const dir = out();
    const r = await runCliStdin([`${seed.host}/faults/small:v1`, dir, '--config', config], isolatedEnv(work));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(configured.log.filter((l) => l.status === 200 && (isManifest(l.url) || blobDigest(l.url))).length).toBe(4);
    configured.log.length = 0;
    proxy.log.length = 0;
    const r2 = await runCliStdin(
      [`${seed.host}/faults/small:v1`, out(), '--config', config, '--mirror', `${seed.host}=http://${proxy.host}`],
      isolatedEnv(work),
    );
    expect(r2.code).toBe(0);
    expect(proxy.log.length).toBeGreaterThan(0);
    expect(configured.log).toEqual([]);
  });

  it('falls back to the registry when the mirror does not have the image', async () => {
    const empty = await startRegistry();
    cleanups.push(() => empty.stop());
    const dir = out();
    const r = await runCliStdin([`${seed.host}/faults/small:v1`, dir, '--mirror', `${seed.host}=http://${empty.host}`], isolatedEnv(work));
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expectedSmall);
    expect(r.stderr).toMatch(/warning: mirror .* failed .*not found/);
  });
});
