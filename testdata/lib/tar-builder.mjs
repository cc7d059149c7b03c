/**
 * Deterministic tar layers for tests and scripts: from entries in code (tar-stream) or from a
 * real directory (GNU tar), and their gzip / zstd compression. Types in tar-builder.d.mts;
 * image-builder.mjs re-exports all of it.
 */
import { spawn } from 'node:child_process';
import { readdir, lstat, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import tarStream from 'tar-stream';

/** The mtime of every entry and the `created` of every config unless the caller says otherwise. */
export const FIXED_MTIME = new Date('2024-01-01T00:00:00Z');

/**
 * An uncompressed tar of `entries`, in the given order. Defaults: type 'file', mode 0644 for
 * files and 0755 for directories, uid/gid 0, mtime FIXED_MTIME. `mtime` may be a Date or
 * seconds since the epoch. A mode of 0 is kept as 0.
 */
export async function tarLayer(entries) {
  const pack = tarStream.pack();
  const chunks = [];
  pack.on('data', (chunk) => chunks.push(chunk));
  const ended = new Promise((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const entry of entries) await addEntry(pack, entry);
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

function addEntry(pack, entry) {
  const type = entry.type ?? 'file';
  const mode = entry.mode ?? (type === 'directory' ? 0o755 : 0o644);
  const header = {
    name: entry.name,
    type,
    // tar-stream replaces a falsy mode by its default; 0o100000 is masked away to a real 0.
    mode: mode === 0 ? 0o100000 : mode,
    uid: entry.uid ?? 0,
    gid: entry.gid ?? 0,
    mtime: toDate(entry.mtime),
    linkname: entry.linkname,
    uname: entry.uname,
    gname: entry.gname,
    devmajor: entry.devmajor,
    devminor: entry.devminor,
    pax: entry.pax,
  };
  for (const key of Object.keys(header)) if (header[key] === undefined) delete header[key];
  return new Promise((resolve, reject) => {
    const done = (err) => (err ? reject(err) : resolve());
    if (type === 'file' || type === 'contiguous-file') {
      pack.entry(header, toBuffer(entry.content ?? ''), done);
    } else {
      pack.entry(header, done);
    }
  });
}

function toDate(mtime) {
  if (mtime === undefined) return FIXED_MTIME;
  return mtime instanceof Date ? mtime : new Date(mtime * 1000);
}

function toBuffer(content) {
  return typeof content === 'string' ? Buffer.from(content) : Buffer.from(content);
}

/**
 * A tar of the directory tree at `dir` made by GNU tar: entries sorted by name, numeric
 * owners as they are on disk, every mtime set to `options.mtime` (default FIXED_MTIME;
 * null keeps the real ones). `options.format` is GNU tar's --format (default 'gnu').
 */
export async function tarDirectory(dir, options = {}) {
  const args = ['--sort=name', '--numeric-owner', `--format=${options.format ?? 'gnu'}`];
  const mtime = options.mtime === undefined ? FIXED_MTIME : options.mtime;
  if (mtime !== null) args.push(`--mtime=@${Math.floor(toDate(mtime).getTime() / 1000)}`);
  args.push('-C', dir, '-cf', '-', '.');
  return run('tar', args);
}

/**
 * Tar entries for the tree at `dir`, sorted, owned by 0:0 with FIXED_MTIME, names relative to
 * `dir` (directories end in '/') after `prefix`. Modes are normalised the way git keeps them
 * (0755 for directories and executable files, 0644 otherwise) so a checkout's umask does not
 * change the image.
 */
export async function entriesFromDirectory(dir, prefix = '') {
  const out = [];
  const names = (await readdir(dir)).sort();
  for (const name of names) {
    const path = join(dir, name);
    const stat = await lstat(path);
    const mode = stat.isDirectory() || stat.mode & 0o111 ? 0o755 : 0o644;
    if (stat.isDirectory()) {
      out.push({ name: `${prefix}${name}/`, type: 'directory', mode });
      out.push(...(await entriesFromDirectory(path, `${prefix}${name}/`)));
    } else if (stat.isSymbolicLink()) {
      out.push({ name: `${prefix}${name}`, type: 'symlink', linkname: await readlink(path), mode: 0o777 });
    } else if (stat.isFile()) {
      out.push({ name: `${prefix}${name}`, type: 'file', mode, content: await readFile(path) });
    }
  }
  return out;
}

/** `tarBytes` compressed with 'gzip' (node:zlib), 'zstd' (the zstd CLI, level 3) or 'none'. */
export async function compressLayer(tarBytes, compression) {
  switch (compression) {
    case 'none':
      return Buffer.from(tarBytes);
    case 'gzip':
      return promisify(zlib.gzip)(tarBytes);
    case 'zstd':
      return run('zstd', ['-q', '-c', '-3', '--no-progress'], tarBytes);
    default:
      throw new Error(`unknown compression ${compression}`);
  }
}

function run(command, args, input) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', (c) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${command} ${args.join(' ')} exited with ${code}: ${Buffer.concat(err).toString()}`));
    });
    child.stdin.on('error', reject);
    child.stdin.end(input);
  });
}
