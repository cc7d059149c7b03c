/**
 * Snapshots of a directory tree for integration tests: every entry's type, mode, owner, size,
 * content hash, link target, device numbers, extended attributes and hardlink group, so two
 * unpacked root filesystems (ours and umoci's, or DIR before and after a failed pull) can be
 * compared entry by entry. Symlinks are never followed.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type EntryType = 'file' | 'directory' | 'symlink' | 'fifo' | 'char-device' | 'block-device' | 'socket';

export interface TreeEntry {
  type: EntryType;
  /** Permission bits with setuid (04000), setgid (02000) and sticky (01000). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of a regular file, 0 for everything else. */
  size: number;
  /** sha256 hex of a regular file's content. */
  sha256?: string;
  /** Target of a symlink, as stored. */
  linkTarget?: string;
  /** Device numbers of a character or block device. */
  rdev?: { major: number; minor: number };
  /** Every extended attribute of the entry itself (all namespaces), name -> base64 value. */
  xattrs: Record<string, string>;
  /**
   * For a non-directory whose inode has more than one name in the tree: every such name,
   * sorted (the same array on each member), so groups compare across trees. Otherwise absent.
   */
  hardlinks?: string[];
  /** Link count as reported by lstat (non-directories only: directory counts vary by fs). */
  nlink?: number;
  /** Modification time in nanoseconds since the epoch, as a decimal string. */
  mtimeNs: string;
}

/**
 * Walks `dir` (without following symlinks) and returns its entries keyed by path relative to
 * `dir`, '.' being `dir` itself. Extended attributes come from a single recursive getfattr run.
 * Names (and link targets) that are not valid UTF-8 show each such byte as `\xNN`.
 */
export async function snapshotTree(dir: string): Promise<Map<string, TreeEntry>> {
  const root = resolve(dir);
  const entries = new Map<string, TreeEntry>();
  const inodes = new Map<string, string[]>();
  await walk(Buffer.from(root), '.', entries, inodes);
  for (const names of inodes.values()) {
    if (names.length < 2) continue;
    const group = [...names].sort();
    for (const name of names) entries.get(name)!.hardlinks = group;
  }
  const xattrs = await readAllXattrs(root);
  for (const [rel, attrs] of xattrs) {
    const entry = entries.get(rel);
    if (!entry) throw new Error(`getfattr reported ${rel}, which the walk did not see`);
    entry.xattrs = attrs;
  }
  return entries;
}

async function walk(host: Buffer, rel: string, out: Map<string, TreeEntry>, inodes: Map<string, string[]>): Promise<void> {
  const st = await lstat(host, { bigint: true });
  const type = typeOf(st);
  const entry: TreeEntry = {
    type,
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: type === 'file' ? Number(st.size) : 0,
    xattrs: {},
    mtimeNs: st.mtimeNs.toString(),
  };
  out.set(rel, entry);
  if (type !== 'directory') {
    entry.nlink = Number(st.nlink);
    const key = `${st.dev}:${st.ino}`;
    inodes.set(key, [...(inodes.get(key) ?? []), rel]);
  }
  if (type === 'file') entry.sha256 = await hashFile(host);
  if (type === 'symlink') entry.linkTarget = displayBytes(await readlink(host, { encoding: 'buffer' }));
  if (type === 'char-device' || type === 'block-device') entry.rdev = splitRdev(st.rdev);
  if (type !== 'directory') return;
  const names = (await readdir(host, { encoding: 'buffer' })).sort((a, b) => Buffer.compare(a, b));
  for (const name of names) {
    const shown = displayBytes(name);
    await walk(Buffer.concat([host, Buffer.from('/'), name]), rel === '.' ? shown : `${rel}/${shown}`, out, inodes);
  }
}

/** A relative path's bytes shown component by component, as the walk names them. */
function displayPath(bytes: Buffer): string {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (i === bytes.length || bytes[i] === 0x2f) {
      parts.push(displayBytes(bytes.subarray(start, i)));
      start = i + 1;
    }
  }
  return parts.join('/');
}

/** Bytes as UTF-8 text when they are valid UTF-8; otherwise bytes >= 0x80 as `\xNN`. */
function displayBytes(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  if (Buffer.from(text, 'utf8').equals(bytes)) return text;
  let out = '';
  for (const b of bytes) out += b >= 0x80 ? `\\x${b.toString(16).padStart(2, '0')}` : String.fromCharCode(b);
  return out;
}

function typeOf(st: import('node:fs').BigIntStats): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice()) return 'char-device';
  if (st.isBlockDevice()) return 'block-device';
  return 'socket';
}

/** Linux's dev_t encoding (glibc gnu_dev_major / gnu_dev_minor). */
function splitRdev(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

async function hashFile(path: Buffer): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Every xattr below `root` (root included), from one
 * `getfattr -R -d -m - -h -e base64 --absolute-names` run: relative path -> name -> base64.
 */
export async function readAllXattrs(root: string): Promise<Map<string, Record<string, string>>> {
  const { stdout } = await run('getfattr', ['-R', '-d', '-m', '-', '-h', '-e', 'base64', '--absolute-names', root], {
    maxBuffer: 256 * 1024 * 1024,
    encoding: 'buffer',
  });
  return parseGetfattrDump(stdout, root);
}

/**
 * Parses `getfattr --dump -e base64` output: blocks of `# file: NAME` then `attr=0sBASE64`
 * lines. getfattr escapes bytes in names as `\ooo` (octal) and a backslash as `\134`.
 */
export function parseGetfattrDump(dump: Buffer, root: string): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const line of dump.toString('latin1').split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# file: ')) {
      const path = unescapeOctal(line.slice('# file: '.length));
      const prefix = Buffer.from(`${root}/`);
      const rel = path.equals(Buffer.from(root))
        ? '.'
        : path.subarray(0, prefix.length).equals(prefix)
          ? displayPath(path.subarray(prefix.length))
          : undefined;
      if (rel === undefined) throw new Error(`getfattr reported a path outside ${root}: ${displayBytes(path)}`);
      current = {};
      out.set(rel, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (!current || eq < 0) throw new Error(`unexpected getfattr output line: ${JSON.stringify(line)}`);
    const name = displayBytes(unescapeOctal(line.slice(0, eq)));
    current[name] = decodeValue(line.slice(eq + 1));
  }
  return out;
}

/** `0sBASE64` (or `0s` for an empty value, `""` in some versions) -> base64 of the bytes. */
function decodeValue(value: string): string {
  if (value === '""' || value === '') return '';
  if (value.startsWith('0s')) return value.slice(2);
  if (value.startsWith('0x')) return Buffer.from(value.slice(2), 'hex').toString('base64');
  if (value.startsWith('"') && value.endsWith('"')) return unescapeOctal(value.slice(1, -1)).toString('base64');
  throw new Error(`unexpected getfattr value encoding: ${value}`);
}

/** getfattr's `\ooo` escapes back to bytes (`text` holds one byte per character, latin1). */
function unescapeOctal(text: string): Buffer {
  return Buffer.from(
    text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))),
    'latin1',
  );
}

export interface DiffOptions {
  /** Do not compare modification times (default false: they are compared). */
  ignoreMtime?: boolean;
  /** Do not compare directory modification times only. */
  ignoreDirMtime?: boolean;
}

/**
 * Human-readable differences between two snapshots (`a` is "expected", `b` "actual"), one
 * string per differing property, sorted by path; empty when the trees are the same.
 */
export function diffTrees(a: Map<string, TreeEntry>, b: Map<string, TreeEntry>, options: DiffOptions = {}): string[] {
  const out: string[] = [];
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const path of paths) {
    const x = a.get(path);
    const y = b.get(path);
    if (!x) out.push(`${path}: only in the second tree (${y!.type})`);
    else if (!y) out.push(`${path}: only in the first tree (${x.type})`);
    else out.push(...diffEntry(path, x, y, options));
  }
  return out;
}

function diffEntry(path: string, x: TreeEntry, y: TreeEntry, options: DiffOptions): string[] {
  if (x.type !== y.type) return [`${path}: type ${x.type} != ${y.type}`];
  const out: string[] = [];
  const same = (what: string, p: unknown, q: unknown, show: (v: unknown) => string = String): void => {
    if (JSON.stringify(p) !== JSON.stringify(q)) out.push(`${path}: ${what} ${show(p)} != ${show(q)}`);
  };
  same('mode', x.mode, y.mode, (v) => `0${(v as number).toString(8)}`);
  same('owner', `${x.uid}:${x.gid}`, `${y.uid}:${y.gid}`);
  same('size', x.size, y.size);
  same('sha256', x.sha256, y.sha256);
  same('link target', x.linkTarget, y.linkTarget);
  same('rdev', x.rdev, y.rdev, (v) => JSON.stringify(v));
  same('xattrs', sortedRecord(x.xattrs), sortedRecord(y.xattrs), (v) => JSON.stringify(v));
  same('hardlinks', x.hardlinks, y.hardlinks, (v) => JSON.stringify(v ?? []));
  const skipMtime = options.ignoreMtime || (options.ignoreDirMtime && x.type === 'directory');
  if (!skipMtime) same('mtime', x.mtimeNs, y.mtimeNs, (v) => formatNs(v as string));
  return out;
}

function sortedRecord(r: Record<string, string>): Array<[string, string]> {
  return Object.entries(r).sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0));
}

function formatNs(ns: string): string {
  const n = BigInt(ns);
  return `${new Date(Number(n / 1_000_000n)).toISOString()} (${ns} ns)`;
}
