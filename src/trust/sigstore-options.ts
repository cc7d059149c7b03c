/**
 * The sigstoreSigned requirement of the --verify-* flags, for users without a policy file:
 * `--verify-key FILE` (cosign PEM public keys, any of which may have signed) or keyless
 * `--verify-identity EMAIL|URI --verify-issuer URL --trusted-root FILE`, where the file is
 * sigstore's trusted_root.json (the Fulcio CA chains and Rekor keys, as `cosign verify
 * --trusted-root` reads it). Like `cosign verify`, a signature that names no image identity is
 * accepted on its digest; one that names an identity must satisfy matchRepoDigestOrExact.
 *
 * trusted_root.json: https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto
 */
import { readFile } from 'node:fs/promises';
import { PullUnpackError } from '../errors.js';
import { objectOf, parseStrictJson } from './sigstore-json.js';
import { certificatePem, certificatesFromPem, publicKeyFromPem, publicKeyPem } from './sigstore-keys.js';
import type { SigstoreRequirement, VerifyOptions } from './types.js';

const TRUSTED_ROOT_MEDIA_TYPE = /^application\/vnd\.dev\.sigstore\.trustedroot(?:\+json;version=0\.\d+|\.v0\.\d+\+json)$/;
const TRUSTED_ROOT_HINT =
  "give sigstore's trusted_root.json (as `cosign trusted-root create` writes it, or from the sigstore TUF repository)";
/** Key and trusted-root files are small; a larger file is a wrong file. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;

/** The requirement the --verify-* flags describe, with its key files and trusted root read. */
export async function requirementFromVerifyOptions(options: VerifyOptions): Promise<SigstoreRequirement> {
  const keyless = options.identity !== undefined || options.issuer !== undefined || options.trustedRootPath !== undefined;
  const common = { type: 'sigstoreSigned', signedIdentity: { type: 'matchRepoDigestOrExact' }, acceptDigestOnlySignatures: true } as const;
  if (options.keyPaths.length > 0) {
    if (keyless) throw usage('give --verify-key, or --verify-identity with --verify-issuer and --trusted-root, not both');
    const publicKeys = await Promise.all(options.keyPaths.map(readKey));
    return { ...common, publicKeys, rekorPublicKeys: [] };
  }
  if (options.identity === undefined) {
    throw usage(
      keyless
        ? '--verify-issuer and --trusted-root go with --verify-identity EMAIL|URI'
        : 'nothing to verify with: give --verify-key FILE or --verify-identity EMAIL|URI',
    );
  }
  if (options.issuer === undefined) {
    throw usage(
      '--verify-identity needs --verify-issuer URL, the OIDC issuer that vouched for the signer (e.g. https://accounts.google.com)',
    );
  }
  if (options.trustedRootPath === undefined) throw usage('--verify-identity needs --trusted-root FILE', TRUSTED_ROOT_HINT);
  checkIssuer(options.issuer);
  const subject = subjectOf(options.identity);
  const root = await readTrustedRoot(options.trustedRootPath);
  return {
    ...common,
    publicKeys: [],
    fulcio: { caCertificates: root.caCertificates, oidcIssuer: options.issuer, ...subject },
    rekorPublicKeys: root.rekorPublicKeys,
  };
}

/** An email address, or a URI (a CI workflow identity such as https://github.com/o/r/.github/workflows/w.yml@refs/heads/main). */
function subjectOf(identity: string): { subjectEmail: string } | { subjectUri: string } {
  if (/^[a-z][a-z0-9+.-]*:/i.test(identity)) {
    if (!URL.canParse(identity)) throw usage(`--verify-identity ${identity} is not a valid URI`);
    return { subjectUri: identity };
  }
  if (/^[^@\s]+@[^@\s]+$/.test(identity)) return { subjectEmail: identity };
  throw usage(`--verify-identity ${identity} is neither an email address nor a URI`);
}

function checkIssuer(issuer: string): void {
  const url = URL.canParse(issuer) ? new URL(issuer) : undefined;
  if (url?.protocol !== 'https:' && url?.protocol !== 'http:') {
    throw usage(
      `--verify-issuer ${issuer} is not an issuer URL`,
      'give the OIDC issuer URL, e.g. https://token.actions.githubusercontent.com',
    );
  }
}

async function readKey(path: string): Promise<string> {
  const text = await readText(path, '--verify-key');
  try {
    const { key } = publicKeyFromPem(text, `--verify-key ${path}`);
    return key.export({ type: 'spki', format: 'pem' }).toString();
  } catch (err) {
    throw usage((err as Error).message, 'give the PEM public key cosign wrote (cosign.pub)');
  }
}

/** The Fulcio CA certificates (PEM, every chain) and Rekor keys (PEM) of a trusted_root.json. */
async function readTrustedRoot(path: string): Promise<{ caCertificates: string; rekorPublicKeys: string[] }> {
  const text = await readText(path, '--trusted-root');
  const what = `--trusted-root ${path}`;
  try {
    const root = objectOf(parseStrictJson(text, what), what);
    if (typeof root['mediaType'] !== 'string' || !TRUSTED_ROOT_MEDIA_TYPE.test(root['mediaType'])) {
      throw new Error(`${what} is not a sigstore trusted root (mediaType ${JSON.stringify(root['mediaType'])})`);
    }
    const cas = listOf(root['certificateAuthorities'], 'certificateAuthorities').flatMap((ca, i) =>
      listOf(objectOf(objectOf(ca, `certificateAuthorities[${i}]`)['certChain'], 'certChain')['certificates'], 'certificates'),
    );
    const caCertificates = cas.map((c, i) => certificatePem(rawBytes(c, `certificate ${i + 1}`))).join('');
    certificatesFromPem(caCertificates, what);
    const rekorPublicKeys = listOf(root['tlogs'], 'tlogs').map((log, i) => {
      const spki = rawBytes(objectOf(log, `tlogs[${i}]`)['publicKey'], `tlogs[${i}].publicKey`);
      const pem = publicKeyPem(spki);
      publicKeyFromPem(pem, `tlogs[${i}].publicKey`);
      return pem;
    });
    if (!caCertificates) throw new Error(`${what} lists no Fulcio certificate authority`);
    if (rekorPublicKeys.length === 0) throw new Error(`${what} lists no Rekor log (tlogs)`);
    return { caCertificates, rekorPublicKeys };
  } catch (err) {
    throw usage(`${(err as Error).message.startsWith(what) ? '' : `${what}: `}${(err as Error).message}`, TRUSTED_ROOT_HINT);
  }
}

function listOf(value: unknown, what: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`);
  return value;
}

/** `{"rawBytes": "<base64 DER>"}` -> the DER. */
function rawBytes(value: unknown, what: string): Buffer {
  const raw = objectOf(value, what)['rawBytes'];
  if (typeof raw !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(raw)) throw new Error(`${what} has no base64 rawBytes`);
  return Buffer.from(raw, 'base64');
}

async function readText(path: string, flag: string): Promise<string> {
  try {
    const bytes = await readFile(path);
    if (bytes.length > MAX_FILE_BYTES) throw usage(`${flag} ${path} is ${bytes.length} bytes: not a key or trusted root`);
    return bytes.toString('utf8');
  } catch (err) {
    if (err instanceof PullUnpackError) throw err;
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'it is a directory' : e.message;
    throw usage(`cannot read ${flag} ${path}: ${why}`);
  }
}

function usage(message: string, hint?: string): PullUnpackError {
  return new PullUnpackError('USAGE', message, { hint });
}
