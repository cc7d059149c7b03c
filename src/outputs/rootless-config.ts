/**
 * The rootless shape of a runtime config (runc libcontainer/specconv ToRootless, as
 * `runc spec --rootless` writes it) with the id maps of a rootless bundle: container 0 is the
 * user and, when the user has subordinate ranges, container ids 1..N are those ranges.
 * Pure, like runtime-config.ts, which calls it.
 */
import { PullUnpackError } from '../errors.js';
import { hostIdOf } from '../apply/owners.js';
import type { IdRange } from './subids.js';
import type { LinuxIdMapping, RuntimeLinux, RuntimeMount, RuntimeSpec } from './runtime-spec.js';

/** Who a rootless bundle runs as on the host. */
export interface RootlessIds {
  uid: number;
  gid: number;
  /** The user's subordinate ranges (/etc/subuid, /etc/subgid): container ids 1..N, in order. */
  subordinate?: { uids: IdRange[]; gids: IdRange[] } | undefined;
  /** Why there are none (e.g. "/etc/subuid has no range for bob"), for the refusal's hint. */
  noSubordinate?: string | undefined;
}

/**
 * The uid and gid maps of a rootless bundle: container 0 is the user; with subordinate ranges,
 * container ids 1..N follow them in order (podman's default: 0 -> you, 1.. -> /etc/subuid).
 */
export function rootlessMappings(ids: RootlessIds): { uidMappings: LinuxIdMapping[]; gidMappings: LinuxIdMapping[] } {
  const map = (self: number, ranges: IdRange[] | undefined): LinuxIdMapping[] => {
    const out = [{ containerID: 0, hostID: self, size: 1 }];
    let next = 1;
    for (const r of ranges ?? []) {
      out.push({ containerID: next, hostID: r.start, size: r.count });
      next += r.count;
    }
    return out;
  };
  return { uidMappings: map(ids.uid, ids.subordinate?.uids), gidMappings: map(ids.gid, ids.subordinate?.gids) };
}

/**
 * What `runc spec --rootless` changes (runc libcontainer/specconv ToRootless), with the maps of
 * rootlessMappings. runc needs the process's uid and gid mapped ("cannot set uid to unmapped
 * user in user namespace"): without subordinate ranges only 0:0 is, and any other user is
 * refused here, saying what would map it.
 */
export function toRootless(spec: RuntimeSpec, ids: RootlessIds, userText: string): RuntimeSpec {
  for (const id of [ids.uid, ids.gid]) {
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      throw new PullUnpackError('USAGE', `rootless host id ${id} is not a valid uid/gid`);
    }
  }
  const { uidMappings, gidMappings } = rootlessMappings(ids);
  const { uid, gid } = spec.process.user;
  if (hostIdOf(uidMappings, uid) === undefined || hostIdOf(gidMappings, gid) === undefined) {
    throw unmappedUser(ids, uid, gid, userText, uidMappings, gidMappings);
  }
  const mounts = spec.mounts.map((m): RuntimeMount => {
    if (m.destination === '/sys') {
      return { destination: '/sys', type: 'none', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] };
    }
    // uid=/gid= options of volumes are kept only when mapped (runc refuses unmapped ones).
    if (m.options === undefined || ids.subordinate) return m;
    return { ...m, options: m.options.filter((o) => !o.startsWith('uid=') && !o.startsWith('gid=')) };
  });
  const { resources: _dropped, namespaces, ...rest } = spec.linux;
  const linux: RuntimeLinux = {
    uidMappings,
    gidMappings,
    namespaces: [...namespaces.filter((n) => n.type !== 'network' && n.type !== 'user'), { type: 'user' }],
    ...rest,
  };
  return { ...spec, mounts, linux };
}

function unmappedUser(
  ids: RootlessIds,
  uid: number,
  gid: number,
  userText: string,
  uidMappings: LinuxIdMapping[],
  gidMappings: LinuxIdMapping[],
): PullUnpackError {
  const user = `the user ${JSON.stringify(userText)} is ${uid}:${gid}`;
  if (!ids.subordinate) {
    return new PullUnpackError(
      'INVALID_CONFIG',
      `a rootless bundle maps only container uid/gid 0 (to host ${ids.uid}:${ids.gid}), but ${user}, which runc cannot switch to`,
      {
        hint:
          `give your user subordinate ids in /etc/subuid and /etc/subgid and install newuidmap/newgidmap (Debian package uidmap)` +
          `${ids.noSubordinate ? ` (now: ${ids.noSubordinate})` : ''}, ` +
          'or run as the mapped root with --user 0:0 (still your own user on the host), or write the bundle as root without --rootless',
      },
    );
  }
  const size = (m: LinuxIdMapping[]): number => m.reduce((n, x) => Math.max(n, x.containerID + x.size), 0);
  return new PullUnpackError(
    'INVALID_CONFIG',
    `the rootless bundle maps container uids 0-${size(uidMappings) - 1} and gids 0-${size(gidMappings) - 1}, but ${user}`,
    { hint: 'give your user larger ranges in /etc/subuid and /etc/subgid, or choose another --user' },
  );
}
