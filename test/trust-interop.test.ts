/**
 * Issue 12's acceptance test: for a matrix of (policy.json, image) pairs over GPG simple
 * signatures made by `skopeo copy --sign-by` into a lookaside, `pull-unpack --policy P
 * --registries.d D IMAGE DIR` accepts and rejects exactly as `skopeo copy --policy P
 * --registries.d D docker://IMAGE dir:...` does (Debian's skopeo, containers/image inside).
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skopeoAccepts, tempRoot } from './helpers/gpg.js';
import { runCli, testRegistry } from './helpers/registry.js';
import { signedFixtures, type SignedFixtures } from './helpers/signed-images.js';

const run = promisify(execFile);
let f: SignedFixtures;

beforeAll(async () => {
  f = await signedFixtures(await tempRoot('trust-interop'));
});

afterAll(async () => {
  if (f) await rm(f.root, { recursive: true, force: true });
});

type Requirement = Record<string, unknown>;

/** The policies of the matrix, by name; each a function of the fixtures. */
function policies(): Record<string, unknown> {
  const { host } = testRegistry();
  const { a, b, ns } = f;
  const by = (key: typeof a, extra: Requirement = {}): Requirement => ({
    type: 'signedBy',
    keyType: 'GPGKeys',
    keyPath: key.publicKeyPath,
    ...extra,
  });
  const reject = [{ type: 'reject' }];
  const accept = [{ type: 'insecureAcceptAnything' }];
  const identity = (signedIdentity: Requirement): Requirement[] => [by(a, { signedIdentity })];
  return {
    insecureAcceptAnything: { default: accept },
    reject: { default: reject },
    'signedBy A': { default: [by(a)] },
    'signedBy B': { default: [by(b)] },
    'signedBy A armored': { default: [{ ...by(a), keyPath: a.armoredPath }] },
    'signedBy keyPaths [B, A]': { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: [b.publicKeyPath, a.armoredPath] }] },
    'signedBy keyData A': { default: [{ type: 'signedBy', keyType: 'GPGKeys', keyData: 'KEYDATA_A' }] },
    matchExact: { default: identity({ type: 'matchExact' }) },
    matchRepoDigestOrExact: { default: identity({ type: 'matchRepoDigestOrExact' }) },
    matchRepository: { default: identity({ type: 'matchRepository' }) },
    'exactReference signed/app:v1': { default: identity({ type: 'exactReference', dockerReference: `${ns}/signed/app:v1` }) },
    'exactReference upstream/app:v1': { default: identity({ type: 'exactReference', dockerReference: `${ns}/upstream/app:v1` }) },
    'exactRepository signed/app': { default: identity({ type: 'exactRepository', dockerRepository: `${ns}/signed/app` }) },
    'remapIdentity mirror -> upstream': {
      default: identity({ type: 'remapIdentity', prefix: `${ns}/mirror`, signedPrefix: `${ns}/upstream` }),
    },
    'repository scope': { default: reject, transports: { docker: { [`${ns}/signed/app`]: [by(a)] } } },
    'tag scope beats repository scope': {
      default: accept,
      transports: { docker: { [`${ns}/signed/app:v1`]: [by(a)], [`${ns}/signed/app`]: reject } },
    },
    'namespace scope': { default: reject, transports: { docker: { [`${ns}/signed`]: [by(a)] } } },
    'registry scope': { default: accept, transports: { docker: { [host]: [by(b)] } } },
    'wildcard scope': { default: reject, transports: { docker: { '*.0.1': [by(a)], '*.1': reject } } },
    'most specific scope wins': { default: accept, transports: { docker: { [host]: reject, [ns]: [by(a)] } } },
    'transport default': { default: reject, transports: { docker: { '': [by(a)] } } },
    'global default behind unmatched scopes': {
      default: accept,
      transports: { docker: { 'other.example/x': reject }, oci: { '': reject } },
    },
    'both keys required': { default: [by(a), by(b)] },
    'accept then reject': { default: [...accept, ...reject] },
  };
}

describe('pull-unpack and skopeo copy make the same decision on GPG simple signatures', () => {
  it('accepts and rejects every (policy, image) pair of the matrix exactly as skopeo copy --policy --registries.d', async () => {
    const keyData = (await readFile(f.a.publicKeyPath)).toString('base64');
    const rows: string[] = [];
    const disagreements: string[] = [];
    let accepted = 0;
    for (const [name, policy] of Object.entries(policies())) {
      const file = join(f.root, `policy-${name.replace(/\W+/g, '-')}.json`);
      await writeFile(file, JSON.stringify(policy).replace('KEYDATA_A', keyData));
      for (const [label, image] of Object.entries(f.images)) {
        const out = join(f.root, 'out');
        await rm(out, { recursive: true, force: true });
        const skopeo = await skopeoAccepts(file, f.registriesD, image, join(f.root, 'skopeo-out'));
        await rm(join(f.root, 'skopeo-out'), { recursive: true, force: true });
        const ours = await runCli(['--no-cache', '--quiet', '--policy', file, '--registries.d', f.registriesD, image, out]);
        if (ours.code !== 0) expect(ours.stderr, `${name} / ${label}`).toMatch(/^pull-unpack: .* rejected by policy /);
        const agree = skopeo.accepted === (ours.code === 0);
        if (ours.code === 0) accepted++;
        rows.push(
          `${agree ? ' ' : '!'} ${name.padEnd(40)} ${label.padEnd(12)} skopeo ${skopeo.accepted ? 'accept' : 'reject'} ours ${ours.code === 0 ? 'accept' : 'reject'}`,
        );
        if (!agree) disagreements.push(`${name} / ${label}: skopeo ${skopeo.stderr.trim()} | ours ${ours.stderr.trim()}`);
      }
    }
    console.log(`[trust-interop]\n${rows.join('\n')}`);
    expect(disagreements).toEqual([]);
    // The matrix must exercise both outcomes in earnest.
    expect(accepted).toBeGreaterThan(20);
    expect(rows.length - accepted).toBeGreaterThan(60);
  }, 600_000);
});

describe('local sources are scoped as c/image scopes them', () => {
  it('decides like skopeo copy for oci: layouts (by resolved path) and docker-archive: files (default scopes only)', async () => {
    const layout = join(f.root, 'layouts', 'app');
    await mkdir(join(f.root, 'layouts'));
    const pulled = await runCli(['--no-cache', '--quiet', '--insecure-policy', '--output', 'oci', f.images.signed, layout]);
    expect(pulled.stderr).toBe('');
    expect(pulled.code).toBe(0);
    await symlink(join(f.root, 'layouts'), join(f.root, 'layouts-link'));
    const archive = join(f.root, 'app.tar');
    await run('skopeo', [
      'copy',
      '-q',
      '--insecure-policy',
      '--src-tls-verify=false',
      `docker://${f.images.signed}`,
      `docker-archive:${archive}:app:v1`,
    ]);
    const accept = [{ type: 'insecureAcceptAnything' }];
    const reject = [{ type: 'reject' }];
    const signed = [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: f.a.publicKeyPath }];
    const named = [{ ...signed[0], signedIdentity: { type: 'exactRepository', dockerRepository: 'docker.io/library/app' } }];
    const policies: Record<string, unknown> = {
      'oci layout scope': { default: accept, transports: { oci: { [layout]: reject } } },
      'oci parent scope': { default: reject, transports: { oci: { [join(f.root, 'layouts')]: accept } } },
      'oci transport default': { default: reject, transports: { oci: { '': accept } } },
      'docker scopes do not apply': { default: accept, transports: { docker: { '': reject } } },
      'docker-archive default': { default: accept, transports: { 'docker-archive': { '': reject } } },
      'signedBy (no GPG signatures in local sources)': { default: signed },
      'signedBy exactRepository': { default: named },
    };
    const images = [`oci:${layout}:v1`, `oci:${join(f.root, 'layouts-link', 'app')}:v1`, `docker-archive:${archive}:app:v1`];
    const disagreements: string[] = [];
    const rows: string[] = [];
    for (const [name, policy] of Object.entries(policies)) {
      const file = join(f.root, `local-${name.replace(/\W+/g, '-')}.json`);
      await writeFile(file, JSON.stringify(policy));
      for (const image of images) {
        await rm(join(f.root, 'local-out'), { recursive: true, force: true });
        await rm(join(f.root, 'local-skopeo'), { recursive: true, force: true });
        const skopeo = await skopeoCopyAccepts(file, image, join(f.root, 'local-skopeo'));
        const ours = await runCli(['--no-cache', '--quiet', '--policy', file, image, join(f.root, 'local-out')]);
        rows.push(
          `${name.padEnd(46)} ${image.replace(f.root, '').padEnd(34)} skopeo ${skopeo ? 'accept' : 'reject'} ours ${ours.code === 0 ? 'accept' : 'reject'}`,
        );
        if (skopeo !== (ours.code === 0)) disagreements.push(`${rows.at(-1)!}: ${ours.stderr}`);
      }
    }
    console.log(`[trust-interop local]\n${rows.join('\n')}`);
    expect(disagreements).toEqual([]);
  }, 300_000);
});

async function skopeoCopyAccepts(policy: string, image: string, out: string): Promise<boolean> {
  return run('skopeo', ['copy', '-q', '--policy', policy, image, `dir:${out}`]).then(
    () => true,
    () => false,
  );
}
