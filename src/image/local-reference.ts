/**
 * Local image references, as skopeo (containers/image) spells them: `oci:DIR[:TAG|@DIGEST]`
 * (an OCI image layout directory), `oci-archive:FILE[:TAG|@DIGEST]` (a tar of one) and
 * `docker-archive:FILE[:NAME[:TAG]]` (`docker save` output); and the image argument that is
 * either one of these or a registry reference, parsed once at the edge.
 */
import { PullUnpackError } from '../errors.js';
import { parseDigest } from './digest.js';
import { isRefName } from './oci.js';
import { parseReference, type Reference } from './reference.js';

export type LocalTransport = 'oci' | 'oci-archive' | 'docker-archive';

export interface LocalReference {
  readonly transport: LocalTransport;
  /** The directory or archive path as given (resolved against the cwd when opened). */
  readonly path: string;
  /** oci/oci-archive: a ref name to match in index.json; docker-archive: an image NAME[:TAG]. */
  readonly tag?: string;
  /** oci/oci-archive only: the manifest or index to use, by digest. */
  readonly digest?: string;
  /** The canonical form: 'oci:PATH:TAG', 'oci-archive:PATH@DIGEST', 'docker-archive:PATH'. */
  toString(): string;
}

/** The image argument of every command, parsed once: a registry reference or a local image. */
export type ImageReference = Reference | LocalReference;

/**
 * Parses the image argument: a local reference when `text` starts with oci:, oci-archive: or
 * docker-archive: (see parseLocalReference), else a registry reference (parseReference).
 * INVALID_REFERENCE saying what is wrong.
 */
export function parseImageReference(text: string): ImageReference {
  return parseLocalReference(text) ?? parseReference(text);
}

/** True for oci:, oci-archive: and docker-archive: references. */
export function isLocalReference(ref: ImageReference): ref is LocalReference {
  return 'transport' in ref;
}

const TRANSPORTS: ReadonlyArray<readonly [string, LocalTransport]> = [
  ['oci:', 'oci'],
  ['oci-archive:', 'oci-archive'],
  ['docker-archive:', 'docker-archive'],
];
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
    if (!isRefName(tag)) throw invalid(text, `"${tag}" is not a valid image ref name`);
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
