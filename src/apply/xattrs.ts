/**
 * Extended attributes (PAX SCHILY.xattr.*), set with `setfattr` from Debian's attr package since
 * Node has no xattr API. Values are binary (security.capability), so they go base64-encoded.
 * The values come as bytes from the tar reader (tar-reader.ts).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { TarHeader } from '../tar/reader.js';
import type { ApplyState, LayerRun } from './state.js';
import { fsPath } from './safe-path.js';
import { bytesToName, nameToBytes } from '../tar/names.js';

/** Files whose xattrs are set by one `setfattr --restore` run. */
const XATTR_BATCH_FILES = 1000;
const MAX_XATTR_WARNINGS = 20;
/** Host-specific xattrs never set from a layer nor cleared nor exported (umoci's ignoreXattrs). */
export const KEEP_XATTRS = new Set(['security.selinux', 'system.nfs4_acl']);
/** Paths per getfattr / setfattr -x command line. */
const XATTR_ARGS_PER_RUN = 256;
/** `getfattr` options for a `--dump` of every xattr, values in hex. */
const DUMP_ARGS = ['-d', '-m', '-', '-e', 'hex', '--absolute-names'];
/** How a tool run with an extra descriptor (fd 3) names the file it refers to. */
const FD_PATH = '/proc/self/fd/3';

/** Queues the entry's xattrs, in `getfattr --dump` form, for the next setfattr run. */
export async function queueXattrs(run: LayerRun, host: string, header: TarHeader): Promise<void> {
  const attrs = header.xattrs;
  if (attrs === null || run.ctx.setfattrMissing) return;
  const lines = [`# file: ${dumpEscape(host)}`];
  for (const [name, value] of attrs) {
    if (KEEP_XATTRS.has(name)) continue;
    // Other namespaces (security.*, trusted.*) need CAP_SYS_ADMIN / CAP_SETFCAP.
    if (!run.ctx.isRoot && !name.startsWith('user.')) {
      run.ctx.skippedXattrs++;
      continue;
    }
    lines.push(`${dumpEscape(name)}=${value.length === 0 ? '""' : `0s${value.toString('base64')}`}`);
  }
  if (lines.length === 1) return;
  run.xattrText.push(`${lines.join('\n')}\n\n`);
  run.xattrPaths.add(host);
  if (run.xattrPaths.size >= XATTR_BATCH_FILES) await flushXattrs(run);
}

export function hasPendingXattrsAt(run: LayerRun, host: string): boolean {
  if (run.xattrPaths.size === 0) return false;
  const prefix = `${host}/`;
  for (const p of run.xattrPaths) if (p === host || p.startsWith(prefix)) return true;
  return false;
}

/**
 * Clears the old xattrs of merged directories, then sets the queued ones with one
 * `setfattr -h --restore=-` (-h: a symlink gets its own). Runs after each file was written and
 * chowned (chown and writes clear security.capability), and before any removal that could change
 * what a queued path names. Failures are warnings, as containerd and umoci treat ENOTSUP and
 * (rootless) EPERM.
 */
export async function flushXattrs(run: LayerRun): Promise<void> {
  if (run.xattrPaths.size === 0) return;
  const input = run.xattrText.join('');
  const clear = [...run.xattrClear];
  run.xattrText = [];
  run.xattrPaths.clear();
  run.xattrClear.clear();
  const { ctx } = run;
  if (ctx.setfattrMissing) return;
  const failures: string[] = [];
  let found = await clearXattrs(ctx, clear, failures);
  if (found && input !== '') {
    const result = await runAttrTool('setfattr', ['-h', '--restore=-'], input);
    found = result !== null;
    if (result !== null && result.code !== 0) failures.push(result.stderr || `setfattr exited with ${result.code}`);
  }
  if (!found) {
    ctx.setfattrMissing = true;
    ctx.onWarning(
      'setfattr/getfattr (Debian package "attr") were not found: extended attributes such as security.capability are not applied',
    );
  }
  const lines = failures
    .join('\n')
    .split('\n')
    .filter((l) => l.trim() !== '');
  for (const line of lines.slice(0, MAX_XATTR_WARNINGS)) ctx.onWarning(`extended attribute not applied: ${line}`);
  if (lines.length > MAX_XATTR_WARNINGS) ctx.onWarning(`... and ${lines.length - MAX_XATTR_WARNINGS} more extended attribute failures`);
}

/** Removes every xattr of `paths` but KEEP_XATTRS (non-root: user.* only). False if getfattr is missing. */
async function clearXattrs(ctx: ApplyState, paths: string[], failures: string[]): Promise<boolean> {
  const byName = new Map<string, string[]>();
  const plain = paths.filter((p) => typeof fsPath(p) === 'string');
  for (let i = 0; i < plain.length; i += XATTR_ARGS_PER_RUN) {
    const result = await runAttrTool('getfattr', ['-h', ...DUMP_ARGS, '--', ...plain.slice(i, i + XATTR_ARGS_PER_RUN)]);
    if (result === null) return false;
    if (result.code !== 0) failures.push(result.stderr);
    for (const [path, name] of clearableXattrs(ctx, result.stdout)) byName.set(name, [...(byName.get(name) ?? []), path]);
  }
  for (const [name, holders] of byName) {
    for (let i = 0; i < holders.length; i += XATTR_ARGS_PER_RUN) {
      const result = await runAttrTool('setfattr', ['-h', '-x', name, '--', ...holders.slice(i, i + XATTR_ARGS_PER_RUN)]);
      if (result === null) return false;
      if (result.code !== 0) failures.push(result.stderr);
    }
  }
  for (const path of paths) {
    if (typeof fsPath(path) !== 'string' && !(await clearXattrsByFd(ctx, path, failures))) return false;
  }
  return true;
}

/**
 * clearXattrs for one directory whose name is not UTF-8, which argv cannot carry: the tools get
 * it as FD_PATH, a descriptor opened here without following a symlink.
 */
async function clearXattrsByFd(ctx: ApplyState, dir: string, failures: string[]): Promise<boolean> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(fsPath(dir), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    failures.push(`${JSON.stringify(dir)}: ${(err as Error).message}`);
    return true;
  }
  try {
    const result = await runAttrTool('getfattr', [...DUMP_ARGS, '--', FD_PATH], '', handle.fd);
    if (result === null) return false;
    if (result.code !== 0) failures.push(result.stderr);
    for (const [, name] of clearableXattrs(ctx, result.stdout)) {
      const removed = await runAttrTool('setfattr', ['-x', name, '--', FD_PATH], '', handle.fd);
      if (removed === null) return false;
      if (removed.code !== 0) failures.push(removed.stderr);
    }
    return true;
  } finally {
    await handle.close();
  }
}

/** [path, xattr name] for each xattr in getfattr --dump output that clearing removes. */
function clearableXattrs(ctx: ApplyState, dump: string): Array<[string, string]> {
  const found: Array<[string, string]> = [];
  let current: string | null = null;
  for (const line of dump.split('\n')) {
    if (line.startsWith('# file: ')) current = dumpUnescape(line.slice('# file: '.length));
    const eq = line.indexOf('=');
    if (current === null || line.startsWith('#') || eq <= 0) continue;
    const name = dumpUnescape(line.slice(0, eq));
    if (KEEP_XATTRS.has(name) || (!ctx.isRoot && !name.startsWith('user.'))) continue;
    found.push([current, name]);
  }
  return found;
}

/** Runs getfattr or setfattr (with `fd` as its FD_PATH); null when it is not installed. */
function runAttrTool(
  command: string,
  args: string[],
  input = '',
  fd?: number,
): Promise<{ code: number; stdout: string; stderr: string } | null> {
  return new Promise((resolve, reject) => {
    // Pipes on 0-2 (so the streams exist), `fd` or nothing on 3.
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe', fd ?? 'ignore'] }) as ChildProcessWithoutNullStreams;
    // latin1: one char per byte, so getfattr's raw (non-ASCII) name bytes survive until dumpUnescape.
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('latin1').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 65536) stderr += d;
    });
    child.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve(null) : reject(err)));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr: stderr.trim() }));
    // EPIPE when the tool exits early: its exit status and stderr say why.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** `getfattr --dump` quoting: bytes outside printable ASCII, `\` and `=` as `\ooo`. */
function dumpEscape(text: string): string {
  let out = '';
  for (const byte of nameToBytes(text)) {
    out +=
      byte <= 0x20 || byte >= 0x7f || byte === 0x5c || byte === 0x3d ? `\\${byte.toString(8).padStart(3, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/** Reverses dumpEscape on getfattr output read as latin1 (one char per byte). */
function dumpUnescape(text: string): string {
  return bytesToName(
    Buffer.from(
      text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))),
      'latin1',
    ),
  );
}
