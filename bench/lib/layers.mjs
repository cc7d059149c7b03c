/**
 * The benchmark images' layer contents, written as tar files by TarWriter. Each generator is a
 * pure function of its seed and size parameters: the same version of this file writes the same
 * bytes (and so the same DiffIDs and blob digests) on every machine.
 *
 *   distroLayers  two layers like a small distribution: packages of text files and binaries,
 *                 symlinks, hard links, a few setuid/private files, some files replaced by layer 2
 *   smallFilesLayer  one layer of many small text files in a two-level tree
 *   largeFilesLayer  one layer of a few big, mostly incompressible files
 */
import { ContentGenerator } from './content.mjs';
import { Prng, RandomBytes } from './prng.mjs';
import { TarWriter } from './tar-writer.mjs';

const BASE_MTIME = 1704067200; // 2024-01-01T00:00:00Z
const MIB = 1 << 20;

/**
 * Writes the two distro-like layer tars to `paths` ([base, top]) and returns their {path, size,
 * diffId, entries}. `files` counts every non-directory entry; `bytes` is the total file content.
 */
export async function distroLayers(paths, { files, bytes, seed = 'distro' }) {
  const prng = new Prng(seed);
  const content = new ContentGenerator(prng, new RandomBytes(seed));
  const plan = planDistro(prng, files, bytes);
  const out = [];
  for (const [i, path] of paths.entries()) {
    const writer = await TarWriter.create(path);
    const entries = plan.filter((e) => e.layer === i);
    await writeTree(writer, entries, content);
    out.push(await writer.close());
  }
  return out;
}

/** The distro's entries (files, symlinks, hard links) with layer, size, mode and owner chosen. */
function planDistro(prng, fileCount, totalBytes) {
  const packages = Math.max(8, Math.round(fileCount / 32));
  const pkgNames = Array.from({ length: packages }, (_, i) => `pkg${i}-${word(prng, 3 + prng.int(6))}`);
  const symlinks = Math.round(fileCount * 0.03);
  const hardlinks = Math.round(fileCount * 0.005);
  const binaries = Math.round(fileCount * 0.1);
  const texts = fileCount - symlinks - hardlinks - binaries;
  const entries = [];
  const taken = new Set();
  const unique = (name) => {
    let n = name;
    for (let k = 1; taken.has(n); k++) n = `${name}.${k}`;
    taken.add(n);
    return n;
  };
  const layerOf = (pkg) => (pkg < packages * 0.75 ? 0 : 1);
  const textSizes = scaledSizes(prng, texts, totalBytes * 0.45, 3000, 1.2, 4 * MIB);
  const binarySizes = scaledSizes(prng, binaries, totalBytes * 0.55, 60_000, 1.3, 8 * MIB);
  for (const size of binarySizes) {
    const pkg = prng.int(packages);
    const name = prng.chance(0.3)
      ? `usr/bin/${word(prng, 4 + prng.int(6))}`
      : `usr/lib/${pkgNames[pkg]}/lib${word(prng, 3 + prng.int(8))}.so.${prng.int(9)}`;
    const mode = prng.chance(0.005) ? 0o4755 : 0o755;
    entries.push({
      kind: 'binary',
      name: unique(name),
      size,
      mode,
      layer: layerOf(pkg),
      pkg,
      ...owner(prng),
      mtime: BASE_MTIME + prng.int(1e7),
    });
  }
  for (const size of textSizes) {
    const pkg = prng.int(packages);
    const dir = prng.pick([
      `usr/share/doc/${pkgNames[pkg]}`,
      `usr/share/${pkgNames[pkg]}`,
      `usr/share/${pkgNames[pkg]}/${word(prng, 2)}`,
      `etc/${pkgNames[pkg]}`,
    ]);
    const mode = prng.chance(0.05) ? 0o600 : 0o644;
    entries.push({
      kind: 'text',
      name: unique(`${dir}/${word(prng, 3 + prng.int(10))}.${prng.pick(['txt', 'conf', 'md', 'py', 'h', 'json'])}`),
      size,
      mode,
      layer: layerOf(pkg),
      pkg,
      ...owner(prng),
      mtime: BASE_MTIME + prng.int(1e7),
    });
  }
  const regular = [...entries];
  // Layer 2 replaces 2% of layer 1's files with new content of another size, as upgrades do.
  for (const e of regular) {
    if (e.layer === 0 && prng.chance(0.02))
      entries.push({ ...e, layer: 1, size: Math.max(0, Math.round(e.size * (0.5 + prng.float()))), mtime: e.mtime + 1000 });
  }
  for (let i = 0; i < symlinks; i++) {
    const target = prng.pick(regular);
    const relative = prng.chance(0.8);
    const name = unique(`${target.name.slice(0, target.name.lastIndexOf('/'))}/${word(prng, 3 + prng.int(6))}.link`);
    entries.push({
      kind: 'symlink',
      name,
      target: relative ? target.name.slice(target.name.lastIndexOf('/') + 1) : `/${target.name}`,
      layer: target.layer,
      mtime: BASE_MTIME,
    });
  }
  const candidates = regular.filter((e) => e.kind === 'binary');
  for (let i = 0; i < hardlinks; i++) {
    const target = prng.pick(candidates);
    entries.push({
      kind: 'hardlink',
      name: unique(`usr/bin/${word(prng, 5)}-hl`),
      target: target.name,
      mode: target.mode,
      layer: target.layer,
      mtime: target.mtime,
    });
  }
  return entries;
}

/** `count` log-normal sizes scaled to add up to about `total`, each at most `max`. */
function scaledSizes(prng, count, total, median, sigma, max) {
  const raw = Array.from({ length: count }, () => prng.logNormal(median, sigma));
  const sum = raw.reduce((a, b) => a + b, 0);
  return raw.map((r) => Math.min(max, Math.round((r * total) / sum)));
}

function owner(prng) {
  return prng.chance(0.02) ? { uid: 100, gid: 101 } : { uid: 0, gid: 0 };
}

function word(prng, length) {
  let w = '';
  for (let i = 0; i < length; i++) w += 'abcdefghijklmnopqrstuvwxyz'[prng.int(26)];
  return w;
}

/**
 * Writes `entries` in name order, each parent directory just before its first child, hard
 * links last (a hard link must follow its target).
 */
async function writeTree(writer, entries, content) {
  const sorted = entries.filter((e) => e.kind !== 'hardlink').sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const dirs = new Set();
  for (const e of sorted) {
    const parts = e.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      await writer.directory(dir, { mtime: BASE_MTIME });
    }
    const meta = { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime };
    if (e.kind === 'symlink') await writer.symlink(e.name, e.target, meta);
    else await writer.file(e.name, e.kind === 'text' ? content.text(e.size) : content.binary(e.size), meta);
  }
  for (const e of entries.filter((x) => x.kind === 'hardlink')) await writer.hardlink(e.name, e.target, { mode: e.mode, mtime: e.mtime });
}

/** One layer of `files` small text files (median ~400 bytes) in `files / 100` directories. */
export async function smallFilesLayer(path, { files, seed = 'small-files' }) {
  const prng = new Prng(seed);
  const content = new ContentGenerator(prng, new RandomBytes(seed));
  const writer = await TarWriter.create(path);
  const perDir = 100;
  const dirsPerTop = 10;
  await writer.directory('data', { mtime: BASE_MTIME });
  for (let n = 0; n < files; n++) {
    const d = Math.floor(n / perDir);
    const top = `data/d${String(Math.floor(d / dirsPerTop)).padStart(3, '0')}`;
    const sub = `${top}/s${d % dirsPerTop}`;
    if (n % (perDir * dirsPerTop) === 0) await writer.directory(top, { mtime: BASE_MTIME });
    if (n % perDir === 0) await writer.directory(sub, { mtime: BASE_MTIME });
    const size = Math.min(16384, Math.round(prng.logNormal(400, 1)));
    await writer.file(`${sub}/f${n}.txt`, content.text(size), { mtime: BASE_MTIME + n });
  }
  return writer.close();
}

/**
 * One layer of `count` files of `fileBytes` each: random bytes in 1 MiB chunks, 5% of the
 * chunks zeros (so "mostly" incompressible), plus a few small config files.
 */
export async function largeFilesLayer(path, { count, fileBytes, seed = 'large-files' }) {
  const prng = new Prng(seed);
  const random = new RandomBytes(seed);
  const content = new ContentGenerator(prng, random);
  const writer = await TarWriter.create(path);
  await writer.directory('etc', { mtime: BASE_MTIME });
  for (let i = 0; i < 8; i++) await writer.file(`etc/conf${i}.txt`, content.text(200 + prng.int(4000)), { mtime: BASE_MTIME });
  await writer.directory('data', { mtime: BASE_MTIME });
  const zeros = Buffer.alloc(MIB);
  for (let i = 0; i < count; i++) {
    async function* chunks() {
      for (let left = fileBytes; left > 0; left -= MIB) {
        const n = Math.min(MIB, left);
        yield prng.chance(0.05) ? zeros.subarray(0, n) : random.take(n);
      }
    }
    await writer.streamedFile(`data/blob-${i}.bin`, fileBytes, chunks(), { mode: 0o644, mtime: BASE_MTIME });
  }
  return writer.close();
}
