/**
 * A minimal DER reader for the X.509 fields node:crypto's X509Certificate does not expose:
 * the validity dates, every extension with its criticality (Fulcio's OIDC issuer extensions,
 * RFC 5280 key usage, basic constraints) and the subject alternative names exactly as encoded.
 * Strict DER only (definite lengths, nothing after the outermost value); anything else throws
 * a plain Error that the caller turns into a rejection.
 *
 * X.509: https://www.rfc-editor.org/rfc/rfc5280#section-4.1
 */

/** One tag-length-value: the universal or context tag byte and where its contents lie. */
export interface Tlv {
  tag: number;
  /** The contents (without tag and length). */
  value: Buffer;
  /** The whole encoding, tag and length included. */
  raw: Buffer;
}

export const Tag = {
  Boolean: 0x01,
  Integer: 0x02,
  BitString: 0x03,
  OctetString: 0x04,
  Oid: 0x06,
  Utf8String: 0x0c,
  Ia5String: 0x16,
  UtcTime: 0x17,
  GeneralizedTime: 0x18,
  Sequence: 0x30,
  /** [0] EXPLICIT, constructed: the TBSCertificate version. */
  Context0: 0xa0,
  /** [3] EXPLICIT, constructed: the TBSCertificate extensions. */
  Context3: 0xa3,
} as const;

/** The TLV at `offset` of `buf`. */
export function readTlv(buf: Buffer, offset = 0): Tlv {
  if (offset + 2 > buf.length) throw new Error('DER: truncated header');
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('DER: multi-byte tags are not used in certificates');
  let length = buf[offset + 1]!;
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    // 0x80 is BER's indefinite length; DER forbids it, as it forbids lengths that fit in fewer bytes.
    if (count === 0 || count > 4 || start + count > buf.length) throw new Error('DER: invalid length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + buf[start + i]!;
    if (length < 0x80 || buf[start] === 0) throw new Error('DER: non-minimal length');
    start += count;
  }
  const end = start + length;
  if (end > buf.length) throw new Error('DER: value runs past the end');
  return { tag, value: buf.subarray(start, end), raw: buf.subarray(offset, end) };
}

/** The TLV that makes up all of `buf` (trailing bytes are an error). */
export function readWhole(buf: Buffer, tag: number, what: string): Tlv {
  const tlv = readTlv(buf);
  if (tlv.tag !== tag) throw new Error(`DER: ${what} has tag 0x${tlv.tag.toString(16)}`);
  if (tlv.raw.length !== buf.length) throw new Error(`DER: trailing bytes after ${what}`);
  return tlv;
}

/** The TLVs inside a constructed value, in order. */
export function childrenOf(tlv: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let offset = 0; offset < tlv.value.length;) {
    const child = readTlv(tlv.value, offset);
    out.push(child);
    offset += child.raw.length;
  }
  return out;
}

/** Dotted form of an OBJECT IDENTIFIER's contents. */
export function oidString(value: Buffer): string {
  if (value.length === 0 || (value[value.length - 1]! & 0x80) !== 0) throw new Error('DER: invalid OID');
  const arcs: number[] = [];
  let arc = 0;
  for (const byte of value) {
    if (arc === 0 && byte === 0x80) throw new Error('DER: non-minimal OID arc');
    arc = arc * 128 + (byte & 0x7f);
    if (arc > Number.MAX_SAFE_INTEGER / 128) throw new Error('DER: OID arc too large');
    if ((byte & 0x80) === 0) {
      arcs.push(arc);
      arc = 0;
    }
  }
  const first = arcs.shift()!;
  const top = first < 80 ? Math.floor(first / 40) : 2;
  return [top, first - top * 40, ...arcs].join('.');
}

function parseTime(tlv: Tlv): Date {
  const text = tlv.value.toString('latin1');
  // RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ (years 1950-2049), GeneralizedTime YYYYMMDDHHMMSSZ.
  const m = tlv.tag === Tag.UtcTime ? /^(\d{2})(\d{10})Z$/.exec(text) : /^(\d{4})(\d{10})Z$/.exec(text);
  if (!m || (tlv.tag !== Tag.UtcTime && tlv.tag !== Tag.GeneralizedTime)) throw new Error(`DER: invalid time "${text}"`);
  const year = tlv.tag === Tag.UtcTime ? (Number(m[1]) < 50 ? 2000 : 1900) + Number(m[1]) : Number(m[1]);
  const [mo, d, h, mi, s] = m[2]!.match(/\d{2}/g)!.map(Number) as [number, number, number, number, number];
  const date = new Date(Date.UTC(year, mo - 1, d, h, mi, s));
  if (date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) throw new Error(`DER: invalid date "${text}"`);
  return date;
}

export interface Extension {
  oid: string;
  critical: boolean;
  /** The extnValue OCTET STRING's contents: the extension's own DER. */
  value: Buffer;
}

export interface CertificateFields {
  notBefore: Date;
  notAfter: Date;
  extensions: Extension[];
}

/** Validity and extensions of a DER certificate; duplicated extensions are an error (RFC 5280 4.2). */
export function certificateFields(der: Buffer): CertificateFields {
  const [tbs] = childrenOf(readWhole(der, Tag.Sequence, 'the certificate'));
  if (tbs?.tag !== Tag.Sequence) throw new Error('DER: no TBSCertificate');
  const fields = childrenOf(tbs);
  // version [0] is optional; then serial, signature, issuer, validity.
  const validity = fields[fields[0]?.tag === Tag.Context0 ? 4 : 3];
  if (validity?.tag !== Tag.Sequence) throw new Error('DER: no validity');
  const [notBefore, notAfter] = childrenOf(validity).map(parseTime);
  if (!notBefore || !notAfter) throw new Error('DER: incomplete validity');
  const wrapper = fields.find((f) => f.tag === Tag.Context3);
  const extensions: Extension[] = [];
  for (const ext of wrapper ? childrenOf(readWhole(wrapper.value, Tag.Sequence, 'the extensions')) : []) {
    const parts = childrenOf(ext);
    const critical = parts.length === 3 && parts[1]!.tag === Tag.Boolean && parts[1]!.value[0] === 0xff;
    const value = parts[parts.length - 1];
    if (parts[0]?.tag !== Tag.Oid || value?.tag !== Tag.OctetString || parts.length < 2 || parts.length > 3) {
      throw new Error('DER: malformed extension');
    }
    const oid = oidString(parts[0].value);
    if (extensions.some((e) => e.oid === oid)) throw new Error(`the certificate repeats extension ${oid}`);
    extensions.push({ oid, critical, value: value.value });
  }
  return { notBefore, notAfter, extensions };
}

/** GeneralNames (RFC 5280 4.2.1.6): the rfc822Name [1] and uniformResourceIdentifier [6] entries. */
export function subjectAltNames(value: Buffer): { emails: string[]; uris: string[] } {
  const emails: string[] = [];
  const uris: string[] = [];
  for (const name of childrenOf(readWhole(value, Tag.Sequence, 'the subject alternative names'))) {
    if (name.tag === 0x81) emails.push(name.value.toString('latin1'));
    if (name.tag === 0x86) uris.push(name.value.toString('latin1'));
  }
  return { emails, uris };
}

/** ExtKeyUsageSyntax (RFC 5280 4.2.1.12): the purposes' OIDs. */
export function extendedKeyUsages(value: Buffer): string[] {
  return childrenOf(readWhole(value, Tag.Sequence, 'the extended key usage')).map((oid) => {
    if (oid.tag !== Tag.Oid) throw new Error('DER: malformed extended key usage');
    return oidString(oid.value);
  });
}

/** KeyUsage (RFC 5280 4.2.1.3) bit `bit` (0 digitalSignature ... 5 keyCertSign). */
export function hasKeyUsage(value: Buffer, bit: number): boolean {
  const bits = readWhole(value, Tag.BitString, 'the key usage').value;
  const byte = bits[1 + Math.floor(bit / 8)];
  return byte !== undefined && (byte & (0x80 >> (bit % 8))) !== 0;
}

/** BasicConstraints (RFC 5280 4.2.1.9): cA and pathLenConstraint. */
export function basicConstraints(value: Buffer): { ca: boolean; pathLength: number | undefined } {
  const parts = childrenOf(readWhole(value, Tag.Sequence, 'the basic constraints'));
  let ca = false;
  let pathLength: number | undefined;
  for (const part of parts) {
    if (part.tag === Tag.Boolean) ca = part.value[0] === 0xff;
    else if (part.tag === Tag.Integer && part.value.length <= 4) pathLength = part.value.readUIntBE(0, part.value.length);
    else throw new Error('DER: malformed basic constraints');
  }
  return { ca, pathLength };
}

/** The text of a DER UTF8String (Fulcio's issuer extension, OID 1.3.6.1.4.1.57264.1.8). */
export function utf8String(value: Buffer): string {
  return readWhole(value, Tag.Utf8String, 'the string').value.toString('utf8');
}
