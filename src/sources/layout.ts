/**
 * Local images as ImageSources, so the resolver, fetcher and applier treat them like a
 * registry: `oci:DIR` (an OCI image layout directory), `oci-archive:FILE` (a tar of one) and
 * `docker-archive:FILE` (`docker save` output). Every manifest read by digest is verified here;
 * blobs are streamed unverified, as from a registry, and the fetcher verifies them.
 *
 * Layout: https://github.com/opencontainers/image-spec/blob/v1.1.0/image-layout.md
 */
import { constants } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { abortError, PullUnpackError } from '../errors.js';
import { openDockerArchive, tarFiles } from './archive.js';
import { cosignAttachment, selectLayoutEntry } from './layout-select.js';
import { digestOf, parseDigest } from '../image/digest.js';
import { MediaType, parseManifest, type Descriptor } from '../image/oci.js';
import { parseReference } from '../image/reference.js';
import type { FetchedManifest } from '../registry/client.js';
import { DEFAULT_LIMITS, type Limits } from '../limits.js';
import { parseJson } from '../image/json.js';
import { readCapped } from './capped-read.js';
import type { ImageSource } from './source.js';
import { TarIndex } from '../tar/archive-index.js';

export type LocalTransport = 'oci' | 'oci-archive' | 'docker-archive';

export interface LocalReference {
  transport: LocalTransport;
  /** The directory or archive path as given (resolved against the cwd when opened). */
  path: string;
  /** oci/oci-archive: a ref name to match in index.json; docker-archive: an image NAME[:TAG]. */
  tag?: string;
  /** oci/oci-archive only: the manifest or index to use, by digest. */
  digest?: string;
  toString(): string;
}

const TRANSPORTS: ReadonlyArray<readonly [string, LocalTransport]> = [
  ['oci:', 'oci'],
  ['oci-archive:', 'oci-archive'],
  ['docker-archive:', 'docker-archive'],
];
// The org.opencontainers.image.ref.name grammar (image-spec annotations.md): a bare tag or a
// full reference such as 'docker.io/library/alpine:3.19'.
const REF_COMPONENT = '[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*';
const REF_NAME = new RegExp(`^${REF_COMPONENT}(?:/${REF_COMPONENT})*$`);
const DIGEST_SUFFIX = /@([a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]*)$/;

/**
 * Parses 'oci:PATH[:TAG|@DIGEST]', 'oci-archive:PATH[:TAG|@DIGEST]' and
 * 'docker-archive:PATH[:NAME[:TAG]]'; undefined when `text` has none of these prefixes, and
 * INVALID_REFERENCE for a malformed one. As in skopeo (containers/image), PATH ends at the
 * first ':' after the prefix, so a path cannot contain ':'; an '@DIGEST' suffix is taken off
 * first, so PATH may contain '@'.
 */
export function parseLocalReference(text: string): LocalReference | undefined {
  const match = TRANSPORTS.find(([prefix]) => text.startsWith(prefix));
  if (!match) return undefined;
  const [prefix, transport] = match;
  let body = text.slice(prefix.length);
  let digest: string | undefined;
  const suffix = transport === 'docker-archive' ? null : DIGEST_SUFFIX.exec(body);
  if (suffix) {
    digest = checkedDigest(text, suffix[1]!);
    body = body.slice(0, suffix.index);
  }
  const colon = body.indexOf(':');
  const path = colon < 0 ? body : body.slice(0, colon);
  const tag = colon < 0 ? undefined : body.slice(colon + 1);
  if (path === '') throw invalid(text, 'the path is empty');
  if (tag !== undefined) checkTag(text, transport, tag);
  if (tag !== undefined && digest !== undefined) throw invalid(text, 'give a tag or a digest, not both');
  const canonical = `${transport}:${path}${tag === undefined ? '' : `:${tag}`}${digest === undefined ? '' : `@${digest}`}`;
  return Object.freeze({
    transport,
    path,
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
    toString: () => canonical,
  });
}

function checkedDigest(text: string, digest: string): string {
  try {
    return parseDigest(digest).toString();
  } catch (cause) {
    throw invalid(text, `"${digest}" is not a valid digest`, cause);
  }
}

function checkTag(text: string, transport: LocalTransport, tag: string): void {
  if (tag === '') throw invalid(text, 'the tag after ":" is empty');
  if (transport !== 'docker-archive') {
    if (!REF_NAME.test(tag)) throw invalid(text, `"${tag}" is not a valid image ref name`);
    return;
  }
  let digested: boolean;
  try {
    digested = parseReference(tag).digest !== undefined;
  } catch (cause) {
    throw invalid(text, `"${tag}" is not a valid image name`, cause);
  }
  // docker save archives record names and tags, never manifest digests.
  if (digested) throw invalid(text, 'docker-archive: selects an image by NAME:TAG, not by digest');
}

function invalid(text: string, why: string, cause?: unknown): PullUnpackError {
  return new PullUnpackError('INVALID_REFERENCE', `invalid local image reference "${text}": ${why}`, {
    cause,
    hint: 'use oci:DIR[:TAG|@sha256:HEX], oci-archive:FILE[:TAG|@sha256:HEX] or docker-archive:FILE[:NAME:TAG]',
  });
}

export interface OpenedLocalSource {
  source: ImageSource;
  /** tag or digest to pass to getManifest for the top-level document */
  reference: string;
  /** Releases open files; call it once the source is no longer used (also after errors). */
  close(): Promise<void>;
}

/**
 * Opens the local image `ref` names and picks its top-level document (see selectLayoutEntry).
 * Archives are indexed in place (tar-index.ts), never extracted, so `scratchDir` is not
 * needed and is ignored; it is accepted so callers need not know how an archive is read.
 * NOT_FOUND when the path, the tag or the layout's files are missing.
 */
export async function openLocalSource(
  ref: LocalReference,
  options: { scratchDir?: string; signal?: AbortSignal; limits?: Limits } = {},
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

/** Read access to the files of an image layout or archive, wherever they are stored. */
export interface LayoutFiles {
  /** Reads a whole file, refusing more than `cap` bytes (TOO_LARGE); NOT_FOUND when absent. */
  read(name: string, cap: number, what: string): Promise<Buffer>;
  /** A stream of a file's bytes (the caller consumes or destroys it); NOT_FOUND when absent. */
  open(name: string, what: string): Promise<Readable>;
  close(): Promise<void>;
}

/** The layout's files under `root`. Symlinked blob files and blob directories outside `root` are refused. */
async function dirFiles(root: string): Promise<LayoutFiles> {
  const info = await stat(root).catch((cause: NodeJS.ErrnoException) => {
    if (cause.code === 'ENOENT') throw new PullUnpackError('NOT_FOUND', `OCI layout directory ${root} does not exist`, { cause });
    throw cause;
  });
  if (!info.isDirectory()) {
    throw new PullUnpackError('NOT_FOUND', `${root} is not a directory`, {
      hint: 'oci: names an OCI image layout directory; use oci-archive: for a tar file',
    });
  }
  const realRoot = await realpath(root);
  const openRegular = async (name: string, what: string): Promise<FileHandle> => {
    const full = join(root, name);
    const dir = await realpath(dirname(full)).catch(() => undefined);
    if (dir !== undefined && dir !== realRoot && !dir.startsWith(realRoot + sep)) {
      throw new PullUnpackError('UNSAFE_PATH', `${what}: ${dirname(full)} leads outside the layout ${root}`);
    }
    // O_NONBLOCK: opening a FIFO (which the fstat below refuses) must not wait for a writer.
    const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(
      (cause: NodeJS.ErrnoException) => {
        if (cause.code === 'ENOENT') throw new PullUnpackError('NOT_FOUND', `${what}: ${full} does not exist`, { cause });
        if (cause.code === 'ELOOP') throw new PullUnpackError('UNSAFE_PATH', `${what}: ${full} is a symbolic link`, { cause });
        throw cause;
      },
    );
    if (!(await handle.stat()).isFile()) {
      await handle.close();
      throw new PullUnpackError('UNSAFE_PATH', `${what}: ${full} is not a regular file`);
    }
    return handle;
  };
  return {
    async read(name, cap, what) {
      const handle = await openRegular(name, what);
      try {
        const { size } = await handle.stat();
        if (size > cap) throw new PullUnpackError('TOO_LARGE', `${what} is ${size} bytes, over the ${cap}-byte limit`);
        return await handle.readFile();
      } finally {
        await handle.close();
      }
    },
    async open(name, what) {
      return (await openRegular(name, what)).createReadStream();
    },
    close: async () => undefined,
  };
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
    checkDocument(bytes, descriptor, what);
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
  // image-layout.md: imageLayoutVersion is "1.0.0"; a later major version may change the layout.
  if (typeof version !== 'string' || !/^1\./.test(version)) {
    throw new PullUnpackError('INVALID_MANIFEST', `${name}: unsupported imageLayoutVersion ${JSON.stringify(version)}`, {
      hint: 'pull-unpack reads image layouts of version 1.x',
    });
  }
}

/** DIGEST_MISMATCH / SIZE_MISMATCH unless the blob is what its descriptor names. */
function checkDocument(bytes: Buffer, descriptor: Pick<Descriptor, 'digest'> & Partial<Descriptor>, what: string): void {
  const hint = 'the layout was altered or is corrupt; nothing was used';
  if (descriptor.size !== undefined && bytes.length !== descriptor.size) {
    throw new PullUnpackError('SIZE_MISMATCH', `${what}: the blob is ${bytes.length} bytes, expected ${descriptor.size}`, { hint });
  }
  const actual = digestOf(bytes, parseDigest(descriptor.digest).algorithm);
  if (actual !== descriptor.digest) {
    throw new PullUnpackError('DIGEST_MISMATCH', `${what}: the blob hashes to ${actual}`, { hint });
  }
}
