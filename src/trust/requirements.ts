/**
 * The requirement objects of containers-policy.json(5), parsed with c/image's rules
 * (signature/policy_config.go, policy_config_sigstore.go): exactly one key source, keyType
 * one of the four c/image knows (only GPGKeys is implemented there, and here), fulcio with
 * exactly one CA and a Rekor key, signedIdentity defaulting to matchRepoDigestOrExact.
 */
import type { SignedIdentity } from './types.js';
import { parseSignedIdentity } from './identity.js';
import { objectFields, optionalString } from './strict-json.js';

/** Key material named by a policy: files to read, or bytes given inline (base64 in the JSON). */
export interface KeySource {
  /** How the policy named it, for messages: 'keyPath /etc/pki/key.gpg', 'keyData'. */
  describe: string;
  paths: string[];
  data: Buffer[];
}

export interface FulcioSource {
  ca: KeySource;
  oidcIssuer: string;
  subjectEmail: string;
}

export type PolicyRequirement =
  | { type: 'insecureAcceptAnything' }
  | { type: 'reject' }
  | { type: 'signedBaseLayer' }
  | { type: 'signedBy'; keyType: string; keys: KeySource; signedIdentity: SignedIdentity }
  | {
      type: 'sigstoreSigned';
      keys: KeySource | undefined;
      fulcio: FulcioSource | undefined;
      /** A `pki` section: accepted by the parser as c/image accepts it, refused when evaluated. */
      pki: boolean;
      rekor: KeySource | undefined;
      signedIdentity: SignedIdentity;
    };

const KEY_TYPES = ['GPGKeys', 'signedByGPGKeys', 'X509Certificates', 'signedByX509CAs'];

/** Parses one requirement; throws an Error saying what is wrong (the caller adds the file name). */
export function parseRequirement(value: unknown, what: string): PolicyRequirement {
  const type = (value as { type?: unknown } | null)?.type;
  switch (type) {
    case 'insecureAcceptAnything':
    case 'reject':
      objectFields(value, `${what} (${type})`, ['type'], ['type']);
      return { type };
    case 'signedBaseLayer':
      objectFields(value, `${what} (${type})`, ['type', 'baseLayerIdentity'], ['type', 'baseLayerIdentity']);
      parseSignedIdentity((value as Record<string, unknown>)['baseLayerIdentity'], `${what} baseLayerIdentity`);
      return { type };
    case 'signedBy':
      return parseSignedBy(value, `${what} (signedBy)`);
    case 'sigstoreSigned':
      return parseSigstoreSigned(value, `${what} (sigstoreSigned)`);
    default:
      throw new Error(`${what}: unknown requirement type ${JSON.stringify(type)}`);
  }
}

function parseSignedBy(value: unknown, what: string): PolicyRequirement {
  const fields = objectFields(value, what, ['type', 'keyType', 'keyPath', 'keyPaths', 'keyData', 'signedIdentity']);
  const keyType = optionalString(fields, 'keyType', what);
  if (keyType === undefined || !KEY_TYPES.includes(keyType)) throw new Error(`${what}: invalid keyType ${JSON.stringify(keyType ?? '')}`);
  const keys = oneKeySource(fields, what, ['keyPath', 'keyPaths', 'keyData']);
  if (!keys) throw new Error(`${what}: exactly one of keyPath, keyPaths and keyData must be specified, none of them present`);
  return { type: 'signedBy', keyType, keys, signedIdentity: signedIdentityOf(fields, what) };
}

function parseSigstoreSigned(value: unknown, what: string): PolicyRequirement {
  const keyFields = ['keyPath', 'keyPaths', 'keyData', 'keyDatas'];
  const rekorFields = ['rekorPublicKeyPath', 'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas'];
  const fields = objectFields(value, what, ['type', ...keyFields, 'fulcio', 'pki', ...rekorFields, 'signedIdentity']);
  const keys = oneKeySource(fields, what, keyFields);
  const fulcio = fields['fulcio'] === undefined ? undefined : parseFulcio(fields['fulcio'], `${what} fulcio`);
  const pki = fields['pki'] !== undefined;
  if (pki) objectFields(fields['pki'], `${what} pki`, Object.keys((fields['pki'] as object | null) ?? {}));
  if ([keys, fulcio, pki || undefined].filter((s) => s !== undefined).length !== 1) {
    throw new Error(`${what}: exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki must be specified`);
  }
  const rekor = oneKeySource(fields, what, rekorFields);
  if (fulcio && !rekor) throw new Error(`${what}: a Rekor public key (rekorPublicKeyPath or rekorPublicKeyData) is required with fulcio`);
  return { type: 'sigstoreSigned', keys, fulcio, pki, rekor, signedIdentity: signedIdentityOf(fields, what) };
}

function parseFulcio(value: unknown, what: string): FulcioSource {
  const fields = objectFields(value, what, ['caPath', 'caData', 'oidcIssuer', 'subjectEmail']);
  const ca = oneKeySource(fields, what, ['caPath', 'caData']);
  if (!ca) throw new Error(`${what}: one of caPath and caData must be specified`);
  const oidcIssuer = optionalString(fields, 'oidcIssuer', what);
  if (!oidcIssuer) throw new Error(`${what}: oidcIssuer not specified`);
  const subjectEmail = optionalString(fields, 'subjectEmail', what);
  if (!subjectEmail) throw new Error(`${what}: subjectEmail not specified`);
  return { ca, oidcIssuer, subjectEmail };
}

function signedIdentityOf(fields: Record<string, unknown>, what: string): SignedIdentity {
  const value = fields['signedIdentity'];
  return value === undefined ? { type: 'matchRepoDigestOrExact' } : parseSignedIdentity(value, `${what} signedIdentity`);
}

/**
 * The one key source among `names` present in `fields` (undefined when none is); more than one
 * is an error. Names ending in "Path" hold a path, "Paths" a non-empty list of paths, "Data" a
 * base64 string, "Datas" a non-empty list of them.
 */
function oneKeySource(fields: Record<string, unknown>, what: string, names: string[]): KeySource | undefined {
  const present = names.filter((n) => fields[n] !== undefined);
  if (present.length > 1) throw new Error(`${what}: only one of ${present.join(', ')} may be specified`);
  const name = present[0];
  if (name === undefined) return undefined;
  const value = fields[name];
  const list = (check: (v: unknown) => boolean): unknown[] => {
    if (!Array.isArray(value) || value.length === 0 || !value.every(check)) throw new Error(`${what}: "${name}" must be a non-empty list`);
    return value as unknown[];
  };
  const isPath = (v: unknown): boolean => typeof v === 'string' && v !== '';
  if (name.endsWith('Paths')) return { describe: `${name} ${(list(isPath) as string[]).join(', ')}`, paths: value as string[], data: [] };
  if (name.endsWith('Datas'))
    return { describe: name, paths: [], data: list((v) => typeof v === 'string').map((v) => base64(v, what, name)) };
  if (name.endsWith('Path')) {
    if (!isPath(value)) throw new Error(`${what}: "${name}" must be a non-empty string`);
    return { describe: `${name} ${value as string}`, paths: [value as string], data: [] };
  }
  return { describe: name, paths: [], data: [base64(value, what, name)] };
}

/** Go's encoding/json []byte: standard base64 with padding, nothing else. */
function base64(value: unknown, what: string, name: string): Buffer {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    throw new Error(`${what}: "${name}" must be base64 data`);
  }
  return Buffer.from(value, 'base64');
}
