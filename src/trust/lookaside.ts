/**
 * Lookaside signature storage (containers/image docs/signature-protocols.md): the simple
 * signatures of manifest `alg:hex` in repository `ns/repo` are
 * BASE/ns/repo@alg=hex/signature-1, signature-2, ... up to the first one missing (a missing file
 * or an HTTP 404; any other failure is an error, never "no signatures"). BASE is a file://,
 * http:// or https:// URL from registries.d. HTTP lookasides are read through the project's
 * transport (CAs, proxies) with no credentials: they belong to the registry, not to this host.
 * Fetched HTTP signatures are kept in an optional cache so that an offline pull verifies
 * exactly the same signatures.
 */
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import { parseDigest } from '../image/digest.js';
import { Deadline, DEFAULT_DOCUMENT_TIMEOUT_MS } from '../registry/deadline.js';
import { exchange } from '../registry/exchange.js';
import { exchangeFailure } from '../registry/failures.js';
import { headerValue, readCapped } from '../registry/responses.js';
import { loadHttp, type Http, type TransportOptions } from '../registry/transport.js';

/** c/image's maxLookasideSignatures: more than this is taken as a server error. */
export const MAX_LOOKASIDE_SIGNATURES = 128;
/** c/image's iolimits.MaxSignatureBodySize: a signature is a few hundred bytes. */
export const MAX_SIGNATURE_BYTES = 4 * 1024 * 1024;
const MAX_REDIRECTS = 5;

/** Remembers the signatures read from an HTTP lookaside, by the URL of their directory. */
export interface LookasideCache {
  get(url: string): Promise<Buffer[] | undefined>;
  put(url: string, signatures: Buffer[]): Promise<void>;
}

export interface LookasideOptions {
  signal?: AbortSignal | undefined;
  transport?: TransportOptions | undefined;
  /** Hosts whose TLS certificate is not verified (--insecure-registry). */
  insecureHosts?: readonly string[] | undefined;
  cache?: LookasideCache | undefined;
  /** Read HTTP lookasides from `cache` only. */
  offline?: boolean | undefined;
}

/** The URL of the directory holding the signatures of `digest` in repository `repoPath` (no registry host). */
export function signatureDirUrl(base: string, repoPath: string, digest: string): URL {
  const { algorithm, hex } = parseDigest(digest);
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new Error(`invalid lookaside URL "${base}"`);
  }
  if (!['file:', 'http:', 'https:'].includes(url.protocol))
    throw new Error(`unsupported lookaside URL scheme in "${base}": use file://, http:// or https://`);
  // As Go's url.URL: "https://host" has an empty path (so BASE/ns/repo has one slash), "https://host/" has "/".
  const basePath = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*$/i.test(base) ? '' : url.pathname;
  url.pathname = `${basePath}/${repoPath}@${algorithm}=${hex}`;
  return url;
}

/** The signature blobs stored for `digest`, in order; throws an Error when they cannot be read. */
export async function readLookaside(base: string, repoPath: string, digest: string, options: LookasideOptions = {}): Promise<Buffer[]> {
  const dir = signatureDirUrl(base, repoPath, digest);
  if (dir.protocol === 'file:') return readAll((n) => readSignatureFile(fileURLToPath(`${dir.href}/signature-${n}`)));
  const key = dir.href;
  if (options.offline) {
    const cached = await options.cache?.get(key);
    if (!cached) throw new Error(`the signatures at ${key} are not in the cache: verify once without --offline`);
    return cached;
  }
  // One transport for the whole lookup: a dispatcher per host, each verifying TLS unless that host
  // is listed as insecure.
  const insecureHosts = options.insecureHosts ?? [];
  const http = loadHttp((url) => insecureHosts.some((h) => h === url.host || h === url.hostname), options.transport);
  const signatures = await readAll((n) => fetchSignature(new URL(`${dir.href}/signature-${n}`), options, http));
  await options.cache?.put(key, signatures);
  return signatures;
}

async function readAll(readOne: (n: number) => Promise<Buffer | undefined>): Promise<Buffer[]> {
  const signatures: Buffer[] = [];
  for (let n = 1; ; n++) {
    if (n > MAX_LOOKASIDE_SIGNATURES) throw new Error(`more than ${MAX_LOOKASIDE_SIGNATURES} signatures: taken as a server error`);
    const signature = await readOne(n);
    if (signature === undefined) return signatures;
    signatures.push(signature);
  }
}

async function readSignatureFile(path: string): Promise<Buffer | undefined> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read the signature ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const { size } = await file.stat();
    if (size > MAX_SIGNATURE_BYTES) throw new Error(`the signature ${path} is ${size} bytes, over the ${MAX_SIGNATURE_BYTES}-byte limit`);
    return await file.readFile();
  } finally {
    await file.close();
  }
}

/**
 * One signature over HTTP(S): undefined on 404. Each request and its body must complete within
 * the document deadline (transport.documentTimeout), as registry documents must; a lookaside
 * that cannot be reached, is too slow or breaks off is NETWORK, one that answers another error
 * status REGISTRY_ERROR: the signatures could not be read (trust/unavailable.ts). A signature
 * over the size cap rejects the image.
 */
async function fetchSignature(first: URL, options: LookasideOptions, transport: Promise<Http>): Promise<Buffer | undefined> {
  let url = first;
  for (let redirects = 0; ; redirects++) {
    const http = await transport;
    const what = `the signature ${url.href}`;
    const deadline = new Deadline(options.transport?.documentTimeout ?? DEFAULT_DOCUMENT_TIMEOUT_MS, options.signal);
    try {
      // No Authorization header, ever: registry credentials are not for the lookaside server.
      const res = await exchange(http, url, { method: 'GET', headers: {} }, deadline, options.signal, what);
      const location = headerValue(res.headers['location']);
      if (res.statusCode >= 300 && res.statusCode < 400 && location && redirects < MAX_REDIRECTS) {
        await res.body.dump();
        url = new URL(location, url);
        continue;
      }
      if (res.statusCode === 404) {
        await res.body.dump();
        return undefined;
      }
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new PullUnpackError('REGISTRY_ERROR', `the lookaside ${url.host} failed to serve ${url.href}: HTTP ${res.statusCode}`, {
          hint: 'the signature server is failing: try again later, or tell its operator',
        });
      }
      return await readCapped(res.body, MAX_SIGNATURE_BYTES, res.headers['content-length'], what, 'TOO_LARGE');
    } catch (err) {
      const failure = isPullUnpackError(err) ? err : exchangeFailure(err, deadline, options.signal, url.host, what);
      // Over the cap is a verdict on the signature; the rest says it could not be read.
      if (isPullUnpackError(failure, 'TOO_LARGE')) throw new Error(failure.message, { cause: err });
      throw failure;
    } finally {
      deadline.settle();
    }
  }
}
