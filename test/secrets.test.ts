/**
 * No secret leaks, whatever the credential source and however the pull fails. Pulls run with
 * every credential source (--username/--password-stdin, docker config.json auths,
 * DOCKER_AUTH_CONFIG, podman auth.json, a credential helper on PATH, identity tokens with a token
 * server) and through error paths built to echo secrets back (a wrong password, token servers
 * that refuse, a registry 500 that echoes the Authorization header, a redirect to another host
 * that echoes what it got). No password, identity token, bearer token or Authorization value,
 * plain or base64, may appear in stdout, stderr, --json events, thrown errors (message, hint,
 * causes, and what console.error(err) prints), or any file under DIR, the cache or the staging
 * area (searched at every event while the pull runs).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull, type PullOptions } from '../src/index.js';
import { startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import {
  HTPASSWD,
  HT_PASSWORD,
  HT_USER,
  hashTree,
  isolatedEnv,
  pushSmallImage,
  readBody,
  startTokenServer,
  tempDir,
  type TokenServer,
} from './helpers/network-fixtures.js';
import { startServer, type TestServer } from './helpers/registry.js';
import {
  authorizationNeedles,
  errorMessages,
  inspectedError,
  leaksIn,
  leaksInTree,
  needlesFor,
  registryErrorBody,
  runCliScanning,
  stagingBeside,
  startRecordingFront,
  type Needle,
  type RecordingFront,
  type ScannedRun,
} from './helpers/secrets-fixtures.js';

const REPO = 'team/app';
const WRONG_PASSWORD = `wrong-${randomBytes(8).toString('hex')}`;
const REFRESH_TOKEN = `refresh-${randomBytes(12).toString('hex')}`;
const SERVICE = 'pull-unpack-secrets-registry';

let work: string;
let counter = 0;
let expected: Record<string, string>;
let basicFront: RecordingFront;
let tokenFront: RecordingFront;
let tokenServer: TokenServer;
/** The redirect target: records what it receives and refuses with an echo of it. */
let storage: TestServer;
const storageSeen: string[] = [];
/** A registry whose token server refuses, echoing the Authorization header and form it got. */
let evilRegistry: TestServer;
let evilToken: TestServer;
const evilSeen = new Set<string>();
const cleanups: Array<() => Promise<void>> = [];

/** Every secret known so far: fixed ones, tokens handed out, and every Authorization value sent. */
function needles(): Needle[] {
  const issued = Object.fromEntries(tokenServer.issued.map((t, i) => [`bearer token #${i + 1}`, t]));
  return [
    ...needlesFor({ password: HT_PASSWORD, 'wrong password': WRONG_PASSWORD, 'identity token': REFRESH_TOKEN, ...issued }, [
      [HT_USER, HT_PASSWORD],
      [HT_USER, WRONG_PASSWORD],
    ]),
    ...authorizationNeedles([...basicFront.authorizations, ...tokenFront.authorizations, ...evilSeen]),
  ];
}

const next = (): number => ++counter;

/** A HOME with a docker config.json holding `config` (none when undefined). */
async function homeWith(config?: unknown): Promise<string> {
  const home = join(work, `home-${next()}`);
  await mkdir(join(home, '.docker'), { recursive: true });
  if (config !== undefined) await writeFile(join(home, '.docker', 'config.json'), JSON.stringify(config));
  return home;
}

const basicAuth = (user: string, password: string): string => Buffer.from(`${user}:${password}`).toString('base64');

/** A docker-credential-NAME script on a PATH of its own that prints `answer` and exits with `status`. */
async function helperPath(home: string, name: string, answer: object, status = 0): Promise<string> {
  const bin = join(home, 'bin');
  await mkdir(bin, { recursive: true });
  await writeFile(
    join(bin, `docker-credential-${name}`),
    `#!/bin/sh\ncat >/dev/null\nprintf '%s\\n' '${JSON.stringify(answer)}'\nexit ${status}\n`,
  );
  await chmod(join(bin, `docker-credential-${name}`), 0o755);
  return `${bin}:${process.env['PATH'] ?? '/usr/bin:/bin'}`;
}

/**
 * Runs the CLI (with --json unless `json` is false) into a new DIR and checks every output for
 * secrets: stdout (the events), stderr, the staging area at every event, DIR and the cache.
 */
async function cliPull(
  image: string,
  env: NodeJS.ProcessEnv,
  extra: string[] = [],
  stdin?: string,
  json = true,
): Promise<ScannedRun & { dir: string }> {
  const dir = join(work, `out-${next()}`);
  const r = await runCliScanning([image, dir, ...(json ? ['--json'] : []), ...extra], env, stdin, dir, needles);
  const all = needles();
  expect(leaksIn(r.stdout, all), 'stdout / --json events').toEqual([]);
  expect(leaksIn(r.stderr, all), `stderr: ${r.stderr}`).toEqual([]);
  expect(r.stagingLeaks, 'staging area').toEqual([]);
  expect(leaksInTree(dir, all), 'DIR').toEqual([]);
  expect(leaksInTree(env['XDG_CACHE_HOME']!, all), 'cache').toEqual([]);
  expect(stagingBeside(dir)).toEqual([]);
  return { ...r, dir };
}

/** A successful CLI pull: exit 0, the expected tree, and no secret anywhere. */
async function cliSucceeds(image: string, env: NodeJS.ProcessEnv, extra: string[] = [], stdin?: string): Promise<void> {
  const r = await cliPull(image, env, extra, stdin);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  expect(await hashTree(r.dir)).toEqual(expected);
  expect(r.stagingScans).toBeGreaterThan(0);
}

/** A library pull that must fail with `code`; its error, events, staging, DIR and cache hold no secret. */
async function libraryFails(image: string, options: PullOptions, code: string): Promise<unknown> {
  const dir = join(work, `out-${next()}`);
  const cacheDir = join(work, `cache-${next()}`);
  const events: string[] = [];
  const stagingLeaks: string[] = [];
  const err = await pull(image, dir, {
    backoffMs: 1,
    ...options,
    cacheDir,
    onEvent: (e) => {
      events.push(JSON.stringify(e));
      for (const s of stagingBeside(dir)) stagingLeaks.push(...leaksInTree(s, needles()));
    },
  }).then(
    () => new Error('the pull succeeded'),
    (e: unknown) => e,
  );
  const all = needles();
  expect(err).toMatchObject({ code });
  expect(leaksIn(errorMessages(err), all), `message, hint and causes: ${errorMessages(err)}`).toEqual([]);
  expect(
    leaksIn(inspectedError(err), all),
    'the error as console.error(err) prints it (own properties such as RegistryError.detail, causes)',
  ).toEqual([]);
  expect(leaksIn(events.join('\n'), all), 'events').toEqual([]);
  expect(stagingLeaks, 'staging area').toEqual([]);
  expect(leaksInTree(dir, all), 'DIR').toEqual([]);
  expect(leaksInTree(cacheDir, all), 'cache').toEqual([]);
  return err;
}

beforeAll(async () => {
  work = await tempDir('secrets');
  const seed: RunningRegistry = await startRegistry();
  cleanups.push(() => seed.stop());
  await pushSmallImage(seed.url, REPO, 'v1');
  const basic = await startRegistry({ htpasswd: HTPASSWD });
  cleanups.push(() => basic.stop());
  await pushSmallImage(`http://${HT_USER}:${HT_PASSWORD}@${basic.host}`, REPO, 'v1');

  await mkdir(join(work, 'token'));
  tokenServer = await startTokenServer(join(work, 'token'), {
    users: { [HT_USER]: HT_PASSWORD },
    refreshTokens: { [REFRESH_TOKEN]: HT_USER },
    service: SERVICE,
    issuer: 'pull-unpack-secrets-issuer',
  });
  cleanups.push(() => tokenServer.close());
  const token = await startRegistry({
    tokenAuth: {
      realm: tokenServer.realm,
      service: SERVICE,
      issuer: 'pull-unpack-secrets-issuer',
      rootcertbundle: tokenServer.rootCertBundle,
    },
    extraConfig: { storage: { filesystem: { rootdirectory: join(seed.dir, 'storage') } } },
  });
  cleanups.push(() => token.stop());

  basicFront = await startRecordingFront(basic.url);
  tokenFront = await startRecordingFront(token.url);
  storage = await startServer((req, res) => {
    storageSeen.push(`${req.method} ${req.url} ${JSON.stringify(req.headers)}`);
    res
      .writeHead(403, { 'content-type': 'application/json' })
      .end(registryErrorBody('DENIED', `signature refused for ${req.url} with headers ${JSON.stringify(req.headers)}`, req.headers));
  });
  evilToken = await startServer((req, res) => {
    readBody(req).then(
      (form) => {
        if (req.headers.authorization) evilSeen.add(req.headers.authorization);
        const echo = `Authorization: ${req.headers.authorization ?? '(none)'}; form: ${form}; query: ${req.url}`;
        res.writeHead(401, { 'content-type': 'application/json' }).end(
          registryErrorBody('UNAUTHORIZED', `authentication refused (${echo})`, {
            authorization: req.headers.authorization,
            form,
            url: req.url,
          }),
        );
      },
      () => res.writeHead(500).end(),
    );
  });
  evilRegistry = await startServer((_req, res) => {
    res.writeHead(401, {
      'www-authenticate': `Bearer realm="${evilToken.url}/token",service="evil",scope="repository:${REPO}:pull"`,
      'content-type': 'application/json',
    });
    res.end(registryErrorBody('UNAUTHORIZED', 'authentication required', null));
  });
  for (const s of [basicFront, tokenFront, storage, evilToken, evilRegistry]) cleanups.push(() => s.close());

  const reference = join(work, 'reference');
  await pull(`${seed.host}/${REPO}:v1`, reference);
  expected = await hashTree(reference);
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('every credential source, pulls that succeed', () => {
  it('--username with --password-stdin (htpasswd registry)', async () => {
    await cliSucceeds(
      `${basicFront.host}/${REPO}:v1`,
      isolatedEnv(await homeWith()),
      ['--username', HT_USER, '--password-stdin'],
      `${HT_PASSWORD}\n`,
    );
    expect(basicFront.authorizations.size).toBeGreaterThan(0);
  });

  it('docker config.json auths', async () => {
    await cliSucceeds(
      `${basicFront.host}/${REPO}:v1`,
      isolatedEnv(await homeWith({ auths: { [basicFront.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } })),
    );
  });

  it('DOCKER_AUTH_CONFIG with username and password fields', async () => {
    const config = JSON.stringify({ auths: { [basicFront.host]: { username: HT_USER, password: HT_PASSWORD } } });
    await cliSucceeds(`${basicFront.host}/${REPO}:v1`, isolatedEnv(await homeWith(), { DOCKER_AUTH_CONFIG: config }));
  });

  it('podman auth.json (REGISTRY_AUTH_FILE)', async () => {
    const home = await homeWith();
    const file = join(home, 'auth.json');
    await writeFile(file, JSON.stringify({ auths: { [basicFront.host]: { auth: basicAuth(HT_USER, HT_PASSWORD) } } }));
    await cliSucceeds(`${basicFront.host}/${REPO}:v1`, isolatedEnv(home, { REGISTRY_AUTH_FILE: file }));
  });

  it('a credential helper on PATH', async () => {
    const home = await homeWith({ credHelpers: { [basicFront.host]: 'secrets' } });
    const path = await helperPath(home, 'secrets', { ServerURL: basicFront.host, Username: HT_USER, Secret: HT_PASSWORD });
    await cliSucceeds(`${basicFront.host}/${REPO}:v1`, isolatedEnv(home, { PATH: path }));
  });

  it('an identitytoken in config.json, traded at the token server', async () => {
    const before = tokenServer.issued.length;
    await cliSucceeds(
      `${tokenFront.host}/${REPO}:v1`,
      isolatedEnv(await homeWith({ auths: { [tokenFront.host]: { identitytoken: REFRESH_TOKEN } } })),
    );
    expect(tokenServer.issued.length).toBeGreaterThan(before);
    expect(tokenServer.requests.at(-1)).toMatchObject({ as: 'refresh_token' });
  });

  it('a credential helper answering an identity token (Username "<token>")', async () => {
    const home = await homeWith({ credsStore: 'tokens' });
    const path = await helperPath(home, 'tokens', { ServerURL: tokenFront.host, Username: '<token>', Secret: REFRESH_TOKEN });
    await cliSucceeds(`${tokenFront.host}/${REPO}:v1`, isolatedEnv(home, { PATH: path }));
    expect(tokenServer.requests.at(-1)).toMatchObject({ as: 'refresh_token' });
  });

  it('library pull with explicit credentials against token auth: no secret in events, staging, DIR or cache', async () => {
    const dir = join(work, `out-${next()}`);
    const cacheDir = join(work, `cache-${next()}`);
    const events: string[] = [];
    const stagingLeaks: string[] = [];
    let scans = 0;
    await pull(`${tokenFront.host}/${REPO}:v1`, dir, {
      credentials: { username: HT_USER, password: HT_PASSWORD },
      cacheDir,
      onEvent: (e) => {
        events.push(JSON.stringify(e));
        for (const s of stagingBeside(dir)) {
          scans++;
          stagingLeaks.push(...leaksInTree(s, needles()));
        }
      },
    });
    expect(await hashTree(dir)).toEqual(expected);
    expect(scans).toBeGreaterThan(0);
    const all = needles();
    expect(leaksIn(events.join('\n'), all)).toEqual([]);
    expect(stagingLeaks).toEqual([]);
    expect(leaksInTree(dir, all)).toEqual([]);
    expect(leaksInTree(cacheDir, all)).toEqual([]);
  });
});

describe('error paths', () => {
  it('a wrong password (htpasswd registry): UNAUTHORIZED', async () => {
    const r = await cliPull(
      `${basicFront.host}/${REPO}:v1`,
      isolatedEnv(await homeWith({ auths: { [basicFront.host]: { auth: basicAuth(HT_USER, WRONG_PASSWORD) } } })),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/credentials were refused/);
    await libraryFails(`${basicFront.host}/${REPO}:v1`, { credentials: { username: HT_USER, password: WRONG_PASSWORD } }, 'UNAUTHORIZED');
  });

  it('the token server refuses a wrong password: UNAUTHORIZED', async () => {
    const r = await cliPull(
      `${tokenFront.host}/${REPO}:v1`,
      isolatedEnv(await homeWith()),
      ['--username', HT_USER, '--password-stdin'],
      `${WRONG_PASSWORD}\n`,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/token server .* refused the credentials/);
    await libraryFails(`${tokenFront.host}/${REPO}:v1`, { credentials: { username: HT_USER, password: WRONG_PASSWORD } }, 'UNAUTHORIZED');
  });

  describe('a token server that refuses with an echo of the Authorization header and the form it got', () => {
    it('Basic credentials: UNAUTHORIZED, the echo redacted', async () => {
      const r = await cliPull(
        `${evilRegistry.host}/${REPO}:v1`,
        isolatedEnv(await homeWith()),
        ['--username', HT_USER, '--password-stdin'],
        `${HT_PASSWORD}\n`,
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/refused the credentials/);
      expect(evilSeen.size).toBeGreaterThan(0);
      await libraryFails(`${evilRegistry.host}/${REPO}:v1`, { credentials: { username: HT_USER, password: HT_PASSWORD } }, 'UNAUTHORIZED');
    });

    it('an identity token (POSTed in the form): UNAUTHORIZED, the echo redacted', async () => {
      const home = await homeWith({ auths: { [evilRegistry.host]: { identitytoken: REFRESH_TOKEN } } });
      const r = await cliPull(`${evilRegistry.host}/${REPO}:v1`, isolatedEnv(home));
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/refused the credentials/);
      await libraryFails(`${evilRegistry.host}/${REPO}:v1`, { env: isolatedEnv(home) }, 'UNAUTHORIZED');
    });
  });

  describe('a registry 500 whose body echoes the Authorization header', () => {
    /** Answers manifest requests that carry credentials with a 500 quoting them (Retry-After: 0 keeps retries fast). */
    const echo500 = (front: RecordingFront): void => {
      front.intercept = (req, res) => {
        if (!req.headers.authorization || !req.url?.includes('/manifests/')) return false;
        const auth = req.headers.authorization;
        res.writeHead(500, { 'content-type': 'application/json', 'retry-after': '0' });
        res.end(
          registryErrorBody('UNKNOWN', `internal error serving ${req.url}; request headers: Authorization: ${auth}`, {
            authorization: auth,
            headers: req.headers,
          }),
        );
        return true;
      };
    };

    it('Basic credentials: REGISTRY_ERROR, the echo redacted', async () => {
      echo500(basicFront);
      try {
        const r = await cliPull(
          `${basicFront.host}/${REPO}:v1`,
          isolatedEnv(await homeWith()),
          ['--username', HT_USER, '--password-stdin'],
          `${HT_PASSWORD}\n`,
        );
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(/HTTP 500/);
        await libraryFails(
          `${basicFront.host}/${REPO}:v1`,
          { credentials: { username: HT_USER, password: HT_PASSWORD } },
          'REGISTRY_ERROR',
        );
      } finally {
        basicFront.intercept = () => false;
      }
    });

    it('a bearer token: REGISTRY_ERROR, the echo redacted', async () => {
      echo500(tokenFront);
      try {
        const r = await cliPull(
          `${tokenFront.host}/${REPO}:v1`,
          isolatedEnv(await homeWith({ auths: { [tokenFront.host]: { identitytoken: REFRESH_TOKEN } } })),
        );
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(/HTTP 500/);
        expect([...tokenFront.authorizations].some((a) => a.startsWith('Bearer '))).toBe(true);
        await libraryFails(
          `${tokenFront.host}/${REPO}:v1`,
          { credentials: { username: HT_USER, password: HT_PASSWORD } },
          'REGISTRY_ERROR',
        );
      } finally {
        tokenFront.intercept = () => false;
      }
    });
  });

  it('a blob redirect to another host that refuses with an echo of what it received: no credential went there or into the error', async () => {
    basicFront.intercept = (req, res) => {
      const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '');
      if (!blob || !req.headers.authorization) return false;
      res.writeHead(307, { location: `http://localhost:${storage.url.split(':').at(-1)}/signed/${blob[1]}?sig=0123456789abcdef` }).end();
      return true;
    };
    try {
      const r = await cliPull(
        `${basicFront.host}/${REPO}:v1`,
        isolatedEnv(await homeWith()),
        ['--username', HT_USER, '--password-stdin'],
        `${HT_PASSWORD}\n`,
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/HTTP 403/);
      await libraryFails(`${basicFront.host}/${REPO}:v1`, { credentials: { username: HT_USER, password: HT_PASSWORD } }, 'UNAUTHORIZED');
    } finally {
      basicFront.intercept = () => false;
    }
    expect(storageSeen.length).toBeGreaterThan(0);
    expect(storageSeen.filter((s) => /authorization/i.test(s))).toEqual([]);
    expect(leaksIn(storageSeen.join('\n'), needles())).toEqual([]);
  });

  it('a credential helper that prints its answer and exits 1: the notice does not quote the secret', async () => {
    const home = await homeWith({ credHelpers: { [basicFront.host]: 'broken' } });
    const path = await helperPath(home, 'broken', { ServerURL: basicFront.host, Username: HT_USER, Secret: HT_PASSWORD }, 1);
    // The helper's failure becomes a warning: on stderr, and as a --json warning event.
    const r = await cliPull(`${basicFront.host}/${REPO}:v1`, isolatedEnv(home, { PATH: path }), [], undefined, false);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/warning: credential helper docker-credential-broken failed \(exit 1\)/);
    const j = await cliPull(`${basicFront.host}/${REPO}:v1`, isolatedEnv(home, { PATH: path }));
    expect(j.stdout).toMatch(/"type":"warning".*docker-credential-broken failed/);
  });
});
