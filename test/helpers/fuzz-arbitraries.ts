/**
 * fast-check arbitraries for test/fuzz.test.ts: image references from the distribution/reference
 * grammar (with the fields a parser must produce), index entries and wanted platforms, and
 * manifest documents that are nearly valid. Layer stacks are in fuzz-layers.ts.
 */
import fc from 'fast-check';
import type { Descriptor, Platform } from '../../src/image/oci.js';

const chars = (text: string): fc.Arbitrary<string> => fc.constantFrom(...text.split(''));
const LOWER_ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const ALNUM = `${LOWER_ALNUM}ABCDEFGHIJKLMNOPQRSTUVWXYZ`;
const HEX = '0123456789abcdef';

// ---------------------------------------------------------------------------------------------
// References

/** A generated reference: the text, and the fields parseReference must give for it. */
export interface GeneratedReference {
  text: string;
  registry: string;
  repository: string;
  tag: string | undefined;
  digest: string | undefined;
}

const alnumRun = fc.string({ unit: chars(LOWER_ALNUM), minLength: 1, maxLength: 6 });
/** component := [a-z0-9]+ ( ( [._] | __ | [-]+ ) [a-z0-9]+ )* */
export const pathComponent = fc
  .tuple(alnumRun, fc.array(fc.tuple(fc.constantFrom('.', '_', '__', '-', '--', '---'), alnumRun), { maxLength: 2 }))
  .map(([head, rest]) => head + rest.map(([sep, run]) => sep + run).join(''));

const label = fc
  .tuple(chars(ALNUM), fc.string({ unit: chars(`${ALNUM}-`), maxLength: 5 }), chars(ALNUM))
  .map(([a, mid, z]) => (mid === '' ? a : a + mid + z));
const port = fc.integer({ min: 1, max: 65535 }).map(String);
const withPort = (host: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.tuple(host, fc.option(port, { nil: undefined })).map(([h, p]) => (p === undefined ? h : `${h}:${p}`));

/** A registry Docker recognizes as one: has a "." or ":", is localhost, or has uppercase. */
const registryHost: fc.Arbitrary<string> = fc.oneof(
  withPort(fc.array(label, { minLength: 2, maxLength: 3 }).map((l) => l.join('.'))),
  withPort(fc.constant('localhost')),
  withPort(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((n) => n.join('.'))),
  withPort(fc.constantFrom('[::1]', '[fe80::1]', '[2001:db8::42]')),
  fc.tuple(label, port).map(([l, p]) => `${l}:${p}`),
  label.map((l) => `R${l}`),
  fc.constantFrom('docker.io', 'index.docker.io'),
);

const tag = fc
  .tuple(
    chars(`${ALNUM}_`),
    fc.oneof(
      { weight: 5, arbitrary: fc.string({ unit: chars(`${ALNUM}_.-`), maxLength: 12 }) },
      { weight: 1, arbitrary: fc.string({ unit: chars(`${ALNUM}_.-`), minLength: 100, maxLength: 127 }) },
    ),
  )
  .map(([first, rest]) => first + rest);
const digest = fc.oneof(
  fc.string({ unit: chars(HEX), minLength: 64, maxLength: 64 }).map((h) => `sha256:${h}`),
  fc.string({ unit: chars(HEX), minLength: 128, maxLength: 128 }).map((h) => `sha512:${h}`),
);

/** References built from the grammar, with the normalized fields they must parse to. */
export const generatedReference: fc.Arbitrary<GeneratedReference> = fc
  .record({
    registry: fc.option(registryHost, { nil: undefined }),
    path: fc.oneof(
      { weight: 6, arbitrary: fc.array(pathComponent, { minLength: 1, maxLength: 4 }) },
      { weight: 1, arbitrary: fc.array(pathComponent, { minLength: 20, maxLength: 40 }) },
    ),
    tag: fc.option(tag, { nil: undefined }),
    digest: fc.option(digest, { nil: undefined }),
  })
  // Without a registry, a first component with "." or named localhost IS a registry (Docker's rule).
  .filter(({ registry, path }) => registry !== undefined || path.length === 1 || !(path[0]!.includes('.') || path[0] === 'localhost'))
  .map(({ registry, path, tag: t, digest: d }) => {
    const normalized = registry === undefined || registry === 'index.docker.io' ? 'docker.io' : registry;
    const joined = path.join('/');
    return {
      text: `${registry === undefined ? '' : `${registry}/`}${joined}${t === undefined ? '' : `:${t}`}${d === undefined ? '' : `@${d}`}`,
      registry: normalized,
      repository: normalized === 'docker.io' && path.length === 1 ? `library/${joined}` : joined,
      tag: t ?? (d === undefined ? 'latest' : undefined),
      digest: d,
    };
  });

/** Strings over the characters references are made of, so parsing gets past the first checks. */
export const referenceLikeString = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.string({ unit: chars('aB0z9:/@._-[]%: \t'), maxLength: 60 }),
  fc.tuple(generatedReference, fc.nat(), chars('aZ9:/@._-[]# ')).map(([r, at, c]) => {
    const i = at % (r.text.length + 1);
    return r.text.slice(0, i) + c + r.text.slice(i + (at % 3 === 0 ? 1 : 0));
  }),
);

// ---------------------------------------------------------------------------------------------
// Platforms

const os = fc.constantFrom('linux', 'LINUX', 'windows', 'darwin', 'macos', 'freebsd', 'unknown');
const architecture = fc.constantFrom(
  'amd64',
  'x86_64',
  '386',
  'i686',
  'arm',
  'armhf',
  'armel',
  'arm64',
  'aarch64',
  'ppc64le',
  's390x',
  'riscv64',
  'unknown',
);
const variant = fc.option(fc.constantFrom('v5', 'v6', 'v7', 'v8', '7', '8', 'v8.2', 'v9', 'v9.1', 'v2', 'v3', 'v1', 'V7'), {
  nil: undefined,
});
const osVersion = fc.option(fc.constantFrom('10.0', '10.0.17763', '10.0.17763.1', '10.0.20348', '6.3'), { nil: undefined });

const platform: fc.Arbitrary<Platform> = fc.record({ os, architecture, variant, 'os.version': osVersion }).map((p) => {
  const out: Platform = { os: p.os, architecture: p.architecture };
  if (p.variant !== undefined) out.variant = p.variant;
  if (p['os.version'] !== undefined) out['os.version'] = p['os.version'];
  return out;
});

/** A platform a user could ask for (any OS but "unknown"). */
export const wantedPlatform = platform.filter((p) => p.os !== 'unknown' && p.architecture !== 'unknown');

/** Index entries: most with a platform, some without, some buildx attestations. */
export const indexEntries: fc.Arbitrary<Descriptor[]> = fc
  .array(
    fc.record({
      platform: fc.option(platform, { nil: undefined, freq: 8 }),
      attestation: fc.boolean(),
      n: fc.nat(0xffff),
    }),
    { maxLength: 8 },
  )
  .map((entries) =>
    entries.map(({ platform: p, attestation, n }, i) => {
      const d: Descriptor = {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: `sha256:${(i.toString(16) + n.toString(16)).padStart(64, '0')}`,
        size: 100 + i,
      };
      if (p !== undefined) d.platform = p;
      if (attestation && i % 2 === 0) d.annotations = { 'vnd.docker.reference.type': 'attestation-manifest' };
      return d;
    }),
  );

// ---------------------------------------------------------------------------------------------
// Manifests

const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'];
const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];
const SCHEMA1_TYPES = ['application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws'];

/** A value that is sometimes the right kind and often not. */
const anyJson = fc.jsonValue({ maxDepth: 2 });
const maybe = <T>(good: fc.Arbitrary<T>): fc.Arbitrary<unknown> =>
  fc.oneof({ weight: 4, arbitrary: good }, { weight: 1, arbitrary: anyJson });

const descriptorLike = fc.record(
  {
    mediaType: maybe(fc.constantFrom('application/vnd.oci.image.layer.v1.tar+gzip', ...MANIFEST_TYPES, '')),
    digest: maybe(fc.oneof(digest, fc.constantFrom('sha256:abc', 'md5:0123', `sha256:${'A'.repeat(64)}`))),
    size: maybe(fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constant(2 ** 60))),
    urls: maybe(fc.array(fc.webUrl(), { maxLength: 2 })),
    platform: maybe(
      fc.record(
        {
          os: maybe(os),
          architecture: maybe(architecture),
          variant: maybe(variant),
          'os.version': maybe(osVersion),
          'os.features': maybe(fc.array(fc.string(), { maxLength: 2 })),
        },
        { requiredKeys: [] },
      ),
    ),
    annotations: maybe(fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 2 })),
  },
  { requiredKeys: [] },
);

/** Objects shaped like an index or a manifest, with fields of the right and the wrong kinds. */
export const manifestLike = fc.record(
  {
    schemaVersion: maybe(fc.constantFrom(1, 2, 2, 2, 3)),
    mediaType: maybe(fc.constantFrom(...INDEX_TYPES, ...MANIFEST_TYPES, ...SCHEMA1_TYPES, 'application/json', 'text/plain')),
    manifests: maybe(fc.array(descriptorLike, { maxLength: 3 })),
    config: maybe(descriptorLike),
    layers: maybe(fc.array(descriptorLike, { maxLength: 3 })),
    annotations: maybe(fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 2 })),
  },
  { requiredKeys: [] },
);

const validDescriptor = fc.record({
  mediaType: fc.constantFrom('application/vnd.oci.image.layer.v1.tar+gzip', ...MANIFEST_TYPES),
  digest,
  size: fc.nat(),
});
const validPlatform = fc.record(
  { os, architecture, variant: fc.constantFrom('v7', 'v8'), 'os.version': fc.constantFrom('10.0'), 'os.features': fc.constant(['win32k']) },
  { requiredKeys: ['os', 'architecture'] },
);

/** Valid indexes and manifests, each with one value somewhere inside replaced by random JSON or removed. */
export const mutatedManifest = fc
  .tuple(
    fc.oneof(
      fc.record({
        schemaVersion: fc.constant(2),
        mediaType: fc.constantFrom(...INDEX_TYPES),
        manifests: fc.array(
          fc.tuple(validDescriptor, validPlatform).map(([d, platform]) => ({ ...d, platform })),
          { minLength: 1, maxLength: 3 },
        ),
      }),
      fc.record({
        schemaVersion: fc.constant(2),
        mediaType: fc.constantFrom(...MANIFEST_TYPES),
        config: validDescriptor,
        layers: fc.array(validDescriptor, { maxLength: 3 }),
      }),
    ),
    fc.nat(),
    fc.option(anyJson, { nil: undefined, freq: 6 }),
  )
  .map(([doc, at, value]) => mutateAt(doc, at, value));

/** Replaces the `at`-th value (counted depth first, modulo their number) of `doc` with `value`, or removes it. */
function mutateAt(doc: object, at: number, value: unknown): unknown {
  const slots: Array<[Record<string, unknown>, string]> = [];
  const visit = (node: unknown): void => {
    if (node === null || typeof node !== 'object') return;
    for (const key of Object.keys(node)) {
      slots.push([node as Record<string, unknown>, key]);
      visit((node as Record<string, unknown>)[key]);
    }
  };
  const copy = structuredClone(doc) as Record<string, unknown>;
  visit(copy);
  const [holder, key] = slots[at % slots.length]!;
  if (value === undefined) delete holder[key];
  else holder[key] = value;
  return copy;
}

/** The Content-Type a registry might send along. */
export const contentType = fc.option(
  fc.oneof(
    fc.constantFrom(
      ...INDEX_TYPES,
      ...MANIFEST_TYPES,
      ...SCHEMA1_TYPES,
      'application/json',
      'application/json; charset=utf-8',
      'text/html',
      '',
    ),
    fc.string({ maxLength: 20 }),
  ),
  { nil: undefined },
);

/** Byte-level damage to a serialized document: truncation, a flipped byte, an inserted byte. */
export function damage(bytes: Buffer, how: { kind: 'none' | 'truncate' | 'flip' | 'insert'; at: number; byte: number }): Buffer {
  if (bytes.length === 0 || how.kind === 'none') return bytes;
  const i = how.at % bytes.length;
  if (how.kind === 'truncate') return bytes.subarray(0, i);
  if (how.kind === 'flip') return Buffer.concat([bytes.subarray(0, i), Buffer.of(bytes[i]! ^ how.byte), bytes.subarray(i + 1)]);
  return Buffer.concat([bytes.subarray(0, i), Buffer.of(how.byte), bytes.subarray(i)]);
}

export const damageSpec = fc.record({
  kind: fc.constantFrom<'none' | 'truncate' | 'flip' | 'insert'>('none', 'none', 'truncate', 'flip', 'insert'),
  at: fc.nat(),
  byte: fc.integer({ min: 1, max: 255 }),
});
