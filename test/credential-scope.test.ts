/**
 * Credentials go only where they belong (issue 11, section 2), against hostile registries on
 * loopback that speak TLS and plain HTTP on one port: Authorization is scoped to the registry's
 * origin (scheme, host, port), never sent over plain HTTP after TLS, and --insecure-registry
 * turns off certificate checks for the named origin alone.
 */
import { rm } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { digestOf } from '../src/image/digest.js';
import { MediaType } from '../src/image/oci.js';
import { RegistryClient } from '../src/registry/client.js';
import { OriginPolicy } from '../src/registry/origins.js';
import { isolatedEnv, makePki, runCliStdin, secretsIn, tempDir, type TestPki } from './helpers/network-fixtures.js';
import { startDualServer, TINY_MANIFEST, type DualHandler, type DualServer } from './helpers/hostile-servers.js';
import { failure } from './helpers/errors.js';

const USER = 'scoped-user';
const PASSWORD = 'scoped-password-0123456789';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
const TOKEN = 'scoped-bearer-token-0123456789';

let work: string;
let pki: TestPki;
const servers: DualServer[] = [];

beforeAll(async () => {
  work = await tempDir('scope');
  pki = await makePki(work);
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function serve(handler: DualHandler): Promise<DualServer> {
  const server = await startDualServer({ cert: pki.serverCert, key: pki.serverKey }, (req, res, protocol) => {
    // The scheme probe of a loopback registry: TLS answers, so TLS is used.
    if (req.url === '/v2/') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    handler(req, res, protocol);
  });
  servers.push(server);
  return server;
}

const sendManifest: DualHandler = (_req, res) => {
  res.writeHead(200, { 'content-type': MediaType.OciManifest }).end(TINY_MANIFEST);
};

describe('Authorization is scoped to the origin', () => {
  it('a redirect from HTTPS to plain HTTP on the same host and port does not carry the Basic credentials', async () => {
    const registry = await serve((req, res, protocol) => {
      if (protocol === 'http:') return sendManifest(req, res, protocol);
      if (req.headers.authorization !== BASIC) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
      res.writeHead(307, { location: `http://${req.headers.host}${req.url}` }).end();
    });
    const client = new RegistryClient({
      registry: registry.host,
      credentials: { username: USER, password: PASSWORD },
      transport: { caFiles: [pki.caCert] },
    });
    const fetched = await client.getManifest('org/app', 'v1');
    expect(fetched.bytes.equals(TINY_MANIFEST)).toBe(true);
    const overHttp = registry.seen.filter((r) => r.protocol === 'http:');
    expect(overHttp).toHaveLength(1);
    expect(overHttp[0]!.authorization).toBeUndefined();
    // The credentials did go to the registry's own (TLS) origin.
    expect(registry.seen.some((r) => r.protocol === 'https:' && r.authorization === BASIC)).toBe(true);
  });

  it('a redirect within the registry origin keeps Authorization', async () => {
    const registry = await serve((req, res, protocol) => {
      if (req.headers.authorization !== BASIC) return void res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
      if (req.url?.startsWith('/moved/')) return sendManifest(req, res, protocol);
      res.writeHead(307, { location: `/moved${req.url}` }).end();
    });
    const client = new RegistryClient({
      registry: registry.host,
      credentials: { username: USER, password: PASSWORD },
      transport: { caFiles: [pki.caCert] },
    });
    await client.getManifest('org/app', 'v1');
    expect(registry.seen.filter((r) => r.url.startsWith('/moved/')).map((r) => r.authorization)).toEqual([BASIC]);
  });
});

describe('no credentials over plain HTTP after TLS', () => {
  const bearerRegistry = (realmFor: (host: string) => string): DualHandler => {
    return (req, res, protocol) => {
      if (req.url?.startsWith('/token')) return void res.writeHead(200).end(JSON.stringify({ token: TOKEN }));
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="${realmFor(req.headers.host!)}",service="t"` }).end();
      }
      sendManifest(req, res, protocol);
    };
  };

  it('a token realm on plain HTTP (same host and port) under an HTTPS registry gets no credentials: a clear UNAUTHORIZED', async () => {
    const registry = await serve(bearerRegistry((host) => `http://${host}/token`));
    for (const credentials of [{ username: USER, password: PASSWORD }, { identityToken: 'scoped-identity-token-0123456789' }]) {
      const client = new RegistryClient({ registry: registry.host, credentials, transport: { caFiles: [pki.caCert] } });
      const err = await failure(client.getManifest('org/app', 'v1'));
      expect(err).toMatchObject({ code: 'UNAUTHORIZED', message: expect.stringMatching(/plain HTTP: credentials are not sent/) });
    }
    expect(registry.seen.filter((r) => r.url.startsWith('/token'))).toEqual([]);
  });

  it('the CLI says so in one line and a hint, and no secret is printed', async () => {
    const registry = await serve(bearerRegistry((host) => `http://${host}/token`));
    const r = await runCliStdin(
      ['inspect', `${registry.host}/org/app:v1`, '--cacert', pki.caCert, '--username', USER, '--password-stdin'],
      isolatedEnv(work),
      PASSWORD,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^pull-unpack: .* sends for tokens to http:\/\/127\.0\.0\.1:\d+, plain HTTP: credentials are not sent there in clear text\nhint: .*HTTPS/,
    );
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(2);
    expect(secretsIn(r, [PASSWORD])).toEqual([]);
    expect(registry.seen.filter((req) => req.url.startsWith('/token'))).toEqual([]);
  });

  it('without credentials the plain-HTTP realm is asked for an anonymous token, as before', async () => {
    const registry = await serve(bearerRegistry((host) => `http://${host}/token`));
    const client = new RegistryClient({ registry: registry.host, transport: { caFiles: [pki.caCert] } });
    await client.getManifest('org/app', 'v1');
    expect(registry.seen.filter((r) => r.url.startsWith('/token')).map((r) => [r.protocol, r.authorization])).toEqual([
      ['http:', undefined],
    ]);
  });
});

describe('--insecure-registry is for the named origin alone', () => {
  it('a token realm on another origin with an untrusted certificate is verified, and gets no credentials', async () => {
    const realm = await serve((_req, res) => res.writeHead(200).end(JSON.stringify({ token: TOKEN })));
    const realmUrl = `https://localhost:${realm.port}/token`;
    const registry = await serve((req, res, protocol) => {
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        return void res.writeHead(401, { 'www-authenticate': `Bearer realm="${realmUrl}",service="t"` }).end();
      }
      sendManifest(req, res, protocol);
    });
    const credentials = { username: USER, password: PASSWORD };
    // No CA: the registry's own certificate is accepted only because it is listed.
    const client = new RegistryClient({ registry: registry.host, insecureRegistries: [registry.host], credentials });
    const err = await failure(client.getManifest('org/app', 'v1'));
    expect(err).toMatchObject({ code: 'NETWORK', message: expect.stringContaining(`localhost:${realm.port}`) });
    expect(err.hint).toMatch(/certificate is not trusted/);
    expect(realm.seen).toEqual([]);
    // Listed too, the realm is reached without verification and gets the credentials.
    const both = new RegistryClient({
      registry: registry.host,
      insecureRegistries: [registry.host, `localhost:${realm.port}`],
      credentials,
    });
    await both.getManifest('org/app', 'v1');
    expect(realm.seen.map((r) => r.authorization)).toEqual([BASIC]);
  });

  it('a blob redirect to another origin with an untrusted certificate is refused', async () => {
    const blob = Buffer.from('blob behind a redirect');
    const storage = await serve((_req, res) => res.writeHead(200).end(blob));
    const registry = await serve((_req, res) => {
      res.writeHead(307, { location: `https://localhost:${storage.port}/signed/blob` }).end();
    });
    const client = new RegistryClient({ registry: registry.host, insecureRegistries: [registry.host], attempts: 2, backoffMs: 5 });
    const descriptor = { mediaType: 'application/octet-stream', digest: digestOf(blob), size: blob.length };
    const err = await failure(client.fetchBlob('org/app', descriptor));
    expect(err).toMatchObject({ code: 'NETWORK', hint: expect.stringMatching(/certificate is not trusted/) });
    expect(storage.seen).toEqual([]);
  });
});

describe('the origin policy', () => {
  it('says which origins may receive credentials: TLS, listed insecure origins, loopback only under a plain-HTTP loopback registry', () => {
    const policy = new OriginPolicy({
      registry: 'registry.example:5000',
      endpoint: 'registry.example:5000',
      insecureRegistries: ['10.0.0.5:5000', 'lab.example'],
    });
    const tls = new URL('https://registry.example:5000');
    const may = (url: string, base = tls): boolean => policy.maySendSecrets(new URL(url), base);
    expect(may('https://auth.example/token')).toBe(true);
    expect(may('http://registry.example:5000/token')).toBe(false);
    expect(may('http://127.0.0.1:5001/token')).toBe(false);
    expect(may('http://10.0.0.5:5000/token')).toBe(true);
    expect(may('http://10.0.0.5:5001/token')).toBe(false);
    expect(may('http://lab.example:8080/token')).toBe(true);
    expect(may('ftp://auth.example/token')).toBe(false);
    expect(may('http://localhost:5001/token', new URL('http://127.0.0.1:5000'))).toBe(true);
    expect(may('http://mirror.example:5000/v2/', new URL('http://mirror.example:5000'))).toBe(false);
  });

  it('leaves certificates unverified only for listed origins; a registry listed by name covers its endpoint only', () => {
    const policy = new OriginPolicy({
      registry: 'docker.io',
      endpoint: 'registry-1.docker.io',
      insecureRegistries: ['docker.io', '10.0.0.5:5000'],
    });
    expect(policy.registryInsecure).toBe(true);
    expect(policy.isInsecure(new URL('https://registry-1.docker.io'))).toBe(true);
    expect(policy.isInsecure(new URL('https://auth.docker.io/token'))).toBe(false);
    expect(policy.isInsecure(new URL('https://10.0.0.5:5000'))).toBe(true);
    expect(policy.isInsecure(new URL('https://10.0.0.5:5001'))).toBe(false);
    expect(
      new OriginPolicy({ registry: 'ghcr.io', endpoint: 'ghcr.io', insecureRegistries: [] }).isInsecure(new URL('https://ghcr.io')),
    ).toBe(false);
  });
});
