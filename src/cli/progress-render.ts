/**
 * PullProgress -> the lines of the progress display, fitted to the terminal. Wide terminals get
 * docker's shape (a header, one line per layer, a total line); narrow ones get one line.
 */
import { fitLine, type FittedLine, type Segment } from './terminal.js';
import type { LayerProgress, PullProgress } from './progress-model.js';

/** Below this many columns the display is one line: per-layer lines would be cut to nothing. */
export const NARROW_COLUMNS = 60;

const BOLD = '1';
const DIM = '2';
const GREEN = '32';
const YELLOW = '33';
const CYAN = '36';

export interface RenderOptions {
  columns: number;
  rows: number;
  color: boolean;
  now: number;
}

/** The display's lines for the terminal size in `options`; none is wider than columns - 1. */
export function renderProgress(p: PullProgress, options: RenderOptions): FittedLine[] {
  // One column is kept free: a line filling the last column leaves some terminals in a
  // pending-wrap state that the next newline turns into an empty row.
  const width = options.columns - 1;
  const lines = options.columns < NARROW_COLUMNS ? [narrowLine(p, options.now)] : wideLines(p, options.now, options.rows);
  return lines.map((segments) => fitLine(segments, width, options.color));
}

function wideLines(p: PullProgress, now: number, rows: number): Segment[][] {
  if (p.phase === 'resolving') return [[{ text: `resolving ${p.reference} ...` }]];
  const header: Segment[] = [{ text: p.reference, style: BOLD }];
  if (p.platform) header.push({ text: ` ${p.platform}` });
  if (p.manifestDigest) header.push({ text: ` ${shortDigest(p.manifestDigest)}`, style: DIM });
  if (p.phase === 'config') return [header, [{ text: '  reading the image config ...' }]];
  // Never more lines than the screen holds: the cursor cannot move above the top row, so a
  // taller block would leave copies of itself in the scrollback.
  const room = Math.max(rows - 3, 1);
  return [header, ...layerLines([...p.layers.values()], now, room), totalLine(p, now)];
}

/** One line per layer; when they do not fit, finished layers are folded into one line first. */
function layerLines(layers: LayerProgress[], now: number, room: number): Segment[][] {
  if (layers.length <= room) return layers.map((l) => layerLine(l, now));
  const active = layers.filter((l) => l.state !== 'applied' && l.state !== 'cached');
  const done = layers.length - active.length;
  const shown = active.slice(0, Math.max(room - 1, 0));
  const more = active.length - shown.length;
  const folded = [done > 0 ? `${done} layer${done === 1 ? '' : 's'} done` : '', more > 0 ? `${more} more waiting` : '']
    .filter(Boolean)
    .join(', ');
  return [...shown.map((l) => layerLine(l, now)), [{ text: `  ${folded}`, style: DIM }]];
}

function layerLine(l: LayerProgress, now: number): Segment[] {
  const id: Segment = { text: `  ${shortDigest(l.digest)}  ` };
  switch (l.state) {
    case 'queued':
      return [id, { text: 'waiting', style: DIM }];
    case 'waiting-lock':
      return [id, { text: 'waiting for another pull of this blob', style: YELLOW }];
    case 'downloading': {
      const rate = l.rate.rate(now);
      return [
        id,
        { text: 'downloading', style: CYAN },
        { text: `  ${formatBytes(l.bytes)} / ${formatBytes(l.size)}${rate === undefined ? '' : `  ${formatBytes(rate)}/s`}` },
      ];
    }
    case 'downloaded':
      return [id, { text: 'downloaded', style: GREEN }, { text: `  ${formatBytes(l.size)}` }];
    case 'cached':
      return [
        id,
        { text: l.waited ? 'downloaded by another pull' : 'already in the cache', style: GREEN },
        { text: `  ${formatBytes(l.size)}` },
      ];
    case 'applying':
      return [id, { text: 'applying', style: CYAN }, { text: `  ${formatCount(l.entries)} files` }];
    case 'applied':
      return [id, { text: 'done', style: GREEN }, { text: `  ${formatBytes(l.size)}, ${formatCount(l.entries)} files` }];
  }
}

function totalLine(p: PullProgress, now: number): Segment[] {
  const total = p.totalSize ?? 0;
  const done = Math.min(p.bytesDone, total);
  const rate = p.rate.rate(now);
  const parts = [`${formatBytes(done)} / ${formatBytes(total)}`, `${percent(done, total)}%`];
  if (done < total) {
    parts.push(rate === undefined ? '' : `${formatBytes(rate)}/s`, rate ? `ETA ${formatDuration((total - done) / rate)}` : '');
  } else if (p.layerCount !== undefined) {
    parts.push(`${p.layersApplied}/${p.layerCount} layers applied`);
  }
  return [{ text: '  total', style: BOLD }, { text: `  ${parts.filter(Boolean).join('  ')}` }];
}

/** The whole display in one line, most useful facts first. */
function narrowLine(p: PullProgress, now: number): Segment[] {
  if (p.phase === 'resolving') return [{ text: `resolving ${p.reference} ...` }];
  if (p.phase === 'config') return [{ text: `${p.reference}: config ...` }];
  const layers = [...p.layers.values()];
  const total = p.totalSize ?? 0;
  const done = Math.min(p.bytesDone, total);
  if (done < total) {
    if (layers.some((l) => l.state === 'waiting-lock') && !layers.some((l) => l.state === 'downloading')) {
      return [{ text: 'waiting for another pull of a blob', style: YELLOW }];
    }
    const rate = p.rate.rate(now);
    const eta = rate ? ` ${formatDuration((total - done) / rate)}` : '';
    return [
      { text: `${percent(done, total)}%`, style: BOLD },
      { text: ` ${formatBytes(done)}/${formatBytes(total)}${rate === undefined ? '' : ` ${formatBytes(rate)}/s`}${eta}` },
    ];
  }
  const applying = layers.find((l) => l.state !== 'applied');
  const index = applying ? layers.indexOf(applying) + 1 : layers.length;
  const count = p.layerCount ?? layers.length;
  return [{ text: `applying layer ${index}/${count}`, style: CYAN }, { text: applying ? `: ${formatCount(applying.entries)} files` : '' }];
}

function shortDigest(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1, digest.indexOf(':') + 13);
}

function percent(done: number, total: number): number {
  return total > 0 ? Math.floor((done * 100) / total) : 100;
}

/** '1,234' */
function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** '45s', '3m05s', '2h10m' */
export function formatDuration(seconds: number): string {
  const s = Math.max(Math.ceil(seconds), 0);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 100 * 3600) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  return 'a long time';
}

/** '1.5 MB' style sizes (SI units, as docker shows them). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}
