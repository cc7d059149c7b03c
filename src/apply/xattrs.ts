/**
 * Extended attributes (PAX SCHILY.xattr.*), set with `setfattr` from Debian's attr package since
 * Node has no xattr API. Values are binary (security.capability), so they go base64-encoded.
 * The values come as bytes from the tar reader (tar/reader.ts).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { TarHeader } from '../tar/reader.js';
import { fsPath } from './safe-path.js';
import { bytesToName, nameToBytes } from '../tar/names.js';
import { runProgram } from '../programs.js';

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

/** What the xattr work needs of the apply context (ApplyState is one). */
export interface XattrHost {
  readonly isRoot: boolean;
  readonly onWarning: (message: string) => void;
  /** Set once setfattr/getfattr were found missing: nothing more is tried. */
  setfattrMissing: boolean;
  /** xattrs outside user.* not set because this process is not root. */
  skippedXattrs: number;
}

/**
 * The pending xattr work of one layer run: `setfattr --restore` input in `getfattr --dump` form,
 * every host path it names, and the merged directories whose old xattrs go first. Owned by the
 * run (apply/state.ts LayerRun); flushed in batches, before any removal that could change what
 * a queued path names, and at the end of the layer.
 */
export class XattrQueue {
  private text: string[] = [];
  private readonly paths = new Set<string>();
  private readonly merged = new Set<string>();

  constructor(private readonly ctx: XattrHost) {}

  /** Queues the entry's xattrs for the next setfattr run. */
  async add(host: string, header: TarHeader): Promise<void> {
    const attrs = header.xattrs;
    const { ctx } = this;
    if (attrs === null || ctx.setfattrMissing) return;
    const lines = [`# file: ${dumpEscape(host)}`];
    for (const [name, value] of attrs) {
      if (KEEP_XATTRS.has(name)) continue;
      // Other namespaces (security.*, trusted.*) need CAP_SYS_ADMIN / CAP_SETFCAP.
      if (!ctx.isRoot && !name.startsWith('user.')) {
        ctx.skippedXattrs++;
        continue;
      }
      lines.push(`${dumpEscape(name)}=${value.length === 0 ? '""' : `0s${value.toString('base64')}`}`);
    }
    if (lines.length === 1) return;
    this.text.push(`${lines.join('\n')}\n\n`);
    this.paths.add(host);
    if (this.paths.size >= XATTR_BATCH_FILES) await this.flush();
  }

  /** A directory entry merged over the existing directory `host`: its old xattrs are cleared first (layer.md). */
  clearMerged(host: string): void {
    this.merged.add(host);
    this.paths.add(host);
  }

  /** True when queued work names `host` or a path below it. */
  pendingAt(host: string): boolean {
    if (this.paths.size === 0) return false;
    const prefix = `${host}/`;
    for (const p of this.paths) if (p === host || p.startsWith(prefix)) return true;
    return false;
  }

  /**
   * Clears the old xattrs of merged directories, then sets the queued ones with one
   * `setfattr -h --restore=-` (-h: a symlink gets its own). Runs after each file was written and
   * chowned (chown and writes clear security.capability), and before any removal that could change
   * what a queued path names. Failures are warnings, as containerd and umoci treat ENOTSUP and
   * (rootless) EPERM.
   */
  async flush(): Promise<void> {
    if (this.paths.size === 0) return;
    const input = this.text.join('');
    const clear = [...this.merged];
    this.text = [];
    this.paths.clear();
    this.merged.clear();
    const { ctx } = this;
    if (ctx.setfattrMissing) return;
    const failures: string[] = [];
    let found = await clearXattrs(ctx, clear, failures);
    if (found && input !== '') {
      const result = await runAttrText('setfattr', ['-h', '--restore=-'], input);
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
}

/** Removes every xattr of `paths` but KEEP_XATTRS (non-root: user.* only). False if getfattr is missing. */
async function clearXattrs(ctx: XattrHost, paths: string[], failures: string[]): Promise<boolean> {
  const byName = new Map<string, string[]>();
  const plain = paths.filter((p) => typeof fsPath(p) === 'string');
  for (let i = 0; i < plain.length; i += XATTR_ARGS_PER_RUN) {
    const result = await runAttrText('getfattr', ['-h', ...DUMP_ARGS, '--', ...plain.slice(i, i + XATTR_ARGS_PER_RUN)]);
    if (result === null) return false;
    if (result.code !== 0) failures.push(result.stderr);
    for (const [path, name] of clearableXattrs(ctx, result.stdout)) byName.set(name, [...(byName.get(name) ?? []), path]);
  }
  for (const [name, holders] of byName) {
    for (let i = 0; i < holders.length; i += XATTR_ARGS_PER_RUN) {
      const result = await runAttrText('setfattr', ['-h', '-x', name, '--', ...holders.slice(i, i + XATTR_ARGS_PER_RUN)]);
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
async function clearXattrsByFd(ctx: XattrHost, dir: string, failures: string[]): Promise<boolean> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(fsPath(dir), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    failures.push(`${JSON.stringify(dir)}: ${(err as Error).message}`);
    return true;
  }
  try {
    const result = await runAttrText('getfattr', [...DUMP_ARGS, '--', FD_PATH], '', handle.fd);
    if (result === null) return false;
    if (result.code !== 0) failures.push(result.stderr);
    for (const [, name] of clearableXattrs(ctx, result.stdout)) {
      const removed = await runAttrText('setfattr', ['-x', name, '--', FD_PATH], '', handle.fd);
      if (removed === null) return false;
      if (removed.code !== 0) failures.push(removed.stderr);
    }
    return true;
  } finally {
    await handle.close();
  }
}

/** [path, xattr name] for each xattr in getfattr --dump output that clearing removes. */
function clearableXattrs(ctx: XattrHost, dump: string): Array<[string, string]> {
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

/** How getfattr or setfattr ended: its exit code, what it printed (stdout as bytes), and whether stdout was cut at the cap. */
export interface AttrToolResult {
  code: number;
  stdout: Buffer;
  stderr: string;
  truncated: boolean;
}

/**
 * Runs getfattr or setfattr (Debian's attr package) with `input` on stdin and `fd` as its
 * FD_PATH; null when it is not installed. A program that could not be started rejects; one
 * killed by a signal ends with code -1. The tar output reads the tree's xattrs with it too.
 */
export async function runAttrTool(
  command: 'getfattr' | 'setfattr',
  args: string[],
  options: { input?: string; fd?: number | undefined; signal?: AbortSignal | undefined; maxStdout?: number } = {},
): Promise<AttrToolResult | null> {
  const result = await runProgram(command, args, {
    input: options.input,
    fd3: options.fd,
    signal: options.signal,
    maxStdout: options.maxStdout,
  });
  switch (result.status) {
    case 'missing':
      return null;
    case 'exited':
      return { code: result.code, stdout: result.stdout, stderr: result.stderr.trim(), truncated: result.truncated };
    case 'killed':
      return { code: -1, stdout: Buffer.alloc(0), stderr: `${command} was killed by ${result.signal}`, truncated: false };
    default:
      throw new Error(`${command} could not be run: ${result.status === 'failed' ? result.message : result.status}`);
  }
}

/** runAttrTool with getfattr's raw output as latin1 text: one char per byte, so name bytes survive until dumpUnescape. */
async function runAttrText(
  command: 'getfattr' | 'setfattr',
  args: string[],
  input = '',
  fd?: number,
): Promise<{ code: number; stdout: string; stderr: string } | null> {
  const result = await runAttrTool(command, args, { input, fd });
  if (result === null) return null;
  const stderr = result.truncated ? `${command} printed more than can be read; some xattrs were not cleared` : result.stderr;
  return { code: result.truncated ? -1 : result.code, stdout: result.stdout.toString('latin1'), stderr };
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
