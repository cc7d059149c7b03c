/**
 * The registry client against broken and hostile servers on loopback: each bad answer must
 * become a clear, typed error. (The real registry is exercised by inspect.test.ts.)
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { digestOf } from '../src/image/digest.js';
import { inspect } from '../src/index.js';
import { MediaType } from '../src/image/oci.js';
import { isLoopbackRegistry, RegistryClient } from '../src/registry/client.js';
import { runCli, startServer, type TestServer } from './helpers/registry.js';
import { failure } from './helpers/errors.js';

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function serve(manifests: Handler, extra?: Handler): Promise<TestServer> {
  const server = await startServer((req, res) => {
    if (req.url === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    } else if (req.url?.includes('/manifests/')) {
      manifests(req, res);
    } else if (extra) {
      extra(req, res);
    } else {
      res.writeHead(404).end();
    }
  });
  servers.push(server);
  return server;
}

const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: digestOf(Buffer.from('{}')), size: 2 },
    layers: [],
  }),
);

describe('registry client: bad input', () => {
  it('refuses a manifest whose bytes do not hash to the requested digest', async () => {
    const s = await serve((_req, res) => res.writeHead(200, { 'content-type': MediaType.OciManifest }).end(manifest));
    const wrong = digestOf(Buffer.from('something else'));
    await expect(inspect(`${s.host}/a/b@${wrong}`)).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
      message: expect.stringContaining(wrong),
    });
  });

  it('refuses an oversized manifest announced by Content-Length', async () => {
    const big = Buffer.alloc(5 * 1024 * 1024, 0x20);
    const s = await serve((_req, res) =>
      res.writeHead(200, { 'content-type': MediaType.OciManifest, 'content-length': big.length }).end(big),
    );
    await expect(inspect(`${s.host}/a/b:t`)).rejects.toMatchObject({ code: 'TOO_LARGE', message: expect.stringContaining('limit') });
  });

  it('refuses an oversized manifest sent without a length (chunked)', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': MediaType.OciManifest });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      for (let i = 0; i < 6; i++) res.write(chunk);
      res.end();
    });
    await expect(inspect(`${s.host}/a/b:t`)).rejects.toMatchObject({ code: 'TOO_LARGE' });
  });

  it('says so when the server answers HTML instead of a manifest', async () => {
    const s = await serve((_req, res) =>
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><html><body>Login</body></html>'),
    );
    await expect(inspect(`${s.host}/a/b:t`)).rejects.toMatchObject({ code: 'INVALID_MANIFEST', message: expect.stringMatching(/HTML/) });
  });

  it('says so when an error page is HTML', async () => {
    const s = await serve((_req, res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<html>nope</html>'));
    await expect(inspect(`${s.host}/a/b:t`)).rejects.toMatchObject({
      code: 'NOT_FOUND',
      status: 404,
      message: expect.stringMatching(/HTML/),
    });
  });

  it('refuses an unknown manifest media type, naming it', async () => {
    const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.example.thing+json', config: {}, layers: [] });
    const s = await serve((_req, res) => res.writeHead(200, { 'content-type': 'application/vnd.example.thing+json' }).end(body));
    await expect(inspect(`${s.host}/a/b:t`)).rejects.toMatchObject({
      code: 'UNSUPPORTED_MEDIA_TYPE',
      message: expect.stringContaining('application/vnd.example.thing+json'),
    });
  });

  it('refuses legacy schema 1 with a message naming the image', async () => {
    const body = JSON.stringify({ schemaVersion: 1, name: 'a/b', tag: 't', fsLayers: [] });
    const s = await serve((_req, res) => res.writeHead(200, { 'content-type': MediaType.DockerSchema1Signed }).end(body));
    await expect(inspect(`${s.host}/a/b:t`)).rejects.toMatchObject({
      code: 'UNSUPPORTED_SCHEMA1',
      message: expect.stringMatching(/a\/b:t.*unsupported legacy schema 1/),
    });
  });

  it('turns a registry JSON error into a typed error with code, message and status', async () => {
    const s = await serve((_req, res) =>
      res
        .writeHead(429, { 'content-type': 'application/json' })
        .end(JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down', detail: null }] })),
    );
    // A short backoff: the 429 is retried as a registry asks, but the test need not wait out real delays.
    await expect(inspect(`${s.host}/a/b:t`, { backoffMs: 1 })).rejects.toMatchObject({
      name: 'RegistryError',
      code: 'REGISTRY_ERROR',
      status: 429,
      registryCode: 'TOOMANYREQUESTS',
      message: expect.stringContaining('slow down'),
    });
  });

  it('caps what it reads of an error body', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(Buffer.alloc(10 * 1024 * 1024, 0x41));
    });
    const err = await failure(inspect(`${s.host}/a/b:t`, { backoffMs: 1 }));
    expect(err).toMatchObject({ code: 'REGISTRY_ERROR', status: 500 });
    expect(err.message.length).toBeLessThan(1000);
  });

  it('the CLI prints one line and a hint, and exits 1, with no stack trace', async () => {
    const s = await serve((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html></html>'));
    const r = await runCli(['inspect', `${s.host}/a/b:t`]);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(2);
    expect(r.stderr).toMatch(/^pull-unpack: .*\nhint: /);
  });
});

describe('registry client: tokens and redirects', () => {
  it('gets an anonymous bearer token with the pull scope, and reuses it', async () => {
    const scopes: string[] = [];
    const token = 'tok-abcdefghijklmnop';
    const s = await startServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      if (u.pathname === '/token') {
        scopes.push(`${u.searchParams.get('service')} ${u.searchParams.get('scope')}`);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, expires_in: 300 }));
        return;
      }
      if (req.headers.authorization !== `Bearer ${token}`) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="test-registry"` }).end();
        return;
      }
      res.writeHead(200, { 'content-type': MediaType.OciManifest }).end(manifest);
    });
    servers.push(s);
    const client = new RegistryClient({ registry: s.host });
    await client.getManifest('org/app', 'v1');
    await client.getManifest('org/app', 'v2');
    expect(scopes).toEqual(['test-registry repository:org/app:pull']);
  });

  it('follows a blob redirect to another host without sending Authorization there', async () => {
    const seen: Array<string | undefined> = [];
    const blob = Buffer.from('blob bytes');
    const storage = await startServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200).end(blob);
    });
    servers.push(storage);
    const storageUrl = `http://localhost:${storage.host.split(':')[1]}/signed?sig=1`;
    const s = await startServer((req, res) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(200).end(JSON.stringify({ token: 't0ken-value-123' }));
      } else if (req.headers.authorization !== 'Bearer t0ken-value-123') {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token"` }).end();
      } else {
        res.writeHead(307, { location: storageUrl }).end();
      }
    });
    servers.push(s);
    const client = new RegistryClient({ registry: s.host });
    const stream = await client.fetchBlob('org/app', { mediaType: 'application/octet-stream', digest: digestOf(blob), size: blob.length });
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(blob)).toBe(true);
    expect(seen).toEqual([undefined]);
  });

  it('treats localhost, 127.0.0.0/8 and ::1 as loopback registries, and nothing else', () => {
    for (const r of ['localhost', 'localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000']) expect(isLoopbackRegistry(r)).toBe(true);
    for (const r of ['docker.io', 'example.com:5000', '10.0.0.1:5000', 'localhost.example.com']) expect(isLoopbackRegistry(r)).toBe(false);
  });
});
