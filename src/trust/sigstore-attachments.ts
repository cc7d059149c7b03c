/**
 * Where sigstore signatures of a digest are found, read from the image's source with every
 * read capped and every blob verified against its descriptor:
 * - cosign's attachment: the manifest tagged `<alg>-<hex>.sig` in the image's repository, one
 *   simple-signing payload per layer, the signature and keyless material in layer annotations
 *   (https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md);
 * - sigstore bundles attached as OCI 1.1 referrers: the referrers API, or the `<alg>-<hex>`
 *   referrers tag where the registry has none (distribution-spec v1.1, cosign's BUNDLE_SPEC.md).
 * Unreadable signature material becomes a finding with a problem (reported, never trusted);
 * errors that say nothing about the signatures (network, registry, credentials, cache, abort) propagate.
 */
import { isPullUnpackError } from '../errors.js';
import { parseDigest } from '../image/digest.js';
import { parseManifest, type Descriptor, type FetchedManifest, type ImageIndex, type ImageManifest } from '../image/oci.js';
import { readBlob } from '../sources/source.js';
import type { CosignSignature } from './sigstore-cosign.js';
import { COSIGN_SIGN_PREDICATE } from './sigstore-bundles.js';
import { parseStrictJson } from './sigstore-json.js';
import type { TrustContext } from './types.js';
import { isUnavailable } from './unavailable.js';

/** A `.sig` manifest or referrers index larger than this is refused (about 200 keyless signatures). */
export const MAX_SIGNATURE_MANIFEST_BYTES = 1024 * 1024;
/** A payload or bundle larger than this is refused (real ones are a few KiB). */
export const MAX_SIGNATURE_BLOB_BYTES = 1024 * 1024;
/** At most this many signatures are read per digest and kind (cosign caps attachments too). */
export const MAX_SIGNATURES = 128;

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
const ANNOTATION = {
  signature: 'dev.cosignproject.cosign/signature',
  certificate: 'dev.sigstore.cosign/certificate',
  chain: 'dev.sigstore.cosign/chain',
  bundle: 'dev.sigstore.cosign/bundle',
  predicateType: 'dev.sigstore.bundle.predicateType',
} as const;
/** application/vnd.dev.sigstore.bundle.v0.3+json and the older ...bundle+json;version=0.x. */
const BUNDLE_MEDIA_TYPE = /^application\/vnd\.dev\.sigstore\.bundle(?:\.v0\.\d+\+json|\+json;version=0\.\d+)$/;

export type Finding =
  | { kind: 'cosign'; where: string; signature: CosignSignature }
  | { kind: 'sigstore-bundle'; where: string; bundle: Buffer }
  | { kind: 'cosign' | 'sigstore-bundle'; where: string; problem: string };

/** The cosign signatures attached to `ctx.digest` (none when there is no `.sig` tag). */
export async function cosignSignatures(ctx: TrustContext): Promise<Finding[]> {
  const { algorithm, hex } = parseDigest(ctx.digest);
  const tag = `${algorithm}-${hex}.sig`;
  const kind = 'cosign';
  let manifest: ImageManifest;
  try {
    const fetched = await ctx.source.getManifest(tag, ctx.signal);
    manifest = parsed(fetched, tag, 'manifest') as ImageManifest;
  } catch (err) {
    if (isPullUnpackError(err, 'NOT_FOUND')) return [];
    return [{ kind, where: tag, problem: problemOf(err) }];
  }
  const layers = manifest.layers.filter((l) => l.mediaType === SIMPLE_SIGNING_MEDIA_TYPE);
  if (layers.length > MAX_SIGNATURES)
    return [{ kind, where: tag, problem: `it lists ${layers.length} signatures, over the cap of ${MAX_SIGNATURES}` }];
  const found: Finding[] = [];
  for (const [i, layer] of layers.entries()) {
    const where = `${tag} layer ${manifest.layers.indexOf(layer) + 1}`;
    const annotations = layer.annotations ?? {};
    const base64Signature = annotations[ANNOTATION.signature];
    if (base64Signature === undefined) {
      found.push({ kind, where, problem: `it has no ${ANNOTATION.signature} annotation` });
      continue;
    }
    try {
      const payload = await readBlob(ctx.source, layer, MAX_SIGNATURE_BLOB_BYTES, ctx.signal, `signature payload ${i + 1} (${where})`);
      const signature = {
        payload,
        base64Signature,
        certificate: annotations[ANNOTATION.certificate],
        chain: annotations[ANNOTATION.chain],
        rekorBundle: annotations[ANNOTATION.bundle],
      };
      found.push({ kind, where, signature });
    } catch (err) {
      found.push({ kind, where, problem: problemOf(err) });
    }
  }
  return found;
}

/** The sigstore bundles that refer to `ctx.digest`, through the referrers API or its tag fallback. */
export async function sigstoreBundles(ctx: TrustContext): Promise<Finding[]> {
  const { algorithm, hex } = parseDigest(ctx.digest);
  const kind = 'sigstore-bundle';
  const tag = `${algorithm}-${hex}`;
  let index: ImageIndex;
  let where = `the referrers of ${ctx.digest}`;
  try {
    let fetched = await ctx.source.getReferrers?.(ctx.digest, ctx.signal);
    if (!fetched) {
      where = `the referrers tag ${tag}`;
      fetched = await ctx.source.getManifest(tag, ctx.signal);
      if (ctx.source.getReferrers) ctx.onNotice?.(`${ctx.source.name} has no referrers API: reading sigstore bundles from the ${tag} tag`);
    }
    index = parsed(fetched, where, 'index') as ImageIndex;
  } catch (err) {
    if (isPullUnpackError(err, 'NOT_FOUND')) return [];
    return [{ kind, where, problem: problemOf(err) }];
  }
  const referrers = index.manifests.filter(isSignatureBundle);
  if (referrers.length > MAX_SIGNATURES)
    return [{ kind, where, problem: `it lists ${referrers.length} sigstore bundles, over the cap of ${MAX_SIGNATURES}` }];
  const found: Finding[] = [];
  for (const referrer of referrers) {
    const at = `referrer ${referrer.digest}`;
    try {
      found.push({ kind, where: at, bundle: await readBundle(ctx, referrer, at) });
    } catch (err) {
      found.push({ kind, where: at, problem: problemOf(err) });
    }
  }
  return found;
}

/** A referrers entry that may be a signature: a bundle, and not an attestation of another predicate. */
function isSignatureBundle(d: Descriptor): boolean {
  const predicate = d.annotations?.[ANNOTATION.predicateType];
  return BUNDLE_MEDIA_TYPE.test(d.artifactType ?? '') && (predicate === undefined || predicate === COSIGN_SIGN_PREDICATE);
}

/** The bundle blob of the artifact manifest `referrer`, which must name `ctx.digest` as its subject. */
async function readBundle(ctx: TrustContext, referrer: Descriptor, what: string): Promise<Buffer> {
  const manifest = parsed(await ctx.source.getManifest(referrer.digest, ctx.signal), what, 'manifest') as ImageManifest & {
    subject?: Descriptor;
  };
  if (manifest.subject?.digest !== ctx.digest)
    throw new Error(`its subject is ${manifest.subject?.digest ?? 'missing'}, not ${ctx.digest}`);
  const layer = manifest.layers.find((l) => BUNDLE_MEDIA_TYPE.test(l.mediaType));
  if (!layer) throw new Error('it has no sigstore bundle layer');
  return readBlob(ctx.source, layer, MAX_SIGNATURE_BLOB_BYTES, ctx.signal, `the sigstore bundle of ${what}`);
}

/** The manifest or index in `fetched`, capped and parsed strictly (no repeated keys). */
function parsed(fetched: FetchedManifest, what: string, expected: 'manifest' | 'index'): ImageManifest | ImageIndex {
  if (fetched.bytes.length > MAX_SIGNATURE_MANIFEST_BYTES) {
    throw new Error(`${what} is ${fetched.bytes.length} bytes, over the cap of ${MAX_SIGNATURE_MANIFEST_BYTES}`);
  }
  parseStrictJson(fetched.bytes, what);
  const doc = parseManifest(fetched.bytes, fetched.contentType, what);
  if (doc.kind !== expected) throw new Error(`${what} is not an image ${expected}`);
  return doc.kind === 'index' ? doc.index : doc.manifest;
}

/** What went wrong reading signature material; rethrows what is not about the material itself (unavailable.ts). */
function problemOf(err: unknown): string {
  if (isUnavailable(err)) throw err;
  return (err as Error).message;
}
