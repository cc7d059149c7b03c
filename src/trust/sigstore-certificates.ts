/**
 * Keyless (Fulcio) certificates: a leaf certificate is trusted when it chains to one of the
 * requirement's CA certificates with every certificate valid at the signature's time (the
 * Rekor integrated time), it is for code signing, and it names the required subject (an email
 * or URI SAN) and OIDC issuer. Signatures along the chain are checked with node:crypto; the
 * fields it does not expose come from sigstore-der.ts.
 *
 * As containers/image (signature/fulcio_cert.go) and cosign: Fulcio certificates live minutes,
 * so validity is checked at the time the log recorded the signature, not now.
 * Fulcio's extensions: https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import type { SigstoreRequirement } from './types.js';
import {
  basicConstraints,
  certificateFields,
  extendedKeyUsages,
  hasKeyUsage,
  subjectAltNames,
  utf8String,
  type CertificateFields,
} from './sigstore-der.js';
import { certificatesFromPem } from './sigstore-keys.js';
import { Progress, SignatureRejection } from './sigstore-rejection.js';

const OID = {
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  extKeyUsage: '2.5.29.37',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  anyExtendedKeyUsage: '2.5.29.37.0',
  /** Fulcio's issuer extension, v1: the issuer URL as raw bytes (deprecated, still written). */
  fulcioIssuerV1: '1.3.6.1.4.1.57264.1.1',
  /** Fulcio's issuer extension, v2: the issuer URL as a DER UTF8String. */
  fulcioIssuerV2: '1.3.6.1.4.1.57264.1.8',
} as const;
/** Critical extensions this verifier understands; a certificate with another critical one is refused (RFC 5280 4.2). */
const UNDERSTOOD_CRITICAL = new Set<string>([OID.keyUsage, OID.subjectAltName, OID.basicConstraints, OID.extKeyUsage]);
const KEY_USAGE_DIGITAL_SIGNATURE = 0;
const KEY_USAGE_KEY_CERT_SIGN = 5;
/** Longer chains than this are not searched (Fulcio's are root, intermediate, leaf). */
const MAX_CHAIN_LENGTH = 6;
/** A chain annotation with more certificates than this is refused: each one costs signature checks. */
const MAX_CHAIN_CERTIFICATES = 10;

export interface FulcioTrust {
  /** Trust anchors: every certificate the requirement lists, roots and intermediates alike. */
  anchors: X509Certificate[];
  oidcIssuer: string;
  subjectEmail: string | undefined;
  subjectUri: string | undefined;
}

/** The requirement's Fulcio trust, its CA certificates parsed; an Error when they do not parse. */
export function fulcioTrust(fulcio: NonNullable<SigstoreRequirement['fulcio']>): FulcioTrust {
  const anchors = certificatesFromPem(fulcio.caCertificates, 'the Fulcio CA certificates');
  if (anchors.length === 0) throw new Error('the Fulcio CA certificates hold no PEM certificate');
  if (!fulcio.subjectEmail && !fulcio.subjectUri) throw new Error('a keyless requirement needs a subject email or URI');
  if (!fulcio.oidcIssuer) throw new Error('a keyless requirement needs an OIDC issuer');
  return { anchors, oidcIssuer: fulcio.oidcIssuer, subjectEmail: fulcio.subjectEmail, subjectUri: fulcio.subjectUri };
}

/**
 * The leaf's public key and its "subject from issuer" identity, once the leaf (PEM, exactly one
 * certificate) chains through `chainPem`'s untrusted intermediates to a trusted anchor at `at`
 * and names the required subject and issuer. Throws a SignatureRejection saying why not.
 */
export function verifyFulcioCertificate(
  leafPem: string,
  chainPem: string | undefined,
  trust: FulcioTrust,
  at: Date,
): { key: KeyObject; signer: string } {
  const leaves = untrusted(() => certificatesFromPem(leafPem, 'the signing certificate'));
  if (leaves.length !== 1) throw reject(`the signing certificate annotation holds ${leaves.length} certificates, expected 1`);
  const leaf = leaves[0]!;
  const intermediates = chainPem === undefined ? [] : untrusted(() => certificatesFromPem(chainPem, 'the certificate chain'));
  if (intermediates.length > MAX_CHAIN_CERTIFICATES)
    throw reject(`the certificate chain holds ${intermediates.length} certificates, over the cap of ${MAX_CHAIN_CERTIFICATES}`);
  const signer = leafIdentity(leaf, trust);
  const path = chainTo(leaf, { anchors: trust.anchors, pool: intermediates, deadEnds: new Set() }, []);
  if (!path) throw reject(`the certificate for ${signer} does not chain to a trusted Fulcio CA`, signer);
  checkPath(path, at, signer);
  checkLeafFor(leaf, trust, signer);
  return { key: leaf.publicKey, signer };
}

/**
 * Checks a leaf that something else chained (sigstore-js, for bundles) for code signing and
 * the required subject and issuer; returns its identity.
 */
export function checkLeafCertificate(der: Uint8Array, trust: FulcioTrust): string {
  const leaf = untrusted(() => new X509Certificate(Buffer.from(der)));
  const signer = leafIdentity(leaf, trust);
  checkLeafFor(leaf, trust, signer);
  return signer;
}

/** "subject from issuer" as the certificate claims it, for reports. */
function leafIdentity(leaf: X509Certificate, trust: FulcioTrust): string {
  const fields = fieldsOf(leaf);
  const names = subjectNames(fields);
  const subject = (trust.subjectUri ? names.uris[0] : undefined) ?? names.emails[0] ?? names.uris[0] ?? '(no email or URI)';
  return `${subject} from ${fulcioIssuer(fields) ?? '(no issuer)'}`;
}

function checkLeafFor(leaf: X509Certificate, trust: FulcioTrust, signer: string): void {
  const fields = fieldsOf(leaf);
  const eku = extension(fields, OID.extKeyUsage);
  if (!eku || !untrusted(() => extendedKeyUsages(eku)).includes(OID.codeSigning)) {
    throw reject(`the certificate for ${signer} is not for code signing`, signer);
  }
  const usage = extension(fields, OID.keyUsage);
  if (usage && !untrusted(() => hasKeyUsage(usage, KEY_USAGE_DIGITAL_SIGNATURE))) {
    throw reject(`the certificate for ${signer} does not allow digital signatures`, signer);
  }
  const issuer = fulcioIssuer(fields);
  if (issuer !== trust.oidcIssuer) {
    throw reject(`the certificate was issued for ${issuer ?? 'no OIDC issuer'}, not ${trust.oidcIssuer}`, signer);
  }
  const names = subjectNames(fields);
  const wanted = trust.subjectEmail ?? trust.subjectUri!;
  const has = trust.subjectEmail !== undefined ? names.emails.includes(trust.subjectEmail) : names.uris.includes(wanted);
  if (!has)
    throw reject(`the certificate is for ${[...names.emails, ...names.uris].join(', ') || 'no email or URI'}, not ${wanted}`, signer);
}

interface ChainSearch {
  anchors: X509Certificate[];
  /** Untrusted intermediates from the signature. */
  pool: X509Certificate[];
  /** Certificates known to lead to no anchor: each is searched once, so a cross-signed pool costs N², not Nᴺ. */
  deadEnds: Set<X509Certificate>;
}

/** A path from `cert` to a trusted anchor (leaf first), or undefined. */
function chainTo(cert: X509Certificate, search: ChainSearch, path: X509Certificate[]): X509Certificate[] | undefined {
  const here = [...path, cert];
  if (search.anchors.some((a) => a.raw.equals(cert.raw))) return here;
  if (here.length >= MAX_CHAIN_LENGTH || search.deadEnds.has(cert)) return undefined;
  for (const issuer of [...search.anchors, ...search.pool]) {
    if (here.some((c) => c.raw.equals(issuer.raw)) || !issues(issuer, cert)) continue;
    const found = chainTo(issuer, search, here);
    if (found) return found;
  }
  search.deadEnds.add(cert);
  return undefined;
}

function issues(issuer: X509Certificate, cert: X509Certificate): boolean {
  try {
    return issuer.ca && cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Validity at `at`, critical extensions, and the CA rules for every certificate above the leaf. */
function checkPath(path: X509Certificate[], at: Date, signer: string): void {
  path.forEach((cert, depth) => {
    const fields = fieldsOf(cert);
    const name = depth === 0 ? `the certificate for ${signer}` : `CA certificate "${cert.subject.replace(/\n/g, ', ')}"`;
    if (at < fields.notBefore || at > fields.notAfter) {
      throw reject(
        `${name} was not valid at ${at.toISOString()} (valid ${fields.notBefore.toISOString()} to ${fields.notAfter.toISOString()})`,
        signer,
      );
    }
    const unknown = fields.extensions.find((e) => e.critical && !UNDERSTOOD_CRITICAL.has(e.oid));
    if (unknown) throw reject(`${name} has an unsupported critical extension ${unknown.oid}`, signer);
    if (depth === 0) return;
    const constraints = extension(fields, OID.basicConstraints);
    const basic = constraints ? untrusted(() => basicConstraints(constraints)) : undefined;
    if (!basic?.ca) throw reject(`${name} is not a CA`, signer);
    // pathLenConstraint counts the CA certificates below this one, the leaf not included.
    if (basic.pathLength !== undefined && depth - 1 > basic.pathLength) throw reject(`${name} allows a shorter chain`, signer);
    const usage = extension(fields, OID.keyUsage);
    if (usage && !untrusted(() => hasKeyUsage(usage, KEY_USAGE_KEY_CERT_SIGN))) throw reject(`${name} may not sign certificates`, signer);
    const eku = extension(fields, OID.extKeyUsage);
    const purposes = eku ? untrusted(() => extendedKeyUsages(eku)) : undefined;
    if (purposes && !purposes.includes(OID.codeSigning) && !purposes.includes(OID.anyExtendedKeyUsage)) {
      throw reject(`${name} may not issue code-signing certificates`, signer);
    }
  });
}

/** The OIDC issuer Fulcio recorded: v2 (UTF8String) and v1 (raw bytes) must agree when both are there. */
function fulcioIssuer(fields: CertificateFields): string | undefined {
  const v2 = extension(fields, OID.fulcioIssuerV2);
  const v1 = extension(fields, OID.fulcioIssuerV1);
  const fromV2 = v2 ? untrusted(() => utf8String(v2)) : undefined;
  const fromV1 = v1?.toString('utf8');
  if (fromV2 !== undefined && fromV1 !== undefined && fromV1 !== fromV2) {
    throw reject(`the certificate names two OIDC issuers: ${fromV2} and ${fromV1}`);
  }
  return fromV2 ?? fromV1;
}

function subjectNames(fields: CertificateFields): { emails: string[]; uris: string[] } {
  const san = extension(fields, OID.subjectAltName);
  return san ? untrusted(() => subjectAltNames(san)) : { emails: [], uris: [] };
}

function fieldsOf(cert: X509Certificate): CertificateFields {
  return untrusted(() => certificateFields(cert.raw));
}

function extension(fields: CertificateFields, oid: string): Buffer | undefined {
  return fields.extensions.find((e) => e.oid === oid)?.value;
}

function reject(reason: string, signer?: string): SignatureRejection {
  return new SignatureRejection(Progress.Untrusted, reason, signer);
}

/** Runs a parser on untrusted certificate bytes; what it throws becomes an Untrusted rejection. */
function untrusted<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof SignatureRejection) throw err;
    throw reject(`unusable certificate: ${(err as Error).message}`);
  }
}
