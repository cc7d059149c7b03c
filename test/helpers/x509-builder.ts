/**
 * A small DER encoder and X.509 v3 certificate builder for tests: a test CA and Fulcio-like
 * leaf certificates (empty subject, email or URI SAN, code-signing EKU, Fulcio's OIDC issuer
 * extensions), signed with node:crypto (ECDSA P-256 / SHA-256).
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';

// --- DER ---------------------------------------------------------------------------------------

function length(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, ...contents: Buffer[]): Buffer {
  const value = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), length(value.length), value]);
}

export const seq = (...parts: Buffer[]): Buffer => tlv(0x30, ...parts);
const set = (...parts: Buffer[]): Buffer => tlv(0x31, ...parts);
export const octets = (b: Buffer): Buffer => tlv(0x04, b);
export const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0]));

function integer(value: number | Buffer): Buffer {
  let bytes = typeof value === 'number' ? Buffer.from([value]) : value;
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(0x02, bytes);
}

export function oid(dotted: string): Buffer {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const out = [40 * a + b];
  for (const arc of rest) {
    const chunk = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(date: Date): Buffer {
  const iso = date.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050 ? tlv(0x17, Buffer.from(`${iso.slice(2)}Z`)) : tlv(0x18, Buffer.from(`${iso}Z`));
}

function bitString(bytes: Buffer, unused = 0): Buffer {
  return tlv(0x03, Buffer.from([unused]), bytes);
}

// --- X.509 -------------------------------------------------------------------------------------

export const OIDS = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  extKeyUsage: '2.5.29.37',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  fulcioIssuerV1: '1.3.6.1.4.1.57264.1.1',
  fulcioIssuerV2: '1.3.6.1.4.1.57264.1.8',
} as const;

export interface TestCertificate {
  der: Buffer;
  pem: string;
  /** The certificate's own key pair. */
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** The DER Name of the subject, for certificates it issues. */
  subject: Buffer;
  subjectKeyId: Buffer;
}

export interface CertificateSpec {
  /** Common name; undefined gives an empty subject, as Fulcio's leaves have. */
  commonName?: string | undefined;
  /** The issuing certificate; undefined for a self-signed one. */
  issuer?: TestCertificate | undefined;
  notBefore: Date;
  notAfter: Date;
  ca?: { pathLength?: number } | undefined;
  emails?: string[] | undefined;
  uris?: string[] | undefined;
  extendedKeyUsages?: string[] | undefined;
  /** Fulcio's issuer extensions: v1 (raw bytes) and v2 (UTF8String). */
  issuerV1?: string | undefined;
  issuerV2?: string | undefined;
  /** Extra extensions: [oid, critical, DER value]. */
  extra?: Array<[string, boolean, Buffer]> | undefined;
  /** Reuse this key pair (e.g. the same CA key under another name). */
  keyPair?: { privateKey: KeyObject; publicKey: KeyObject } | undefined;
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), bool(true), octets(value)) : seq(oid(id), octets(value));
}

function name(commonName: string | undefined): Buffer {
  if (commonName === undefined) return seq();
  return seq(set(seq(oid(OIDS.organization), utf8('pull-unpack tests'))), set(seq(oid(OIDS.commonName), utf8(commonName))));
}

/** A certificate as `spec` says, signed by its issuer's key (or its own). */
export function makeCertificate(spec: CertificateSpec): TestCertificate {
  const { privateKey, publicKey } = spec.keyPair ?? generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const subjectKeyId = createHash('sha1').update(spki).digest();
  const subject = name(spec.commonName);
  const extensions: Buffer[] = [extension(OIDS.subjectKeyId, false, octets(subjectKeyId))];
  if (spec.issuer) extensions.push(extension(OIDS.authorityKeyId, false, seq(tlv(0x80, spec.issuer.subjectKeyId))));
  if (spec.ca) {
    const pathLength = spec.ca.pathLength === undefined ? [] : [integer(spec.ca.pathLength)];
    extensions.push(extension(OIDS.basicConstraints, true, seq(bool(true), ...pathLength)));
    extensions.push(extension(OIDS.keyUsage, true, bitString(Buffer.from([0x06]), 1)));
  } else {
    extensions.push(extension(OIDS.basicConstraints, true, seq()));
    extensions.push(extension(OIDS.keyUsage, true, bitString(Buffer.from([0x80]), 7)));
  }
  if (spec.extendedKeyUsages) extensions.push(extension(OIDS.extKeyUsage, false, seq(...spec.extendedKeyUsages.map(oid))));
  const names = [...(spec.emails ?? []).map((e) => tlv(0x81, Buffer.from(e))), ...(spec.uris ?? []).map((u) => tlv(0x86, Buffer.from(u)))];
  if (names.length) extensions.push(extension(OIDS.subjectAltName, true, seq(...names)));
  if (spec.issuerV1 !== undefined) extensions.push(extension(OIDS.fulcioIssuerV1, false, Buffer.from(spec.issuerV1)));
  if (spec.issuerV2 !== undefined) extensions.push(extension(OIDS.fulcioIssuerV2, false, utf8(spec.issuerV2)));
  for (const [id, critical, value] of spec.extra ?? []) extensions.push(extension(id, critical, value));
  const algorithm = seq(oid(OIDS.ecdsaWithSha256));
  const tbs = seq(
    tlv(0xa0, integer(2)),
    integer(Buffer.concat([Buffer.from([0x01]), randomBytes(15)])),
    algorithm,
    spec.issuer?.subject ?? subject,
    seq(time(spec.notBefore), time(spec.notAfter)),
    subject,
    spki,
    tlv(0xa3, seq(...extensions)),
  );
  const signature = sign('sha256', tbs, spec.issuer?.privateKey ?? privateKey);
  const der = seq(tbs, algorithm, bitString(signature));
  return { der, pem: pem(der), privateKey, publicKey, subject, subjectKeyId };
}

export function pem(der: Buffer, label = 'CERTIFICATE'): string {
  return `-----BEGIN ${label}-----\n${der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n')}\n-----END ${label}-----\n`;
}
