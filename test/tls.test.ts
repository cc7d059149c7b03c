/**
 * TLS and proxies against real registries on loopback: a registry served over HTTPS with a
 * test CA (made with the openssl CLI), trusted through --cacert, a certs.d directory or not at
 * all (--insecure-registry); a registry that requires a client certificate; and an HTTP
 * forward proxy (HTTP_PROXY / HTTPS_PROXY, bypassed by NO_PROXY).
 */
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import { startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import {
  hashTree,
  isolatedEnv,
  makePki,
  pushSmallImage,
  runCliStdin,
  secretsIn,
  startForwardProxy,
  tempDir,
  type ForwardProxy,
  type TestPki,
} from './helpers/network-fixtures.js';

let work: string;
let pki: TestPki;
let plain: RunningRegistry; // open HTTP registry: pushes and the reference tree
let https: RunningRegistry;
let mtls: RunningRegistry;
let expected: Record<string, string>;
const cleanups: Array<() => Promise<void>> = [];
let counter = 0;
const out = (): string => join(work, `out-${++counter}`);
const REPO = 'tls/app';

/** A certs.d root holding `files` (name -> source path) for `host`. */
async function certsDir(host: string, files: Record<string, string>): Promise<string> {
  const root = join(work, `certs-${++counter}`);
  await mkdir(join(root, host), { recursive: true });
  for (const [name, source] of Object.entries(files)) await copyFile(source, join(root, host, name));
  return root;
}

beforeAll(async () => {
  work = await tempDir('tls');
  pki = await makePki(work);
  plain = await startRegistry();
  cleanups.push(() => plain.stop());
  await pushSmallImage(plain.url, REPO, 'v1');
  const reference = out();
  await pull(`${plain.host}/${REPO}:v1`, reference);
  expected = await hashTree(reference);
  const storage = { storage: { filesystem: { rootdirectory: join(plain.dir, 'storage') } } };
  https = await startRegistry({ tls: { cert: pki.serverCert, key: pki.serverKey }, extraConfig: storage });
  cleanups.push(() => https.stop());
  mtls = await startRegistry({ tls: { cert: pki.serverCert, key: pki.serverKey, clientCA: pki.caCert }, extraConfig: storage });
  cleanups.push(() => mtls.stop());
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
});

describe('HTTPS registry with a private CA', () => {
  it('fails without the CA: NETWORK, with a hint about the certificate', async () => {
    await expect(pull(`${https.host}/${REPO}:v1`, out())).rejects.toMatchObject({
      code: 'NETWORK',
      hint: expect.stringMatching(/certificate.*--cacert/),
    });
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, out()], isolatedEnv(work));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^pull-unpack: cannot reach 127\.0\.0\.1:\d+ .*\nhint: the server certificate is not trusted/);
  });

  it('works with --cacert', async () => {
    const dir = out();
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, dir, '--cacert', pki.caCert], isolatedEnv(work));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
  });

  it('a --cacert or certs.d client key that cannot be read is a usage error, before any connection', async () => {
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, out(), '--cacert', join(work, 'missing-ca.pem')], isolatedEnv(work));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^pull-unpack: cannot read the CA bundle .*missing-ca\.pem/);
    const certs = await certsDir(https.host, { 'ca.crt': pki.caCert, 'client.cert': pki.caCert });
    await expect(pull(`${https.host}/${REPO}:v1`, out(), { transport: { certsDir: certs } })).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringMatching(/cannot read the client key .*client\.key/),
    });
  });

  it('works with the CA in a certs.d directory (HOST:PORT/ca.crt)', async () => {
    const dir = out();
    const certs = await certsDir(https.host, { 'ca.crt': pki.caCert });
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, dir], isolatedEnv(work, { PULL_UNPACK_CERTS_DIR: certs }));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
  });

  it('works with SSL_CERT_FILE or NODE_EXTRA_CA_CERTS naming the CA', async () => {
    for (const name of ['SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS']) {
      const dir = out();
      const r = await runCliStdin([`${https.host}/${REPO}:v1`, dir], isolatedEnv(work, { [name]: pki.caCert }));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(await hashTree(dir)).toEqual(expected);
    }
  });

  it('works with --insecure-registry and no CA, with a warning', async () => {
    const dir = out();
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, dir, '--insecure-registry', https.host], isolatedEnv(work));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: .*insecure registry: its TLS certificate is not verified/);
    expect(await hashTree(dir)).toEqual(expected);
  });

  it("works with the host in the config file's insecureRegistries", async () => {
    const config = join(work, `config-${++counter}.json`);
    await writeFile(config, JSON.stringify({ insecureRegistries: [https.host] }));
    const dir = out();
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, dir, '--config', config], isolatedEnv(work));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: .*insecure registry/);
    expect(await hashTree(dir)).toEqual(expected);
  });

  it('a registry named by "localhost" is verified against the certificate name too', async () => {
    const dir = out();
    const host = `localhost:${https.host.split(':')[1]}`;
    const r = await runCliStdin([`${host}/${REPO}:v1`, dir, '--cacert', pki.caCert], isolatedEnv(work));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
  });
});

describe('HTTPS registry that requires a client certificate', () => {
  it('fails without one, with a hint naming the certs.d files', async () => {
    const certs = await certsDir(mtls.host, { 'ca.crt': pki.caCert });
    await expect(pull(`${mtls.host}/${REPO}:v1`, out(), { transport: { certsDir: certs }, backoffMs: 10 })).rejects.toMatchObject({
      code: 'NETWORK',
      message: expect.stringMatching(/^cannot reach/),
      hint: expect.stringContaining(`client certificate, put it in ${join(certs, mtls.host)}/ as NAME.cert with its key as NAME.key`),
    });
  });

  it('works with client.cert + client.key (and the CA) in the certs.d directory', async () => {
    const certs = await certsDir(mtls.host, { 'ca.crt': pki.caCert, 'client.cert': pki.clientCert, 'client.key': pki.clientKey });
    const dir = out();
    const r = await runCliStdin([`${mtls.host}/${REPO}:v1`, dir], isolatedEnv(work, { PULL_UNPACK_CERTS_DIR: certs }));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
  });
});

describe('HTTP proxies', () => {
  let proxy: ForwardProxy;

  beforeAll(async () => {
    proxy = await startForwardProxy();
    cleanups.push(() => proxy.close());
  });

  it('sends registry requests through HTTP_PROXY (plain-HTTP registry)', async () => {
    proxy.seen.length = 0;
    const dir = out();
    const r = await runCliStdin([`${plain.host}/${REPO}:v1`, dir], isolatedEnv(work, { HTTP_PROXY: `http://${proxy.host}` }));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    expect(proxy.seen.length).toBeGreaterThan(0);
    expect(proxy.seen.every((s) => s.includes(plain.host))).toBe(true);
  });

  it('tunnels an HTTPS registry through HTTPS_PROXY with CONNECT, verifying the registry certificate', async () => {
    proxy.seen.length = 0;
    proxy.proxyAuthorizations.length = 0;
    const dir = out();
    const proxyUrl = `http://proxyuser:proxy-secret-pw@${proxy.host}`;
    const r = await runCliStdin([`${https.host}/${REPO}:v1`, dir, '--cacert', pki.caCert], isolatedEnv(work, { https_proxy: proxyUrl }));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    expect(proxy.seen.length).toBeGreaterThan(0);
    expect(proxy.seen.every((s) => s === `CONNECT ${https.host}`)).toBe(true);
    expect(proxy.proxyAuthorizations[0]).toBe(`Basic ${Buffer.from('proxyuser:proxy-secret-pw').toString('base64')}`);
    expect(secretsIn(r, ['proxy-secret-pw'])).toEqual([]);
    const bad = await runCliStdin([`${https.host}/${REPO}:v1`, out()], isolatedEnv(work, { HTTPS_PROXY: proxyUrl }));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/certificate/);
    expect(secretsIn(bad, ['proxy-secret-pw'])).toEqual([]);
  });

  it('bypasses the proxy for hosts in NO_PROXY', async () => {
    proxy.seen.length = 0;
    const dir = out();
    const env = isolatedEnv(work, { HTTP_PROXY: `http://${proxy.host}`, HTTPS_PROXY: `http://${proxy.host}`, NO_PROXY: '127.0.0.1' });
    const r = await runCliStdin([`${plain.host}/${REPO}:v1`, dir], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await hashTree(dir)).toEqual(expected);
    expect(proxy.seen).toEqual([]);
  });

  it('a proxy that cannot be reached is a NETWORK error naming the proxy address', async () => {
    await expect(
      pull(`${plain.host}/${REPO}:v1`, out(), { transport: { proxy: { httpProxy: 'http://127.0.0.1:9' } }, attempts: 2, backoffMs: 10 }),
    ).rejects.toMatchObject({
      code: 'NETWORK',
      message: expect.stringMatching(/ECONNREFUSED 127\.0\.0\.1:9\b/),
      hint: expect.stringMatching(/proxy/),
    });
  });
});
