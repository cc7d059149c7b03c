/**
 * cosign's Rekor bundle (the `dev.sigstore.cosign/bundle` annotation): a signed entry
 * timestamp (SET), the Rekor log's signature over the canonical JSON of the log entry
 * {body, integratedTime, logIndex, logID}. It proves that the log recorded this signature, by
 * this key or certificate, over this payload, at the integrated time; keyless verification
 * checks the certificate's validity at that time.
 *
 * Format and checks as containers/image signature/internal/rekor_set.go and cosign's
 * pkg/cosign/bundle; the body is a `hashedrekord` v0.0.1 entry.
 */
import { createHash } from 'node:crypto';
import { exactObject, objectOf, parseStrictJson, stringOf } from './sigstore-json.js';
import { verifySignature, type TrustedKey } from './sigstore-keys.js';
import { Progress, SignatureRejection } from './sigstore-rejection.js';

/** What the log entry must record: the signature, the key or certificate (DER) and the payload. */
export interface RekorExpectation {
  signature: Buffer;
  /** DER of the signing certificate, or the signing key's SubjectPublicKeyInfo. */
  signerDer: Buffer;
  payload: Buffer;
}

interface RekorPayload {
  body: string;
  integratedTime: number;
  logIndex: number;
  logID: string;
}

/**
 * The integrated time of `setJson` once its SET verifies against one of `logs` (the key whose
 * SHA-256 is the entry's logID) and its hashedrekord body matches `expected`; throws an
 * Untrusted SignatureRejection otherwise.
 */
export function verifyRekorSet(setJson: string, logs: readonly TrustedKey[], expected: RekorExpectation): Date {
  const { set, payload } = parseSet(setJson);
  const log = logs.find((l) => l.fingerprint === `SHA256:${payload.logID}`);
  if (!log) throw untrusted(`the Rekor entry is from log ${payload.logID}, not one whose key is trusted`);
  if (!verifySignature(log.key, canonicalPayload(payload), set)) {
    throw untrusted('the Rekor signed entry timestamp does not verify with the Rekor key');
  }
  checkBody(Buffer.from(payload.body, 'base64'), expected);
  return new Date(payload.integratedTime * 1000);
}

function parseSet(setJson: string): { set: Buffer; payload: RekorPayload } {
  try {
    const doc = exactObject(parseStrictJson(setJson, 'the Rekor bundle'), ['SignedEntryTimestamp', 'Payload'], 'the Rekor bundle');
    const p = exactObject(doc['Payload'], ['body', 'integratedTime', 'logIndex', 'logID'], 'the Rekor bundle payload');
    const payload: RekorPayload = {
      body: stringOf(p['body'], 'body'),
      integratedTime: wholeNumber(p['integratedTime'], 'integratedTime'),
      logIndex: wholeNumber(p['logIndex'], 'logIndex'),
      logID: stringOf(p['logID'], 'logID'),
    };
    if (!/^[0-9a-f]{64}$/.test(payload.logID)) throw new Error('logID is not a SHA-256 in hex');
    return { set: base64(stringOf(doc['SignedEntryTimestamp'], 'SignedEntryTimestamp'), 'SignedEntryTimestamp'), payload };
  } catch (err) {
    throw untrusted(`unusable Rekor bundle: ${(err as Error).message}`);
  }
}

/**
 * RFC 8785 canonical JSON of the entry: keys sorted, no spaces; JSON.stringify writes strings
 * and whole numbers exactly as RFC 8785 does.
 */
function canonicalPayload(p: RekorPayload): Buffer {
  const sorted = { body: p.body, integratedTime: p.integratedTime, logID: p.logID, logIndex: p.logIndex };
  return Buffer.from(JSON.stringify(sorted), 'utf8');
}

/** The hashedrekord body must name exactly this signature, signer and payload hash. */
function checkBody(body: Buffer, expected: RekorExpectation): void {
  let spec: Record<string, unknown>;
  try {
    const entry = objectOf(parseStrictJson(body, 'the Rekor entry'), 'the Rekor entry');
    if (entry['kind'] !== 'hashedrekord' || entry['apiVersion'] !== '0.0.1') {
      throw new Error(`it is a ${String(entry['kind'])} ${String(entry['apiVersion'])} entry, expected hashedrekord 0.0.1`);
    }
    spec = objectOf(entry['spec'], 'spec');
  } catch (err) {
    throw untrusted(`unusable Rekor entry: ${(err as Error).message}`);
  }
  const field = (path: string[]): unknown => path.reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], spec);
  const signature = field(['signature', 'content']);
  if (typeof signature !== 'string' || !base64(signature, 'signature').equals(expected.signature)) {
    throw untrusted('the Rekor entry records another signature');
  }
  const signer = field(['signature', 'publicKey', 'content']);
  if (typeof signer !== 'string' || !pemDer(base64(signer, 'publicKey').toString('latin1')).equals(expected.signerDer)) {
    throw untrusted('the Rekor entry records another key or certificate');
  }
  const hash = field(['data', 'hash']) as { algorithm?: unknown; value?: unknown } | undefined;
  const payloadHash = createHash('sha256').update(expected.payload).digest('hex');
  if (hash?.algorithm !== 'sha256' || hash.value !== payloadHash) throw untrusted('the Rekor entry records another payload');
}

/** The DER inside one PEM block; empty when there is not exactly one. */
function pemDer(pem: string): Buffer {
  const blocks = [...pem.matchAll(/-----BEGIN ([A-Z ]+)-----([A-Za-z0-9+/=\s]*)-----END \1-----/g)];
  const rest = pem.replace(/-----BEGIN ([A-Z ]+)-----[A-Za-z0-9+/=\s]*-----END \1-----/g, '').trim();
  if (blocks.length !== 1 || rest !== '') return Buffer.alloc(0);
  return Buffer.from(blocks[0]![2]!.replace(/\s+/g, ''), 'base64');
}

function base64(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw untrusted(`${what} is not base64`);
  return Buffer.from(text, 'base64');
}

function wholeNumber(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new Error(`${what} is not a whole number`);
  return value;
}

function untrusted(reason: string): SignatureRejection {
  return new SignatureRejection(Progress.Untrusted, reason);
}
