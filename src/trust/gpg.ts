/**
 * GPG "simple signing" (containers/image docs/containers-signature.5.md): an OpenPGP signed
 * message whose literal data is a JSON payload naming a manifest digest and a docker reference.
 * Verified with OpenPGP.js against the keys a signedBy requirement names; the payload is parsed
 * as strictly as c/image does (signature/simple.go): exactly the known critical fields.
 */
import { readFile } from 'node:fs/promises';
// openpgp (~0.1 s to load) is imported when a GPG signature is first checked, not at start-up.
import type { PublicKey } from 'openpgp';
import { parseDigest } from '../image/digest.js';
import type { KeySource } from './requirements.js';
import { objectFields, parseStrictJson } from './strict-json.js';

const SIGNATURE_TYPE = 'atomic container signature';

/** What a verified simple signature claims. */
export interface SimpleSigningClaims {
  digest: string;
  dockerReference: string;
}

/** A signature that did not verify, with who signed it when that could be read. */
export class SignatureCheckError extends Error {
  constructor(
    message: string,
    readonly signer: string | undefined,
  ) {
    super(message);
  }
}

/** The OpenPGP public keys in the key files or inline data (binary or ASCII-armored keyrings). */
export async function readGpgKeys(source: KeySource): Promise<PublicKey[]> {
  const keys: PublicKey[] = [];
  const blobs = [...source.data];
  for (const path of source.paths) {
    try {
      blobs.push(await readFile(path));
    } catch (err) {
      throw new Error(`cannot read the key file ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  for (const blob of blobs) keys.push(...(await keysIn(blob, source.describe)));
  return keys;
}

async function keysIn(blob: Buffer, describe: string): Promise<PublicKey[]> {
  const { readKeys } = await import('openpgp');
  const text = blob.toString('latin1');
  try {
    if (!text.includes('-----BEGIN PGP')) return (await readKeys({ binaryKeys: blob })).map((k) => k.toPublic());
    // An armored file may hold several armored blocks (e.g. `gpg --armor --export` of two keys, concatenated).
    const blocks = text.match(/-----BEGIN PGP PUBLIC KEY BLOCK-----[\s\S]*?-----END PGP PUBLIC KEY BLOCK-----/g) ?? [];
    const keys: PublicKey[] = [];
    for (const armored of blocks) keys.push(...(await readKeys({ armoredKeys: armored })).map((k) => k.toPublic()));
    return keys;
  } catch (err) {
    throw new Error(`${describe}: not an OpenPGP public key: ${(err as Error).message}`, { cause: err });
  }
}

/** The primary key's fingerprint, as gpg prints it. */
export function fingerprintOf(key: PublicKey): string {
  return key.getFingerprint().toUpperCase();
}

/**
 * Verifies a simple-signing blob against `keys`; returns the payload claims and the signing
 * key's primary fingerprint (a signature by a subkey counts for its primary key, as in c/image).
 * Throws SignatureCheckError saying why it is not acceptable.
 */
export async function verifySimpleSigning(blob: Buffer, keys: PublicKey[]): Promise<{ claims: SimpleSigningClaims; signer: string }> {
  const { readMessage, verify } = await import('openpgp');
  let message;
  try {
    const armored = blob.subarray(0, 64).toString('latin1').includes('-----BEGIN PGP MESSAGE');
    message = armored ? await readMessage({ armoredMessage: blob.toString('latin1') }) : await readMessage({ binaryMessage: blob });
  } catch (err) {
    throw new SignatureCheckError(`not an OpenPGP signed message: ${(err as Error).message}`, undefined);
  }
  const result = await verify({ message, verificationKeys: keys, format: 'binary' }).catch((err: unknown) => {
    throw new SignatureCheckError(`cannot read the signed message: ${(err as Error).message}`, undefined);
  });
  if (result.signatures.length !== 1)
    throw new SignatureCheckError(`${result.signatures.length} OpenPGP signatures where exactly one is expected`, undefined);
  const signature = result.signatures[0]!;
  const keyId = signature.keyID.toHex().toUpperCase();
  const key = keys.find((k) => k.getKeys(signature.keyID).length > 0);
  if (!key) throw new SignatureCheckError(`signed by key ${keyId}, which is not among the trusted keys`, `key ID ${keyId}`);
  const signer = fingerprintOf(key);
  try {
    await signature.verified;
  } catch (err) {
    throw new SignatureCheckError(`the signature by key ${signer} does not verify: ${(err as Error).message}`, signer);
  }
  try {
    return { claims: parseSimpleSigningPayload(Buffer.from(result.data as Uint8Array)), signer };
  } catch (err) {
    throw new SignatureCheckError(`invalid signature payload: ${(err as Error).message}`, signer);
  }
}

/** Parses the payload: {"critical": {type, image: {docker-manifest-digest}, identity: {docker-reference}}, "optional": {...}}. */
export function parseSimpleSigningPayload(payload: Buffer): SimpleSigningClaims {
  const top = objectFields(parseStrictJson(payload.toString('utf8')), 'the payload', ['critical', 'optional'], ['critical', 'optional']);
  const optional = objectFields(top['optional'], '"optional"', Object.keys((top['optional'] as object | null) ?? {}));
  if (optional['timestamp'] !== undefined && !Number.isInteger(optional['timestamp']))
    throw new Error('optional.timestamp is not an integer');
  if (optional['creator'] !== undefined && typeof optional['creator'] !== 'string') throw new Error('optional.creator is not a string');
  const critical = objectFields(top['critical'], '"critical"', ['type', 'image', 'identity'], ['type', 'image', 'identity']);
  if (critical['type'] !== SIGNATURE_TYPE) throw new Error(`unrecognized signature type ${JSON.stringify(critical['type'])}`);
  const image = objectFields(critical['image'], '"critical.image"', ['docker-manifest-digest'], ['docker-manifest-digest']);
  const identity = objectFields(critical['identity'], '"critical.identity"', ['docker-reference'], ['docker-reference']);
  const digest = image['docker-manifest-digest'];
  const dockerReference = identity['docker-reference'];
  if (typeof digest !== 'string') throw new Error('docker-manifest-digest is not a string');
  if (typeof dockerReference !== 'string') throw new Error('docker-reference is not a string');
  parseDigest(digest);
  return { digest, dockerReference };
}
