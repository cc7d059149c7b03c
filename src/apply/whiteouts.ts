/**
 * Whiteouts (OCI image-spec layer.md "Whiteouts"): a `.wh.NAME` entry removes NAME from the
 * lower layers, a `.wh..wh..opq` entry hides every lower-layer child of its directory. Only what
 * lower layers put there is removed: what the current layer unpacked is tracked in
 * LayerRun.layerPaths and kept, whatever the entry order (containerd `pkg/archive/tar.go`).
 */
import * as fsp from 'node:fs/promises';
import { fsPath, lstatOrNull, unsafePath } from './safe-path.js';
import { bytesToName } from '../tar/names.js';
import { existingDir, joinHost, removePath, type LayerRun } from './state.js';

/** layer.md: a whiteout is `.wh.` + the basename of the path to remove. */
export const WHITEOUT_PREFIX = '.wh.';
/** `.wh..wh.` names are aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`), not removals. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
/** layer.md "Opaque Whiteout": hides every lower-layer child of its directory. */
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

/** Applies the whiteout entry `base` (a name starting with WHITEOUT_PREFIX) in directory `parentRel`. */
export async function applyWhiteout(run: LayerRun, parentRel: string, base: string): Promise<void> {
  if (base === WHITEOUT_OPAQUE) {
    run.stats.whiteouts++;
    const dir = await existingDir(run.ctx, parentRel);
    if (dir === null) return;
    for (const name of await readNames(dir)) await pruneLower(run, joinHost(dir, name));
    return;
  }
  if (base.startsWith(WHITEOUT_META_PREFIX)) {
    run.stats.skipped++;
    return;
  }
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') throw unsafePath(`${parentRel}/${base}`, 'whiteout of . or ..');
  run.stats.whiteouts++;
  const dir = await existingDir(run.ctx, parentRel);
  if (dir === null) return;
  await pruneLower(run, joinHost(dir, name));
}

/**
 * Removes what lower layers put at `host`, keeping what this layer put there: a path this layer
 * did not touch is removed whole; one it touched is kept and, if a directory, pruned child by
 * child. This makes whiteouts and opaque markers work in any entry order (layer.md: whiteouts
 * only apply to lower layers).
 */
async function pruneLower(run: LayerRun, host: string): Promise<void> {
  const st = lstatOrNull(host);
  if (st === null) return;
  if (!run.layerPaths.has(host)) return removePath(run, host, st);
  if (!st.isDirectory()) return;
  for (const name of await readNames(host)) await pruneLower(run, joinHost(host, name));
}

/** The names in directory `host`, read as bytes so that names that are not UTF-8 keep theirs. */
async function readNames(host: string): Promise<string[]> {
  return (await fsp.readdir(fsPath(host), { encoding: 'buffer' })).map(bytesToName);
}

/** Adds `host` and its ancestors to the paths this layer unpacked (kept by its whiteouts). */
export function markLayerPath(run: LayerRun, host: string): void {
  let p = host;
  while (p.length > 0 && !run.layerPaths.has(p)) {
    run.layerPaths.add(p);
    p = p.slice(0, p.lastIndexOf('/'));
  }
}
