/**
 * The README's three signature set-ups (a cosign key; keyless with identity and issuer; GPG),
 * read from README.md itself and run as written with the built binary: the commands with their
 * file names in the working directory, the policy.json and registries.d files in the places the
 * README names (under $HOME), with the example names and paths swapped for local fixtures (the
 * test registry, the test Fulcio CA and Rekor log, keys made by gpg and skopeo) instead of the
 * internet. Each set-up accepts its signed image and refuses an image signed otherwise.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cosignFixtures, signedKeyless, type CosignFixtures } from './helpers/cosign-images.js';
import { finished, spawnCli } from './helpers/crash-fixtures.js';
import { serveLookaside, tempRoot } from './helpers/gpg.js';
import { makePki } from './helpers/network-fixtures.js';
import { testRegistry } from './helpers/registry.js';
import { signedFixtures, type SignedFixtures } from './helpers/signed-images.js';

interface SetUp {
  /** The `pull-unpack …` commands quoted inline. */
  commands: string[];
  json: string[];
  yaml: string[];
}

/** The numbered set-ups of the README's signature section, in order. */
async function readmeSetUps(): Promise<SetUp[]> {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('Three common set-ups:');
  const section = readme.slice(start, readme.indexOf('Differences from skopeo', start));
  return section
    .split(/^\*\*\d\. /m)
    .slice(1)
    .map((part) => ({
      commands: [...part.matchAll(/`(pull-unpack [^`]+)`/g)].map((m) => m[1]!),
      json: [...part.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!),
      yaml: [...part.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!),
    }));
}

/** `text` with each example value replaced by the fixture's; every example must be there. */
function localized(text: string, values: Record<string, string>): string {
  let out = text;
  for (const [example, local] of Object.entries(values)) {
    expect(out, `the README example no longer mentions ${example}`).toContain(example);
    out = out.split(example).join(local);
  }
  return out;
}

let f: CosignFixtures;
let g: SignedFixtures;
let setUps: SetUp[];
let n = 0;

beforeAll(async () => {
  setUps = await readmeSetUps();
  const root = await tempRoot('trust-readme');
  f = await cosignFixtures(root);
  await mkdir(join(root, 'gpg'));
  g = await signedFixtures(join(root, 'gpg'));
});

afterAll(async () => {
  if (f) await rm(f.root, { recursive: true, force: true });
});

/** A home directory with the README's policy.json and registries.d/acme.yaml in $HOME/.config/containers. */
async function home(policy: string, registriesD?: string): Promise<NodeJS.ProcessEnv> {
  const dir = join(f.root, `home-${++n}`);
  await mkdir(join(dir, '.config', 'containers', 'registries.d'), { recursive: true });
  await writeFile(join(dir, '.config', 'containers', 'policy.json'), JSON.stringify(JSON.parse(policy), null, 2));
  if (registriesD !== undefined) await writeFile(join(dir, '.config', 'containers', 'registries.d', 'acme.yaml'), registriesD);
  return { ...process.env, HOME: dir, XDG_CACHE_HOME: join(dir, '.cache') };
}

/** Runs the built binary with `args`, in the fixtures' directory (where cosign.pub and trusted_root.json are). */
async function run(args: string[], env: NodeJS.ProcessEnv = { ...process.env, XDG_CACHE_HOME: join(f.root, 'cache') }) {
  const cli = spawnCli(args, { env, cwd: f.root });
  const { code } = await finished(cli);
  return { code, stderr: cli.stderr() };
}

/** A README command with IMAGE and DIR filled in. */
function command(template: string, image: string): string[] {
  const words = template.split(/\s+/);
  expect(words[0]).toBe('pull-unpack');
  expect(words.slice(-2)).toEqual(['IMAGE', 'DIR']);
  return [...words.slice(1, -2), image, join(f.root, `out-${++n}`)];
}

function expectRejected(result: { code: number | null; stderr: string }, reason: RegExp): void {
  expect(result.code).toBe(1);
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(/^pull-unpack: .* rejected by /);
  expect(lines[0]).toMatch(reason);
  expect(lines[1]).toMatch(/^hint: /);
}

describe('README set-up 1: a cosign key', () => {
  it('pull-unpack --verify-key cosign.pub IMAGE DIR accepts the image signed with the key and refuses another key', async () => {
    const [flags] = setUps[0]!.commands;
    expect(flags).toBe('pull-unpack --verify-key cosign.pub IMAGE DIR');
    const ok = await run(command(flags!, f.images.signed));
    expect(ok).toEqual({ code: 0, stderr: '' });
    expectRejected(await run(command(flags!, f.images.otherKey)), /rejected by --verify-key cosign\.pub: .*not signed by the trusted key/);
  });

  it('the policy.json and registries.d files accept the scope signed with the key; other keys and other scopes are refused', async () => {
    const { json, yaml } = setUps[0]!;
    const ns = { 'ghcr.io/acme': f.ns };
    const env = await home(localized(json[0]!, { ...ns, '/etc/pki/acme-cosign.pub': f.a.path }), localized(yaml[0]!, ns));
    expect(await run([f.images.signed, join(f.root, `out-${++n}`)], env)).toEqual({ code: 0, stderr: '' });
    expectRejected(
      await run([f.images.otherKey, join(f.root, `out-${++n}`)], env),
      new RegExp(`scope docker "${f.ns}": .*not signed by the trusted key`),
    );
    expectRejected(await run([g.images.signed, join(f.root, `out-${++n}`)], env), /scope default: requirement 1, reject: /);
  });
});

describe('README set-up 2: keyless, with identity and issuer', () => {
  const ISSUER = 'https://accounts.google.com';
  /** An image signed keyless by `email` from the README's issuer. */
  const signedBy = async (email: string): Promise<string> =>
    `${testRegistry().host}/${await f.pushSigned(`readme-${++n}`, signedKeyless(f.fulcio, f.log, email, ISSUER))}:v1`;

  it('--verify-identity, --verify-issuer and --trusted-root trusted_root.json accept that signer and refuse another', async () => {
    const [flags] = setUps[1]!.commands;
    expect(flags).toMatch(/--trusted-root trusted_root\.json IMAGE DIR$/);
    expect(await run(command(flags!, await signedBy('dev@acme.example')))).toEqual({ code: 0, stderr: '' });
    const other = await signedBy('intruder@acme.example');
    expectRejected(await run(command(flags!, other)), /the certificate is for intruder@acme\.example, not dev@acme\.example/);
    expectRejected(
      await run(command(flags!, f.images.keyless)),
      /issued for https:\/\/issuer\.test\.example, not https:\/\/accounts\.google\.com/,
    );
  });

  it('the policy (Fulcio CA and Rekor key files) accepts that signer with the registries.d file of set-up 1, and needs it', async () => {
    const image = await signedBy('dev@acme.example');
    const ns = { 'ghcr.io/acme': f.ns };
    const policy = localized(setUps[1]!.json[0]!, { ...ns, '/etc/pki/fulcio.pem': f.fulcioCaPath, '/etc/pki/rekor.pub': f.rekorKeyPath });
    const registriesD = localized(setUps[0]!.yaml[0]!, ns);
    const env = await home(policy, registriesD);
    expect(await run([image, join(f.root, `out-${++n}`)], env)).toEqual({ code: 0, stderr: '' });
    expectRejected(
      await run([await signedBy('intruder@acme.example'), join(f.root, `out-${++n}`)], env),
      /the certificate is for intruder@acme\.example/,
    );
    const without = await home(policy);
    expectRejected(await run([image, join(f.root, `out-${++n}`)], without), /sets no use-sigstore-attachments: true/);
  });
});

describe('README set-up 3: GPG simple signing', () => {
  it('the signedBy policy and an HTTPS lookaside in registries.d accept the image signed by skopeo --sign-by and refuse another key', async () => {
    const { json, yaml } = setUps[2]!;
    await mkdir(join(f.root, 'pki'));
    const pki = await makePki(join(f.root, 'pki'));
    const lookaside = await serveLookaside(g.lookaside, { cert: await readFile(pki.serverCert), key: await readFile(pki.serverKey) });
    try {
      const policy = localized(json[0]!, { '/etc/pki/rpm-gpg/RPM-GPG-KEY-acme': g.a.armoredPath });
      const registriesD = localized(yaml[0]!, {
        'registry.acme.example': testRegistry().host,
        'https://sigstore.acme.example': lookaside.url,
      });
      const env = await home(policy, registriesD);
      // The test lookaside's certificate is from a test CA, which --cacert adds (a public one needs nothing).
      const cacert = ['--cacert', pki.caCert];
      expect(await run([...cacert, g.images.signed, join(f.root, `out-${++n}`)], env)).toEqual({ code: 0, stderr: '' });
      expectRejected(await run([...cacert, g.images.otherKey, join(f.root, `out-${++n}`)], env), /not among the trusted keys/);
    } finally {
      await lookaside.close();
    }
  });
});
