/**
 * Which entry of an OCI layout's index.json a local reference means: by digest, by ref name,
 * or the only one. Pure; the errors list what the layout holds so the user can pick.
 */
import { PullUnpackError } from '../errors.js';
import { REF_NAME_ANNOTATION, type Descriptor } from '../image/oci.js';
import { parseReference } from '../image/reference.js';

/** image-spec annotations.md: the tag (or full reference) an index entry is known by. */
/** containerd's `ctr export` and docker 25+ `docker save` put the full image name here. */
const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
/**
 * `cosign save` names no entry: it marks the image (or index) and its signature manifest with
 * a `kind` annotation instead (cosign pkg/oci/layout).
 */
const COSIGN_KIND_ANNOTATION = 'kind';
const COSIGN_IMAGE_KINDS = new Set(['dev.cosignproject.cosign/image', 'dev.cosignproject.cosign/imageIndex']);
const COSIGN_SIGNATURES_KIND = 'dev.cosignproject.cosign/sigs';

/**
 * The index.json entry `tag` names, or the only entry when `tag` is undefined. A tag is matched in three tiers, the first that matches wins: the exact ref name (or containerd image
 * name); the same image after Docker normalization ('alpine' = 'docker.io/library/alpine:latest');
 * a bare tag against the tag part of full-reference names. With neither, the only entry.
 * NOT_FOUND listing the entries when nothing or more than one image matches.
 */
export function selectLayoutEntry(entries: Descriptor[], name: string, tag: string | undefined): Descriptor {
  if (tag === undefined) {
    if (entries.length === 1) return entries[0]!;
    const saved = cosignSaved(entries);
    if (saved) return saved.image;
    if (entries.length === 0) throw new PullUnpackError('NOT_FOUND', `${name} holds no images: its index.json lists no manifests`);
    throw new PullUnpackError('NOT_FOUND', `${name} holds ${entries.length} images: ${listEntries(entries)}`, {
      hint: `pick one with ${name}:TAG or ${name}@sha256:HEX`,
    });
  }
  for (const matches of [exactName, sameImage, sameTag]) {
    const found = entries.filter((e) => names(e).some((n) => matches(n, tag)));
    const digests = new Set(found.map((e) => e.digest));
    if (digests.size === 1) return found[0]!;
    if (digests.size > 1) {
      throw new PullUnpackError('NOT_FOUND', `${name}: "${tag}" names ${digests.size} different images: ${listEntries(found)}`, {
        hint: `pick one by digest with ${name}@sha256:HEX`,
      });
    }
  }
  const tags = [...new Set(entries.flatMap(names))];
  throw new PullUnpackError(
    'NOT_FOUND',
    `${name} has no image tagged "${tag}"; ${tags.length ? `it has ${tags.map((t) => `"${t}"`).join(', ')}` : 'its images are untagged'}`,
    {
      hint: entries.length ? `pick one with ${name}:TAG or ${name}@sha256:HEX (${listEntries(entries)})` : undefined,
    },
  );
}

/**
 * The entry a cosign attachment tag means in a `cosign save` layout: `<alg>-<hex>.sig` is the
 * signature manifest of the saved image when `<alg>:<hex>` is that image's digest.
 */
export function cosignAttachment(entries: Descriptor[], tag: string): Descriptor | undefined {
  const saved = cosignSaved(entries);
  const m = /^([a-z0-9]+)-([a-f0-9]+)\.sig$/.exec(tag);
  return m && saved?.image.digest === `${m[1]}:${m[2]}` ? saved.signatures : undefined;
}

function cosignSaved(entries: Descriptor[]): { image: Descriptor; signatures: Descriptor | undefined } | undefined {
  const kind = (e: Descriptor): string | undefined => e.annotations?.[COSIGN_KIND_ANNOTATION];
  const images = entries.filter((e) => COSIGN_IMAGE_KINDS.has(kind(e) ?? ''));
  const signatures = entries.filter((e) => kind(e) === COSIGN_SIGNATURES_KIND);
  if (images.length !== 1 || signatures.length > 1) return undefined;
  return { image: images[0]!, signatures: signatures[0] };
}

/** 'latest (sha256:…), sha256:… (untagged)': what a layout holds, for messages. */
function listEntries(entries: Descriptor[]): string {
  return entries
    .map((e) => {
      const n = names(e);
      return n.length ? `${n.join(' / ')} (${e.digest})` : `${e.digest} (untagged)`;
    })
    .join(', ');
}

function names(entry: Descriptor): string[] {
  const out: string[] = [];
  for (const key of [REF_NAME_ANNOTATION, CONTAINERD_NAME_ANNOTATION]) {
    const value = entry.annotations?.[key];
    if (value && !out.includes(value)) out.push(value);
  }
  return out;
}

function exactName(refName: string, tag: string): boolean {
  return refName === tag;
}

/** Only for full-reference names: a bare ref name 'v1' is a tag, not the image 'library/v1'. */
function sameImage(refName: string, tag: string): boolean {
  if (!refName.includes(':') && !refName.includes('/')) return false;
  const a = normalized(refName);
  return a !== undefined && a === normalized(tag);
}

function sameTag(refName: string, tag: string): boolean {
  if (tag.includes('/') || tag.includes(':')) return false;
  const ref = tryParse(refName);
  return ref !== undefined && ref.digest === undefined && refName.includes(':') && ref.tag === tag;
}

function normalized(text: string): string | undefined {
  return tryParse(text)?.toString();
}

function tryParse(text: string): ReturnType<typeof parseReference> | undefined {
  try {
    return parseReference(text);
  } catch {
    // Not a Docker-style reference (e.g. an OCI ref name with '+' or uppercase): it cannot match this way.
    return undefined;
  }
}
