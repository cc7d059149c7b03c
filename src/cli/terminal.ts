/**
 * A block of lines redrawn in place at the bottom of a terminal, and the text measuring it needs.
 * Lines are cut to the terminal's width when drawn, so none ever wraps; the block remembers the
 * visible width of each line it drew, so that after a resize it can work out how many rows the
 * terminal's reflow made of them and erase exactly those.
 */
import type { Writable } from 'node:stream';

/** What the block needs of a TTY stream (node:tty WriteStream has all of it). */
export interface TerminalStream extends Writable {
  isTTY?: boolean;
  columns?: number;
  rows?: number;
  /** Asks the kernel (ioctl TIOCGWINSZ) for the size now; `columns` is only refreshed on SIGWINCH. */
  getWindowSize?: () => [number, number];
}

/** One piece of a line: its text and an optional SGR style (e.g. '1' bold, '32' green). */
export interface Segment {
  text: string;
  style?: string | undefined;
}

/** A line ready to write: its bytes (with any SGR codes) and how many columns it takes. */
export interface FittedLine {
  text: string;
  width: number;
}

const ESC = '\x1b';
/** C0 controls, DEL and C1 controls: never written raw (a hostile name could move the cursor). */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** The terminal's size now: columns and rows (80x24 when the stream cannot say). */
export function terminalSize(out: TerminalStream): { columns: number; rows: number } {
  try {
    const size = out.getWindowSize?.();
    if (size && size[0] > 0 && size[1] > 0) return { columns: size[0], rows: size[1] };
  } catch {
    // The terminal went away (a closed pty): fall back to what the stream last knew.
  }
  return { columns: out.columns && out.columns > 0 ? out.columns : 80, rows: out.rows && out.rows > 0 ? out.rows : 24 };
}

/**
 * Columns a code point takes: 2 for the East Asian wide and emoji ranges, 0 for combining
 * marks, 1 otherwise. Over-estimating is safe (a line is cut a little early, never wraps).
 */
function charWidth(cp: number): number {
  if ((cp >= 0x300 && cp <= 0x36f) || (cp >= 0x200b && cp <= 0x200f)) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1faff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  ) {
    return 2;
  }
  return 1;
}

/** Columns `text` takes on a terminal (control characters are replaced before measuring). */
export function textWidth(text: string): number {
  let width = 0;
  for (const ch of text.replace(CONTROL, '?')) width += charWidth(ch.codePointAt(0)!);
  return width;
}

/**
 * Joins `segments` into one line of at most `width` columns: the text is cut (ending in '…')
 * when longer, control characters become '?', and each segment's style is applied only when
 * `color` is true.
 */
export function fitLine(segments: Segment[], width: number, color: boolean): FittedLine {
  const paint = (text: string, style: string | undefined): string => (color && style ? `${ESC}[${style}m${text}${ESC}[0m` : text);
  let used = 0;
  let out = '';
  for (const segment of segments) {
    const text = segment.text.replace(CONTROL, '?');
    const w = textWidth(text);
    if (used + w <= width) {
      if (w > 0) out += paint(text, segment.style);
      used += w;
      continue;
    }
    const room = width - used;
    if (room > 0) {
      const part = `${cutTo(text, room - 1)}…`;
      out += paint(part, segment.style);
      used += textWidth(part);
    }
    break;
  }
  return { text: out, width: used };
}

/** The longest prefix of `text` that takes at most `width` columns. */
function cutTo(text: string, width: number): string {
  let used = 0;
  let end = 0;
  for (const ch of text) {
    const w = charWidth(ch.codePointAt(0)!);
    if (used + w > width) break;
    used += w;
    end += ch.length;
  }
  return text.slice(0, end);
}

/**
 * The lines last drawn at the bottom of the terminal, redrawn in place. Each draw first moves
 * the cursor back over the previous block and erases to the end of the screen. Every line ends
 * with a newline, so the cursor always waits in column 0 of the row below the block.
 */
export class LiveBlock {
  /** Visible widths of the lines on screen, top to bottom. */
  private drawn: number[] = [];

  constructor(private readonly out: TerminalStream) {}

  /** Replaces the block on screen with `lines` (each already fitted to the width). */
  draw(lines: FittedLine[]): void {
    const erase = this.eraseSequence();
    this.out.write(`${erase}${lines.map((l) => `${l.text}\n`).join('')}`);
    this.drawn = lines.map((l) => l.width);
  }

  /** Erases the block; the cursor is left where its first line was. */
  clear(): void {
    if (this.drawn.length === 0) return;
    this.out.write(this.eraseSequence());
    this.drawn = [];
  }

  /** Whether anything is on screen. */
  get visible(): boolean {
    return this.drawn.length > 0;
  }

  /**
   * Cursor up over the rows the block takes NOW and erase below. A line drawn at an earlier,
   * wider size takes ceil(width / columns) rows once the terminal reflowed it after a shrink
   * (tmux, VTE, kitty, iTerm2 and Windows Terminal reflow; a terminal that truncates instead
   * leaves it one row, and then the block also erases that many rows above it).
   */
  private eraseSequence(): string {
    if (this.drawn.length === 0) return '';
    const { columns } = terminalSize(this.out);
    const rows = this.drawn.reduce((n, w) => n + Math.max(1, Math.ceil(w / columns)), 0);
    return `\r${ESC}[${rows}A${ESC}[J`;
  }
}
