/**
 * Path safety for the layer applier: tar names are normalized once here, and every path inside
 * the rootfs is resolved component by component with lstat, so no symlink (from this layer or a
 * lower one) can make a write land outside the root. Symlinks met on the way are resolved as the
 * container would see them: as if the root were `/` (absolute targets re-rooted, `..` clamped at
 * the root). Precedents: containerd continuity `fs.RootPath`, cyphar/filepath-securejoin.
 *
 * Names are name strings (tar/names.ts: bytes that are not UTF-8 escaped one to one); fsPath
 * turns an escaped string back into its bytes at each filesystem call.
 */
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { PullUnpackError } from '../errors.js';
import { bytesToName, hasEscapedBytes, nameToBytes } from '../tar/names.js';

/** Most symlinks followed while resolving one path (filepath-securejoin's limit; Linux uses 40). */
export const MAX_SYMLINKS = 255;

/**
 * Normalizes a tar entry name (or hardlink target) to a relative path with no `.`, `..` or empty
 * components: `./a//b/` -> `a/b`, `a/../b` -> `b`. Returns null for the root itself (`./`, `.`).
 *
 * A leading `/` names the root, as in containerd, umoci and GNU tar (which strip it): `/etc/passwd`
 * is the image's own etc/passwd, for entry names and hardlink targets alike.
 *
 * Policy for `..`: REJECT, never clamp. A `..` that climbs above the root throws UNSAFE_PATH.
 * containerd clamps `..` at the root, but then a name like `../../etc/passwd` silently
 * overwrites the image's own /etc/passwd; image builders never write such names (moby
 * `pkg/archive` also fails on a `..` breakout, GNU tar refuses `..` members), so a layer that
 * has them is hostile or broken and the pull should stop loudly.
 * A `..` that stays inside the root (`a/../b`) is resolved lexically, as containerd does.
 */
export function cleanEntryName(name: string): string | null {
  if (name.includes('\0')) throw unsafePath(name, 'contains a NUL byte');
  // `umoci insert ... /` writes the root itself as "/": that names no path outside.
  if (/^[/.]+$/.test(name) && !name.includes('..')) return null;
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

/** A host path as the fs API should get it: the string itself, or its bytes when it holds escaped ones. */
export function fsPath(hostPath: string): string | Buffer {
  return hasEscapedBytes(hostPath) ? nameToBytes(hostPath) : hostPath;
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
