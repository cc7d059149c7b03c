/**
 * Signature verification under a containers-policy.json with GPG simple signatures made by
 * `skopeo copy --sign-by` (real gpg keys, real registry, real lookaside): each way an image must
 * be refused, what a refusal leaves behind (nothing), the HTTP lookaside and its offline cache,
 * the default policy files, --insecure-policy, the JSON events and inspect's listing.
 */
import { cp, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import { failure } from './helpers/errors.js';
import { eventSchemaErrors } from './helpers/events-schema.js';
import { serveLookaside, tempRoot } from './helpers/gpg.js';
import { trickle } from './helpers/hostile-servers.js';
import { makePki } from './helpers/network-fixtures.js';
import { spawnCli } from './helpers/crash-fixtures.js';
import { runCli, startServer, testRegistry } from './helpers/registry.js';
import { signedFixtures, type SignedFixtures } from './helpers/signed-images.js';

let f: SignedFixtures;
let n = 0;

beforeAll(async () => {
  f = await signedFixtures(await tempRoot('trust'));
});

afterAll(async () => {
  if (f) await rm(f.root, { recursive: true, force: true });
});

/** Writes `policy` to a new file and returns its path. */
async function policyFile(policy: unknown): Promise<string> {
  const path = join(f.root, `policy-${++n}.json`);
  await writeFile(path, typeof policy === 'string' ? policy : JSON.stringify(policy));
  return path;
}

function signedByA(extra: Record<string, unknown> = {}): unknown {
  return { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: f.a.publicKeyPath, ...extra }] };
}

/** Pulls with the policy; returns the CLI run. */
async function pullWith(policy: unknown, image: string, extra: string[] = []): Promise<Awaited<ReturnType<typeof runCli>>> {
  const out = join(f.root, `out-${++n}`);
  return runCli(['--no-cache', '--policy', await policyFile(policy), '--registries.d', f.registriesD, ...extra, image, out]);
}

/** A registries.d directory whose default-docker lookaside is the URL `lookaside`. */
async function registriesFor(lookaside: string): Promise<string> {
  const dir = join(f.root, `registries.d-${++n}`);
  await mkdir(dir);
  await writeFile(join(dir, 'a.yaml'), `default-docker:\n  lookaside: ${lookaside}\n`);
  return dir;
}

/** Pulls `image` under signedBy A, its signatures read from `lookaside`. */
async function pullFrom(lookaside: string, image = f.images.signed): Promise<Awaited<ReturnType<typeof runCli>>> {
  const policy = await policyFile(signedByA());
  return runCli(['--no-cache', '--policy', policy, '--registries.d', await registriesFor(lookaside), image, join(f.root, `out-${++n}`)]);
}

/**
 * Signatures that could not be read: exit 1, one line saying which check could not be made and
 * why, and a hint; no verdict on the image.
 */
function expectUnreadable(run: { code: number; stderr: string }, reason: RegExp, hint = /^hint: /): void {
  expect(run.code).toBe(1);
  const [line, hintLine, ...rest] = run.stderr.trimEnd().split('\n');
  expect(line).toMatch(/^pull-unpack: cannot check policy .*, scope default: requirement 1, signedBy \(GPGKeys, /);
  expect(line).toMatch(reason);
  expect(line).not.toContain('rejected');
  expect(hintLine).toMatch(hint);
  expect(rest).toEqual([]);
}

function expectRejected(run: { code: number; stderr: string }, reason: RegExp): void {
  expect(run.code).toBe(1);
  const [line, hint, ...rest] = run.stderr.trimEnd().split('\n');
  expect(line).toMatch(/^pull-unpack: .* rejected by policy .*, scope default: requirement 1, /);
  expect(line).toMatch(reason);
  expect(hint).toMatch(/^hint: /);
  expect(rest).toEqual([]);
}

describe('images refused under a signedBy policy', () => {
  it('accepts the image signed by the trusted key', async () => {
    const run = await pullWith(signedByA(), f.images.signed);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
  });

  it('rejects an unsigned image: no signature exists', async () => {
    expectRejected(await pullWith(signedByA(), f.images.unsigned), /a signature was required, but no signature exists \(lookaside file:/);
  });

  it('rejects an image signed by another key', async () => {
    expectRejected(await pullWith(signedByA(), f.images.otherKey), /signed by key [0-9A-F]{16}, which is not among the trusted keys/);
  });

  it('rejects a valid signature over another digest', async () => {
    expectRejected(await pullWith(signedByA(), f.images.otherDigest), new RegExp(`is for digest ${f.digest}, not sha256:`));
  });

  it('rejects a digest reference under matchExact (the signature names a tag)', async () => {
    const run = await pullWith(signedByA({ signedIdentity: { type: 'matchExact' } }), f.images.byDigest);
    expectRejected(run, /is for identity ".*\/signed\/app:v1", which signedIdentity does not accept/);
  });

  it('rejects repo:tag when the signature is for another tag', async () => {
    expectRejected(
      await pullWith(signedByA(), f.images.retagged),
      /is for identity ".*\/signed\/app:v1", which signedIdentity does not accept/,
    );
  });

  it('rejects a tampered signature payload', async () => {
    const repo = f.images.signed.slice(testRegistry().host.length + 1, -':v1'.length);
    const dir = join(f.root, 'tampered-lookaside', `${repo}@${f.digest.replace(':', '=')}`);
    await mkdir(dir, { recursive: true });
    const original = await readFile(join(f.lookaside, `${repo}@${f.digest.replace(':', '=')}`, 'signature-1'));
    const tampered = Buffer.from(original);
    tampered[Math.floor(tampered.length / 2)]! ^= 0x01;
    await writeFile(join(dir, 'signature-1'), tampered);
    const run = await pullFrom(`file://${join(f.root, 'tampered-lookaside')}`);
    expectRejected(run, /not an OpenPGP signed message|does not verify/);
  });

  it('rejects every image under a reject requirement', async () => {
    expectRejected(
      await pullWith({ default: [{ type: 'reject' }] }, f.images.signed),
      /reject: the policy rejects every image in this scope/,
    );
  });

  it('rejects a sigstoreSigned requirement when registries.d does not enable use-sigstore-attachments', async () => {
    const key = join(f.root, 'cosign.pub');
    await writeFile(key, '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n');
    const run = await pullWith({ default: [{ type: 'sigstoreSigned', keyPath: key }] }, f.images.signed);
    expectRejected(
      run,
      /sigstoreSigned \(keyPath .*\): sigstore signatures are not looked up for .*\/signed\/app: registries\.d \(.*\) sets no use-sigstore-attachments: true for it/,
    );
  });

  it('leaves DIR and the cache without layer blobs when it rejects a pull', async () => {
    const cache = join(f.root, 'reject-cache');
    const dir = join(f.root, 'reject-dir');
    await mkdir(dir);
    await writeFile(join(dir, 'keep.txt'), 'mine\n');
    const policy = await policyFile(signedByA());
    const run = await runCli([
      '--cache-dir',
      cache,
      '--force',
      '--policy',
      policy,
      '--registries.d',
      f.registriesD,
      f.images.unsigned,
      dir,
    ]);
    expect(run.code).toBe(1);
    expect(await readdir(dir)).toEqual(['keep.txt']);
    expect(await readFile(join(dir, 'keep.txt'), 'utf8')).toBe('mine\n');
    const layer = join(cache, 'blobs', 'sha256', f.layerDigest.slice('sha256:'.length));
    await expect(stat(layer)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('verifies the index a tag names, not the platform image chosen from it', async () => {
    const repo = f.images.index.slice(testRegistry().host.length + 1, -':v1'.length);
    const { stdout } = await runCli(['inspect', '--json', f.images.index]);
    const index = (JSON.parse(stdout) as { digest: string }).digest;
    const onlyIndex = join(f.root, 'only-index-lookaside');
    const onlyImages = join(f.root, 'only-images-lookaside');
    for (const name of await readdir(join(f.lookaside, repo, '..'))) {
      if (!name.startsWith(`${repo.split('/').pop()!}@`)) continue;
      const isIndex = name.endsWith(index.replace(':', '='));
      const target = join(isIndex ? onlyIndex : onlyImages, repo, '..', name);
      await cp(join(f.lookaside, repo, '..', name), target, { recursive: true });
    }
    // skopeo copy --all --sign-by signed the index and both platform images.
    expect(await readdir(join(onlyImages, repo, '..'))).toHaveLength(2);
    expect((await pullFrom(`file://${onlyIndex}`, f.images.index)).code).toBe(0);
    expectRejected(await pullFrom(`file://${onlyImages}`, f.images.index), /a signature was required, but no signature exists/);
  });

  it('fails with SIGNATURE_REJECTED through the library API', async () => {
    const err = await failure(
      pull(f.images.otherKey, join(f.root, 'api-out'), {
        trust: { policyPath: await policyFile(signedByA()), registriesDir: f.registriesD },
      }),
    );
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toMatch(/rejected by policy .*scope default: requirement 1, signedBy/);
  });
});

describe('invalid policy files', () => {
  it('refuses a policy with an unknown field, before contacting the registry', async () => {
    const run = await pullWith({ default: [{ type: 'insecureAcceptAnything' }], transport: {} }, `127.0.0.1:1/never/contacted:v1`);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^pull-unpack: invalid policy in .*policy-\d+\.json: the policy: unknown key "transport"\nhint: /);
  });

  it('refuses a policy with an unknown field inside a requirement', async () => {
    const run = await pullWith(signedByA({ keyPth: '/x' }), f.images.signed);
    expect(run.stderr).toMatch(/invalid policy in .*: "default" requirement 1 \(signedBy\): unknown key "keyPth"/);
  });

  it('refuses a policy with a duplicated field, which JSON.parse would silently keep the last of', async () => {
    const text = `{"default": [{"type": "reject"}], "default": [{"type": "insecureAcceptAnything"}]}`;
    const run = await pullWith(text, f.images.signed);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^pull-unpack: invalid policy in .*: duplicate key "default"\n/);
  });

  it('refuses a missing --policy file', async () => {
    const run = await runCli(['--no-cache', '--policy', join(f.root, 'absent.json'), f.images.signed, join(f.root, 'absent-out')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^pull-unpack: cannot read the policy file .*absent\.json/);
  });
});

describe('lookaside over HTTP', () => {
  it('verifies signatures from an HTTP lookaside without sending it credentials', async () => {
    const lookaside = await serveLookaside(f.lookaside);
    try {
      const run = await pullFrom(lookaside.url);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(lookaside.requests.map((r) => new URL(r.url!, 'http://x').pathname.replace(/^.*\//, ''))).toEqual([
        'signature-1',
        'signature-2',
      ]);
      expect(lookaside.requests.every((r) => r.headers.authorization === undefined)).toBe(true);
    } finally {
      await lookaside.close();
    }
  });

  it('reads an HTTPS lookaside through the project transport: trusted with --cacert, refused without', async () => {
    const pkiDir = join(f.root, 'pki');
    await mkdir(pkiDir);
    const pki = await makePki(pkiDir);
    const [cert, key] = await Promise.all([readFile(pki.serverCert), readFile(pki.serverKey)]);
    const server = await serveLookaside(f.lookaside, { cert, key });
    try {
      const url = server.url;
      expectUnreadable(await pullFrom(url), /cannot reach 127\.0\.0\.1:\d+ for the signature https:.*(certificate|CERT)/i, /--cacert/);
      const policy = await policyFile(signedByA());
      const run = await runCli([
        '--no-cache',
        '--cacert',
        pki.caCert,
        '--policy',
        policy,
        '--registries.d',
        await registriesFor(url),
        f.images.signed,
        join(f.root, 'https-out'),
      ]);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('SIGINT while a lookaside does not answer: exit 130 at once, nothing left behind', async () => {
    let asked!: () => void;
    const requested = new Promise<void>((resolve) => (asked = resolve));
    const server = await startServer(() => asked()); // never answers
    const dest = join(f.root, 'sigint-out');
    try {
      const policy = await policyFile(signedByA());
      const cli = spawnCli(['--no-cache', '--policy', policy, '--registries.d', await registriesFor(server.url), f.images.signed, dest]);
      await requested;
      cli.child.kill('SIGINT');
      expect(await cli.exited).toEqual({ code: 130, signal: null });
      expect(cli.stderr()).toMatch(/abort/i);
      await expect(stat(dest)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await server.close();
    }
  });

  it('fails with REGISTRY_ERROR when the lookaside answers an error: never "no signatures", nor a verdict on the image', async () => {
    const server = await startServer((_req, res) => {
      res.statusCode = 500;
      res.end('broken');
    });
    try {
      expectUnreadable(await pullFrom(server.url), /the lookaside 127\.0\.0\.1:\d+ failed to serve http:.*\/signature-1: HTTP 500$/);
      const policyPath = await policyFile(signedByA());
      const registriesDir = await registriesFor(server.url);
      const err = await failure(pull(f.images.signed, join(f.root, `out-${++n}`), { trust: { policyPath, registriesDir } }));
      expect(err.code).toBe('REGISTRY_ERROR');
    } finally {
      await server.close();
    }
  });

  it('fails with NETWORK when the lookaside cannot be reached, as when the registry is down', async () => {
    expectUnreadable(
      await pullFrom('http://127.0.0.1:1/sigs'),
      /cannot reach 127\.0\.0\.1:1 for the signature http:\/\/127\.0\.0\.1:1\/sigs\/.*\/signature-1: .*ECONNREFUSED/,
    );
    const policyPath = await policyFile(signedByA());
    const registriesDir = await registriesFor('http://127.0.0.1:1/sigs');
    const err = await failure(pull(f.images.signed, join(f.root, `out-${++n}`), { trust: { policyPath, registriesDir } }));
    expect(err.code).toBe('NETWORK');
  });

  it('fails with NETWORK when the lookaside sends a signature slower than the document deadline', async () => {
    const server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': '4096' });
      trickle(res, Buffer.alloc(4096, 'x'), 1, 50);
    });
    try {
      const policyPath = await policyFile(signedByA());
      const registriesDir = await registriesFor(server.url);
      const err = await failure(
        pull(f.images.signed, join(f.root, `out-${++n}`), { trust: { policyPath, registriesDir }, transport: { documentTimeout: 1000 } }),
      );
      expect(err.code).toBe('NETWORK');
      expect(err.message).toMatch(/sent the signature http:.*\/signature-1 too slowly: not complete within 1 s/);
    } finally {
      await server.close();
    }
  });

  it('rejects a lookaside signature over the 4 MiB size cap', async () => {
    const big = join(f.root, 'big-lookaside');
    await cp(f.lookaside, big, { recursive: true });
    const repo = f.images.signed.slice(testRegistry().host.length + 1, -':v1'.length);
    await writeFile(join(big, `${repo}@${f.digest.replace(':', '=')}`, 'signature-2'), Buffer.alloc(4 * 1024 * 1024 + 1));
    const lookaside = await serveLookaside(big);
    try {
      const run = await pullFrom(lookaside.url);
      expectRejected(run, /signature-2 is 4194305 bytes, over the 4194304-byte limit/);
    } finally {
      await lookaside.close();
    }
  });

  it('verifies offline exactly as online: the HTTP lookaside signatures come from the cache', async () => {
    const lookaside = await serveLookaside(f.lookaside);
    const registriesD = await registriesFor(lookaside.url);
    const cache = join(f.root, 'offline-cache');
    const policy = await policyFile(signedByA());
    const args = ['--cache-dir', cache, '--policy', policy, '--registries.d', registriesD];
    // The image alone in the cache (pulled without verification): its signatures were never read.
    const unverified = await runCli(['--cache-dir', cache, '--insecure-policy', '--quiet', f.images.signed, join(f.root, 'offline-first')]);
    expect(unverified.code).toBe(0);
    const notCached = await runCli([...args, '--offline', f.images.signed, join(f.root, 'offline-before')]);
    expectRejected(notCached, /signatures at http:.* are not in the cache: verify once without --offline/);
    const online = await runCli([...args, f.images.signed, join(f.root, 'online-out')]);
    expect(online.code).toBe(0);
    await lookaside.close();
    const offline = await runCli([...args, '--offline', '--json', f.images.signed, join(f.root, 'offline-out')]);
    expect(offline.stderr).toBe('');
    expect(offline.code).toBe(0);
    expect(offline.stdout).toContain(`"signatures":[{"kind":"simple-signing","signer":"${f.a.fingerprint}","verified":true}]`);
  });
});

describe('trust flags on the command line', () => {
  it('refuses --policy with --insecure-policy, and --verify-issuer or --trusted-root without --verify-identity', async () => {
    const both = await runCli(['--policy', '/p.json', '--insecure-policy', 'alpine', join(f.root, 'flags-out')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^pull-unpack: --policy and --insecure-policy contradict each other/);
    for (const flag of ['--verify-issuer', '--trusted-root']) {
      const run = await runCli([flag, 'x', 'alpine', join(f.root, 'flags-out')]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^pull-unpack: --verify-issuer and --trusted-root go with --verify-identity/);
    }
  });
});

describe('default policy files and --insecure-policy', () => {
  it('honours $HOME/.config/containers/policy.json when no --policy is given', async () => {
    const home = join(f.root, 'home-policy');
    await mkdir(join(home, '.config', 'containers'), { recursive: true });
    await writeFile(join(home, '.config', 'containers', 'policy.json'), JSON.stringify({ default: [{ type: 'reject' }] }));
    const env = { ...process.env, HOME: home };
    const run = await runCli(['--no-cache', f.images.signed, join(f.root, 'home-out')], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `rejected by policy ${join(home, '.config', 'containers', 'policy.json')}, scope default: requirement 1, reject`,
    );
  });

  it('--insecure-policy ignores the policy files and says so once', async () => {
    const home = join(f.root, 'home-policy');
    const env = { ...process.env, HOME: home };
    const run = await runCli(['--no-cache', '--insecure-policy', f.images.signed, join(f.root, 'insecure-out')], env);
    expect(run.code).toBe(0);
    expect(run.stderr.match(/--insecure-policy/g)).toHaveLength(1);
    expect(run.stderr).toMatch(/^warning: --insecure-policy: policy files are ignored/);
  });
});

describe('what a verification shows', () => {
  it('--json reports signature-verified with the signer, and signature-rejected with the reason', async () => {
    const ok = await pullWith(signedByA(), f.images.signed, ['--json']);
    expect(eventSchemaErrors(ok.stdout).errors).toEqual([]);
    const events = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const verified = events.find((e) => e['type'] === 'signature-verified');
    expect(verified).toMatchObject({
      scope: expect.stringContaining('scope default') as unknown,
      signatures: [{ kind: 'simple-signing', signer: f.a.fingerprint, verified: true }],
    });
    expect(events.findIndex((e) => e['type'] === 'signature-verified')).toBeLessThan(events.findIndex((e) => e['type'] === 'config'));
    const bad = await pullWith(signedByA(), f.images.otherKey, ['--json']);
    expect(eventSchemaErrors(bad.stdout).errors).toEqual([]);
    const rejected = bad.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e['type'] === 'signature-rejected');
    expect(rejected).toMatchObject({
      reason: expect.stringMatching(/not among the trusted keys/) as unknown,
      signatures: [{ kind: 'simple-signing', verified: false }],
    });
    expect(bad.stdout).not.toContain('"type":"config"');
  });

  it('inspect lists the signatures of the digest: kind, signer, verified or why not', async () => {
    const policy = await policyFile({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: [f.a.publicKeyPath] }] });
    const good = await runCli(['inspect', '--policy', policy, '--registries.d', f.registriesD, f.images.signed]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain(`  signatures: accepted\n`);
    expect(good.stdout).toContain(`      simple-signing by ${f.a.fingerprint}: verified\n`);
    const bad = await runCli(['inspect', '--json', '--policy', policy, '--registries.d', f.registriesD, f.images.otherKey]);
    expect(bad.code).toBe(0);
    const doc = JSON.parse(bad.stdout) as { trust: Array<{ accepted: boolean; signatures: Array<{ signer: string; reason: string }> }> };
    expect(doc.trust[0]!.accepted).toBe(false);
    expect(doc.trust[0]!.signatures[0]!.signer).toBe(`key ID ${f.b.fingerprint.slice(-16)}`);
    expect(doc.trust[0]!.signatures[0]!.reason).toMatch(/not among the trusted keys/);
  });
});
