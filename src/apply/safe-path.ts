/**
 * Path safety for the layer applier: tar names are normalized once here, and every path inside
 * the rootfs is resolved component by component with lstat, so no symlink (from this layer or a
 * lower one) can make a write land outside the root. Symlinks met on the way are resolved as the
 * container would see them: as if the root were `/` (absolute targets re-rooted, `..` clamped at
 * the root). Precedents: containerd continuity `fs.RootPath`, cyphar/filepath-securejoin.
 *
 * Names are bytes, on Linux and in tar, and need not be UTF-8 (Latin-1 names exist in real
 * images; umoci keeps their bytes). Inside the applier a name is a JS string: valid UTF-8 decodes
 * as usual, and each byte that is not part of valid UTF-8 becomes the lone surrogate U+DC00+byte
 * (Python's "surrogateescape", PEP 383). That mapping is one-to-one, keeps every ASCII byte (so
 * `/`, `.` and NUL mean what they mean to the kernel), and lets valid names pass through
 * unchanged; fsPath turns an escaped string back into its bytes at each filesystem call.
 */
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { PullUnpackError } from '../errors.js';

/** Most symlinks followed while resolving one path (filepath-securejoin's limit; Linux uses 40). */
export const MAX_SYMLINKS = 255;

/** Byte b (0x80-0xff) that is not part of valid UTF-8 is the char ESCAPE_BASE + b in a name. */
const ESCAPE_BASE = 0xdc00;
/** An escaped byte: a low surrogate U+DC80-U+DCFF that is not the second half of a pair. */
const ESCAPED_BYTE = /(?<![\ud800-\udbff])[\udc80-\udcff]/;
const NON_ASCII = /[^\x00-\x7f]/;

/**
 * Normalizes a tar entry name (or hardlink target) to a relative path with no `.`, `..` or empty
 * components: `./a//b/` -> `a/b`, `a/../b` -> `b`. Returns null for the root itself (`./`, `.`).
 *
 * Policy: REJECT, never clamp. An absolute name, or a `..` that climbs above the root, throws
 * UNSAFE_PATH. containerd strips a leading `/` and clamps `..` at the root, but then a name like
 * `../../etc/passwd` silently overwrites the image's own /etc/passwd; image builders never write
 * such names (moby `pkg/archive` also fails on a `..` breakout, GNU tar refuses `..` members), so
 * a layer that has them is hostile or broken and the pull should stop loudly.
 * A `..` that stays inside the root (`a/../b`) is resolved lexically, as containerd does.
 */
export function cleanEntryName(name: string): string | null {
  if (name.includes('\0')) throw unsafePath(name, 'contains a NUL byte');
  // `umoci insert ... /` writes the root itself as "/": that names no path outside.
  if (/^[/.]+$/.test(name) && !name.includes('..')) return null;
  if (name.startsWith('/')) throw unsafePath(name, 'is absolute');
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) throw unsafePath(name, 'climbs above the root with ..');
      parts.pop();
      continue;
    }
    parts.push(part);
  }
  return parts.length === 0 ? null : parts.join('/');
}

/**
 * Resolves `relPath` inside `root` (an absolute, normalized host path of a real directory) and
 * returns an absolute host path that is `root` or below it, reached through real directories only.
 * Each existing component is checked with lstat; a symlink is replaced by its target read as if
 * `root` were `/` (absolute targets restart at `root`, `..` stops at `root`), chains are followed
 * up to MAX_SYMLINKS (more throws UNSAFE_PATH, which is also what a loop gives). Components that do
 * not exist are kept as they are, so the result may name a path still to be created.
 * With `followFinal: false` (the default) a symlink in the LAST component is not followed: the
 * result names the link itself, which is what creating, replacing, hardlinking or removing needs.
 * The result is a name string (link targets are read as bytes): give fs calls fsPath(result).
 */
export function resolveInRoot(root: string, relPath: string, opts: { followFinal?: boolean } = {}): string {
  const followFinal = opts.followFinal ?? false;
  const pending = splitReversed(relPath);
  const resolved: string[] = [];
  let links = 0;
  // Index in `resolved` of the first component known to be missing: no need to lstat below it.
  let missingAt = Number.POSITIVE_INFINITY;
  while (pending.length > 0) {
    const part = pending.pop() as string;
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      if (resolved.length <= missingAt) missingAt = Number.POSITIVE_INFINITY;
      continue;
    }
    resolved.push(part);
    if (pending.length === 0 && !followFinal) break;
    if (resolved.length - 1 > missingAt) continue;
    const host = joinRoot(root, resolved);
    const st = lstatOrNull(host);
    if (st === null) {
      missingAt = resolved.length - 1;
      continue;
    }
    if (!st.isSymbolicLink()) continue;
    if (++links > MAX_SYMLINKS) throw unsafePath(relPath, 'has too many levels of symbolic links (a loop?)');
    const target = bytesToName(readlinkSync(fsPath(host), { encoding: 'buffer' }));
    resolved.pop();
    if (target.startsWith('/')) resolved.length = 0;
    pending.push(...splitReversed(target));
  }
  return joinRoot(root, resolved);
}

/**
 * lstat that answers null for a path that does not exist (ENOENT, or ENOTDIR for a file parent).
 * Synchronous, like the applier's other per-entry calls (apply-entries.ts says why).
 */
export function lstatOrNull(hostPath: string): Stats | null {
  try {
    return lstatSync(fsPath(hostPath));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
}

/** The error for a name or link that would leave the root. */
export function unsafePath(name: string, why: string): PullUnpackError {
  return new PullUnpackError('UNSAFE_PATH', `unsafe path ${JSON.stringify(name)}: ${why}`, {
    hint: 'the layer tries to write outside the image root; it is refused',
  });
}

/** The name string (see the file comment) for the bytes of a name: their UTF-8 text when valid. */
export function bytesToName(bytes: Buffer): string {
  if (isUtf8(bytes)) return bytes.toString('utf8');
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const lead = bytes[i] as number;
    const n = lead < 0x80 ? 1 : lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3 : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
    // isUtf8 on the one sequence rejects overlongs, surrogates and truncation (RFC 3629).
    if (n > 0 && i + n <= bytes.length && isUtf8(bytes.subarray(i, i + n))) {
      out += bytes.toString('utf8', i, i + n);
      i += n;
    } else {
      out += String.fromCharCode(ESCAPE_BASE + lead);
      i++;
    }
  }
  return out;
}

/** bytesToName for a string that holds one byte per char (tar-stream's 'latin1' decoding). */
export function latin1ToName(text: string): string {
  return NON_ASCII.test(text) ? bytesToName(Buffer.from(text, 'latin1')) : text;
}

/** The bytes of a name string: the inverse of bytesToName. */
export function nameToBytes(name: string): Buffer {
  if (!ESCAPED_BYTE.test(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < ESCAPE_BASE + 0x80 || c > ESCAPE_BASE + 0xff || isHighSurrogate(name.charCodeAt(i - 1))) continue;
    parts.push(Buffer.from(name.slice(start, i), 'utf8'), Buffer.of(c - ESCAPE_BASE));
    start = i + 1;
  }
  parts.push(Buffer.from(name.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

/** A host path as the fs API should get it: the string itself, or its bytes when it holds escaped ones. */
export function fsPath(hostPath: string): string | Buffer {
  return ESCAPED_BYTE.test(hostPath) ? nameToBytes(hostPath) : hostPath;
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

function splitReversed(p: string): string[] {
  return p
    .split('/')
    .filter((s) => s !== '')
    .reverse();
}

function joinRoot(root: string, parts: string[]): string {
  if (parts.length === 0) return root;
  return root === '/' ? `/${parts.join('/')}` : `${root}/${parts.join('/')}`;
}
