/**
 * Sigstore signatures made by the tests with node:crypto, stored as cosign stores them:
 * simple-signing payloads in `<alg>-<hex>.sig` manifests (cosign's SIGNATURE_SPEC.md), a test
 * Fulcio CA issuing Fulcio-like leaves, a test Rekor log signing entry timestamps, and sigstore
 * bundles (DSSE in-toto statements) attached as OCI 1.1 referrers (cosign's BUNDLE_SPEC.md).
 */
import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { pushBlob, pushManifest, type Descriptor, type PushedManifest } from '../../testdata/lib/image-builder.mjs';
import { makeCertificate, OIDS, pem, type TestCertificate } from './x509-builder.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const BUNDLE_V03 = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';
export const OIDC_ISSUER = 'https://issuer.test.example';
const HOUR = 3_600_000;

const sha256 = (b: Buffer | string): Buffer => createHash('sha256').update(b).digest();
const b64 = (b: Buffer | string): string => Buffer.from(b).toString('base64');

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The PEM public key, as cosign.pub holds it. */
  pem: string;
}

export function keyPair(type: 'ec' | 'rsa' | 'ed25519' = 'ec'): KeyPair {
  const pair =
    type === 'ec'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : type === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ed25519');
  return { ...pair, pem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

/** A signature as cosign makes it: SHA-256 with ECDSA (DER) or RSA PKCS#1 v1.5; Ed25519 over the bytes. */
export function signBytes(privateKey: KeyObject, data: Buffer): Buffer {
  return sign(privateKey.asymmetricKeyType === 'ed25519' ? null : 'sha256', data, privateKey);
}

/** cosign's simple-signing payload for `digest`, claiming `dockerReference`. */
export function simpleSigningPayload(digest: string, dockerReference: string, optional: object | null = null): Buffer {
  const critical = {
    identity: { 'docker-reference': dockerReference },
    image: { 'docker-manifest-digest': digest },
    type: 'cosign container image signature',
  };
  return Buffer.from(JSON.stringify({ critical, optional }));
}

// --- Rekor -------------------------------------------------------------------------------------

/** A test Rekor log: its key signs entry timestamps; its log ID is the SHA-256 of its public key. */
export class TestRekor {
  readonly key = keyPair('ec');
  readonly keyId = sha256(this.key.publicKey.export({ type: 'spki', format: 'der' }));
  readonly logId = this.keyId.toString('hex');

  /** The SET over an entry: the log's signature over the canonical JSON of {body, integratedTime, logID, logIndex}. */
  sign(body: Buffer, integratedTime: number, logIndex: number): { set: Buffer; payload: Record<string, unknown> } {
    const payload = { body: b64(body), integratedTime, logID: this.logId, logIndex };
    return { set: signBytes(this.key.privateKey, Buffer.from(JSON.stringify(payload))), payload };
  }

  /** cosign's `dev.sigstore.cosign/bundle` annotation for a hashedrekord entry. */
  cosignBundle(signature: Buffer, signerPem: string, payload: Buffer, integratedTime: number): string {
    const body = Buffer.from(
      JSON.stringify({
        apiVersion: '0.0.1',
        kind: 'hashedrekord',
        spec: {
          data: { hash: { algorithm: 'sha256', value: sha256(payload).toString('hex') } },
          signature: { content: b64(signature), publicKey: { content: b64(signerPem) } },
        },
      }),
    );
    const { set, payload: entry } = this.sign(body, integratedTime, 42);
    return JSON.stringify({ SignedEntryTimestamp: b64(set), Payload: entry });
  }
}

// --- Fulcio ------------------------------------------------------------------------------------

/** A test Fulcio: a root CA and an intermediate, issuing short-lived code-signing leaves. */
export class TestFulcio {
  readonly root: TestCertificate;
  readonly intermediate: TestCertificate;

  constructor(name = 'test-fulcio') {
    const now = Date.now();
    const validity = { notBefore: new Date(now - 24 * HOUR), notAfter: new Date(now + 365 * 24 * HOUR) };
    this.root = makeCertificate({ commonName: `${name} root`, ca: {}, ...validity });
    this.intermediate = makeCertificate({ commonName: `${name} intermediate`, issuer: this.root, ca: { pathLength: 0 }, ...validity });
  }

  /** The CA certificates a requirement trusts (PEM: intermediate and root). */
  get caPem(): string {
    return this.intermediate.pem + this.root.pem;
  }

  /** A leaf for `email` (or `uri`) from `issuer`, valid ten minutes around `at`. */
  leaf(
    identity: { email?: string; uri?: string },
    options: { issuer?: string; at?: Date; eku?: string[]; v1Only?: boolean } = {},
  ): TestCertificate {
    const at = (options.at ?? new Date()).getTime();
    const issuer = options.issuer ?? OIDC_ISSUER;
    return makeCertificate({
      issuer: this.intermediate,
      notBefore: new Date(at - 5 * 60_000),
      notAfter: new Date(at + 5 * 60_000),
      emails: identity.email ? [identity.email] : undefined,
      uris: identity.uri ? [identity.uri] : undefined,
      extendedKeyUsages: options.eku ?? [OIDS.codeSigning],
      issuerV1: issuer,
      issuerV2: options.v1Only ? undefined : issuer,
    });
  }
}

/**
 * sigstore's trusted_root.json for `fulcio` and `log`, as `cosign trusted-root create` writes it
 * (https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto).
 */
export function trustedRoot(fulcio: TestFulcio, log: TestRekor, overrides: Record<string, unknown> = {}): object {
  const validFor = { start: '2024-01-01T00:00:00Z' };
  return {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: 'https://rekor.test.example',
        hashAlgorithm: 'SHA2_256',
        publicKey: {
          rawBytes: log.key.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
          keyDetails: 'PKIX_ECDSA_P256_SHA_256',
          validFor,
        },
        logId: { keyId: log.keyId.toString('base64') },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'pull-unpack tests', commonName: 'test-fulcio' },
        uri: 'https://fulcio.test.example',
        certChain: {
          certificates: [{ rawBytes: fulcio.intermediate.der.toString('base64') }, { rawBytes: fulcio.root.der.toString('base64') }],
        },
        validFor,
      },
    ],
    ctlogs: [],
    timestampAuthorities: [],
    ...overrides,
  };
}

// --- cosign .sig manifests ---------------------------------------------------------------------

export interface SignatureLayer {
  payload: Buffer;
  annotations: Record<string, string>;
}

/** A key-based signature layer: the payload signed with `key`. */
export function keySignature(key: KeyPair, payload: Buffer, rekor?: { log: TestRekor; at: number }): SignatureLayer {
  const signature = signBytes(key.privateKey, payload);
  const annotations: Record<string, string> = { 'dev.cosignproject.cosign/signature': b64(signature) };
  if (rekor) annotations['dev.sigstore.cosign/bundle'] = rekor.log.cosignBundle(signature, key.pem, payload, rekor.at);
  return { payload, annotations };
}

/** A keyless signature layer: the payload signed with `leaf`'s key, with the certificate, chain and Rekor bundle. */
export function keylessSignature(
  fulcio: TestFulcio,
  leaf: TestCertificate,
  log: TestRekor,
  payload: Buffer,
  at = Date.now(),
): SignatureLayer {
  const signature = signBytes(leaf.privateKey, payload);
  return {
    payload,
    annotations: {
      'dev.cosignproject.cosign/signature': b64(signature),
      'dev.sigstore.cosign/certificate': leaf.pem,
      'dev.sigstore.cosign/chain': fulcio.caPem,
      'dev.sigstore.cosign/bundle': log.cosignBundle(signature, leaf.pem, payload, Math.floor(at / 1000)),
    },
  };
}

/** The `<alg>-<hex>.sig` tag cosign attaches signatures of `digest` under. */
export function signatureTag(digest: string): string {
  return `${digest.replace(':', '-')}.sig`;
}

/** Pushes a `.sig` manifest for `digest` with one simple-signing layer per signature, as `cosign sign` does. */
export async function pushSignatures(registryUrl: string, repo: string, digest: string, layers: SignatureLayer[]): Promise<PushedManifest> {
  const descriptors = [];
  for (const layer of layers) {
    const blob = await pushBlob(registryUrl, repo, layer.payload);
    descriptors.push({ mediaType: SIMPLE_SIGNING, ...blob, annotations: layer.annotations });
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: '',
      config: {},
      created: '0001-01-01T00:00:00Z',
      history: [{ created: '0001-01-01T00:00:00Z' }],
      os: '',
      rootfs: { type: 'layers', diff_ids: descriptors.map((d) => d.digest) },
    }),
  );
  const configBlob = await pushBlob(registryUrl, repo, config);
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...configBlob },
    layers: descriptors,
  };
  return pushManifest(registryUrl, repo, signatureTag(digest), manifest);
}

// --- sigstore bundles --------------------------------------------------------------------------

export interface BundleOptions {
  /** The digest the in-toto statement's subject names. */
  digest: string;
  /** A `name` for the statement's subject (cosign writes none). */
  subjectName?: string | undefined;
  predicateType?: string | undefined;
  log: TestRekor;
  /** Keyless: the leaf certificate whose key signs. */
  leaf?: TestCertificate | undefined;
  /** Key-based: the key that signs. */
  key?: KeyPair | undefined;
  at?: number | undefined;
  /** Flip a byte of the DSSE signature after the log recorded it. */
  tamperSignature?: boolean | undefined;
}

/** A v0.3 sigstore bundle with a DSSE-signed in-toto statement and one Rekor dsse entry (SET and inclusion proof). */
export function makeBundle(o: BundleOptions): Buffer {
  const [algorithm, hex] = o.digest.split(':') as [string, string];
  const subject: Record<string, unknown> = { digest: { [algorithm]: hex } };
  if (o.subjectName !== undefined) subject['name'] = o.subjectName;
  const statement = Buffer.from(
    JSON.stringify({
      _type: 'https://in-toto.io/Statement/v1',
      subject: [subject],
      predicateType: o.predicateType ?? COSIGN_SIGN_PREDICATE,
      predicate: {},
    }),
  );
  const payloadType = 'application/vnd.in-toto+json';
  const pae = Buffer.from(`DSSEv1 ${payloadType.length} ${payloadType} ${statement.length} `);
  const signer = o.leaf ? o.leaf.privateKey : o.key!.privateKey;
  const signature = signBytes(signer, Buffer.concat([pae, statement]));
  const verifier = o.leaf ? o.leaf.pem : o.key!.pem;
  const body = Buffer.from(
    JSON.stringify({
      apiVersion: '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256(statement).toString('hex') },
        payloadHash: { algorithm: 'sha256', value: sha256(statement).toString('hex') },
        signatures: [{ signature: b64(signature), verifier: b64(verifier) }],
      },
    }),
  );
  const integratedTime = Math.floor((o.at ?? Date.now()) / 1000);
  const { set } = o.log.sign(body, integratedTime, 0);
  const root = sha256(Buffer.concat([Buffer.from([0]), body]));
  const note = `rekor.test - 1\n1\n${b64(root)}\n`;
  const noteSignature = Buffer.concat([o.log.keyId.subarray(0, 4), signBytes(o.log.key.privateKey, Buffer.from(note))]);
  if (o.tamperSignature) signature[signature.length - 1]! ^= 0x01;
  return Buffer.from(
    JSON.stringify({
      mediaType: BUNDLE_V03,
      verificationMaterial: {
        ...(o.leaf ? { certificate: { rawBytes: b64(o.leaf.der) } } : { publicKey: { hint: '' } }),
        tlogEntries: [
          {
            logIndex: '0',
            logId: { keyId: b64(o.log.keyId) },
            kindVersion: { kind: 'dsse', version: '0.0.1' },
            integratedTime: String(integratedTime),
            inclusionPromise: { signedEntryTimestamp: b64(set) },
            inclusionProof: {
              logIndex: '0',
              rootHash: b64(root),
              treeSize: '1',
              hashes: [],
              checkpoint: { envelope: `${note}\n\u2014 rekor.test ${b64(noteSignature)}\n` },
            },
            canonicalizedBody: b64(body),
          },
        ],
      },
      dsseEnvelope: { payload: b64(statement), payloadType, signatures: [{ sig: b64(signature), keyid: '' }] },
    }),
  );
}

const EMPTY_CONFIG = Buffer.from('{}');

/**
 * Pushes `bundle` as an OCI 1.1 artifact whose subject is `subject` (by digest, untagged), its
 * artifact and layer of `mediaType` (v0.3 by default); returns its descriptor for a referrers index.
 */
export async function pushBundleReferrer(
  registryUrl: string,
  repo: string,
  subject: Descriptor,
  bundle: Buffer,
  mediaType = BUNDLE_V03,
): Promise<Descriptor> {
  const config = await pushBlob(registryUrl, repo, EMPTY_CONFIG);
  const layer = await pushBlob(registryUrl, repo, bundle);
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: mediaType,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', ...config },
    layers: [{ mediaType, ...layer }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': COSIGN_SIGN_PREDICATE },
  };
  const pushed = await pushManifest(registryUrl, repo, null, manifest);
  return {
    mediaType: pushed.mediaType,
    digest: pushed.digest,
    size: pushed.size,
    artifactType: mediaType,
    annotations: manifest.annotations,
  } as Descriptor;
}

/** The referrers index listing `referrers`, as the referrers API answers and the tag fallback stores it. */
export function referrersIndex(referrers: Descriptor[]): object {
  return { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: referrers };
}

/** Pushes the distribution-spec referrers tag `<alg>-<hex>` for registries without the referrers API. */
export async function pushReferrersTag(registryUrl: string, repo: string, subjectDigest: string, referrers: Descriptor[]): Promise<void> {
  await pushManifest(registryUrl, repo, subjectDigest.replace(':', '-'), referrersIndex(referrers));
}

export { pem };
