/**
 * Public keys and certificates in PEM, and signatures over bytes with node:crypto, in the
 * algorithms cosign signs with: ECDSA (P-256, P-384, P-521) and RSA PKCS#1 v1.5 over SHA-256,
 * and Ed25519 over the bytes themselves (sigstore/sigstore's LoadVerifier with SHA-256).
 */
import { createHash, createPublicKey, verify, X509Certificate, type KeyObject } from 'node:crypto';

/** A trusted public key with its DER SubjectPublicKeyInfo and a fingerprint for messages. */
export interface TrustedKey {
  key: KeyObject;
  /** DER SubjectPublicKeyInfo: what a Rekor entry's `publicKey` must carry for this key. */
  spki: Buffer;
  /** 'SHA256:' + hex of the SubjectPublicKeyInfo's SHA-256 (a Rekor log's ID is the same hash). */
  fingerprint: string;
}

const SUPPORTED = new Set(['ec', 'rsa', 'ed25519']);

/** The key in a `-----BEGIN PUBLIC KEY-----` PEM; an Error saying what is wrong otherwise. */
export function publicKeyFromPem(pem: string, what: string): TrustedKey {
  if (!/-----BEGIN PUBLIC KEY-----/.test(pem)) {
    const hint = /PRIVATE KEY-----/.test(pem) ? ' (it holds a private key: give the public one, e.g. cosign.pub)' : '';
    throw new Error(`${what} is not a PEM public key (-----BEGIN PUBLIC KEY-----)${hint}`);
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (cause) {
    throw new Error(`${what} is not a valid PEM public key: ${(cause as Error).message}`, { cause });
  }
  if (!SUPPORTED.has(key.asymmetricKeyType ?? '')) {
    throw new Error(`${what} is a ${key.asymmetricKeyType} key; cosign signatures use ECDSA, RSA or Ed25519 keys`);
  }
  return trustedKey(key);
}

/** `key` with its SubjectPublicKeyInfo and fingerprint. */
export function trustedKey(key: KeyObject): TrustedKey {
  const spki = key.export({ type: 'spki', format: 'der' });
  return { key, spki, fingerprint: `SHA256:${sha256Hex(spki)}` };
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** True when `signature` is `key`'s signature over `data`; malformed signatures are false, not errors. */
export function verifySignature(key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    return verify(key.asymmetricKeyType === 'ed25519' ? null : 'sha256', data, key, signature);
  } catch {
    return false;
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Every certificate in a PEM text, in order; an Error when one does not parse. */
export function certificatesFromPem(text: string, what: string): X509Certificate[] {
  return (text.match(PEM_CERTIFICATE) ?? []).map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (cause) {
      throw new Error(`${what}: certificate ${i + 1} does not parse: ${(cause as Error).message}`, { cause });
    }
  });
}

/** A DER certificate as PEM. */
export function certificatePem(der: Uint8Array): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN CERTIFICATE-----\n${lines.join('\n')}\n-----END CERTIFICATE-----\n`;
}

/** A DER SubjectPublicKeyInfo as PEM. */
export function publicKeyPem(spki: Uint8Array): string {
  return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' })
    .export({ type: 'spki', format: 'pem' })
    .toString();
}
