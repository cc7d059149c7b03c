/**
 * The tags of a repository (distribution-spec "Listing Tags": GET /v2/<name>/tags/list?n=),
 * read to tell a user who asked for a tag that does not exist which ones do. The listing is a
 * courtesy: bounded in size and time, and any failure (a registry that refuses listing, an
 * unknown repository, a slow or hostile answer) leaves the original error as it was.
 */
import { RegistryError } from '../errors.js';
import { parseJson } from '../image/json.js';

/** Tags asked for in one request (one page; the registry may send fewer). */
export const TAGS_ASKED = 100;
/** The most bytes read of a tag list: 100 tags of 128 characters and the JSON around them. */
export const MAX_TAG_LIST_BYTES = 64 * 1024;
/** The longest the listing may delay the error it adds a hint to. */
const TAG_LIST_TIMEOUT_MS = 5_000;
/** Tags named in the hint; the rest are counted. */
const TAGS_SHOWN = 5;
/** A tag as the distribution-spec defines it; anything else in a listing is ignored. */
const TAG = /^[\w][\w.-]{0,127}$/;

/** What the registry listed: its first page of tags, and whether it said there are more (a Link header). */
export interface TagPage {
  tags: string[];
  more: boolean;
}

/** The tags of a tags/list answer (`{"name": ..., "tags": [...]}`); only valid tag names are kept. */
export function parseTagList(bytes: Uint8Array, what: string): string[] {
  const doc = parseJson(bytes, what, { code: 'REGISTRY_ERROR' }) as { tags?: unknown } | null;
  const tags = typeof doc === 'object' && doc !== null ? doc.tags : undefined;
  return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string' && TAG.test(t)) : [];
}

/** 'tags that exist: 1.0, 1.1, latest (and 12 more)'; undefined when there are none to name. */
export function existingTagsText(page: TagPage): string | undefined {
  if (page.tags.length === 0) return undefined;
  const rest = page.tags.length - TAGS_SHOWN;
  const more = rest > 0 ? ` (and ${rest}${page.more ? '+' : ''} more)` : page.more ? ' (and more)' : '';
  // The distribution-spec says lexical order; not every registry keeps to it.
  const sorted = [...page.tags].sort();
  return `tags that exist: ${sorted.slice(0, TAGS_SHOWN).join(', ')}${more}`;
}

/**
 * `err` with the tags that exist added to its hint when it is a 404 for a tag; `err` itself when
 * it is something else or the listing fails. `list` is called with a signal that ends the
 * listing after TAG_LIST_TIMEOUT_MS or when `signal` fires.
 */
export async function withExistingTags(
  err: unknown,
  list: (signal: AbortSignal) => Promise<TagPage>,
  signal: AbortSignal | undefined,
): Promise<unknown> {
  if (!(err instanceof RegistryError) || err.code !== 'NOT_FOUND' || err.status !== 404) return err;
  const timeout = AbortSignal.timeout(TAG_LIST_TIMEOUT_MS);
  let text: string | undefined;
  try {
    text = existingTagsText(await list(signal ? AbortSignal.any([signal, timeout]) : timeout));
  } catch {
    // Listing refused, unknown repository, too slow or malformed: the 404 says enough.
    return err;
  }
  if (text === undefined) return err;
  const { status, registryCode, detail } = err;
  return new RegistryError(
    err.code,
    err.message,
    { status, registryCode, detail },
    { cause: err.cause, hint: `${text}; ${err.hint ?? ''}`.replace(/; $/, '') },
  );
}
