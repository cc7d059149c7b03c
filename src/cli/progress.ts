/**
 * The human progress display on a terminal: "resolving ..." from the first moment, then one
 * line per layer (downloading with its rate, waiting for another pull of the blob, applying N
 * files, done) and a total line with bytes, percentage, current rate and ETA; one line on a
 * narrow terminal. Redrawn in place at most ten times a second, and at once when the terminal
 * is resized (node:tty turns SIGWINCH into the stream's 'resize' event).
 */
import type { PullEvent } from '../pull.js';
import { PullProgress } from './progress-model.js';
import { renderProgress } from './progress-render.js';
import { LiveBlock, terminalSize, type TerminalStream } from './terminal.js';

export { formatBytes } from './progress-render.js';

/** Byte counts redraw at most this often; state changes redraw at once. */
const REDRAW_MS = 100;
/** Redraws with no event, so the rate falls and the ETA moves while bytes stall. */
const TICK_MS = 500;

export interface ProgressDisplayOptions {
  /** SGR colours (only ever on a TTY; see progressDisplayFor). */
  color?: boolean | undefined;
  /** The clock, in ms; tests pass their own. */
  now?: (() => number) | undefined;
}

export class ProgressDisplay {
  private readonly block: LiveBlock;
  /** Whether lines are coloured (SGR). */
  readonly color: boolean;
  private readonly now: () => number;
  private progress: PullProgress | undefined;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  /** A state change waiting for the end of the REDRAW_MS interval. */
  private pending: NodeJS.Timeout | undefined;
  private readonly onResize = (): void => this.draw(true, true);

  constructor(
    private readonly out: TerminalStream,
    options: ProgressDisplayOptions = {},
  ) {
    this.block = new LiveBlock(out);
    this.color = options.color ?? false;
    this.now = options.now ?? (() => performance.now());
  }

  /** Shows "resolving REFERENCE ..." at once and starts following resizes; `stop` undoes both. */
  start(reference: string): void {
    this.progress = new PullProgress(reference);
    this.out.on('resize', this.onResize);
    this.timer = setInterval(() => this.draw(true), TICK_MS);
    this.timer.unref();
    this.draw(true, true);
  }

  /** Updates the display for one event; redraws when a state changed or REDRAW_MS passed. */
  handle(event: PullEvent): void {
    if (!this.progress) return;
    const changed = this.progress.handle(event, this.now());
    if (changed || event.type === 'blob-progress' || event.type === 'layer-progress') this.draw(changed);
  }

  /** Erases the display so a message can be printed; the next event draws it again below. */
  clear(): void {
    this.block.clear();
  }

  /** Erases the display for good, stops the timer and unsubscribes from resizes. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.pending);
    this.pending = undefined;
    this.out.off('resize', this.onResize);
    this.block.clear();
    this.progress = undefined;
  }

  /**
   * Redraws, at most once per REDRAW_MS: a byte count in between is dropped, a state change is
   * drawn when the interval ends. Fewer writes also make it rarer for one to race a resize (a
   * terminal that reflows, then sends SIGWINCH a few ms later, applies a write made in between
   * to the new width while its erase was counted for the old one). `immediate` (a resize, the
   * start) draws at once.
   */
  private draw(force: boolean, immediate = false): void {
    if (!this.progress || this.out.writableEnded || this.out.destroyed) return;
    const now = this.now();
    if (!immediate && now - this.lastDraw < REDRAW_MS) {
      if (force && !this.pending) {
        this.pending = setTimeout(() => this.draw(true, true), REDRAW_MS - (now - this.lastDraw));
        this.pending.unref();
      }
      return;
    }
    clearTimeout(this.pending);
    this.pending = undefined;
    this.lastDraw = now;
    const { columns, rows } = terminalSize(this.out);
    this.block.draw(renderProgress(this.progress, { columns, rows, color: this.color, now }));
  }
}

/** What decides whether there is a display at all. */
export interface ProgressChoice {
  json?: boolean | undefined;
  quiet?: boolean | undefined;
  noProgress?: boolean | undefined;
}

/**
 * The display for a pull, or undefined: only on a TTY stderr, never with --json, --quiet or
 * --no-progress, and not on TERM=dumb (which cannot move the cursor). Colour unless NO_COLOR is
 * set to anything but the empty string (https://no-color.org).
 */
export function progressDisplayFor(stderr: TerminalStream, env: NodeJS.ProcessEnv, choice: ProgressChoice): ProgressDisplay | undefined {
  if (choice.json || choice.quiet || choice.noProgress || !stderr.isTTY || env['TERM'] === 'dumb') return undefined;
  return new ProgressDisplay(stderr, { color: !env['NO_COLOR'] });
}
