/**
 * The cache's `index.json`: which image references were pulled into it, so that `--offline`
 * can resolve a tag without a registry; plus `cache ls` and `cache prune`.
 * Updates are serialized across processes with a lock file and written by rename.
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore } from './blob-store.js';
import { isPullUnpackError, PullUnpackError } from '../errors.js';
import { tryFileLock, withFileLock } from './lock.js';
import { NotRegularFileError, readRegularFile } from './regular-file.js';
import { storageError } from './storage-error.js';
import { MediaType, REF_NAME_ANNOTATION, type Descriptor, type ImageIndex } from '../image/oci.js';
import { parseJson } from '../image/json.js';

export interface CachedRef {
  reference: string;
  descriptor: Descriptor;
}

/** The references recorded in the cache, most recent last. */
export async function readRefs(store: BlobStore): Promise<CachedRef[]> {
  const index = await readIndex(store);
  return index.manifests
    .filter((d) => typeof d.annotations?.[REF_NAME_ANNOTATION] === 'string')
    .map((d) => ({ reference: d.annotations![REF_NAME_ANNOTATION]!, descriptor: stripAnnotations(d) }));
}

/**
 * Records that `reference` names `descriptor` (replacing what it named before). Never fails the
 * pull that calls it, whose result is already in place: an index.json that cannot be read is
 * started anew, and one that cannot be written is reported through the store's notices (only
 * `--offline` by tag needs it).
 */
export async function recordRef(store: BlobStore, reference: string, descriptor: Descriptor): Promise<void> {
  try {
    await withFileLock(
      join(store.root, 'index.json.lock'),
      async () => {
        const index = await readIndex(store).catch((err: unknown) => {
          if (!isPullUnpackError(err, 'INVALID_MANIFEST')) throw err;
          store.onNotice?.(`${err.message}: replacing it (the references recorded in it are forgotten)`);
          return emptyIndex();
        });
        const manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME_ANNOTATION] !== reference);
        manifests.push({
          mediaType: descriptor.mediaType,
          digest: descriptor.digest,
          size: descriptor.size,
          annotations: { [REF_NAME_ANNOTATION]: reference },
        });
        await writeIndex(store, { ...index, manifests });
      },
      store.lockOptions('recording the reference in the cache index'),
    );
  } catch (err) {
    const why = storageError(err, { kind: 'cache', path: store.root }) as Error;
    store.onNotice?.(`${reference} is not recorded in the cache's index.json: ${why.message}; --offline will not find it by its tag`);
  }
}

/** index.json is a list of references: far below this. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

async function readIndex(store: BlobStore): Promise<ImageIndex> {
  const path = join(store.root, 'index.json');
  const damaged = (cause: unknown): PullUnpackError =>
    new PullUnpackError('INVALID_MANIFEST', `the cache's index.json (${store.root}) is damaged`, {
      cause,
      hint: 'remove it (pull-unpack cache prune --all) and pull again',
    });
  let bytes: Buffer | undefined;
  try {
    bytes = await readRegularFile(path, MAX_INDEX_BYTES);
  } catch (err) {
    if (err instanceof NotRegularFileError) throw damaged(err);
    throw err;
  }
  if (bytes === undefined) return emptyIndex();
  try {
    const doc = parseJson(bytes, `the cache's index.json (${store.root})`) as ImageIndex;
    if (!Array.isArray(doc.manifests)) throw new Error('no manifests array');
    return doc;
  } catch (cause) {
    throw damaged(cause);
  }
}

function emptyIndex(): ImageIndex {
  return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
}

async function writeIndex(store: BlobStore, index: ImageIndex): Promise<void> {
  const tmp = join(store.root, `index.json.${process.pid}.tmp`);
  try {
    await writeFile(tmp, `${JSON.stringify(index, null, 2)}\n`);
    await rename(tmp, join(store.root, 'index.json'));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

function stripAnnotations(d: Descriptor): Descriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}

export interface CacheListing {
  root: string;
  refs: CachedRef[];
  blobs: Array<{ digest: string; size: number; lastUsed: string }>;
  /** Interrupted downloads that the next pull resumes. */
  partial: Array<{ digest: string; size: number }>;
  totalSize: number;
}

/** Hex lengths of the digest algorithms the store keeps (blobs/<alg>/<hex>). */
const HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

/**
 * What the cache holds: references, verified blobs with their last use, partial downloads.
 * Files that are not blobs are skipped; files that vanish meanwhile (a pull renaming a partial
 * into place) are too.
 */
export async function listCache(store: BlobStore): Promise<CacheListing> {
  const blobs: CacheListing['blobs'] = [];
  for (const [algorithm, length] of Object.entries(HEX_LENGTH)) {
    for (const name of await readdirOrEmpty(join(store.root, 'blobs', algorithm))) {
      const info = isHex(name, length) ? await lstatOrUndefined(join(store.root, 'blobs', algorithm, name)) : undefined;
      if (info?.isFile()) blobs.push({ digest: `${algorithm}:${name}`, size: info.size, lastUsed: info.mtime.toISOString() });
    }
  }
  const partial: CacheListing['partial'] = [];
  for (const name of await readdirOrEmpty(join(store.root, 'ingest'))) {
    const hex = name.endsWith('.partial') ? name.slice(0, -'.partial'.length) : '';
    const algorithm = Object.keys(HEX_LENGTH).find((a) => isHex(hex, HEX_LENGTH[a]!));
    const info = algorithm ? await lstatOrUndefined(join(store.root, 'ingest', name)) : undefined;
    if (info?.isFile()) partial.push({ digest: `${algorithm}:${hex}`, size: info.size });
  }
  const refs = await readRefs(store).catch(() => []);
  const totalSize = [...blobs, ...partial].reduce((n, b) => n + b.size, 0);
  return { root: store.root, refs, blobs, partial, totalSize };
}

function isHex(text: string, length: number): boolean {
  return text.length === length && /^[0-9a-f]+$/.test(text);
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export interface PruneOptions {
  /** Remove everything. */
  all?: boolean | undefined;
  /** Remove blobs not used for this many milliseconds (and references to removed manifests). */
  olderThanMs?: number | undefined;
  now?: number | undefined;
}

/**
 * Removes interrupted downloads and, with `all` or `olderThanMs`, blobs; references whose
 * manifest is gone are dropped from index.json. Returns what was removed.
 */
export async function pruneCache(store: BlobStore, options: PruneOptions): Promise<{ removed: number; freed: number }> {
  await mkdir(store.root, { recursive: true });
  return withFileLock(join(store.root, 'index.json.lock'), () => pruneLocked(store, options), store.lockOptions('cache prune'));
}

async function pruneLocked(store: BlobStore, options: PruneOptions): Promise<{ removed: number; freed: number }> {
  const listing = await listCache(store);
  const now = options.now ?? Date.now();
  let removed = 0;
  let freed = 0;
  const drop = async (path: string, size: number): Promise<void> => {
    await rm(path, { force: true });
    removed++;
    freed += size;
  };
  // A partial file whose blob lock is held is being written by a pull right now: leave it.
  for (const p of listing.partial) {
    await tryFileLock(store.lockPath(p.digest), () => drop(store.partialPath(p.digest), p.size));
  }
  for (const b of listing.blobs) {
    const old = options.olderThanMs !== undefined && now - Date.parse(b.lastUsed) > options.olderThanMs;
    if (options.all || old) await drop(store.path(b.digest), b.size);
  }
  const kept = [];
  for (const ref of listing.refs) if (await store.has(ref.descriptor)) kept.push(ref);
  // Pruning is how a damaged index.json is repaired: its references are lost with it.
  const index = await readIndex(store).catch((err: unknown) => {
    if (isPullUnpackError(err, 'INVALID_MANIFEST')) return emptyIndex();
    throw err;
  });
  await writeIndex(store, {
    ...index,
    manifests: kept.map((r) => ({ ...r.descriptor, annotations: { [REF_NAME_ANNOTATION]: r.reference } })),
  });
  return { removed, freed };
}

/** '7d', '12h', '30m', '45s', '2w' -> milliseconds; USAGE error otherwise. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$/.exec(text.trim());
  if (!m) throw new PullUnpackError('USAGE', `invalid duration "${text}": use a number and a unit, e.g. 30m, 12h, 7d, 2w`);
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  return Number(m[1]) * unit;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
