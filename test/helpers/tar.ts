/**
 * Test helpers for the layer applier: build small tar layers in memory with tar-stream's `pack`,
 * build real GNU tar archives with the `tar` command, and apply layers to a fresh temporary root.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pack } from 'tar-stream';
import { applyLayer, createApplyContext, finishApply, type ApplyContext, type LayerApplyStats } from '../../src/apply/applier.js';

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';

export interface TarEntrySpec {
  name: string;
  type?: TarEntryType;
  mode?: number;
  uid?: number;
  gid?: number;
  /** A Date, or seconds since the epoch. */
  mtime?: Date | number;
  linkname?: string;
  content?: string | Buffer;
  pax?: Record<string, string>;
  devmajor?: number;
  devminor?: number;
}

/** A fixed mtime so tests are deterministic: 2020-01-02T03:04:05Z. */
export const DEFAULT_MTIME = 1577934245;

/** Builds an uncompressed tar of `entries`, in order. Files default to 0644, directories to 0755. */
export async function buildTar(entries: TarEntrySpec[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of p as AsyncIterable<Buffer>) chunks.push(chunk);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const body = type === 'file' ? Buffer.from(e.content ?? '') : Buffer.alloc(0);
    const mtime = e.mtime instanceof Date ? e.mtime : new Date((e.mtime ?? DEFAULT_MTIME) * 1000);
    const header = {
      name: e.name,
      type,
      // tar-stream's pack turns mode 0 into its default; S_IFREG alone is truthy and encodes as 0.
      mode: e.mode === 0 ? 0o100000 : (e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644)),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime,
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(e.pax !== undefined ? { pax: e.pax } : {}),
      ...(e.devmajor !== undefined ? { devmajor: e.devmajor } : {}),
      ...(e.devminor !== undefined ? { devminor: e.devminor } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      p.entry(header, body, (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** Runs a command and resolves with its stdout as bytes. */
export function run(command: string, args: string[], options: { cwd?: string } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: options.cwd, encoding: 'buffer', maxBuffer: 256 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')}: ${stderr.toString()}`, { cause: err }));
      else resolve(stdout);
    });
  });
}

/** A tar made by GNU tar of `members` (relative to `cwd`), e.g. format 'gnu' or 'posix'. */
export function gnuTar(cwd: string, members: string[], options: { format: 'gnu' | 'posix'; xattrs?: boolean }): Promise<Buffer> {
  const args = ['-C', cwd, `--format=${options.format}`, '--numeric-owner'];
  if (options.xattrs) args.push('--xattrs', '--xattrs-include=*');
  return run('tar', [...args, '-cf', '-', '--', ...members]);
}

/** A fresh temporary directory; remove it with `removeTmp`. */
export async function makeTmp(prefix = 'pu-apply-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

export async function removeTmp(dir: string): Promise<void> {
  // Some tests leave 000 directories behind; root ignores modes, and others are fixed by chmod -R.
  await run('chmod', ['-R', 'u+rwX', dir]).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}

export interface Applied {
  /** The temporary directory holding `root` (remove it with removeTmp). */
  base: string;
  root: string;
  ctx: ApplyContext;
  warnings: string[];
  stats: LayerApplyStats[];
}

/** Applies `layers` in order onto `<tmp>/root` (or onto `into`), then finishApply. */
export async function applyLayers(
  layers: Buffer[],
  options: { isRoot?: boolean; into?: { base: string; root: string } } = {},
): Promise<Applied> {
  const base = options.into?.base ?? (await makeTmp());
  const root = options.into?.root ?? join(base, 'root');
  try {
    await mkdir(root, { recursive: true });
    const warnings: string[] = [];
    const ctx = createApplyContext(root, { isRoot: options.isRoot, onWarning: (m) => warnings.push(m) });
    const stats: LayerApplyStats[] = [];
    for (const [i, layer] of layers.entries()) stats.push(await applyLayer(ctx, Readable.from([layer]), { what: `layer ${i + 1}` }));
    await finishApply(ctx);
    return { base, root, ctx, warnings, stats };
  } catch (err) {
    // A temporary directory made here is not handed to the caller on failure: remove it.
    if (options.into === undefined) await removeTmp(base);
    throw err;
  }
}

/** A stream that yields `data` in `chunk`-byte pieces, then stays open (for abort tests). */
export function stalledStream(data: Buffer, chunk = 512): PassThrough {
  const s = new PassThrough();
  for (let i = 0; i < data.length; i += chunk) s.write(data.subarray(i, i + chunk));
  return s;
}
