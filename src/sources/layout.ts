/**
 * Local images as ImageSources, so the resolver, fetcher and applier treat them like a
 * registry: `oci:DIR` (an OCI image layout directory), `oci-archive:FILE` (a tar of one) and
 * `docker-archive:FILE` (`docker save` output). Every manifest read by digest is verified here;
 * blobs are streamed unverified, as from a registry, and the fetcher verifies them.
 *
 * Layout: https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md
 */
import { resolve } from 'node:path';
import { abortError, PullUnpackError } from '../errors.js';
import { openDockerArchive } from './archive.js';
import { dirFiles, readCapped, tarFiles, type LayoutFiles } from './layout-files.js';
import { cosignAttachment, selectLayoutEntry } from './layout-select.js';
import { parseDigest, verifyBytes } from '../image/digest.js';
import type { LocalReference } from '../image/local-reference.js';
import { isReadableLayoutVersion, MediaType, parseManifest, type Descriptor, type FetchedManifest } from '../image/oci.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import { parseJson } from '../image/json.js';
import type { ImageSource } from './source.js';
import { TarIndex } from '../tar/archive-index.js';

export interface OpenedLocalSource {
  source: ImageSource;
  /** tag or digest to pass to getManifest for the top-level document */
  reference: string;
  /** Releases open files; call it once the source is no longer used (also after errors). */
  close(): Promise<void>;
}

/**
 * Opens the local image `ref` names and picks its top-level document (see selectLayoutEntry),
 * reading under `limits` (default DEFAULT_LIMITS). Archives are indexed in place (tar/archive-index.ts), never extracted.
 * NOT_FOUND when the path, the tag or the layout's files are missing.
 */
export async function openLocalSource(
  ref: LocalReference,
  options: { signal?: AbortSignal | undefined; limits?: Limits | undefined } = {},
): Promise<OpenedLocalSource> {
  const limits = options.limits ?? DEFAULT_LIMITS;
  if (options.signal?.aborted) throw abortError(options.signal);
  const path = resolve(ref.path);
  const selection: LayoutSelection = { tag: ref.tag, digest: ref.digest };
  if (ref.transport === 'oci') {
    const files = await dirFiles(path);
    return { ...(await openOciLayout(files, `oci:${path}`, selection, limits)), close: () => files.close() };
  }
  const tar = await TarIndex.open(path, options.signal);
  try {
    const name = `${ref.transport}:${path}`;
    const isLayout = tar.lookup('oci-layout') !== undefined && tar.lookup('index.json') !== undefined;
    // docker 25+ writes an OCI layout (plus a legacy manifest.json) into `docker save` output.
    const opened =
      ref.transport === 'oci-archive' || isLayout
        ? await openOciLayout(tarFiles(tar), name, selection, limits)
        : await openDockerArchive(tar, name, ref.tag, { signal: options.signal, limits });
    return { ...opened, close: () => tar.close() };
  } catch (err) {
    await tar.close();
    throw err;
  }
}

/** What a reference selects in a layout: a ref name, a digest, or neither (the only entry). */
export interface LayoutSelection {
  tag?: string | undefined;
  digest?: string | undefined;
}

interface LayoutOpened {
  source: ImageSource;
  reference: string;
}

/** oci-layout files are a few dozen bytes. */
const MAX_LAYOUT_FILE_BYTES = 64 * 1024;
/** A digest rather than a ref name: ref names may contain ':' but not 32+ hex digits after it. */
const LOOKS_LIKE_DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-f0-9]{32,}$/;

/** An ImageSource over an OCI layout's files, and the reference of the entry `selection` picks. */
async function openOciLayout(files: LayoutFiles, name: string, selection: LayoutSelection, limits: Limits): Promise<LayoutOpened> {
  await checkLayoutVersion(files, name);
  const indexBytes = await readCapped(files, 'index.json', limits.maxManifestBytes, '--max-manifest-size', `${name} index.json`);
  const parsed = parseManifest(indexBytes, MediaType.OciIndex, `${name} index.json`);
  if (parsed.kind !== 'index') throw new PullUnpackError('INVALID_MANIFEST', `${name}: index.json is not an image index`);
  const index = parsed.index;
  // A digest need not be listed in index.json (it may name a manifest nested in an index).
  const reference = selection.digest ?? selection.tag ?? selectLayoutEntry(index.manifests, name, undefined).digest;
  if (selection.tag !== undefined) selectLayoutEntry(index.manifests, name, selection.tag);
  const known = new Map<string, Descriptor>(index.manifests.map((d) => [d.digest, d]));

  const readDocument = async (
    descriptor: Pick<Descriptor, 'digest'> & Partial<Descriptor>,
    signal?: AbortSignal,
  ): Promise<FetchedManifest> => {
    if (signal?.aborted) throw abortError(signal);
    const digest = parseDigest(descriptor.digest);
    const what = `${name}@${descriptor.digest}`;
    const blob = `blobs/${digest.algorithm}/${digest.hex}`;
    const bytes = await readCapped(files, blob, limits.maxManifestBytes, '--max-manifest-size', `the manifest ${what}`);
    verifyBytes(bytes, descriptor.digest, what, descriptor.size);
    return { bytes, contentType: descriptor.mediaType ?? '', digest: descriptor.digest };
  };

  const source: ImageSource = {
    name,
    async getManifest(tagOrDigest, signal) {
      if (LOOKS_LIKE_DIGEST.test(tagOrDigest)) return readDocument(known.get(tagOrDigest) ?? { digest: tagOrDigest }, signal);
      const attachment = cosignAttachment(index.manifests, tagOrDigest);
      return readDocument(attachment ?? selectLayoutEntry(index.manifests, name, tagOrDigest), signal);
    },
    async fetchBlob(descriptor, signal, what) {
      if (signal?.aborted) throw abortError(signal);
      const digest = parseDigest(descriptor.digest);
      const label = what ?? `blob ${descriptor.digest} of ${name}`;
      try {
        return await files.open(`blobs/${digest.algorithm}/${digest.hex}`, label);
      } catch (err) {
        if (err instanceof PullUnpackError && err.code === 'NOT_FOUND' && descriptor.urls?.length) {
          throw new PullUnpackError('NOT_FOUND', `${label}: a foreign layer that the layout does not hold`, {
            cause: err,
            hint: `it is published at ${descriptor.urls[0]}; local sources do not download`,
          });
        }
        throw err;
      }
    },
  };
  // Fail at open, not mid-pull, when the digest is not in the layout (or the blob is altered).
  if (selection.digest !== undefined) await source.getManifest(selection.digest);
  return { source, reference };
}

async function checkLayoutVersion(files: LayoutFiles, name: string): Promise<void> {
  let text: string;
  try {
    text = (await files.read('oci-layout', MAX_LAYOUT_FILE_BYTES, `${name} oci-layout`)).toString('utf8');
  } catch (err) {
    if (err instanceof PullUnpackError && err.code === 'NOT_FOUND') {
      throw new PullUnpackError('NOT_FOUND', `${name} is not an OCI image layout: it has no oci-layout file`, {
        cause: err,
        hint: 'write one with e.g. skopeo copy docker://IMAGE oci:DIR:TAG',
      });
    }
    throw err;
  }
  const doc = parseJson(text, `${name}: oci-layout`);
  const version = doc && typeof doc === 'object' ? (doc as { imageLayoutVersion?: unknown }).imageLayoutVersion : undefined;
  if (!isReadableLayoutVersion(version)) {
    throw new PullUnpackError('INVALID_MANIFEST', `${name}: unsupported imageLayoutVersion ${JSON.stringify(version)}`, {
      hint: 'pull-unpack reads image layouts of version 1.x',
    });
  }
}
