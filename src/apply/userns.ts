/**
 * Runs a command in a new user namespace whose id maps are written by the setuid helpers
 * newuidmap/newgidmap, as `podman unshare` does: inside, the calling user is root and container
 * id U >= 1 is the host id its subordinate range gives it, so chown(2) to those ids is allowed
 * (user_namespaces(7)). Only the helpers may write such maps for an unprivileged user.
 *
 * The order matters: a process gets its capabilities in the new namespace at execve(2) only if
 * its uid is 0 there by then, so the command is exec'd only after both maps are written. The
 * child (`unshare --user sh`) says "ready" once the namespace exists, waits for a line "go" that
 * is written after the maps, and then execs the command.
 */
import { execFile, spawn } from 'node:child_process';
import { PullUnpackError, abortError } from '../errors.js';

/** One line of a uid_map or gid_map: `size` ids from `containerID` are `hostID`... on the host. */
export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface UserNamespace {
  uidMappings: IdMapping[];
  gidMappings: IdMapping[];
  newuidmap: string;
  newgidmap: string;
}

/** Waits for the maps, then runs "$@" (see the module comment). Exit 70 when told nothing. */
const WAIT_THEN_EXEC = 'echo ready; read -r go && [ "$go" = go ] || exit 70; exec "$@"';

/**
 * Runs `argv` as root of a new user namespace with `ns`'s maps, in `cwd`, feeding it `input` on
 * stdin; resolves when it exits 0 and rejects with its stderr otherwise (DESTINATION_INVALID), or
 * with ABORTED when `signal` fires (the child is killed).
 */
export async function runInUserNamespace(
  ns: UserNamespace,
  argv: string[],
  options: { cwd: string; input?: string | undefined; signal?: AbortSignal | undefined },
): Promise<void> {
  if (options.signal?.aborted) throw abortError(options.signal);
  const child = spawn('unshare', ['--user', '--', 'sh', '-c', WAIT_THEN_EXEC, 'sh', ...argv], {
    cwd: options.cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c.slice(0, 4096)));
  // A child that died before reading its input fails with its exit code, not with EPIPE here.
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
  const kill = (): void => void child.kill('SIGKILL');
  options.signal?.addEventListener('abort', kill, { once: true });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').once('data', () => resolve());
      exited.then(() => reject(failure('could not create a user namespace', stderr)), reject);
    });
    const pid = String(child.pid);
    await runHelper(ns.newuidmap, [pid, ...mapArgs(ns.uidMappings)]);
    await runHelper(ns.newgidmap, [pid, ...mapArgs(ns.gidMappings)]);
    child.stdin.end(`go\n${options.input ?? ''}`);
    const code = await exited;
    if (options.signal?.aborted) throw abortError(options.signal);
    if (code !== 0) throw failure(`${argv[0]} in the user namespace exited with ${code}`, stderr);
  } catch (err) {
    kill();
    await exited.catch(() => undefined);
    if (options.signal?.aborted) throw abortError(options.signal);
    throw err;
  } finally {
    options.signal?.removeEventListener('abort', kill);
  }
}

/** `rm -rf PATH` as root of the user namespace: removes a tree owned by subordinate ids. */
export async function removeInUserNamespace(ns: UserNamespace, path: string, cwd: string): Promise<void> {
  await runInUserNamespace(ns, ['rm', '-rf', '--', path], { cwd });
}

/** newuidmap's arguments after the pid: `inside outside count` per mapping. */
function mapArgs(mappings: IdMapping[]): string[] {
  return mappings.flatMap((m) => [String(m.containerID), String(m.hostID), String(m.size)]);
}

function runHelper(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(command, args, (err, _stdout, stderr) => {
      if (err) reject(failure(`${command} ${args.join(' ')} failed`, String(stderr) || err.message));
      else resolve();
    });
  });
}

function failure(what: string, stderr: string): PullUnpackError {
  const detail = stderr.trim().split('\n').slice(-3).join('; ');
  return new PullUnpackError('DESTINATION_INVALID', `${what}${detail ? `: ${detail}` : ''}`, {
    hint: 'check the ranges in /etc/subuid and /etc/subgid (newuidmap refuses ranges that are not yours or overlap) and that user namespaces are enabled',
  });
}
