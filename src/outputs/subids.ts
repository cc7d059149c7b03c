/**
 * The user's subordinate id ranges (/etc/subuid, /etc/subgid, as shadow's newuidmap reads them:
 * subuid(5)) and the setuid helpers that map them into a user namespace. A rootless bundle maps
 * container 0 to the user and 1..N to these ranges, as podman does
 * (https://github.com/containers/podman/blob/main/docs/tutorials/rootless_tutorial.md).
 */
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** `count` host ids from `start`. */
export interface IdRange {
  start: number;
  count: number;
}

export interface SubordinateIds {
  uids: IdRange[];
  gids: IdRange[];
  /** Absolute paths of the helpers (found on PATH). */
  newuidmap: string;
  newgidmap: string;
}

export interface SubordinateLookup {
  /** The user whose ranges are looked up: by name or by number, as subuid(5) allows. */
  user: { name: string; uid: number };
  /** PATH to search for newuidmap/newgidmap (default: the usual system directories). */
  path?: string | undefined;
  subuidFile?: string | undefined;
  subgidFile?: string | undefined;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const MAX_ID = 0xffffffff;

/**
 * The user's ranges and helpers, or `{missing}` saying in words what is not there (no file, no
 * range for the user, a helper not installed), for the message that refuses a non-root user.
 */
export async function findSubordinateIds(lookup: SubordinateLookup): Promise<SubordinateIds | { missing: string }> {
  const subuidFile = lookup.subuidFile ?? '/etc/subuid';
  const subgidFile = lookup.subgidFile ?? '/etc/subgid';
  const uids = parseSubordinateFile(await readIfPresent(subuidFile), lookup.user);
  if (uids.length === 0) return { missing: `${subuidFile} has no range for ${lookup.user.name}` };
  const gids = parseSubordinateFile(await readIfPresent(subgidFile), lookup.user);
  if (gids.length === 0) return { missing: `${subgidFile} has no range for ${lookup.user.name}` };
  const path = lookup.path || DEFAULT_PATH;
  const newuidmap = await findExecutable('newuidmap', path);
  const newgidmap = await findExecutable('newgidmap', path);
  if (!newuidmap || !newgidmap) return { missing: 'newuidmap/newgidmap are not installed (Debian package uidmap)' };
  return { uids, gids, newuidmap, newgidmap };
}

/**
 * The ranges of `user` in a subuid/subgid text, in file order: lines `OWNER:START:COUNT` whose
 * OWNER is the user's name or number. Malformed lines, ranges of 0 ids and ranges reaching past
 * 2^32-1 are skipped, as newuidmap would refuse them.
 */
export function parseSubordinateFile(text: string | undefined, user: { name: string; uid: number }): IdRange[] {
  const ranges: IdRange[] = [];
  for (const line of (text ?? '').split('\n')) {
    const fields = line.trim().split(':');
    if (fields.length !== 3) continue;
    const [owner, startText, countText] = fields as [string, string, string];
    if (owner !== user.name && owner !== String(user.uid)) continue;
    if (!/^\d+$/.test(startText) || !/^\d+$/.test(countText)) continue;
    const start = Number(startText);
    const count = Number(countText);
    if (count === 0 || start + count - 1 > MAX_ID) continue;
    ranges.push({ start, count });
  }
  return ranges;
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function findExecutable(name: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(':')) {
    if (!dir.startsWith('/')) continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}
