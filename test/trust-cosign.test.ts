/**
 * Issue 12 end to end for cosign signatures: images on the real registry signed as `cosign
 * sign` stores signatures (the `sha256-<hex>.sig` tag), verified through the CLI (in-process and
 * the built binary) with --verify-key, keyless --verify-identity/--verify-issuer/--trusted-root,
 * and policy.json sigstoreSigned requirements with registries.d; what a refusal leaves behind
 * (nothing), --offline with the registry gone, `cosign save` layouts, inspect and --json.
 */
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull } from '../src/index.js';
import {
  cosignFixtures,
  OIDC_ISSUER,
  SIGNER_EMAIL,
  signedWith,
  writeCosignSaveLayout,
  type CosignFixtures,
} from './helpers/cosign-images.js';
import { spawnCli, finished } from './helpers/crash-fixtures.js';
import { failure } from './helpers/errors.js';
import { tempRoot } from './helpers/gpg.js';
import { startReferrersProxy } from './helpers/referrers-proxy.js';
import { eventSchemaErrors } from './helpers/events-schema.js';
import { runCli, testRegistry, type CliRun } from './helpers/registry.js';
import { keyPair, keySignature, makeBundle, pushBundleReferrer, simpleSigningPayload } from './helpers/sigstore-fixtures.js';

let f: CosignFixtures;
let n = 0;

beforeAll(async () => {
  f = await cosignFixtures(await tempRoot('trust-cosign'));
});

afterAll(async () => {
  if (f) await rm(f.root, { recursive: true, force: true });
});

const out = (): string => join(f.root, `out-${++n}`);
const keyless = (): string[] => ['--verify-identity', SIGNER_EMAIL, '--verify-issuer', OIDC_ISSUER, '--trusted-root', f.trustedRootPath];

/** Writes `policy` to a new file and returns its path. */
async function policyFile(policy: unknown): Promise<string> {
  const path = join(f.root, `policy-${++n}.json`);
  await writeFile(path, JSON.stringify(policy));
  return path;
}

function keyPolicy(extra: Record<string, unknown> = {}): unknown {
  return { default: [{ type: 'sigstoreSigned', keyPath: f.a.path, ...extra }] };
}

function keylessPolicy(email = SIGNER_EMAIL): unknown {
  const fulcio = { caPath: f.fulcioCaPath, oidcIssuer: OIDC_ISSUER, subjectEmail: email };
  return { default: [{ type: 'sigstoreSigned', fulcio, rekorPublicKeyPath: f.rekorKeyPath }] };
}

/** Exit 1, one error line matching `line` (which names the rule that failed), one hint line, nothing else. */
function expectRejected(run: CliRun, line: RegExp, hint = /^hint: \S/): void {
  expect(run.code, run.stderr).toBe(1);
  const lines = run.stderr.trimEnd().split('\n');
  expect(lines, run.stderr).toHaveLength(2);
  expect(lines[0]).toMatch(/^pull-unpack: .* rejected by /);
  expect(lines[0]).toMatch(line);
  expect(lines[1]).toMatch(hint);
}

async function expectUnpacked(run: CliRun, dir: string): Promise<void> {
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  expect(await readFile(join(dir, 'hello.txt'), 'utf8')).toBe(`cosign ${f.ns}\n`);
}

describe('--verify-key: a cosign public key', () => {
  it('accepts an image with a cosign signature by the key, found under its sha256-<hex>.sig tag', async () => {
    const dir = out();
    await expectUnpacked(await runCli(['--verify-key', f.a.path, f.images.signed, dir]), dir);
  });

  it('accepts a digest reference whose signature names the repository with a tag', async () => {
    const dir = out();
    await expectUnpacked(await runCli(['--verify-key', f.a.path, f.images.byDigest, dir]), dir);
  });

  it('rejects an unsigned image: no sigstore signature', async () => {
    const run = await runCli(['--verify-key', f.a.path, f.images.unsigned, out()]);
    expectRejected(
      run,
      new RegExp(`rejected by --verify-key ${f.a.path}: a cosign signature by that key: ${f.digest} has no sigstore signature: no sha256-`),
      /^hint: sign it with cosign sign/,
    );
  });

  it('rejects an image signed with another key, naming the key that was trusted', async () => {
    const run = await runCli(['--verify-key', f.a.path, f.images.otherKey, out()]);
    expectRejected(
      run,
      /its signature is not accepted: sha256-[0-9a-f]{64}\.sig layer 1: not signed by the trusted key SHA256:[0-9a-f]{64}$/,
      /private key/,
    );
  });

  it('rejects a valid signature by the key over another digest', async () => {
    const run = await runCli(['--verify-key', f.a.path, f.images.otherDigest, out()]);
    expectRejected(run, new RegExp(`it signs ${f.digest}, not sha256:`), /the tag may have moved/);
  });

  it('accepts a signature by any one of several --verify-key keys', async () => {
    const dir = out();
    await expectUnpacked(await runCli(['--verify-key', f.b.path, '--verify-key', f.a.path, f.images.signed, dir]), dir);
  });

  it('leaves DIR untouched, creates no new DIR and caches no layer blob when it rejects', async () => {
    const cache = join(f.root, 'reject-cache');
    const existing = join(f.root, 'reject-existing');
    await mkdir(existing);
    await writeFile(join(existing, 'keep.txt'), 'mine\n');
    for (const [dir, extra] of [
      [existing, ['--force']],
      [join(f.root, 'reject-new'), []],
    ] as const) {
      const run = await runCli(['--cache-dir', cache, ...extra, '--verify-key', f.a.path, f.images.otherKey, dir]);
      expect(run.code).toBe(1);
    }
    expect(await readdir(existing)).toEqual(['keep.txt']);
    expect(await readFile(join(existing, 'keep.txt'), 'utf8')).toBe('mine\n');
    await expect(stat(join(f.root, 'reject-new'))).rejects.toMatchObject({ code: 'ENOENT' });
    const layer = join(cache, 'blobs', 'sha256', f.layerDigest.slice('sha256:'.length));
    await expect(stat(layer)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('verifies the index a tag names, not the platform image picked from it', async () => {
    const dir = out();
    const run = await runCli(['--verify-key', f.a.path, f.images.index, dir]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // Signatures of both platform images, none of the index: rejected, naming the index digest.
    const index = JSON.parse((await runCli(['inspect', '--json', f.images.indexImagesOnly])).stdout) as { digest: string };
    const refused = await runCli(['--verify-key', f.a.path, f.images.indexImagesOnly, out()]);
    expectRejected(refused, new RegExp(`: ${index.digest} has no sigstore signature`));
  });
});

describe('keyless: --verify-identity, --verify-issuer and --trusted-root', () => {
  it('accepts a signature whose Fulcio certificate names the identity and issuer, chained to the trusted root and logged in its Rekor', async () => {
    const dir = out();
    await expectUnpacked(await runCli([...keyless(), f.images.keyless, dir]), dir);
  });

  it('rejects a certificate for another identity, one from another issuer, and a key-based signature', async () => {
    expectRejected(
      await runCli([...keyless(), f.images.keylessOther, out()]),
      new RegExp(
        `rejected by --verify-identity ${SIGNER_EMAIL}: a keyless cosign signature from ${OIDC_ISSUER}: .*the certificate is for someone@example\\.com, not ${SIGNER_EMAIL}`,
      ),
      /OIDC issuer/,
    );
    const otherIssuer = [
      '--verify-identity',
      SIGNER_EMAIL,
      '--verify-issuer',
      'https://other.example',
      '--trusted-root',
      f.trustedRootPath,
    ];
    expectRejected(
      await runCli([...otherIssuer, f.images.keyless, out()]),
      /issued for https:\/\/issuer\.test\.example, not https:\/\/other\.example/,
    );
    expectRejected(await runCli([...keyless(), f.images.signed, out()]), /it has no certificate, so it is not a keyless signature/);
  });
});

describe('sigstoreSigned in policy.json, with registries.d use-sigstore-attachments', () => {
  const pullWith = async (policy: unknown, image: string, registriesD = f.registriesD.on): Promise<CliRun> =>
    runCli(['--no-cache', '--policy', await policyFile(policy), '--registries.d', registriesD, image, out()]);

  it('keyPath: accepts the image the key signed, rejects unsigned, other-key and other-digest images naming scope and requirement', async () => {
    expect((await pullWith(keyPolicy(), f.images.signed)).code).toBe(0);
    const scope =
      /rejected by policy .*policy-\d+\.json, scope default: requirement 1, sigstoreSigned \(keyPath .*cosign\.pub, signedIdentity matchRepoDigestOrExact\): /;
    for (const [image, reason] of [
      [f.images.unsigned, /has no sigstore signature/],
      [f.images.otherKey, /not signed by the trusted key/],
      [f.images.otherDigest, /it signs sha256:[0-9a-f]{64}, not sha256:/],
    ] as const) {
      const run = await pullWith(keyPolicy(), image);
      expectRejected(run, scope);
      expect(run.stderr).toMatch(reason);
    }
  });

  it('applies signedIdentity: matchExact refuses a digest reference whose signature names a tag', async () => {
    const run = await pullWith(keyPolicy({ signedIdentity: { type: 'matchExact' } }), f.images.byDigest);
    expectRejected(run, /it is signed for .*\/signed\/app:v1, which the signedIdentity rule does not accept/);
  });

  it('fulcio + rekorPublicKeyPath: accepts the subject email the policy names, rejects another', async () => {
    expect((await pullWith(keylessPolicy(), f.images.keyless)).code).toBe(0);
    expectRejected(
      await pullWith(keylessPolicy(), f.images.keylessOther),
      /sigstoreSigned \(fulcio https:\/\/issuer\.test\.example release@example\.com, .*the certificate is for someone@example\.com/,
    );
  });

  it('with use-sigstore-attachments false, rejects and says which registries.d setting to add', async () => {
    const run = await pullWith(keyPolicy(), f.images.signed, f.registriesD.off);
    expectRejected(
      run,
      new RegExp(
        `: sigstore signatures are not looked up for ${f.ns}/signed/app: registries\\.d \\(${f.registriesD.off}\\) sets no use-sigstore-attachments: true for it$`,
      ),
      /^hint: add "use-sigstore-attachments: true" for the registry/,
    );
  });
});

describe('sigstore bundles attached through the referrers API', () => {
  it('--verify-identity accepts a digest-only bundle; a policy refuses it, and accepts a bundle whose statement names the image', async () => {
    const proxy = await startReferrersProxy(testRegistry().url);
    try {
      const repo = f.images.unsigned.slice(testRegistry().host.length + 1, -':v1'.length);
      const image = `${proxy.host}/${repo}:v1`;
      const leaf = f.fulcio.leaf({ email: SIGNER_EMAIL });
      proxy.add(
        repo,
        f.digest,
        await pushBundleReferrer(testRegistry().url, repo, f.descriptor, makeBundle({ digest: f.digest, log: f.log, leaf })),
      );
      const dir = out();
      await expectUnpacked(await runCli([...keyless(), image, dir]), dir);
      expect(proxy.requests).toContain(`/v2/${repo}/referrers/${f.digest}`);
      const policy = await policyFile(keylessPolicy());
      const args = ['--no-cache', '--policy', policy, '--registries.d', f.registriesD.on];
      expectRejected(await runCli([...args, image, out()]), /it names no image identity \(cosign's bundles sign the digest only\)/);
      const named = makeBundle({ digest: f.digest, log: f.log, leaf, subjectName: image });
      proxy.add(repo, f.digest, await pushBundleReferrer(testRegistry().url, repo, f.descriptor, named));
      const run = await runCli([...args, '--json', image, out()]);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(run.stdout).toContain(`{"kind":"sigstore-bundle","signer":"${SIGNER_EMAIL} from ${OIDC_ISSUER}","verified":true}`);
    } finally {
      await proxy.close();
    }
  });
});

describe('--offline', () => {
  it('verifies a cosign signature read by an earlier online pull, with the registry gone, and still refuses another key', async () => {
    const proxy = await startReferrersProxy(testRegistry().url);
    const image = `${proxy.host}/${await f.pushSigned('offline', signedWith(f.a), (repo) => `${proxy.host}/${repo}:v1`)}:v1`;
    const cache = join(f.root, 'offline-cache');
    try {
      // The image alone in the cache (pulled without verification): its signatures were never read.
      expect((await runCli(['--cache-dir', cache, '--quiet', image, out()])).code).toBe(0);
      const before = await runCli(['--cache-dir', cache, '--offline', '--verify-key', f.a.path, image, out()]);
      expectRejected(before, /has no sigstore signature/, /^hint: offline, only the signatures an earlier online pull read are known/);
      expect((await runCli(['--cache-dir', cache, '--verify-key', f.a.path, image, out()])).code).toBe(0);
    } finally {
      await proxy.close();
    }
    const dir = out();
    const offline = await runCli(['--cache-dir', cache, '--offline', '--json', '--verify-key', f.a.path, image, dir]);
    expect(offline.stderr).toBe('');
    expect(offline.code).toBe(0);
    expect(offline.stdout).toContain(`"signatures":[{"kind":"cosign","signer":"SHA256:`);
    expect(await readFile(join(dir, 'hello.txt'), 'utf8')).toBe(`cosign ${f.ns}\n`);
    const refused = await runCli(['--cache-dir', cache, '--offline', '--verify-key', f.b.path, image, out()]);
    expectRejected(refused, /not signed by the trusted key/);
    // Nothing was asked of the network: the same pull online fails to connect.
    const online = await runCli(['--cache-dir', cache, '--verify-key', f.a.path, image, out()]);
    expect(online.code).toBe(1);
    expect(online.stderr).toMatch(/ECONNREFUSED/);
  });
});

describe('oci: layouts written by cosign save', () => {
  it('pull-unpack --verify-key K oci:DIR verifies the signature the layout carries; another key is refused', async () => {
    const layout = join(f.root, 'cosign-save');
    const key = keyPair();
    const keyPath = join(f.root, 'layout-cosign.pub');
    await writeFile(keyPath, key.pem);
    await writeCosignSaveLayout(layout, (digest) => keySignature(key, simpleSigningPayload(digest, 'registry.example/app:1.0')));
    const dir = out();
    const run = await runCli(['--verify-key', keyPath, `oci:${layout}`, dir]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(await readFile(join(dir, 'hello.txt'), 'utf8')).toBe('saved by cosign\n');
    expectRejected(await runCli(['--verify-key', f.a.path, `oci:${layout}`, out()]), /not signed by the trusted key/);
  });
});

describe('what a verification shows', () => {
  it('inspect lists the cosign signatures: kind, key fingerprint or certificate identity, verified or why not', async () => {
    const good = await runCli(['inspect', '--verify-key', f.a.path, f.images.signed]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain('  signatures: accepted\n');
    expect(good.stdout).toMatch(/\n {6}cosign by SHA256:[0-9a-f]{64}: verified\n/);
    const bad = await runCli(['inspect', '--verify-key', f.a.path, f.images.otherKey]);
    expect(bad.code).toBe(0);
    expect(bad.stdout).toContain('  signatures: REJECTED\n');
    expect(bad.stdout).toMatch(
      /\n {6}cosign by an unknown signer: not accepted: sha256-[0-9a-f]{64}\.sig layer 1: not signed by the trusted key/,
    );
    const other = await runCli(['inspect', '--json', ...keyless(), f.images.keylessOther]);
    const doc = JSON.parse(other.stdout) as { trust: Array<{ accepted: boolean; signatures: unknown[] }> };
    expect(doc.trust[0]!.accepted).toBe(false);
    expect(doc.trust[0]!.signatures).toEqual([
      {
        kind: 'cosign',
        signer: `someone@example.com from ${OIDC_ISSUER}`,
        verified: false,
        reason: expect.stringMatching(/layer 1: the certificate is for someone@example\.com, not release@example\.com$/) as unknown,
      },
    ]);
  });

  it('--json reports signature-verified with the signer, and signature-rejected with the reason and the signatures seen', async () => {
    const events = (run: CliRun): Array<Record<string, unknown>> =>
      run.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const okRun = await runCli(['--json', '--verify-key', f.a.path, f.images.signed, out()]);
    expect(eventSchemaErrors(okRun.stdout).errors).toEqual([]);
    const ok = events(okRun);
    expect(ok.find((e) => e['type'] === 'signature-verified')).toEqual({
      type: 'signature-verified',
      time: expect.stringMatching(/Z$/) as unknown,
      scope: `--verify-key ${f.a.path}`,
      requirement: 'a cosign signature by that key',
      signatures: [{ kind: 'cosign', signer: expect.stringMatching(/^SHA256:[0-9a-f]{64}$/) as unknown, verified: true }],
    });
    const badRun = await runCli(['--json', ...keyless(), f.images.keylessOther, out()]);
    expect(eventSchemaErrors(badRun.stdout).errors).toEqual([]);
    const bad = events(badRun);
    expect(bad.find((e) => e['type'] === 'signature-rejected')).toMatchObject({
      reason: expect.stringMatching(/the certificate is for someone@example\.com/) as unknown,
      signatures: [{ kind: 'cosign', signer: `someone@example.com from ${OIDC_ISSUER}`, verified: false }],
    });
    expect(bad.some((e) => e['type'] === 'config')).toBe(false);
  });

  it('fails with SIGNATURE_REJECTED through the library API, with the same settings', async () => {
    const err = await failure(pull(f.images.otherKey, out(), { trust: { verify: { keyPaths: [f.a.path] } } }));
    expect(err.code).toBe('SIGNATURE_REJECTED');
    expect(err.message).toContain('not signed by the trusted key');
  });
});

describe('the built binary', () => {
  it('bin/pull-unpack.js --verify-key exits 0 for the signed image and 1 with one line and a hint for another key', async () => {
    const dir = out();
    const ok = spawnCli(['--no-cache', '--verify-key', f.a.path, f.images.signed, dir]);
    expect(await finished(ok)).toEqual({ code: 0, signal: null });
    expect(await readFile(join(dir, 'hello.txt'), 'utf8')).toBe(`cosign ${f.ns}\n`);
    const bad = spawnCli(['--no-cache', '--verify-key', f.a.path, f.images.otherKey, out()]);
    expect(await finished(bad)).toEqual({ code: 1, signal: null });
    const lines = bad.stderr().trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/rejected by --verify-key .*: not signed by the trusted key/);
    expect(lines[1]).toMatch(/^hint: /);
  });
});
