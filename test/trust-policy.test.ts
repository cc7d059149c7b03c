/**
 * containers-policy.json(5) and containers-registries.d(5) as containers/image reads them:
 * strict parsing, scope lookup, signedIdentity matching, simple-signing payloads. Unit tests of
 * the trust modules; the end-to-end decisions are compared with skopeo in trust-interop.test.ts.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseSimpleSigningPayload } from '../src/trust/gpg.js';
import { identityMatcher, parseNamed } from '../src/trust/identity.js';
import { signatureDirUrl } from '../src/trust/lookaside.js';
import { parsePolicy, requirementsFor } from '../src/trust/policy.js';
import { loadRegistriesDir, lookasideFor, useSigstoreAttachments } from '../src/trust/registries-d.js';
import { dockerNamespaces, policyImage } from '../src/trust/scopes.js';
import { parseImageReference } from '../src/image/local-reference.js';
import { parseStrictJson } from '../src/trust/strict-json.js';
import { failure, thrown } from './helpers/errors.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pull-unpack-trust-policy-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const ACCEPT = [{ type: 'insecureAcceptAnything' }];
const parse = (doc: unknown): ReturnType<typeof parsePolicy> => parsePolicy(typeof doc === 'string' ? doc : JSON.stringify(doc), 'p.json');
const invalid = (doc: unknown): string => {
  const err = thrown(() => parse(doc));
  expect(err.code).toBe('INVALID_POLICY');
  return err.message;
};

describe('policy.json parsing', () => {
  it('reads every requirement type, key source and signedIdentity of containers-policy.json(5)', () => {
    const policy = parse({
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          'quay.io/ns': [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k.gpg', signedIdentity: { type: 'matchExact' } }],
          'quay.io/a': [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: ['/a', '/b'] }],
          'quay.io/b': [{ type: 'signedBy', keyType: 'GPGKeys', keyData: Buffer.from('key').toString('base64') }],
          'quay.io/c': [
            {
              type: 'sigstoreSigned',
              keyPath: '/c.pub',
              signedIdentity: { type: 'remapIdentity', prefix: 'quay.io/c', signedPrefix: 'docker.io/c' },
            },
          ],
          'quay.io/d': [
            {
              type: 'sigstoreSigned',
              fulcio: { caData: Buffer.from('ca').toString('base64'), oidcIssuer: 'https://issuer', subjectEmail: 'me@example.com' },
              rekorPublicKeyPath: '/rekor.pub',
              signedIdentity: { type: 'exactRepository', dockerRepository: 'docker.io/library/d' },
            },
          ],
          'quay.io/e': [
            {
              type: 'signedBy',
              keyType: 'GPGKeys',
              keyPath: '/k',
              signedIdentity: { type: 'exactReference', dockerReference: 'busybox:1' },
            },
          ],
          'quay.io/f': [{ type: 'signedBaseLayer', baseLayerIdentity: { type: 'matchRepository' } }],
        },
        oci: { '/var/images': ACCEPT },
        'docker-daemon': { '': ACCEPT },
      },
    });
    const scopes = policy.transports.get('docker')!;
    expect(scopes.get('quay.io/ns')).toEqual([
      {
        type: 'signedBy',
        keyType: 'GPGKeys',
        keys: { describe: 'keyPath /k.gpg', paths: ['/k.gpg'], data: [] },
        signedIdentity: { type: 'matchExact' },
      },
    ]);
    expect(scopes.get('quay.io/a')![0]).toMatchObject({
      signedIdentity: { type: 'matchRepoDigestOrExact' },
      keys: { paths: ['/a', '/b'] },
    });
    expect(scopes.get('quay.io/b')![0]).toMatchObject({ keys: { data: [Buffer.from('key')] } });
    expect(scopes.get('quay.io/d')![0]).toMatchObject({
      fulcio: { oidcIssuer: 'https://issuer', subjectEmail: 'me@example.com' },
      rekor: { paths: ['/rekor.pub'] },
    });
  });

  it('rejects unknown keys at every level', () => {
    expect(invalid({ default: ACCEPT, transport: {} })).toContain('unknown key "transport"');
    expect(invalid({ default: [{ type: 'reject', why: 'x' }] })).toContain('unknown key "why"');
    expect(
      invalid({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k', signedIdentity: { type: 'matchExact', x: 1 } }] }),
    ).toContain('unknown key "x"');
    expect(invalid({ default: [{ type: 'sigstoreSigned', keyPath: '/k', fulcio2: {} }] })).toContain('unknown key "fulcio2"');
  });

  it('rejects duplicated keys, also inside requirements', () => {
    expect(invalid('{"default": [{"type": "reject", "type": "insecureAcceptAnything"}]}')).toContain('duplicate key "type"');
    expect(
      invalid('{"default": [{"type": "reject"}], "transports": {"docker": {"a": [{"type":"reject"}], "a": [{"type":"reject"}]}}}'),
    ).toContain('duplicate key "a"');
  });

  it('rejects what c/image rejects: no default, empty lists, bad key sources, fulcio without Rekor', () => {
    expect(invalid({ transports: {} })).toContain('the default policy is missing');
    expect(invalid({ default: [] })).toContain('must not be empty');
    expect(invalid({ default: [{ type: 'acceptAll' }] })).toContain('unknown requirement type "acceptAll"');
    expect(invalid({ default: [{ type: 'signedBy', keyPath: '/k' }] })).toContain('invalid keyType ""');
    expect(invalid({ default: [{ type: 'signedBy', keyType: 'GPGKeys' }] })).toContain('none of them present');
    expect(invalid({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k', keyData: 'AA==' }] })).toContain(
      'only one of keyPath, keyData',
    );
    expect(invalid({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyData: 'not base64!' }] })).toContain('"keyData" must be base64');
    expect(invalid({ default: [{ type: 'sigstoreSigned' }] })).toContain(
      'exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki',
    );
    const fulcio = { caPath: '/ca', oidcIssuer: 'https://i', subjectEmail: 'a@b' };
    expect(invalid({ default: [{ type: 'sigstoreSigned', fulcio }] })).toContain('a Rekor public key');
    expect(
      invalid({ default: [{ type: 'sigstoreSigned', fulcio: { caPath: '/ca', oidcIssuer: 'https://i' }, rekorPublicKeyPath: '/r' }] }),
    ).toContain('subjectEmail not specified');
    expect(
      invalid({
        default: [
          { type: 'signedBy', keyType: 'GPGKeys', keyPath: '/k', signedIdentity: { type: 'exactReference', dockerReference: 'busybox' } },
        ],
      }),
    ).toContain('neither a tag nor a digest');
    expect(
      invalid({
        default: [
          {
            type: 'signedBy',
            keyType: 'GPGKeys',
            keyPath: '/k',
            signedIdentity: { type: 'remapIdentity', prefix: 'Bad Prefix', signedPrefix: 'x.io' },
          },
        ],
      }),
    ).toContain('prefix "Bad Prefix" is not valid');
  });

  it('checks scopes as each transport does: absolute clean paths for oci, none for docker-archive', () => {
    expect(invalid({ default: ACCEPT, transports: { oci: { 'relative/dir': ACCEPT } } })).toContain('must be an absolute path');
    expect(invalid({ default: ACCEPT, transports: { 'oci-archive': { '/': ACCEPT } } })).toContain('use the transport default');
    expect(invalid({ default: ACCEPT, transports: { oci: { '/a/../b/': ACCEPT } } })).toContain('use "/b"');
    expect(invalid({ default: ACCEPT, transports: { 'docker-archive': { '/x.tar': ACCEPT } } })).toContain(
      'docker-archive supports no scope',
    );
    expect(parse({ default: ACCEPT, transports: { docker: { 'anything at all': ACCEPT } } }).transports.get('docker')!.size).toBe(1);
  });
});

describe('scopes', () => {
  it('names docker images as c/image: identity, repository, namespaces, registry, wildcards without the port', () => {
    expect(dockerNamespaces('registry.example.com:5000/a/b/c')).toEqual([
      'registry.example.com:5000/a/b/c',
      'registry.example.com:5000/a/b',
      'registry.example.com:5000/a',
      'registry.example.com:5000',
      '*.example.com',
      '*.com',
    ]);
  });

  it('takes the most specific scope, then the transport default, then the global default', () => {
    const r = (label: string): unknown[] => [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: `/${label}` }];
    const policy = parse({
      default: r('global'),
      transports: {
        docker: { 'q.io/ns/app:1': r('tag'), 'q.io/ns': r('ns'), '*.io': r('wild'), '': r('transport') },
        oci: { '/x': r('oci') },
      },
    });
    const scope = (identity: string): string =>
      requirementsFor(policy, 'docker', identity, dockerNamespaces(identity.replace(/[:@].*$/, ''))).label;
    expect(scope('q.io/ns/app:1')).toBe('docker "q.io/ns/app:1"');
    expect(scope('q.io/ns/app:2')).toBe('docker "q.io/ns"');
    expect(scope('r.io/other:1')).toBe('docker "*.io"');
    expect(scope('localhost/other:1')).toBe('docker default ""');
    expect(requirementsFor(policy, 'docker-archive', '', []).label).toBe('default');
  });

  it('scopes an oci: layout by its resolved absolute path and parent directories', async () => {
    await mkdir(join(root, 'real', 'layout'), { recursive: true });
    await symlink(join(root, 'real'), join(root, 'link'));
    const image = await policyImage(parseImageReference(`oci:${join(root, 'link', 'layout')}:v1`));
    expect(image.transport).toBe('oci');
    expect(image.identity).toBe(join(root, 'real', 'layout'));
    expect(image.namespaces.slice(0, 2)).toEqual([join(root, 'real', 'layout'), join(root, 'real')]);
    expect(image.namespaces).not.toContain('/');
    expect(image.dockerReference).toBeUndefined();
  });

  it('scopes a tag+digest reference by its digest, as it is pulled', async () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const image = await policyImage(parseImageReference(`q.io/ns/app:1@${digest}`));
    expect(image.identity).toBe(`q.io/ns/app@${digest}`);
  });
});

describe('signedIdentity', () => {
  const digest = `sha256:${'b'.repeat(64)}`;
  it('normalizes signed references as Docker does, without adding a default tag', () => {
    const exact = identityMatcher({ type: 'matchExact' }, parseNamed('docker.io/library/busybox:latest'));
    expect(exact('busybox:latest')).toBe(true);
    expect(exact('busybox')).toBe(false);
    expect(identityMatcher({ type: 'matchRepository' }, parseNamed('busybox:1'))('docker.io/library/busybox')).toBe(true);
  });

  it('matchRepoDigestOrExact: exact for a tag, any tag of the repository for a digest', () => {
    const byDigest = identityMatcher({ type: 'matchRepoDigestOrExact' }, parseNamed(`q.io/app@${digest}`));
    expect(byDigest('q.io/app:anything')).toBe(true);
    expect(byDigest('q.io/other:anything')).toBe(false);
    expect(identityMatcher({ type: 'matchRepoDigestOrExact' }, parseNamed('q.io/app:1'))('q.io/app:2')).toBe(false);
  });

  it('remapIdentity rewrites the prefix at a "/" boundary and needs a canonical result', () => {
    const remap = (intended: string): ((s: string) => boolean) =>
      identityMatcher({ type: 'remapIdentity', prefix: 'mirror.io/ns', signedPrefix: 'docker.io/library' }, parseNamed(intended));
    expect(remap('mirror.io/ns/busybox:1')('busybox:1')).toBe(true);
    expect(remap('mirror.io/nsx/busybox:1')('busybox:1')).toBe(false);
    expect(remap('mirror.io/nsx/busybox:1')('mirror.io/nsx/busybox:1')).toBe(true);
    const nonCanonical = identityMatcher(
      { type: 'remapIdentity', prefix: 'mirror.io/ns', signedPrefix: 'docker.io' },
      parseNamed('mirror.io/ns/busybox:1'),
    );
    expect(nonCanonical('busybox:1')).toBe(false);
  });

  it('an image without a docker name matches only exactReference and exactRepository', () => {
    expect(identityMatcher({ type: 'matchRepository' }, undefined)('q.io/app:1')).toBe(false);
    expect(identityMatcher({ type: 'exactReference', dockerReference: 'q.io/app:1' }, undefined)('q.io/app:1')).toBe(true);
  });
});

describe('registries.d', () => {
  it('merges the *.yaml files and resolves lookaside and use-sigstore-attachments per namespace', async () => {
    const dir = join(root, 'registries.d');
    await mkdir(dir);
    await writeFile(join(dir, 'a.yaml'), 'default-docker:\n  lookaside: file:///default\n  use-sigstore-attachments: true\n');
    await writeFile(
      join(dir, 'b.yaml'),
      'docker:\n  q.io/ns:\n    sigstore: https://old-name.example/sigs\n  q.io/ns/app:\n    use-sigstore-attachments: false\n',
    );
    await writeFile(join(dir, 'ignored.yml'), 'default-docker: [not, read]\n');
    const config = await loadRegistriesDir(dir);
    const at = (name: string): [string | undefined, boolean] => [
      lookasideFor(config, `${name}:1`, dockerNamespaces(name)),
      useSigstoreAttachments(config, `${name}:1`, dockerNamespaces(name)),
    ];
    expect(at('q.io/ns/app')).toEqual(['https://old-name.example/sigs', false]);
    expect(at('q.io/ns/other')).toEqual(['https://old-name.example/sigs', true]);
    expect(at('r.io/x')).toEqual(['file:///default', true]);
  });

  it('refuses default-docker defined in two files, and duplicated YAML keys', async () => {
    const dir = join(root, 'registries.d-dup');
    await mkdir(dir);
    await writeFile(join(dir, 'a.yaml'), 'default-docker:\n  lookaside: file:///a\n');
    await writeFile(join(dir, 'b.yaml'), 'default-docker:\n  lookaside: file:///b\n');
    expect((await failure(loadRegistriesDir(dir))).message).toMatch(/"default-docker" is defined both in .*a\.yaml and .*b\.yaml/);
    await rm(join(dir, 'b.yaml'));
    await writeFile(join(dir, 'a.yaml'), 'docker:\n  q.io:\n    lookaside: file:///a\n  q.io:\n    lookaside: file:///b\n');
    expect((await failure(loadRegistriesDir(dir))).code).toBe('INVALID_POLICY');
  });

  it('builds lookaside URLs as c/image: BASE/repo@alg=hex', () => {
    expect(signatureDirUrl('https://sigs.example', 'ns/app', `sha256:${'c'.repeat(64)}`).href).toBe(
      `https://sigs.example/ns/app@sha256=${'c'.repeat(64)}`,
    );
    expect(signatureDirUrl('file:///var/lib/sigs', 'ns/app', `sha256:${'c'.repeat(64)}`).pathname).toBe(
      `/var/lib/sigs/ns/app@sha256=${'c'.repeat(64)}`,
    );
    expect(() => signatureDirUrl('ftp://x/y', 'ns/app', `sha256:${'c'.repeat(64)}`)).toThrow(/unsupported lookaside URL scheme/);
  });
});

describe('strict JSON and simple-signing payloads', () => {
  it('finds a duplicated key anywhere, which JSON.parse keeps silently', () => {
    expect(() => parseStrictJson('[{"a": {"b": 1, "c": [ {"d": "\\"x", "d": 2} ]}}]')).toThrow('duplicate key "d"');
    expect(parseStrictJson('{"a": {"a": 1}}')).toEqual({ a: { a: 1 } });
  });

  it('parses payloads as strictly as c/image: exact critical fields, integer timestamp', () => {
    const payload = (critical: unknown, optional: unknown = {}): Buffer => Buffer.from(JSON.stringify({ critical, optional }));
    const good = {
      type: 'atomic container signature',
      image: { 'docker-manifest-digest': digest() },
      identity: { 'docker-reference': 'q.io/a:1' },
    };
    expect(parseSimpleSigningPayload(payload(good, { creator: 'x', timestamp: 1, extra: true }))).toEqual({
      digest: digest(),
      dockerReference: 'q.io/a:1',
    });
    expect(() => parseSimpleSigningPayload(payload({ ...good, extra: 1 }))).toThrow('unknown key "extra"');
    expect(() => parseSimpleSigningPayload(payload({ ...good, type: 'other' }))).toThrow('unrecognized signature type');
    expect(() => parseSimpleSigningPayload(payload(good, { timestamp: 1.5 }))).toThrow('not an integer');
    expect(() => parseSimpleSigningPayload(Buffer.from(JSON.stringify({ critical: good })))).toThrow('key "optional" is missing');
  });
});

function digest(): string {
  return `sha256:${'d'.repeat(64)}`;
}
