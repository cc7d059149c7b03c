/**
 * What the progress display knows about a pull, built from its PullEvents alone: the phase, each
 * layer's state and bytes, and the download rate over a moving window. Pure (the clock is
 * passed in), so it is tested without a terminal; progress-render.ts turns it into lines.
 */
import type { PullEvent } from '../pull.js';
import { escapeControl } from './escape.js';

export type LayerState = 'queued' | 'downloading' | 'waiting-lock' | 'downloaded' | 'cached' | 'applying' | 'applied';

export interface LayerProgress {
  digest: string;
  size: number;
  /** Bytes of the blob present so far (resumed bytes included). */
  bytes: number;
  state: LayerState;
  /** Tar entries applied so far (layer-progress, then layer-applied). */
  entries: number;
  /** Another process held the blob's lock while this one waited. */
  waited: boolean;
  /** The bytes of the previous blob-progress event, to count only what arrived since. */
  lastBytes: number | undefined;
  rate: RateMeter;
}

/**
 * Bytes per second over the last WINDOW_MS: the difference between the newest sample and the
 * oldest one still inside the window (or the last one before it), so a stalled download falls
 * to 0 within the window instead of showing the average since the start.
 */
export class RateMeter {
  static readonly WINDOW_MS = 3000;
  /** Shorter spans give a jumpy first figure; until then there is no rate. */
  static readonly MIN_SPAN_MS = 500;
  private samples: Array<{ at: number; total: number }> = [];
  private total = 0;

  /** Counts `bytes` more, received at `now` (ms). */
  add(bytes: number, now: number): void {
    this.total += bytes;
    this.samples.push({ at: now, total: this.total });
    this.prune(now);
  }

  /** Bytes per second at `now`, or undefined before MIN_SPAN_MS of samples. */
  rate(now: number): number | undefined {
    this.prune(now);
    const first = this.samples[0];
    if (!first) return undefined;
    const span = now - first.at;
    if (span < RateMeter.MIN_SPAN_MS) return undefined;
    return ((this.total - first.total) * 1000) / span;
  }

  /** Keeps the samples inside the window plus the newest one before it (the window's baseline). */
  private prune(now: number): void {
    const start = now - RateMeter.WINDOW_MS;
    let drop = 0;
    while (drop + 1 < this.samples.length && this.samples[drop + 1]!.at <= start) drop++;
    if (drop > 0) this.samples.splice(0, drop);
    const first = this.samples[0];
    // A baseline older than the window counts as if taken at its start: the rate is then over
    // exactly the window, and a stall longer than the window reads 0.
    if (first && first.at < start) first.at = start;
  }
}

export type Phase = 'resolving' | 'config' | 'layers';

/** The state of one pull as the display sees it. */
export class PullProgress {
  phase: Phase = 'resolving';
  /** The reference as typed, until `resolved` gives the canonical one. */
  reference: string;
  platform: string | undefined;
  manifestDigest: string | undefined;
  layerCount: number | undefined;
  totalSize: number | undefined;
  /** Layers in the order they were first reported (the manifest's order as downloads start). */
  readonly layers = new Map<string, LayerProgress>();
  /** Downloaded bytes of all layers together, for the total rate. */
  readonly rate = new RateMeter();

  constructor(reference: string) {
    this.reference = reference;
  }

  /** Updates the state for one event; returns true when something shown changed state (not just bytes). */
  handle(event: PullEvent, now: number): boolean {
    switch (event.type) {
      case 'resolved':
        this.phase = 'config';
        // Registry text (a platform field, a reference) must not drive the terminal.
        this.reference = escapeControl(event.reference);
        this.platform = event.platform === undefined ? undefined : escapeControl(event.platform);
        this.manifestDigest = event.manifestDigest;
        return true;
      case 'config':
        this.phase = 'layers';
        this.layerCount = event.layers;
        this.totalSize = event.totalSize;
        return true;
      case 'blob-start':
        this.layer(event.digest, event.size).state = 'downloading';
        return true;
      case 'blob-wait': {
        const l = this.layer(event.digest, 0);
        l.state = 'waiting-lock';
        l.waited = true;
        return true;
      }
      case 'blob-progress':
        return this.progress(event.digest, event.bytes, event.size, now);
      case 'blob-verified': {
        const l = this.layer(event.digest, event.size);
        l.bytes = event.size;
        // Layers are applied while they download: one already being applied says so at once.
        if (l.state !== 'applying' && l.state !== 'applied')
          l.state = l.entries > 0 ? 'applying' : event.fromCache ? 'cached' : 'downloaded';
        return true;
      }
      case 'layer-progress': {
        const l = this.layer(event.digest, 0);
        l.entries = event.entries;
        if (l.state === 'downloaded' || l.state === 'cached') l.state = 'applying';
        return false;
      }
      case 'layer-applied': {
        const l = this.layer(event.digest, 0);
        l.entries = event.entries;
        l.state = 'applied';
        return true;
      }
      default:
        return false;
    }
  }

  /** Bytes of the blobs present (downloaded, resumed or cached), all layers together. */
  get bytesDone(): number {
    let n = 0;
    for (const l of this.layers.values()) n += l.bytes;
    return n;
  }

  /** Layers completely applied. */
  get layersApplied(): number {
    let n = 0;
    for (const l of this.layers.values()) if (l.state === 'applied') n++;
    return n;
  }

  private progress(digest: string, bytes: number, size: number, now: number): boolean {
    const l = this.layer(digest, size);
    // The first event of a transfer may include bytes resumed from an earlier one: it starts
    // the window instead of counting as speed.
    const added = l.lastBytes === undefined ? 0 : Math.max(bytes - l.lastBytes, 0);
    l.rate.add(added, now);
    this.rate.add(added, now);
    l.lastBytes = bytes;
    l.bytes = bytes;
    const changed = l.state !== 'downloading' && l.state !== 'applying';
    if (l.state === 'queued' || l.state === 'waiting-lock') l.state = 'downloading';
    return changed;
  }

  private layer(digest: string, size: number): LayerProgress {
    let l = this.layers.get(digest);
    if (!l) {
      l = { digest, size, bytes: 0, state: 'queued', entries: 0, waited: false, lastBytes: undefined, rate: new RateMeter() };
      this.layers.set(digest, l);
    }
    if (size > 0 && l.size === 0) l.size = size;
    return l;
  }
}
