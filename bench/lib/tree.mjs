/**
 * Compares two unpacked trees so the benchmark never times a broken unpack. Hard differences
 * (a path missing on one side, another file type, size, content sha256 or symlink target) fail
 * the check; metadata differences (mode, owner, mtime, link count) are reported as warnings.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

const SMALL_FILE = 1 << 20;
const EXAMPLES = 8;

/** Relative path -> {type, size, hash, target, mode, uid, gid, mtime, nlink} for every entry under `root`. */
export async function describeTree(root) {
  const out = new Map();
  const walk = async (dir, rel) => {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      const path = join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = await lstat(path);
      const record = {
        type: typeOf(st),
        size: st.isFile() ? st.size : 0,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtime: Math.floor(st.mtimeMs / 1000),
        nlink: st.isDirectory() ? 0 : st.nlink,
      };
      if (st.isFile()) record.hash = await hashFile(path, st.size);
      if (st.isSymbolicLink()) record.target = await readlink(path);
      out.set(relPath, record);
      if (st.isDirectory()) await walk(path, relPath);
    }
  };
  await walk(root, '');
  return out;
}

function typeOf(st) {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

async function hashFile(path, size) {
  const hash = createHash('sha256');
  if (size <= SMALL_FILE) {
    return hash.update(await readFile(path)).digest('hex');
  }
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), hash);
  return hash.digest('hex');
}

/**
 * Compares `actual` to `expected` (both from describeTree). Returns {ok, entries, files, bytes,
 * digest, errors: string[], warnings: string[]} with a few examples of each kind of difference.
 */
export function compareTrees(expected, actual) {
  const errors = [];
  const warnings = new Map();
  const warn = (kind, text) => {
    const list = warnings.get(kind) ?? [];
    list.push(text);
    warnings.set(kind, list);
  };
  for (const [path, want] of expected) {
    const got = actual.get(path);
    if (!got) {
      errors.push(`missing: ${path}`);
      continue;
    }
    for (const field of ['type', 'size', 'hash', 'target']) {
      if (want[field] !== got[field]) errors.push(`${path}: ${field} ${String(got[field])} != ${String(want[field])}`);
    }
    for (const field of ['mode', 'uid', 'gid', 'mtime', 'nlink']) {
      // Directory mtimes are not compared: a symlink's lutimes or an overwrite bumps them differently per tool.
      if (field === 'mtime' && want.type === 'dir') continue;
      const show = field === 'mode' ? (v) => v.toString(8) : String;
      if (want[field] !== got[field] && want.type !== 'symlink')
        warn(field, `${path}: ${show(got[field])} (GNU tar: ${show(want[field])})`);
    }
  }
  for (const path of actual.keys()) if (!expected.has(path)) errors.push(`extra: ${path}`);
  let files = 0;
  let bytes = 0;
  const digest = createHash('sha256');
  for (const [path, r] of expected) {
    if (r.type === 'file') {
      files++;
      bytes += r.size;
    }
    digest.update(`${path}\0${r.type}\0${r.size}\0${r.hash ?? ''}\0${r.target ?? ''}\n`);
  }
  return {
    ok: errors.length === 0,
    entries: expected.size,
    files,
    bytes,
    digest: `sha256:${digest.digest('hex')}`,
    errors: errors.slice(0, EXAMPLES * 4),
    errorCount: errors.length,
    warnings: [...warnings].map(([kind, list]) => `${kind} differs on ${list.length} entries, e.g. ${list.slice(0, EXAMPLES).join('; ')}`),
  };
}
