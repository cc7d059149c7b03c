/**
 * Extended attributes (PAX SCHILY.xattr.*), set with `setfattr` from Debian's attr package since
 * Node has no xattr API. Values are binary (security.capability), so they go base64-encoded.
 *
 * Also the tar-stream extractor the applier reads layers with, since it must capture those values
 * (and entry names) as bytes before tar-stream decodes them.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { extract as tarExtract } from 'tar-stream';
import type { Extract, Header as Headers } from 'tar-stream';
import type { ApplyState, LayerRun } from './apply-state.js';
import { bytesToName, fsPath, latin1ToName, nameToBytes } from './safe-path.js';

const PAX_XATTR_PREFIX = 'SCHILY.xattr.';
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

/** Raw (binary-safe) PAX xattrs of an entry header, captured before tar-stream decodes them as UTF-8. */
const rawXattrs = new WeakMap<Headers, Map<string, Buffer>>();
let rawPaxCapture = true;

interface ExtractInternals {
  /** The header being decoded; its `type` may also be a meta type such as 'pax-header'. */
  _header: (Omit<Headers, 'type'> & { type: string | null }) | null;
  _decodeLongHeader?: (this: ExtractInternals, buf: Buffer) => void;
  _applyLongHeaders?: (this: ExtractInternals) => void;
  /** The PAX records (decoded as UTF-8) _applyLongHeaders applies to the entry. */
  _pax?: Record<string, string> | null;
}

/** The PAX records the extractor reads as bytes. */
interface RawPax {
  xattrs: Map<string, Buffer> | null;
  path?: Buffer;
  linkpath?: Buffer;
}

/**
 * A tar-stream extractor that keeps names and PAX xattr values as bytes: tar-stream 3 decodes
 * names and PAX records as UTF-8, which corrupts names that are not UTF-8 and binary values such
 * as security.capability. Names are read as 'latin1' (one char per byte) and turned into name
 * strings (safe-path.ts) once per entry; PAX `path`, `linkpath` and xattrs are re-read from the
 * record bytes. It hooks two internal methods of the pinned tar-stream 3.2.2; if they are gone,
 * tar-stream's own UTF-8 decoding is used (and the tests of binary capabilities and of names that
 * are not UTF-8 in test/apply-layer.test.ts fail).
 */
export function createExtract(): Extract {
  const ex = tarExtract({ allowUnknownFormat: true, filenameEncoding: 'latin1' } as Parameters<typeof tarExtract>[0]);
  const internals = ex as unknown as ExtractInternals;
  const decode = internals._decodeLongHeader;
  const applyLong = internals._applyLongHeaders;
  if (typeof decode !== 'function' || typeof applyLong !== 'function' || !('_pax' in internals)) {
    rawPaxCapture = false;
    // allowUnknownFormat: pre-POSIX (v7) headers too; the header checksum is still verified.
    return tarExtract({ allowUnknownFormat: true } as Parameters<typeof tarExtract>[0]);
  }
  let pending: RawPax | null = null;
  let global: RawPax | null = null;
  internals._decodeLongHeader = function (buf) {
    if (this._header?.type === 'pax-header') pending = parsePaxRecords(buf);
    // tar-stream merges a global header's records into those of each later PAX header.
    if (this._header?.type === 'pax-global-header') global = parsePaxRecords(buf);
    decode.call(this, buf);
  };
  internals._applyLongHeaders = function () {
    // tar-stream's decoded PAX records of this entry (a global header's merged in), or null.
    const pax = this._pax;
    applyLong.call(this);
    const header = this._header;
    if (header === null) return;
    header.name = pax?.path ? paxName(pax.path, pending?.path ?? global?.path) : latin1ToName(header.name);
    if (pax?.linkpath) header.linkname = paxName(pax.linkpath, pending?.linkpath ?? global?.linkpath);
    else if (header.linkname) header.linkname = latin1ToName(header.linkname);
    if (pending?.xattrs) rawXattrs.set(header as Headers, pending.xattrs);
    pending = null;
  };
  return ex;
}

/** A PAX path or linkpath from its record bytes, or as tar-stream decoded it if they were not found. */
function paxName(decoded: string, raw: Buffer | undefined): string {
  return raw !== undefined && raw.length > 0 ? bytesToName(raw) : decoded;
}

/** PAX records are `LEN KEY=VALUE\n`, LEN counting the whole record; values are raw bytes. */
export function parsePaxXattrs(buf: Buffer): Map<string, Buffer> | null {
  return parsePaxRecords(buf).xattrs;
}

function parsePaxRecords(buf: Buffer): RawPax {
  const found: RawPax = { xattrs: null };
  let off = 0;
  while (off < buf.length) {
    const space = buf.indexOf(0x20, off);
    if (space < 0) break;
    const len = Number.parseInt(buf.toString('latin1', off, space), 10);
    if (!(len > 0) || off + len > buf.length) break;
    const record = buf.subarray(space + 1, off + len - 1);
    const eq = record.indexOf(0x3d);
    // The keys this reads are ASCII up to the xattr name, which may hold any bytes.
    const key = eq < 0 ? '' : record.toString('latin1', 0, eq);
    if (key.startsWith(PAX_XATTR_PREFIX) && key.length > PAX_XATTR_PREFIX.length) {
      found.xattrs ??= new Map();
      found.xattrs.set(bytesToName(record.subarray(PAX_XATTR_PREFIX.length, eq)), Buffer.from(record.subarray(eq + 1)));
    } else if (key === 'path' || key === 'linkpath') {
      found[key] = Buffer.from(record.subarray(eq + 1));
    }
    off += len;
  }
  return found;
}

/** The PAX records of an entry header, as tar-stream decoded them (UTF-8 strings). */
export function paxOf(header: Headers): Record<string, string> | undefined {
  return (header.pax ?? undefined) as Record<string, string> | undefined;
}

function xattrsOf(header: Headers): Map<string, Buffer> | null {
  const raw = rawXattrs.get(header);
  if (raw !== undefined || rawPaxCapture) return raw ?? null;
  const pax = paxOf(header);
  if (!pax) return null;
  let found: Map<string, Buffer> | null = null;
  for (const [key, value] of Object.entries(pax)) {
    if (!key.startsWith(PAX_XATTR_PREFIX)) continue;
    found ??= new Map();
    found.set(key.slice(PAX_XATTR_PREFIX.length), Buffer.from(value, 'utf8'));
  }
  return found;
}

/** Queues the entry's xattrs, in `getfattr --dump` form, for the next setfattr run. */
export async function queueXattrs(run: LayerRun, host: string, header: Headers): Promise<void> {
  const attrs = xattrsOf(header);
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
    ctx.onWarning('setfattr/getfattr (Debian package "attr") were not found: extended attributes such as security.capability are not applied');
  }
  const lines = failures.join('\n').split('\n').filter((l) => l.trim() !== '');
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
function runAttrTool(command: string, args: string[], input = '', fd?: number): Promise<{ code: number; stdout: string; stderr: string } | null> {
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
    out += byte <= 0x20 || byte >= 0x7f || byte === 0x5c || byte === 0x3d ? `\\${byte.toString(8).padStart(3, '0')}` : String.fromCharCode(byte);
  }
  return out;
}

/** Reverses dumpEscape on getfattr output read as latin1 (one char per byte). */
function dumpUnescape(text: string): string {
  return bytesToName(Buffer.from(text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))), 'latin1'));
}
