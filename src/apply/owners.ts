/**
 * Ownership for rootless bundles with subordinate ids. An unprivileged applier cannot chown, so
 * while layers are applied it records the owner of every entry that is not 0:0 (OwnerRecord,
 * kept current as later layers replace or remove paths); applyOwners then sets those owners
 * through the bundle's id maps: in a user namespace with those maps (userns.ts), where the
 * container ids are valid, or directly with the mapped host ids when running as root. Entries
 * owned by 0:0 need nothing: container root is the user who unpacked them.
 */
import * as fs from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PullUnpackError } from '../errors.js';
import { fsPath, lstatOrNull } from './safe-path.js';
import { runInUserNamespace, type IdMapping, type UserNamespace } from './userns.js';

export type { IdMapping, UserNamespace } from './userns.js';

/** Host path -> the container uid/gid its tar entry names, for entries not owned by 0:0. */
export class OwnerRecord {
  private readonly owners = new Map<string, { uid: number; gid: number }>();

  /** Records the owner of the entry just written at `host` (0:0 clears an earlier record). */
  set(host: string, uid: number, gid: number): void {
    if (uid === 0 && gid === 0) this.owners.delete(host);
    else this.owners.set(host, { uid, gid });
  }

  /** Forgets `host` and everything below it: the path was removed (applier removePath). */
  removed(host: string): void {
    this.owners.delete(host);
    const prefix = `${host}/`;
    for (const p of this.owners.keys()) if (p.startsWith(prefix)) this.owners.delete(p);
  }

  get size(): number {
    return this.owners.size;
  }

  entries(): IterableIterator<[string, { uid: number; gid: number }]> {
    return this.owners.entries();
  }
}

/** The host id container id `id` maps to, or undefined when no mapping covers it. */
export function hostIdOf(mappings: readonly IdMapping[], id: number): number | undefined {
  for (const m of mappings) if (id >= m.containerID && id < m.containerID + m.size) return m.hostID + (id - m.containerID);
  return undefined;
}

export interface ApplyOwnersOptions {
  /** The rootfs the paths are in (for messages). */
  root: string;
  /** chown directly to the mapped host ids (running as root), or in a user namespace. */
  direct: boolean;
  namespace: UserNamespace;
  /** A directory for the namespace job's path lists (the staging scratch space). */
  workDir: string;
  signal?: AbortSignal | undefined;
}

/**
 * Sets the recorded owners. Refuses (ID_NOT_MAPPED, before changing anything) an owner the maps
 * do not cover. A setuid/setgid bit that chown(2) clears is set again afterwards.
 */
export async function applyOwners(record: OwnerRecord, options: ApplyOwnersOptions): Promise<void> {
  const { uidMappings, gidMappings } = options.namespace;
  const jobs: Array<{ host: string; uid: number; gid: number; restoreMode: number | undefined }> = [];
  for (const [host, owner] of record.entries()) {
    for (const [kind, id, mappings] of [
      ['uid', owner.uid, uidMappings],
      ['gid', owner.gid, gidMappings],
    ] as const) {
      if (hostIdOf(mappings, id) === undefined) throw unmapped(options.root, host, kind, id, mappings);
    }
    const st = lstatOrNull(host);
    if (st === null) continue;
    const special = !st.isSymbolicLink() && (st.mode & 0o6000) !== 0;
    jobs.push({ host, ...owner, restoreMode: special ? st.mode & 0o7777 : undefined });
  }
  if (jobs.length === 0) return;
  if (options.direct) {
    for (const j of jobs) {
      fs.lchownSync(fsPath(j.host), hostIdOf(uidMappings, j.uid)!, hostIdOf(gidMappings, j.gid)!);
      if (j.restoreMode !== undefined) fs.chmodSync(fsPath(j.host), j.restoreMode);
    }
    return;
  }
  await runInUserNamespace(options.namespace, ['sh', '-c', NAMESPACE_JOB], {
    cwd: options.workDir,
    input: await writeJobLists(jobs, options.workDir),
    signal: options.signal,
  });
}

/**
 * Run as root of the namespace, in workDir: each line `chown UID:GID LIST` or `chmod MODE LIST`
 * applies to the NUL-separated paths in the file LIST (any bytes, never parsed by the shell).
 */
const NAMESPACE_JOB = `set -e
while read -r op arg list; do
  case "$op" in
    chown) xargs -0 -r -a "$list" chown -h -- "$arg" ;;
    chmod) xargs -0 -r -a "$list" chmod -- "$arg" ;;
    *) exit 71 ;;
  esac
done`;

/** Writes one path list per owner and per mode to restore; returns the job lines. */
async function writeJobLists(
  jobs: Array<{ host: string; uid: number; gid: number; restoreMode: number | undefined }>,
  workDir: string,
): Promise<string> {
  const groups = new Map<string, Buffer[]>();
  const add = (key: string, host: string): void => {
    const path = fsPath(host);
    const list = groups.get(key) ?? [];
    list.push(Buffer.isBuffer(path) ? path : Buffer.from(path), Buffer.alloc(1));
    groups.set(key, list);
  };
  for (const j of jobs) add(`chown ${j.uid}:${j.gid}`, j.host);
  // After every chown: chmod restores what chown cleared.
  for (const j of jobs) if (j.restoreMode !== undefined) add(`chmod ${j.restoreMode.toString(8)}`, j.host);
  const lines: string[] = [];
  let n = 0;
  for (const [key, buffers] of groups) {
    const list = `owners-${n++}.list`;
    await writeFile(join(workDir, list), Buffer.concat(buffers));
    lines.push(`${key} ${list}\n`);
  }
  return lines.join('');
}

function unmapped(root: string, host: string, kind: 'uid' | 'gid', id: number, mappings: readonly IdMapping[]): PullUnpackError {
  const mapped = mappings.reduce((n, m) => Math.max(n, m.containerID + m.size), 0);
  const path = host.startsWith(`${root}/`) ? host.slice(root.length) : host;
  return new PullUnpackError(
    'ID_NOT_MAPPED',
    `the image's ${path} is owned by ${kind} ${id}, outside the ${mapped} container ${kind}s the bundle maps (0 to you, 1-${mapped - 1} to your subordinate ids)`,
    { hint: `give your user a larger range in /etc/sub${kind} (at least ${id} ids), e.g. usermod --add-sub${kind}s` },
  );
}
