/**
 * Fixtures for the network tests (auth, faults, TLS, proxies): small images, tree hashes,
 * throwaway certificates made with the openssl CLI, a token server that signs real JWTs for
 * distribution's token auth, an HTTP forward proxy, and the CLI run with stdin.
 */
import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { mkdtemp, readdir, readFile, readlink, lstat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { promisify } from 'node:util';
import { main } from '../../src/cli/main.js';
import { pushImage, tarLayer, type PushedImage } from '../../testdata/lib/image-builder.mjs';
import type { CliRun } from './registry.js';

const run = promisify(execFile);

/** The htpasswd file in testdata and the credentials it holds. */
export const HTPASSWD = new URL('../../testdata/auth/htpasswd', import.meta.url).pathname;
export const HT_USER = 'tester';
export const HT_PASSWORD = 'pull-unpack-test-password';

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `pull-unpack-${prefix}-`));
}

let caches = 0;

/**
 * An environment for runCli that sees nothing of the developer's: HOME (and so the docker
 * config, podman auth and pull-unpack config) inside `home`, no proxies, the system PATH, and
 * a blob cache of its own (XDG_CACHE_HOME), so every run really downloads.
 */
export function isolatedEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const cache = join(home, `.cache-${process.pid}-${++caches}`);
  return {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: home,
    DOCKER_CONFIG: join(home, '.docker'),
    XDG_CACHE_HOME: cache,
    ...extra,
  };
}

/** Runs the CLI in-process like runCli, with `stdin` as its standard input. */
export async function runCliStdin(argv: string[], env: NodeJS.ProcessEnv, stdin?: string): Promise<CliRun> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await main(argv, { stdout, stderr, env, stdin: stdin === undefined ? undefined : Readable.from([Buffer.from(stdin)]) });
  const stdoutBytes = Buffer.concat(out);
  return { code, stdout: stdoutBytes.toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), stdoutBytes };
}

/** Fails when any of `secrets` appears in the run's output (also base64-encoded, as in a Basic header). */
export function secretsIn(runResult: CliRun, secrets: readonly string[]): string[] {
  const text = `${runResult.stdout}\n${runResult.stderr}`;
  return secrets.filter((s) => text.includes(s) || text.includes(Buffer.from(s).toString('base64')));
}

/** A two-layer image with a few small files; returns what was pushed. */
export async function pushSmallImage(registryUrl: string, repo: string, tag: string): Promise<PushedImage> {
  return pushImage(registryUrl, repo, tag, {
    layers: [
      {
        tar: await tarLayer([
          { name: 'etc/', type: 'directory' },
          { name: 'etc/hello.txt', content: `hello from ${repo}\n` },
        ]),
      },
      {
        tar: await tarLayer([
          { name: 'bin/', type: 'directory' },
          { name: 'bin/tool', mode: 0o755, content: '#!/bin/sh\necho tool\n' },
          { name: 'bin/link', type: 'symlink', linkname: 'tool' },
        ]),
      },
    ],
  });
}

/** An image whose only layer holds `size` random (incompressible) bytes in /big.bin, stored uncompressed. */
export async function pushBigImage(
  registryUrl: string,
  repo: string,
  tag: string,
  size: number,
): Promise<{ image: PushedImage; content: Buffer }> {
  const content = randomBytes(size);
  const image = await pushImage(registryUrl, repo, tag, {
    layers: [
      {
        tar: await tarLayer([
          { name: 'big.bin', content },
          { name: 'small.txt', content: 'small\n' },
        ]),
        compression: 'none',
      },
    ],
  });
  return { image, content };
}

/**
 * Every entry of `dir` keyed by relative path: type, permission bits, and the sha256 of a
 * file's bytes or a symlink's target. Two equal maps mean byte-identical trees.
 */
export async function hashTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    const path = rel === '' ? dir : join(dir, rel);
    const st = await lstat(path);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[rel || '.'] = `symlink -> ${await readlink(path)}`;
    else if (st.isFile())
      out[rel || '.'] = `file ${mode} ${createHash('sha256')
        .update(await readFile(path))
        .digest('hex')}`;
    else if (st.isDirectory()) {
      out[rel || '.'] = `dir ${mode}`;
      for (const name of (await readdir(path)).sort()) await walk(rel === '' ? name : join(rel, name));
    } else out[rel || '.'] = `other ${mode}`;
  };
  await walk('');
  return out;
}

export function sha256hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Certificates

export interface TestPki {
  dir: string;
  caCert: string;
  /** For IP:127.0.0.1 and DNS:localhost, signed by the CA. */
  serverCert: string;
  serverKey: string;
  /** A client certificate signed by the CA (for tls.clientcas). */
  clientCert: string;
  clientKey: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all new. */
export async function makePki(dir: string): Promise<TestPki> {
  const days = ['-days', '2'];
  await openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', ...days, '-subj', '/CN=pull-unpack test CA'],
    dir,
  );
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await writeFile(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, subject] of [
    ['server', '/CN=localhost'],
    ['client', '/CN=pull-unpack test client'],
  ] as const) {
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], dir);
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.pem`,
        ...days,
        '-extfile',
        `${name}.ext`,
      ],
      dir,
    );
  }
  return {
    dir,
    caCert: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.pem'),
    clientKey: join(dir, 'client.key'),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP servers

export interface Listening {
  server: Server;
  port: number;
  host: string;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 at `port` (default: a free one). */
export async function listen(server: Server, port = 0): Promise<Listening> {
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const bound = (server.address() as AddressInfo).port;
  return {
    server,
    port: bound,
    host: `127.0.0.1:${bound}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Reads a request body (small: token forms). */
export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

export interface TokenRequest {
  method: string;
  /** The scopes asked for (query or form). */
  scopes: string[];
  service: string | undefined;
  /** 'basic:USER', 'refresh_token', or 'anonymous'. */
  as: string;
  grantType: string | undefined;
}

export interface TokenServerOptions {
  /** Username -> password accepted with Basic auth. */
  users: Record<string, string>;
  /** Refresh (identity) tokens accepted in a POST grant_type=refresh_token, -> the subject. */
  refreshTokens?: Record<string, string>;
  /** Repositories anyone may pull without credentials. */
  publicRepos?: readonly string[];
  /** Repositories a subject may pull (default: all of them). */
  grants?: (subject: string, repository: string) => boolean;
  /** 'empty-access': answer 200 with a token granting nothing (as Docker Hub does); 'deny': 401. */
  onRefused?: 'empty-access' | 'deny';
  service: string;
  issuer: string;
}

export interface TokenServer extends Listening {
  realm: string;
  /** The certificate (PEM path) whose key signs the tokens: the registry's rootcertbundle. */
  rootCertBundle: string;
  requests: TokenRequest[];
  /** Every token handed out (to check that none leaks into output). */
  issued: string[];
}

/**
 * A token server for distribution's `auth.token`: checks Basic credentials or a refresh token,
 * grants `repository:NAME:pull` per `grants`, and signs an RS256 JWT whose header carries the
 * signing certificate as x5c (distribution 2.8 verifies it against rootcertbundle).
 */
export async function startTokenServer(dir: string, options: TokenServerOptions): Promise<TokenServer> {
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'token.key',
      '-out',
      'token.pem',
      '-days',
      '2',
      '-subj',
      '/CN=pull-unpack token signer',
    ],
    dir,
  );
  const key = createPrivateKey(await readFile(join(dir, 'token.key')));
  const certPem = await readFile(join(dir, 'token.pem'), 'utf8');
  const der = Buffer.from(certPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, ''), 'base64').toString('base64');
  const requests: TokenRequest[] = [];
  const issued: string[] = [];
  const signToken = (subject: string, access: Array<{ type: string; name: string; actions: string[] }>): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [der] };
    const claims = {
      iss: options.issuer,
      sub: subject,
      aud: options.service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(sign('sha256', Buffer.from(input), key))}`;
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://token');
    let params = url.searchParams;
    if (req.method === 'POST') params = new URLSearchParams(await readBody(req));
    const scopes = params
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .filter(Boolean);
    const record: TokenRequest = {
      method: req.method ?? '',
      scopes,
      service: params.get('service') ?? undefined,
      as: 'anonymous',
      grantType: params.get('grant_type') ?? undefined,
    };
    requests.push(record);
    let subject: string | undefined;
    if (req.method === 'POST') {
      const refresh = params.get('refresh_token') ?? '';
      if (params.get('grant_type') !== 'refresh_token' || !options.refreshTokens?.[refresh])
        return void res.writeHead(401).end('{"error":"invalid_grant"}');
      subject = options.refreshTokens[refresh];
      record.as = 'refresh_token';
    } else if (req.headers.authorization) {
      const [user, ...rest] = Buffer.from(req.headers.authorization.replace(/^Basic /, ''), 'base64')
        .toString('utf8')
        .split(':');
      if (!user || options.users[user] === undefined || options.users[user] !== rest.join(':')) {
        return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"incorrect username or password"}');
      }
      subject = user;
      record.as = `basic:${user}`;
    }
    const access: Array<{ type: string; name: string; actions: string[] }> = [];
    for (const scope of scopes) {
      const m = /^repository:([^:]+):(.+)$/.exec(scope);
      if (!m) continue;
      const repo = m[1]!;
      const allowed = (options.publicRepos ?? []).includes(repo) || (subject !== undefined && (options.grants?.(subject, repo) ?? true));
      if (allowed && m[2]!.split(',').includes('pull')) access.push({ type: 'repository', name: repo, actions: ['pull'] });
    }
    if (access.length === 0 && scopes.length > 0 && options.onRefused === 'deny') {
      return void res.writeHead(subject ? 403 : 401, { 'content-type': 'application/json' }).end('{"details":"access denied"}');
    }
    const token = signToken(subject ?? '', access);
    issued.push(token);
    const body =
      req.method === 'POST'
        ? { access_token: token, expires_in: 300, scope: scopes.join(' ') }
        : { token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  const listening = await listen(
    createServer((req, res) => {
      handle(req, res).catch((err: unknown) => res.writeHead(500).end(String(err)));
    }),
  );
  return { ...listening, realm: `http://${listening.host}/token`, rootCertBundle: join(dir, 'token.pem'), requests, issued };
}

export interface ForwardProxy extends Listening {
  /** 'CONNECT host:port' or 'GET http://...' for every request the proxy saw. */
  seen: string[];
  /** Proxy-Authorization values received. */
  proxyAuthorizations: string[];
}

/** An HTTP forward proxy: absolute-URI requests are forwarded, CONNECT is tunnelled; all recorded. */
export async function startForwardProxy(): Promise<ForwardProxy> {
  const seen: string[] = [];
  const proxyAuthorizations: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (req.headers['proxy-authorization']) proxyAuthorizations.push(req.headers['proxy-authorization']);
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const forward = httpRequest(req.url ?? '', { method: req.method, headers }, (upstream) => {
      res.writeHead(upstream.statusCode ?? 502, upstream.headers);
      upstream.pipe(res);
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    if (req.headers['proxy-authorization']) proxyAuthorizations.push(req.headers['proxy-authorization']);
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect({ host: host!, port: Number(port) }, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  return { ...(await listen(server)), seen, proxyAuthorizations };
}
