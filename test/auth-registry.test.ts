/**
 * Registry authentication end to end against real distribution registries on loopback:
 * Basic auth (htpasswd) with credentials from a docker config, --password-stdin and a
 * credential helper; token auth with a token server that signs real JWTs (Basic and
 * refresh-token grants, token reuse, refused scopes); and a blob redirect to another host
 * that must not receive the Authorization header. No secret may appear in the CLI's output.
 */
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import { startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import type { PushedImage } from '../testdata/lib/image-builder.mjs';
import {
  HTPASSWD,
  HT_PASSWORD,
  HT_USER,
  hashTree,
  isolatedEnv,
  listen,
  pushSmallImage,
  runCliStdin,
  secretsIn,
  startTokenServer,
  tempDir,
  type Listening,
  type TokenServer,
  type TokenServerOptions,
} from './helpers/network-fixtures.js';

const REPO = 'team/app';
const PRIVATE_REPO = 'team/secret';
const PUBLIC_REPO = 'library/public';

let work: string;
let seed: RunningRegistry; // open registry: pushes go here; the token registry shares its storage
let basic: RunningRegistry;
let token: RunningRegistry;
let tokenServer: TokenServer;
let tokenOptions: TokenServerOptions;
let expected: Record<string, string>;
let pushed: PushedImage;
const cleanups: Array<() => Promise<void>> = [];
let counter = 0;

const out = (): string => join(work, `out-${++counter}`);

/** A fresh HOME with a docker config.json holding `config`. */
async function homeWith(config?: unknown): Promise<string> {
  const home = join(work, `home-${++counter}`);
  await mkdir(join(home, '.docker'), { recursive: true });
  if (config !== undefined) await writeFile(join(home, '.docker', 'config.json'), JSON.stringify(config));
  return home;
}

const basicAuth = (user: string, password: string): string => Buffer.from(`${user}:${password}`).toString('base64');

beforeAll(async () => {
  work = await tempDir('auth');
  seed = await startRegistry();
  cleanups.push(() => seed.stop());
  pushed = await pushSmallImage(seed.url, REPO, 'v1');
  await pushSmallImage(seed.url, PRIVATE_REPO, 'v1');
  await pushSmallImage(seed.url, PUBLIC_REPO, 'v1');
  const reference = join(work, 'reference');
  await pull(`${seed.host}/${REPO}:v1`, reference);
  expected = await hashTree(reference);

  basic = await startRegistry({ htpasswd: HTPASSWD });
  cleanups.push(() => basic.stop());
  await pushSmallImage(`http://${HT_USER}:${HT_PASSWORD}@${basic.host}`, REPO, 'v1');

  tokenOptions = {
    users: { [HT_USER]: HT_PASSWORD },
    refreshTokens: { 'refresh-0123456789abcdef': HT_USER },
    publicRepos: [PUBLIC_REPO],
    grants: (_subject, repo) => repo !== PRIVATE_REPO,
    onRefused: 'empty-access',
    service: 'pull-unpack-test-registry',
    issuer: 'pull-unpack-test-issuer',
  };
  await mkdir(join(work, 'token'));
  tokenServer = await startTokenServer(join(work, 'token'), tokenOptions);
  cleanups.push(() => tokenServer.close());
  token = await startRegistry({
    tokenAuth: {
      realm: tokenServer.realm,
      service: tokenOptions.service,
      issuer: tokenOptions.issuer,
      rootcertbundle: tokenServer.rootCertBundle,
    },
    extraConfig: { storage: { filesystem: { rootdirectory: join(seed.dir, 'storage') } } },
  });
  cleanups.push(() => token.stop());
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('Basic auth (htpasswd registry)', () => {
  it('uses credentials from the docker config.json (DOCKER_CONFIG)', async () => {
    const home = await homeWith({ auths: { [basic.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } });
    const dir = out();
    const r = await runCliStdin([`${basic.host}/${REPO}:v1`, dir], isolatedEnv(home));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    expect(secretsIn(r, [HT_PASSWORD])).toEqual([]);
  });

  it('uses --username with the password read from stdin, over any config', async () => {
    const home = await homeWith({ auths: { [basic.host]: { auth: basicAuth(HT_USER, 'stale-password') } } });
    const dir = out();
    const r = await runCliStdin(
      [`${basic.host}/${REPO}:v1`, dir, '--username', HT_USER, '--password-stdin'],
      isolatedEnv(home),
      `${HT_PASSWORD}\n`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    expect(secretsIn(r, [HT_PASSWORD, 'stale-password'])).toEqual([]);
  });

  it('asks a credential helper (docker-credential-NAME first on PATH) for the registry', async () => {
    const home = await homeWith({ credHelpers: { [basic.host]: 'test' } });
    const bin = join(home, 'bin');
    await mkdir(bin);
    const asked = join(home, 'asked.txt');
    await writeFile(
      join(bin, 'docker-credential-test'),
      `#!/bin/sh\n[ "$1" = get ] || exit 3\ncat > '${asked}'\nprintf '{"ServerURL":"%s","Username":"${HT_USER}","Secret":"${HT_PASSWORD}"}' "$(cat '${asked}')"\n`,
    );
    await chmod(join(bin, 'docker-credential-test'), 0o755);
    const dir = out();
    const r = await runCliStdin(
      [`${basic.host}/${REPO}:v1`, dir],
      isolatedEnv(home, { PATH: `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}` }),
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await readFile(asked, 'utf8')).toBe(basic.host);
    expect(await hashTree(dir)).toEqual(expected);
    expect(secretsIn(r, [HT_PASSWORD])).toEqual([]);
  });

  it('refuses a wrong password: UNAUTHORIZED, with a hint that the credentials were refused', async () => {
    await expect(
      pull(`${basic.host}/${REPO}:v1`, out(), { credentials: { username: HT_USER, password: 'wrong-password' } }),
    ).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      hint: expect.stringMatching(/credentials were refused/),
    });
    const home = await homeWith({ auths: { [basic.host]: { auth: basicAuth(HT_USER, 'wrong-password') } } });
    const r = await runCliStdin([`${basic.host}/${REPO}:v1`, out()], isolatedEnv(home));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^pull-unpack: .*${basic.host}.*\nhint: .*credentials were refused`));
    expect(secretsIn(r, ['wrong-password'])).toEqual([]);
  });

  it('without credentials: UNAUTHORIZED, with a hint to log in', async () => {
    await expect(pull(`${basic.host}/${REPO}:v1`, out(), { env: isolatedEnv(await homeWith()) })).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      hint: expect.stringMatching(/docker login|--username/),
    });
    const r = await runCliStdin([`${basic.host}/${REPO}:v1`, out()], isolatedEnv(await homeWith()));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/requires authentication/);
    expect(r.stderr).toMatch(/hint: .*--password-stdin/);
  });
});

describe('credential helper missing', () => {
  it('on an open registry the pull needs no credentials, so the helper is never asked', async () => {
    const home = await homeWith({ credsStore: 'not-installed' });
    const dir = out();
    const r = await runCliStdin([`${seed.host}/${REPO}:v1`, dir], isolatedEnv(home));
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(await hashTree(dir)).toEqual(expected);
  });

  it('on a registry that asks (anonymous tokens allowed) it falls back to anonymous with a notice', async () => {
    const home = await homeWith({ credsStore: 'not-installed' });
    const dir = out();
    const before = tokenServer.requests.length;
    const r = await runCliStdin([`${token.host}/${PUBLIC_REPO}:v1`, dir], isolatedEnv(home));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/docker-credential-not-installed not found on PATH.*anonymously/);
    expect(tokenServer.requests.slice(before).map((q) => q.as)).toEqual(['anonymous']);
  });
});

describe('token auth (distribution auth.token with a JWT-signing token server)', () => {
  it('pulls with a token got with Basic credentials: one token request per pull, not per blob', async () => {
    const home = await homeWith({ auths: { [token.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } });
    const before = tokenServer.requests.length;
    const dir = out();
    const r = await runCliStdin([`${token.host}/${REPO}:v1`, dir], isolatedEnv(home));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    const asked = tokenServer.requests.slice(before);
    expect(pushed.layers.length).toBe(2);
    expect(asked).toEqual([
      { method: 'GET', scopes: [`repository:${REPO}:pull`], service: tokenOptions.service, as: `basic:${HT_USER}`, grantType: undefined },
    ]);
    expect(secretsIn(r, [HT_PASSWORD, ...tokenServer.issued])).toEqual([]);
  });

  it('keeps the password and tokens out of --json events too', async () => {
    const home = await homeWith({ auths: { [token.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } });
    const r = await runCliStdin([`${token.host}/${REPO}:v1`, out(), '--json'], isolatedEnv(home));
    expect(r.code).toBe(0);
    expect(
      r.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { type: string })
        .at(-1)?.type,
    ).toBe('done');
    expect(tokenServer.issued.length).toBeGreaterThan(0);
    expect(secretsIn(r, [HT_PASSWORD, ...tokenServer.issued])).toEqual([]);
  });

  it('reuses the token within a pull even with parallel layer downloads (library)', async () => {
    const before = tokenServer.requests.length;
    const dir = out();
    await pull(`${token.host}/${REPO}:v1`, dir, { credentials: { username: HT_USER, password: HT_PASSWORD }, concurrency: 4 });
    expect(await hashTree(dir)).toEqual(expected);
    expect(tokenServer.requests.length - before).toBe(1);
  });

  it('trades an identity token (docker config identitytoken) with a POST grant_type=refresh_token', async () => {
    const refresh = 'refresh-0123456789abcdef';
    const home = await homeWith({ auths: { [token.host]: { identitytoken: refresh } } });
    const before = tokenServer.requests.length;
    const dir = out();
    const r = await runCliStdin([`${token.host}/${REPO}:v1`, dir], isolatedEnv(home));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    expect(tokenServer.requests.slice(before)).toEqual([
      {
        method: 'POST',
        scopes: [`repository:${REPO}:pull`],
        service: tokenOptions.service,
        as: 'refresh_token',
        grantType: 'refresh_token',
      },
    ]);
    expect(secretsIn(r, [refresh, ...tokenServer.issued])).toEqual([]);
  });

  it('a token that does not grant the pull: UNAUTHORIZED naming insufficient_scope', async () => {
    const home = await homeWith({ auths: { [token.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } });
    const r = await runCliStdin([`${token.host}/${PRIVATE_REPO}:v1`, out()], isolatedEnv(home));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/insufficient_scope/);
    expect(r.stderr).toMatch(/hint: .*do not grant pull access/);
    expect(secretsIn(r, [HT_PASSWORD, ...tokenServer.issued])).toEqual([]);
    await expect(
      pull(`${token.host}/${PRIVATE_REPO}:v1`, out(), { credentials: { username: HT_USER, password: HT_PASSWORD } }),
    ).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
      registryCode: 'insufficient_scope',
    });
  });

  it('a token server that refuses the scope, or the password: UNAUTHORIZED', async () => {
    tokenOptions.onRefused = 'deny';
    try {
      await expect(
        pull(`${token.host}/${PRIVATE_REPO}:v1`, out(), { credentials: { username: HT_USER, password: HT_PASSWORD } }),
      ).rejects.toMatchObject({
        code: 'UNAUTHORIZED',
      });
    } finally {
      tokenOptions.onRefused = 'empty-access';
    }
    const home = await homeWith({ auths: { [token.host]: { auth: basicAuth(HT_USER, 'wrong-password') } } });
    const r = await runCliStdin([`${token.host}/${REPO}:v1`, out()], isolatedEnv(home));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/token/);
    expect(r.stderr).toMatch(/hint: .*credentials were refused/);
    expect(secretsIn(r, ['wrong-password'])).toEqual([]);
  });

  it('without credentials a private repository is UNAUTHORIZED', async () => {
    await expect(pull(`${token.host}/${REPO}:v1`, out(), { env: isolatedEnv(await homeWith()) })).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
    });
  });
});

describe('blob redirect to another host', () => {
  let front: Listening;
  let storage: Listening;
  const storageHeaders: Array<Record<string, string | string[] | undefined>> = [];
  const frontBlobAuth: string[] = [];

  beforeAll(async () => {
    const blobs = new Map<string, Buffer>();
    // The storage server answers from the seed registry's copy of each blob, on "localhost".
    storage = await listen(
      createServer((req, res) => {
        storageHeaders.push({ ...req.headers });
        const digest = /\/blobs\/(sha256:[0-9a-f]{64})/.exec(req.url ?? '')?.[1] ?? '';
        const send = (bytes: Buffer): void => void res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
        const known = blobs.get(digest);
        if (known) return send(known);
        fetch(`${seed.url}/v2/${REPO}/blobs/${digest}`)
          .then(async (r) => Buffer.from(await r.arrayBuffer()))
          .then((bytes) => {
            blobs.set(digest, bytes);
            send(bytes);
          })
          .catch(() => res.writeHead(502).end());
      }),
    );
    cleanups.push(() => storage.close());
    // The front forwards to the token registry but redirects every authorized blob GET.
    front = await listen(
      createServer((req, res) => {
        const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
        if (blob && req.headers.authorization) {
          frontBlobAuth.push(req.headers.authorization);
          res.writeHead(307, { location: `http://localhost:${storage.port}/signed/blobs/${blob[1]}?sig=abc` }).end();
          return;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host' && k !== 'connection') headers[k] = v;
        fetch(`${token.url}${req.url ?? '/'}`, { method: req.method, headers, redirect: 'manual' })
          .then(async (r) => {
            const body = Buffer.from(await r.arrayBuffer());
            const outHeaders: Record<string, string> = {};
            r.headers.forEach((v, k) => {
              if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection' && k !== 'content-encoding') outHeaders[k] = v;
            });
            res.writeHead(r.status, { ...outHeaders, 'content-length': body.length }).end(body);
          })
          .catch(() => res.writeHead(502).end());
      }),
    );
    cleanups.push(() => front.close());
  });

  it('follows the redirect and sends no Authorization to the other host', async () => {
    const home = await homeWith({ auths: { [front.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } });
    const dir = out();
    const r = await runCliStdin([`${front.host}/${REPO}:v1`, dir], isolatedEnv(home));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    // Config + two layers went through the redirect, each carrying the bearer token to the front only.
    expect(frontBlobAuth.length).toBe(3);
    expect(frontBlobAuth.every((a) => a.startsWith('Bearer '))).toBe(true);
    expect(storageHeaders.length).toBe(3);
    for (const headers of storageHeaders) {
      expect(headers['authorization']).toBeUndefined();
      expect(headers['host']).toBe(`localhost:${storage.port}`);
    }
    expect(secretsIn(r, [HT_PASSWORD, ...tokenServer.issued])).toEqual([]);
  });
});
