/**
 * The human progress display for a TTY: one line per layer with bytes, total, rate and state,
 * redrawn in place at most ten times a second. Fed with PullEvents; the CLI makes one only for a
 * TTY, and it prints nothing before the first event.
 */
import type { Writable } from 'node:stream';
import type { PullEvent } from '../pull.js';
import { escapeControl } from './escape.js';

type LayerState = 'waiting' | 'downloading' | 'verified' | 'cached' | 'applied';

interface LayerLine {
  digest: string;
  size: number;
  bytes: number;
  state: LayerState;
  startedAt: number;
}

const REDRAW_MS = 100;

export class ProgressDisplay {
  private readonly out: Writable;
  private readonly layers = new Map<string, LayerLine>();
  private drawnLines = 0;
  private lastDraw = 0;
  private header = '';

  constructor(out: Writable) {
    this.out = out;
  }

  /** Updates the display for one event; redraws when enough time has passed or a state changed. */
  handle(event: PullEvent): void {
    switch (event.type) {
      case 'resolved':
        this.header = escapeControl(
          `${event.reference}${event.platform ? ` (${event.platform})` : ''} ${event.manifestDigest.slice(0, 19)}`,
        );
        break;
      case 'blob-start':
        this.line(event.digest, event.size).state = 'downloading';
        this.line(event.digest, event.size).startedAt = Date.now();
        break;
      case 'blob-progress':
        this.line(event.digest, event.size).bytes = event.bytes;
        this.draw(false);
        return;
      case 'blob-verified': {
        const l = this.line(event.digest, event.size);
        l.bytes = event.size;
        l.state = event.fromCache ? 'cached' : 'verified';
        break;
      }
      case 'layer-applied':
        this.line(event.digest, 0).state = 'applied';
        break;
      default:
        return;
    }
    this.draw(true);
  }

  /** Erases the display so a final message can take its place. */
  clear(): void {
    if (this.drawnLines > 0) this.out.write(`\x1b[${this.drawnLines}F\x1b[J`);
    this.drawnLines = 0;
  }

  private line(digest: string, size: number): LayerLine {
    let l = this.layers.get(digest);
    if (!l) {
      l = { digest, size, bytes: 0, state: 'waiting', startedAt: Date.now() };
      this.layers.set(digest, l);
    }
    if (size && !l.size) l.size = size;
    return l;
  }

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    const lines = [this.header, ...[...this.layers.values()].map((l) => formatLine(l, now))];
    const up = this.drawnLines > 0 ? `\x1b[${this.drawnLines}F` : '';
    this.out.write(`${up}${lines.map((l) => `\x1b[2K${l}`).join('\n')}\n`);
    this.drawnLines = lines.length;
  }
}

function formatLine(l: LayerLine, now: number): string {
  const short = l.digest.replace(/^sha256:/, '').slice(0, 12);
  const seconds = Math.max((now - l.startedAt) / 1000, 0.001);
  const rate = l.state === 'downloading' ? `  ${formatBytes(l.bytes / seconds)}/s` : '';
  const amount = `${formatBytes(l.bytes)} / ${formatBytes(l.size)}`;
  return `  ${short}  ${l.state.padEnd(11)} ${amount.padStart(21)}${rate}`;
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
