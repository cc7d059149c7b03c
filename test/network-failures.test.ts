/**
 * Hostile and broken servers on loopback (issue 11, section 4): documents that trickle in for
 * ever, bodies that break off or stall, hosts that do not resolve, ports that refuse. Each ends
 * in a typed one-line error, fast, or in success after a retry, with one notice per reason.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PullUnpackError } from '../src/errors.js';
import { MediaType } from '../src/image/oci.js';
import { RegistryClient } from '../src/registry/client.js';
import { freePort } from '../testdata/lib/registry-server.mjs';
import { breakOff, stallHalfway, TINY_MANIFEST, trickle } from './helpers/hostile-servers.js';
import { isolatedEnv, runCliStdin, tempDir } from './helpers/network-fixtures.js';
import { startServer, type TestServer } from './helpers/registry.js';
import { failure } from './helpers/errors.js';

const servers: TestServer[] = [];
const cleanups: Array<() => Promise<void>> = [];
let work: string;

beforeAll(async () => {
  work = await tempDir('netfail');
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

type Handler = (req: IncomingMessage, res: ServerResponse, count: number) => void;

/** A plain-HTTP registry: /v2/ answers 200; every other request goes to `handler` with how many requests its path had. */
async function serve(handler: Handler): Promise<TestServer & { requests: string[] }> {
  const requests: string[] = [];
  const server = await startServer((req, res) => {
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push(path);
    handler(req, res, requests.filter((p) => p === path).length);
  });
  servers.push(server);
  return Object.assign(server, { requests });
}

const manifestHeaders = { 'content-type': MediaType.OciManifest };

const sendManifest = (res: ServerResponse): void => void res.writeHead(200, manifestHeaders).end(TINY_MANIFEST);

describe('slow documents meet a deadline', () => {
  it('a manifest trickled one byte at a time fails at the document deadline, after one request', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { ...manifestHeaders, 'content-length': String(TINY_MANIFEST.length) });
      trickle(res, TINY_MANIFEST, 1, 20);
    });
    const notices: string[] = [];
    const client = new RegistryClient({ registry: s.host, transport: { documentTimeout: 300 }, onNotice: (m) => notices.push(m) });
    const err = await failure(client.getManifest('org/app', 'v1'));
    expect(err).toMatchObject({
      code: 'NETWORK',
      message: expect.stringMatching(/sent .*org\/app:v1 too slowly: not complete within 0\.3 s/),
    });
    expect(s.requests).toHaveLength(1);
    expect(notices).toEqual([]);
  });

  it('response headers trickled one byte at a time fail at the deadline', async () => {
    const head = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: ${'p'.repeat(100)}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`;
    const sockets = new Set<Socket>();
    const slow: NetServer = createNetServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('data', () => {
        let sent = 0;
        const timer = setInterval(() => {
          if (sent >= head.length) return void socket.end(() => clearInterval(timer));
          socket.write(head[sent++]!);
        }, 20);
        socket.on('close', () => clearInterval(timer));
      });
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise((resolve) => {
          for (const socket of sockets) socket.destroy();
          slow.close(() => resolve());
        }),
    );
    const host = `127.0.0.1:${(slow.address() as AddressInfo).port}`;
    const client = new RegistryClient({ registry: host, origin: `http://${host}`, transport: { documentTimeout: 300 } });
    const err = await failure(client.getManifest('org/app', 'v1'));
    expect(err).toMatchObject({ code: 'NETWORK', message: expect.stringMatching(/too slowly: not complete within 0\.3 s/) });
  });

  it('a token answer trickled one byte at a time fails at the deadline', async () => {
    const answer = Buffer.from(JSON.stringify({ token: 'slow-token-0123456789', expires_in: 300 }));
    const s = await serve((req, res) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(answer.length) });
        return trickle(res, answer, 1, 100);
      }
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="t"` }).end();
    });
    // The deadline leaves room for the scheme probe and the 401 on a loaded machine; the token
    // answer alone takes ~6 s at this pace.
    const client = new RegistryClient({ registry: s.host, transport: { documentTimeout: 2000 } });
    const err = await failure(client.getManifest('org/app', 'v1'));
    expect(err).toMatchObject({ code: 'NETWORK', message: expect.stringMatching(/sent the token answer too slowly/) });
    expect(s.requests.filter((p) => p === '/token')).toHaveLength(1);
  });
});

describe('bodies that break off or stall are retried', () => {
  it('a manifest body that breaks off is read again, with one notice', async () => {
    const s = await serve((_req, res, count) => (count === 1 ? breakOff(res, TINY_MANIFEST, manifestHeaders) : sendManifest(res)));
    const notices: string[] = [];
    const client = new RegistryClient({ registry: s.host, backoffMs: 5, onNotice: (m) => notices.push(m) });
    const fetched = await client.getManifest('org/app', 'v1');
    expect(fetched.bytes.equals(TINY_MANIFEST)).toBe(true);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/broke off .*org\/app:v1.*; retrying in/);
  });

  it('a manifest body that always breaks off ends in a typed NETWORK error after the attempts', async () => {
    const s = await serve((_req, res) => breakOff(res, TINY_MANIFEST, manifestHeaders));
    const notices: string[] = [];
    const client = new RegistryClient({ registry: s.host, attempts: 3, backoffMs: 5, onNotice: (m) => notices.push(m) });
    const err = await failure(client.getManifest('org/app', 'v1'));
    expect(err).toBeInstanceOf(PullUnpackError);
    expect(err).toMatchObject({ code: 'NETWORK', message: expect.stringMatching(/^127\.0\.0\.1:\d+ broke off .*org\/app:v1/) });
    expect(s.requests).toHaveLength(3);
    expect(notices).toHaveLength(1);
  });

  it('a manifest body that stalls past the idle timeout is read again', async () => {
    const s = await serve((_req, res, count) => (count === 1 ? stallHalfway(res, TINY_MANIFEST, manifestHeaders) : sendManifest(res)));
    const notices: string[] = [];
    const client = new RegistryClient({
      registry: s.host,
      backoffMs: 5,
      transport: { idleTimeout: 200 },
      onNotice: (m) => notices.push(m),
    });
    const fetched = await client.getManifest('org/app', 'v1');
    expect(fetched.bytes.equals(TINY_MANIFEST)).toBe(true);
    expect(notices).toEqual([expect.stringMatching(/UND_ERR_BODY_TIMEOUT/)]);
  });

  it('a token answer that breaks off is asked for again', async () => {
    const token = 'retried-token-0123456789';
    const answer = Buffer.from(JSON.stringify({ token, expires_in: 300 }));
    const s = await serve((req, res, count) => {
      if (req.url?.startsWith('/token')) return count === 1 ? breakOff(res, answer) : void res.writeHead(200).end(answer);
      if (req.headers.authorization !== `Bearer ${token}`) {
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token"` }).end();
      }
      sendManifest(res);
    });
    const client = new RegistryClient({ registry: s.host, backoffMs: 5 });
    const fetched = await client.getManifest('org/app', 'v1');
    expect(fetched.bytes.equals(TINY_MANIFEST)).toBe(true);
    expect(s.requests.filter((p) => p === '/token')).toHaveLength(2);
  });
});

describe('fail fast when nothing is there', () => {
  // A 64-character label: the resolver refuses the name itself, so no query leaves the machine.
  const UNRESOLVABLE = `${'a'.repeat(64)}.invalid`;

  it('a registry host that does not resolve fails at once: no retry, no warning, a hint about the name', async () => {
    const notices: string[] = [];
    const client = new RegistryClient({ registry: UNRESOLVABLE, backoffMs: 5, onNotice: (m) => notices.push(m) });
    const err = await failure(client.getManifest('org/app', 'v1'));
    expect(err).toMatchObject({
      code: 'NETWORK',
      message: expect.stringContaining('ENOTFOUND'),
      hint: expect.stringMatching(/does not resolve/),
    });
    expect(notices).toEqual([]);
    const r = await runCliStdin([`${UNRESOLVABLE}/org/app:v1`, join(work, 'unresolvable')], isolatedEnv(work));
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').filter(Boolean)).toEqual([
      expect.stringMatching(/^pull-unpack: cannot reach a{64}\.invalid/),
      expect.stringMatching(/^hint: the name a{64}\.invalid does not resolve/),
    ]);
  });

  it('a refused connection is retried once, with one warning line', async () => {
    const port = await freePort();
    const notices: string[] = [];
    const client = new RegistryClient({ registry: `127.0.0.1:${port}`, backoffMs: 5, onNotice: (m) => notices.push(m) });
    await expect(client.getManifest('org/app', 'v1')).rejects.toMatchObject({
      code: 'NETWORK',
      message: expect.stringContaining('ECONNREFUSED'),
    });
    expect(notices).toEqual([expect.stringMatching(/ECONNREFUSED.*; retrying in .* \(attempt 2 of 2\)$/)]);
    const r = await runCliStdin([`127.0.0.1:${port}/org/app:v1`, join(work, 'refused')], isolatedEnv(work));
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^warning: cannot reach .*ECONNREFUSED.*; retrying in/);
    expect(lines[1]).toMatch(/^pull-unpack: cannot reach .*ECONNREFUSED/);
    expect(lines[2]).toMatch(/^hint: /);
  });

  it('a burst of 503s is retried with one warning line, not one per attempt', async () => {
    const s = await serve((_req, res, count) => (count <= 3 ? void res.writeHead(503).end() : sendManifest(res)));
    const notices: string[] = [];
    const client = new RegistryClient({ registry: s.host, backoffMs: 5, onNotice: (m) => notices.push(m) });
    await client.getManifest('org/app', 'v1');
    expect(s.requests).toHaveLength(4);
    expect(notices).toEqual([expect.stringMatching(/org\/app:v1: HTTP 503; retrying in .* \(attempt 2 of 5\)$/)]);
  });
});
