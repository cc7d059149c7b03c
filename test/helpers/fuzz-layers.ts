/**
 * Random layer stacks for the applier fuzzing in test/fuzz.test.ts: operations on names from a
 * tiny alphabet (so entries collide, replace and nest), with hostile link targets and odd names
 * now and then; and the workspace they are applied in: a root with a sentinel directory beside
 * it, and checks that nothing outside the root changed.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { expect } from 'vitest';
import { applyLayer, createApplyContext, finishApply } from '../../src/apply/applier.js';
import { buildTar, removeTmp, type TarEntrySpec } from './tar.js';

// ---------------------------------------------------------------------------------------------
// Layer stacks

/** Placeholders in names and link targets, replaced by real host paths when the layers are built. */
export const SENTINEL_PLACEHOLDER = '@SENTINEL@';
export const WORK_PLACEHOLDER = '@WORK@';

/**
 * Names drawn from a tiny alphabet, so entries collide, replace and nest in each other a lot:
 * directories are made of q1..q3, leaves end in q1..q3 or (less often in conflict) f1, f2.
 */
export const NAME_PARTS = ['q1', 'q2', 'q3', 'f1', 'f2'] as const;
const part = fc.constantFrom('q1', 'q2', 'q3');
const plainPath = fc.array(part, { minLength: 1, maxLength: 3 }).map((p) => p.join('/'));
const leafPath = fc
  .tuple(fc.array(part, { maxLength: 2 }), fc.constantFrom('q1', 'q2', 'q3', 'f1', 'f2', 'f1', 'f2', 'f1', 'f2'))
  .map(([dirs, leaf]) => [...dirs, leaf].join('/'));
const oddPath = fc.oneof(
  plainPath.map((p) => `./${p}`),
  plainPath.map((p) => `${p}/`),
  plainPath.map((p) => `q1/../${p}`),
  plainPath.map((p) => `../${p}`),
  plainPath.map((p) => `/${p}`),
  plainPath.map((p) => `q2/../../${p}`),
  plainPath.map((p) => `${p}/..`),
  fc.constantFrom('.', './', '..', '../sentinel/secret', 'q1//q2///q3'),
);
/** Mostly well-formed names; now and then a `..`, absolute or otherwise odd one. */
const withOdd = (good: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.oneof({ weight: 50, arbitrary: good }, { weight: 1, arbitrary: oddPath });
const dirName = withOdd(plainPath);
const leafName = withOdd(fc.oneof({ weight: 3, arbitrary: leafPath }, { weight: 1, arbitrary: plainPath }));
const dirOrRoot = fc.oneof({ weight: 1, arbitrary: fc.constant('') }, { weight: 3, arbitrary: plainPath });

const symlinkTarget = fc.oneof(
  fc.constantFrom(
    '/',
    '.',
    '..',
    '../..',
    '../../..',
    '../../../..',
    '../sentinel',
    '../../sentinel',
    '../sentinel/q2',
    '../../../sentinel/secret',
  ),
  fc.constantFrom(
    SENTINEL_PLACEHOLDER,
    `${SENTINEL_PLACEHOLDER}/q2`,
    `${SENTINEL_PLACEHOLDER}/secret`,
    WORK_PLACEHOLDER,
    '/q1',
    '/q2/q3',
    '/tmp',
    '/etc/passwd',
  ),
  fc
    .array(fc.constantFrom('..', '..', '.', 'q1', 'q2', 'q3', 'sentinel'), { minLength: 1, maxLength: 5 })
    .chain((p) => fc.constantFrom(p.join('/'), `/${p.join('/')}`)),
  plainPath,
);

export type LayerOp =
  | { kind: 'file'; name: string; content: string; mode: number }
  | { kind: 'dir'; name: string; mode: number }
  | { kind: 'symlink'; name: string; target: string }
  /** `ref` picks one of the last names written (in any layer), `raw` names the target itself. */
  | { kind: 'hardlink'; name: string; ref: number; raw: string | undefined }
  | { kind: 'whiteout'; dir: string; name: string }
  | { kind: 'opaque'; dir: string }
  | { kind: 'fifo'; name: string };

const op: fc.Arbitrary<LayerOp> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('file' as const),
      name: leafName,
      content: fc.string({ maxLength: 12 }),
      mode: fc.constantFrom(0o644, 0o600, 0o755, 0o4755, 0o000),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('dir' as const), name: dirName, mode: fc.constantFrom(0o755, 0o700, 0o555, 0o000, 0o1777) }),
  },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('symlink' as const), name: leafName, target: symlinkTarget }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('hardlink' as const),
      name: leafName,
      ref: fc.nat(),
      raw: fc.oneof(
        { weight: 12, arbitrary: fc.constant(undefined) },
        // Outside names, and names that reach the sentinel only if a symlinked parent were followed on the host.
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            '../sentinel/secret',
            `${SENTINEL_PLACEHOLDER}/secret`,
            '/etc/passwd',
            'q1/../../sentinel/secret',
            'missing',
            'q1',
            'q1/secret',
            'q2/q1',
            'q3/q2/q1',
          ),
        },
      ),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('whiteout' as const),
      dir: dirOrRoot,
      name: fc.oneof({ weight: 40, arbitrary: fc.constantFrom(...NAME_PARTS) }, { weight: 1, arbitrary: fc.constantFrom('.', '..', '') }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('opaque' as const), dir: dirOrRoot }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('fifo' as const), name: leafPath }) },
);

/** 2 to 4 layers of 1 to 10 operations each. */
export const layerStack = fc.array(fc.array(op, { minLength: 1, maxLength: 10 }), { minLength: 2, maxLength: 4 });

/**
 * The tar entries of each layer. Placeholders become `paths`' host paths; a hardlink's `ref`
 * picks one of the last three names written before it (this layer or an earlier one).
 */
export function stackEntries(stack: LayerOp[][], paths: { sentinel: string; work: string }): TarEntrySpec[][] {
  const fill = (s: string): string => s.replaceAll(SENTINEL_PLACEHOLDER, paths.sentinel).replaceAll(WORK_PLACEHOLDER, paths.work);
  const written: string[] = [];
  return stack.map((layer) =>
    layer.map((o): TarEntrySpec => {
      switch (o.kind) {
        case 'file':
          written.push(o.name);
          return { name: o.name, type: 'file', content: o.content, mode: o.mode };
        case 'dir':
          return { name: o.name, type: 'directory', mode: o.mode };
        case 'symlink':
          written.push(o.name);
          return { name: o.name, type: 'symlink', linkname: fill(o.target) };
        case 'hardlink': {
          const recent = written.slice(-3);
          written.push(o.name);
          // Nothing to link to yet: a plain file instead.
          if (o.raw === undefined && recent.length === 0) return { name: o.name, type: 'file', content: 'x' };
          const target = o.raw !== undefined ? fill(o.raw) : recent[o.ref % recent.length]!;
          return { name: o.name, type: 'link', linkname: target };
        }
        case 'whiteout':
          return { name: `${o.dir === '' ? '' : `${o.dir}/`}.wh.${o.name}`, type: 'file' };
        case 'opaque':
          return { name: `${o.dir === '' ? '' : `${o.dir}/`}.wh..wh..opq`, type: 'file' };
        case 'fifo':
          return { name: o.name, type: 'fifo' };
      }
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// The workspace

/**
 * A workspace `<base>/w` holding `root` (may not exist yet) and `sentinel`, a sibling full of
 * names the layers also use, so a write that followed a symlink out would land there.
 */
export interface Workspace {
  base: string;
  work: string;
  root: string;
  sentinel: string;
}

export async function makeWorkspace(createRoot: boolean): Promise<Workspace> {
  const base = await mkdtemp(join(tmpdir(), 'pu-fuzz-'));
  const work = join(base, 'w');
  const sentinel = join(work, 'sentinel');
  await mkdir(join(sentinel, 'q2', 'q3'), { recursive: true });
  await writeFile(join(sentinel, 'secret'), 'do not touch\n');
  await writeFile(join(sentinel, 'q1'), 'sentinel q1\n');
  await writeFile(join(sentinel, 'q2', 'q1'), 'sentinel q2/q1\n');
  await symlink('secret', join(sentinel, 'q3'));
  const root = join(work, 'root');
  if (createRoot) await mkdir(root);
  return { base, work, root, sentinel };
}

/**
 * Every entry below `dir` as one line: type, mode, owner, link count, inode, mtime, ctime, and
 * the content or link target. Cheaper than snapshotTree (no getfattr), and ctime catches any
 * chmod, chown or link that left the visible values as they were.
 */
async function quickTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    const path = rel === '.' ? dir : join(dir, rel);
    const st = await lstat(path, { bigint: true });
    const body = st.isFile() ? (await readFile(path)).toString('base64') : st.isSymbolicLink() ? await readlink(path) : '';
    out.set(rel, `${st.mode.toString(8)} ${st.uid}:${st.gid} n${st.nlink} i${st.ino} m${st.mtimeNs} c${st.ctimeNs} ${body}`);
    if (st.isDirectory()) for (const name of (await readdir(path)).sort()) await walk(rel === '.' ? name : `${rel}/${name}`);
  };
  await walk('.');
  return out;
}

/**
 * Names below `dir` whose last component is a whiteout. Walked by hand: fs.promises.readdir's
 * `recursive` follows symlinks on Node 20 (and the layers link to "/").
 */
export async function whiteoutNames(dir: string, rel = ''): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(rel === '' ? dir : join(dir, rel), { withFileTypes: true })) {
    const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
    if (entry.name.startsWith('.wh.')) found.push(path);
    if (entry.isDirectory()) found.push(...(await whiteoutNames(dir, path)));
  }
  return found;
}

export interface OutsideState {
  sentinel: Map<string, string>;
  base: string;
  work: string;
  hostRoot: string[];
}

/** What must not change while layers are applied: the sentinel tree, and the entries of base and w. */
export async function outsideState(ws: Workspace): Promise<OutsideState> {
  const stamp = async (dir: string): Promise<string> => {
    const st = await lstat(dir, { bigint: true });
    return `${(await readdir(dir)).sort().join(',')} m${st.mtimeNs} c${st.ctimeNs}`;
  };
  // A write that escaped all the way to "/" (or /tmp) would create one of the layer names there.
  const hostRoot: string[] = [];
  for (const dir of ['/', tmpdir()])
    for (const name of NAME_PARTS)
      if (
        await lstat(join(dir, name)).then(
          () => true,
          () => false,
        )
      )
        hostRoot.push(join(dir, name));
  return { sentinel: await quickTree(ws.sentinel), base: await stamp(ws.base), work: await stamp(ws.work), hostRoot };
}

export async function expectOutsideUnchanged(ws: Workspace, before: OutsideState, rootExpected: boolean): Promise<void> {
  const after = await outsideState(ws);
  expect([...after.sentinel]).toEqual([...before.sentinel]);
  expect(after.hostRoot).toEqual(before.hostRoot);
  if (rootExpected) {
    expect(after.work).toBe(before.work);
    expect(after.base).toBe(before.base);
  }
}

/** Removes a workspace (as root no mode stops rm; otherwise open 000 directories first). */
export async function removeWorkspace(ws: Workspace): Promise<void> {
  if (process.getuid?.() === 0) await rm(ws.base, { recursive: true, force: true });
  else await removeTmp(ws.base);
}

/** Applies `tars` in order onto ws.root; resolves with the error, or undefined when all applied. */
export async function applyStack(ws: Workspace, tars: Buffer[]): Promise<unknown> {
  try {
    const ctx = createApplyContext(ws.root, { onWarning: () => undefined });
    for (const [i, tar] of tars.entries()) await applyLayer(ctx, Readable.from([tar]), { what: `layer ${i + 1}` });
    await finishApply(ctx);
    return undefined;
  } catch (err) {
    return err;
  }
}

export async function buildStack(stack: LayerOp[][], ws: Workspace): Promise<Buffer[]> {
  return Promise.all(stackEntries(stack, { sentinel: ws.sentinel, work: ws.work }).map((entries) => buildTar(entries)));
}
