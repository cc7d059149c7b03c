/**
 * Signature material is fetched like every other registry document: through the same registry
 * client, so a registry that goes down is a NETWORK failure (not a verdict on the image), a
 * signature payload or sigstore bundle must arrive within the document deadline, and
 * credentials go to the registry's origin only, never to a host a signature blob redirects to.
 * Cosign-format signatures from the test fixtures; a loopback proxy in front of the real
 * registry breaks, stalls or redirects the signature fetches.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import { cosignFixtures, SIGNER_EMAIL, OIDC_ISSUER, signedWith, type CosignFixtures } from './helpers/cosign-images.js';
import { failure } from './helpers/errors.js';
import { tempRoot } from './helpers/gpg.js';
import { trickle } from './helpers/hostile-servers.js';
import { startReferrersProxy, type Intercept, type ReferrersProxy } from './helpers/referrers-proxy.js';
import { runCli, startServer, testRegistry } from './helpers/registry.js';
import { sha256 } from '../testdata/lib/image-builder.mjs';
import { makeBundle, pushBundleReferrer, signatureTag } from './helpers/sigstore-fixtures.js';

let f: CosignFixtures;
let n = 0;

beforeAll(async () => {
  f = await cosignFixtures(await tempRoot('trust-fetch'));
});

afterAll(async () => {
  if (f) await rm(f.root, { recursive: true, force: true });
});

const out = (): string => join(f.root, `out-${++n}`);
const { url } = testRegistry();

/** A proxy whose `intercept` may answer requests itself, and the signed image (signed for the proxy's name) behind it. */
async function behindProxy(intercept: Intercept): Promise<{ proxy: ReferrersProxy; repo: string; image: string }> {
  const proxy = await startReferrersProxy(url, intercept);
  const repo = await f.pushSigned(`proxied-${++n}`, signedWith(f.a), (r) => `${proxy.host}/${r}:v1`);
  return { proxy, repo, image: `${proxy.host}/${repo}:v1` };
}

/** The simple-signing layer of the `.sig` manifest of the fixtures' digest in `repo`. */
async function payloadDigest(repo: string): Promise<string> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${signatureTag(f.digest)}`, {
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  return ((await res.json()) as { layers: Array<{ digest: string }> }).layers[0]!.digest;
}

describe('signatures that cannot be read are no verdict on the image', () => {
  /** A registry that dies at the first .sig request: that connection and every later one are refused. */
  async function dyingAtSignatures(): Promise<{ proxy: ReferrersProxy; image: string }> {
    const dying: { proxy?: ReferrersProxy } = {};
    const setup = await behindProxy((req) => {
      if (!req.url?.includes('.sig')) return false;
      req.socket.destroy();
      void dying.proxy?.close();
      return true;
    });
    dying.proxy = setup.proxy;
    return setup;
  }

  it('a registry that goes down while the .sig manifest is fetched fails with NETWORK naming the check, not SIGNATURE_REJECTED', async () => {
    const { proxy, image } = await dyingAtSignatures();
    try {
      const run = await runCli(['--no-cache', '--verify-key', f.a.path, image, out()]);
      expect(run.code).toBe(1);
      const lines = run.stderr.split('\n').filter((l) => !l.startsWith('warning: '));
      expect(lines[0]).toMatch(
        new RegExp(
          `^pull-unpack: cannot check --verify-key .*: a cosign signature by that key: cannot reach ${proxy.host} for .*:sha256-[0-9a-f]{64}\\.sig: `,
        ),
      );
      expect(lines[1]).toMatch(/^hint: check the registry address and your network/);
      expect(run.stderr).not.toContain('rejected');
    } finally {
      await proxy.close();
    }
  });

  it('the library reports the same failure as NETWORK', async () => {
    const { proxy, image } = await dyingAtSignatures();
    try {
      const err = await failure(pull(image, out(), { trust: { verify: { keyPaths: [f.a.path] } }, attempts: 1 }));
      expect(err.code).toBe('NETWORK');
    } finally {
      await proxy.close();
    }
  });
});

describe('the document deadline covers signature fetches', () => {
  it('a signature payload trickled slower than the deadline fails NETWORK "too slowly", not after the idle timeout', async () => {
    let payload = '';
    const setup = await behindProxy((req, res) => {
      if (!payload || !req.url?.endsWith(`/blobs/${payload}`)) return false;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '4096' });
      trickle(res, Buffer.alloc(4096, ' '), 1, 50);
      return true;
    });
    try {
      payload = await payloadDigest(setup.repo);
      const err = await failure(
        pull(setup.image, out(), { trust: { verify: { keyPaths: [f.a.path] } }, transport: { documentTimeout: 1000 } }),
      );
      expect(err.code).toBe('NETWORK');
      expect(err.message).toMatch(/sent .*signature payload 1 .* too slowly: not complete within 1 s/);
    } finally {
      await setup.proxy.close();
    }
  });

  it('so is a sigstore bundle whose media type has parameters (bundle+json;version=0.1)', { timeout: 20_000 }, async () => {
    let bundleDigest = '';
    const proxy = await startReferrersProxy(url, (req: IncomingMessage, res: ServerResponse) => {
      if (!bundleDigest || !req.url?.endsWith(`/blobs/${bundleDigest}`)) return false;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '4096' });
      trickle(res, Buffer.alloc(4096, ' '), 1, 50);
      return true;
    });
    try {
      const repo = f.images.unsigned.slice(testRegistry().host.length + 1, -':v1'.length);
      const bundle = makeBundle({ digest: f.digest, log: f.log, leaf: f.fulcio.leaf({ email: SIGNER_EMAIL }) });
      const mediaType = 'application/vnd.dev.sigstore.bundle+json;version=0.1';
      const referrer = await pushBundleReferrer(url, repo, f.descriptor, bundle, mediaType);
      bundleDigest = sha256(bundle);
      proxy.add(repo, f.digest, referrer);
      const verify = { keyPaths: [], identity: SIGNER_EMAIL, issuer: OIDC_ISSUER, trustedRootPath: f.trustedRootPath };
      const err = await failure(pull(`${proxy.host}/${repo}:v1`, out(), { trust: { verify }, transport: { documentTimeout: 1000 } }));
      expect(err.code).toBe('NETWORK');
      expect(err.message).toMatch(/the sigstore bundle of referrer .* too slowly/);
    } finally {
      await proxy.close();
    }
  });
});

describe('credentials on signature fetches', () => {
  it('go to the registry for the .sig manifest, and not to the host a signature payload redirects to', async () => {
    const user = 'sig-user';
    const password = 'sig-password-0123456789';
    const basic = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    const cdnSeen: Array<{ path: string; authorization: string | undefined }> = [];
    const cdn = await startServer((req, res) => {
      cdnSeen.push({ path: req.url ?? '', authorization: req.headers.authorization });
      fetch(`${url}${req.url}`)
        .then(async (upstream) => res.writeHead(upstream.status).end(Buffer.from(await upstream.arrayBuffer())))
        .catch(() => res.destroy());
    });
    const registrySeen: Array<{ path: string; authorization: string | undefined }> = [];
    const setup = await behindProxy((req, res) => {
      registrySeen.push({ path: req.url ?? '', authorization: req.headers.authorization });
      if (req.headers.authorization !== basic) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="signatures"' }).end();
        return true;
      }
      if (!req.url?.includes('/blobs/')) return false;
      res.writeHead(307, { location: `${cdn.url}${req.url}` }).end();
      return true;
    });
    try {
      const payload = await payloadDigest(setup.repo);
      const result = await pull(setup.image, out(), {
        credentials: { username: user, password },
        trust: { verify: { keyPaths: [f.a.path] } },
      });
      expect(result.digest).toBe(f.digest);
      const sig = registrySeen.filter((r) => r.path.endsWith(`/manifests/${signatureTag(f.digest)}`));
      expect(sig.at(-1)?.authorization).toBe(basic);
      expect(cdnSeen.map((r) => r.path)).toContain(`/v2/${setup.repo}/blobs/${payload}`);
      expect(cdnSeen.every((r) => r.authorization === undefined)).toBe(true);
    } finally {
      await setup.proxy.close();
      await cdn.close();
    }
  });
});
