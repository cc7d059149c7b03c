/**
 * requirementFromVerifyOptions: the --verify-key / --verify-identity --verify-issuer
 * --trusted-root flags read from real files into a sigstoreSigned requirement, with a clear
 * USAGE error for each mistake; and a requirement from a trusted_root.json verifying a keyless
 * signature in the real test registry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseReference } from '../src/image/reference.js';
import { RegistryClient } from '../src/registry/client.js';
import { registrySource } from '../src/sources/source.js';
import { requirementFromVerifyOptions, verifySigstoreSigned } from '../src/trust/sigstore.js';
import type { VerifyOptions } from '../src/trust/types.js';
import { pushImage } from '../testdata/lib/image-builder.mjs';
import { failure } from './helpers/errors.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import {
  keylessSignature,
  keyPair,
  OIDC_ISSUER,
  pushSignatures,
  simpleSigningPayload,
  TestFulcio,
  TestRekor,
  trustedRoot as makeTrustedRoot,
} from './helpers/sigstore-fixtures.js';

const EMAIL = 'release@example.com';
const fulcio = new TestFulcio();
const log = new TestRekor();
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'verify-options-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function file(name: string, content: string | object): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return path;
}

/** sigstore's trusted_root.json for the test Fulcio and Rekor. */
function trustedRoot(overrides: Record<string, unknown> = {}): object {
  return makeTrustedRoot(fulcio, log, overrides);
}

const options = (o: Partial<VerifyOptions>): VerifyOptions => ({ keyPaths: [], ...o });

describe('requirementFromVerifyOptions: --verify-key', () => {
  it('reads every --verify-key PEM public key into a matchRepoDigestOrExact requirement', async () => {
    const [ec, rsa] = [keyPair('ec'), keyPair('rsa')];
    const paths = [await file('cosign.pub', ec.pem), await file('rsa.pub', `comment line\n${rsa.pem}`)];
    const requirement = await requirementFromVerifyOptions(options({ keyPaths: paths }));
    expect(requirement).toEqual({
      type: 'sigstoreSigned',
      publicKeys: [ec.pem, rsa.pem],
      rekorPublicKeys: [],
      signedIdentity: { type: 'matchRepoDigestOrExact' },
      acceptDigestOnlySignatures: true,
    });
  });

  it('names a --verify-key file that does not exist', async () => {
    const err = await failure(requirementFromVerifyOptions(options({ keyPaths: [join(dir, 'missing.pub')] })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toBe(`cannot read --verify-key ${join(dir, 'missing.pub')}: no such file`);
  });

  it('refuses a private key given as --verify-key, pointing at the public one', async () => {
    const pem = keyPair().privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const path = await file('cosign.key', pem);
    const err = await failure(requirementFromVerifyOptions(options({ keyPaths: [path] })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toContain(
      'is not a PEM public key (-----BEGIN PUBLIC KEY-----) (it holds a private key: give the public one, e.g. cosign.pub)',
    );
  });

  it('refuses a --verify-key file whose PEM does not parse', async () => {
    const path = await file('broken.pub', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n');
    const err = await failure(requirementFromVerifyOptions(options({ keyPaths: [path] })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toContain(`--verify-key ${path} is not a valid PEM public key`);
  });

  it('refuses --verify-key together with --verify-identity', async () => {
    const path = await file('both.pub', keyPair().pem);
    const err = await failure(requirementFromVerifyOptions(options({ keyPaths: [path], identity: EMAIL })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toContain('not both');
  });
});

describe('requirementFromVerifyOptions: keyless', () => {
  it('reads the Fulcio CA chain and the Rekor key from trusted_root.json', async () => {
    const root = await file('trusted_root.json', trustedRoot());
    const requirement = await requirementFromVerifyOptions(options({ identity: EMAIL, issuer: OIDC_ISSUER, trustedRootPath: root }));
    expect(requirement.fulcio).toEqual({
      caCertificates: fulcio.intermediate.pem + fulcio.root.pem,
      oidcIssuer: OIDC_ISSUER,
      subjectEmail: EMAIL,
    });
    expect(requirement.rekorPublicKeys).toEqual([log.key.pem]);
    expect(requirement.publicKeys).toEqual([]);
  });

  it('takes a URI identity as a URI SAN', async () => {
    const root = await file('trusted_root_uri.json', trustedRoot());
    const uri = 'https://github.com/example/app/.github/workflows/release.yml@refs/heads/main';
    const requirement = await requirementFromVerifyOptions(options({ identity: uri, issuer: OIDC_ISSUER, trustedRootPath: root }));
    expect(requirement.fulcio).toMatchObject({ subjectUri: uri });
    expect(requirement.fulcio?.subjectEmail).toBeUndefined();
  });

  it('verifies a keyless signature in the registry with the requirement read from trusted_root.json', async () => {
    const { host, url } = testRegistry();
    const repo = uniqueRepo('trusted-root');
    const { descriptor } = await pushImage(url, repo, 'v1', {});
    const name = `${host}/${repo}:v1`;
    const payload = simpleSigningPayload(descriptor.digest, name);
    await pushSignatures(url, repo, descriptor.digest, [keylessSignature(fulcio, fulcio.leaf({ email: EMAIL }), log, payload)]);
    const root = await file('trusted_root_e2e.json', trustedRoot());
    const requirement = await requirementFromVerifyOptions(options({ identity: EMAIL, issuer: OIDC_ISSUER, trustedRootPath: root }));
    const ctx = {
      source: registrySource(new RegistryClient({ registry: host }), repo),
      reference: parseReference(name),
      digest: descriptor.digest,
    };
    const result = await verifySigstoreSigned(ctx, requirement, (signed) => signed === name);
    expect(result.accepted.signer).toBe(`${EMAIL} from ${OIDC_ISSUER}`);
    const other = await requirementFromVerifyOptions(
      options({ identity: 'someone@example.com', issuer: OIDC_ISSUER, trustedRootPath: root }),
    );
    expect((await failure(verifySigstoreSigned(ctx, other, () => true))).message).toContain('not someone@example.com');
  });

  it('asks for --verify-issuer when --verify-identity comes without it', async () => {
    const err = await failure(requirementFromVerifyOptions(options({ identity: EMAIL, trustedRootPath: join(dir, 'x.json') })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toContain('--verify-identity needs --verify-issuer URL');
  });

  it('asks for --trusted-root when --verify-identity comes without it', async () => {
    const err = await failure(requirementFromVerifyOptions(options({ identity: EMAIL, issuer: OIDC_ISSUER })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toBe('--verify-identity needs --trusted-root FILE');
    expect(err.hint).toContain('trusted_root.json');
  });

  it('refuses --verify-issuer or --trusted-root without --verify-identity', async () => {
    const err = await failure(requirementFromVerifyOptions(options({ issuer: OIDC_ISSUER })));
    expect(err.code).toBe('USAGE');
    expect(err.message).toContain('go with --verify-identity');
  });

  it('refuses an identity that is neither an email address nor a URI, and an issuer that is not a URL', async () => {
    const root = await file('trusted_root_bad_id.json', trustedRoot());
    const identity = await failure(
      requirementFromVerifyOptions(options({ identity: 'release', issuer: OIDC_ISSUER, trustedRootPath: root })),
    );
    expect(identity.message).toContain('neither an email address nor a URI');
    const issuer = await failure(
      requirementFromVerifyOptions(options({ identity: EMAIL, issuer: 'accounts.google.com', trustedRootPath: root })),
    );
    expect(issuer.message).toContain('--verify-issuer accounts.google.com is not an issuer URL');
  });

  it('refuses a trusted root that is not one: not JSON, another media type, no Rekor log, a directory', async () => {
    const cases: Array<[string, string | object, string]> = [
      ['notjson.json', '{"mediaType": ', 'is not valid JSON'],
      ['other.json', trustedRoot({ mediaType: 'application/json' }), 'is not a sigstore trusted root'],
      ['nolog.json', trustedRoot({ tlogs: [] }), 'lists no Rekor log (tlogs)'],
      ['noca.json', trustedRoot({ certificateAuthorities: [] }), 'lists no Fulcio certificate authority'],
    ];
    for (const [name, content, expected] of cases) {
      const path = await file(name, content);
      const err = await failure(requirementFromVerifyOptions(options({ identity: EMAIL, issuer: OIDC_ISSUER, trustedRootPath: path })));
      expect(err.code, name).toBe('USAGE');
      expect(err.message, name).toContain(`--trusted-root ${path}`);
      expect(err.message, name).toContain(expected);
    }
    const err = await failure(requirementFromVerifyOptions(options({ identity: EMAIL, issuer: OIDC_ISSUER, trustedRootPath: dir })));
    expect(err.message).toBe(`cannot read --trusted-root ${dir}: it is a directory`);
  });
});
