/**
 * Parsing of a rootfs's /etc/passwd and /etc/group, and resolution of an image's `Config.User`
 * into the numeric ids of the runtime-spec `process.user`. Pure: the caller reads the files.
 *
 * Resolution follows the image-spec conversion.md "Config.User" section and, where it is silent,
 * the moby/sys/user `GetExecUser` rules that umoci and docker use:
 * https://github.com/opencontainers/image-spec/blob/main/conversion.md#configuser
 */
import { PullUnpackError } from '../errors.js';

/** One usable line of /etc/passwd. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** One usable line of /etc/group. */
export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** The numeric identity a container process runs as. */
export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Supplementary gids in /etc/group order, without duplicates; empty when none apply. */
  additionalGids: number[];
  /** The home directory from /etc/passwd, when the user has an entry there. */
  home: string | undefined;
}

/** The largest id moby/sys/user accepts; ids above it are rejected rather than wrapped. */
const MAX_ID = 2 ** 31 - 1;
const DECIMAL = /^[0-9]+$/;

/**
 * Returns the well-formed entries of an /etc/passwd text, in file order.
 * Blank lines, `#` comments, NIS `+`/`-` lines and lines without a name and numeric uid and gid
 * are skipped, so one broken line never hides the rest of the file.
 */
export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const fields of fieldLines(text)) {
    const [name, , uidText, gidText, , home] = fields;
    const uid = parseId(uidText);
    const gid = parseId(gidText);
    if (!name || uid === undefined || gid === undefined) continue;
    entries.push({ name, uid, gid, home: home ?? '' });
  }
  return entries;
}

/** Returns the well-formed entries of an /etc/group text, in file order (same skipping rules). */
export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const fields of fieldLines(text)) {
    const [name, , gidText, memberText] = fields;
    const gid = parseId(gidText);
    if (!name || gid === undefined) continue;
    const members = (memberText ?? '')
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m !== '');
    entries.push({ name, gid, members });
  }
  return entries;
}

/**
 * Resolves a `Config.User` value (`""`, `user`, `uid`, `user:group`, `uid:gid`, ...) against the
 * passwd and group texts (undefined when the file is absent from the rootfs).
 *
 * - `""` is uid 0; its gid and supplementary groups come from passwd/group when root is listed.
 * - A numeric uid is copied; its primary gid comes from passwd when listed there, else 0.
 * - A user name must be in passwd, else `USER_NOT_FOUND`; a group name must be in group, else
 *   `GROUP_NOT_FOUND`. Nothing is guessed.
 * - `additionalGids` are the groups listing the user's NAME as a member, only when the user was
 *   given by name (or omitted) and no group was given, as conversion.md says.
 */
export function resolveUser(spec: string, passwd: string | undefined, group: string | undefined): ResolvedUser {
  const colon = spec.indexOf(':');
  const userPart = colon === -1 ? spec : spec.slice(0, colon);
  const groupPart = colon === -1 ? '' : spec.slice(colon + 1);
  const users = passwd === undefined ? [] : parsePasswd(passwd);
  const groups = group === undefined ? [] : parseGroup(group);

  const byName = userPart !== '' && !DECIMAL.test(userPart);
  const uid = byName ? undefined : userPart === '' ? 0 : checkedId(userPart, 'user', spec);
  const entry = byName ? users.find((u) => u.name === userPart) : users.find((u) => u.uid === uid);
  if (byName && entry === undefined) {
    throw new PullUnpackError(
      'USER_NOT_FOUND',
      `user ${JSON.stringify(userPart)} not found in the image's /etc/passwd` +
        (passwd === undefined ? ' (the image has no /etc/passwd)' : ''),
      { hint: 'give a numeric uid[:gid] with --user, or a user the image defines' },
    );
  }

  const resolved: ResolvedUser = {
    uid: entry?.uid ?? uid ?? 0,
    gid: entry?.gid ?? 0,
    additionalGids: [],
    home: entry?.home === '' ? undefined : entry?.home,
  };
  if (groupPart !== '') {
    resolved.gid = resolveGroup(groupPart, groups, group === undefined, spec);
  } else if (entry !== undefined && (byName || userPart === '')) {
    resolved.additionalGids = membershipsOf(entry.name, groups);
  }
  return resolved;
}

function resolveGroup(groupPart: string, groups: GroupEntry[], absent: boolean, spec: string): number {
  if (DECIMAL.test(groupPart)) return checkedId(groupPart, 'group', spec);
  const found = groups.find((g) => g.name === groupPart);
  if (found === undefined) {
    throw new PullUnpackError(
      'GROUP_NOT_FOUND',
      `group ${JSON.stringify(groupPart)} not found in the image's /etc/group` + (absent ? ' (the image has no /etc/group)' : ''),
      { hint: 'give a numeric gid with --user uid:gid, or a group the image defines' },
    );
  }
  return found.gid;
}

function membershipsOf(name: string, groups: GroupEntry[]): number[] {
  const gids: number[] = [];
  for (const g of groups) {
    if (g.members.includes(name) && !gids.includes(g.gid)) gids.push(g.gid);
  }
  return gids;
}

function checkedId(text: string, what: 'user' | 'group', spec: string): number {
  const id = Number(text);
  if (!Number.isSafeInteger(id) || id > MAX_ID) {
    throw new PullUnpackError('INVALID_CONFIG', `the ${what} id in User ${JSON.stringify(spec)} is out of range (max ${MAX_ID})`);
  }
  return id;
}

function parseId(text: string | undefined): number | undefined {
  if (text === undefined || !DECIMAL.test(text)) return undefined;
  const id = Number(text);
  return Number.isSafeInteger(id) && id <= MAX_ID ? id : undefined;
}

function* fieldLines(text: string): Generator<string[]> {
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('+') || line.startsWith('-')) continue;
    yield line.split(':');
  }
}
