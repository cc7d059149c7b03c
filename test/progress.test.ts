/**
 * The progress display's parts, each on its own: the moving-window rate, the pull model fed with
 * events, the lines rendered for wide and narrow terminals, the in-place block's erase after a
 * resize, the display's resize subscription, and when there is a display at all. The terminal
 * itself is exercised in test/terminal.test.ts; the `layer-progress` events of a real pull here.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PullProgress, RateMeter } from '../src/cli/progress-model.js';
import { NARROW_COLUMNS, formatDuration, renderProgress } from '../src/cli/progress-render.js';
import { ProgressDisplay, progressDisplayFor } from '../src/cli/progress.js';
import { fitLine, LiveBlock, textWidth } from '../src/cli/terminal.js';
import type { PullEvent } from '../src/pull.js';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const MB = 1_000_000;
const RESOLVED: PullEvent = {
  type: 'resolved',
  reference: 'alpine',
  digest: A,
  mediaType: 'm',
  manifestDigest: A,
  platform: undefined,
  reason: 'the reference names a single-platform manifest',
};

/** A fake TTY stream that records what is written. */
function tty(columns: number, rows = 24): PassThrough & { isTTY: true; columns: number; rows: number; written: () => string } {
  let text = '';
  const stream = Object.assign(new PassThrough(), { isTTY: true as const, columns, rows, written: () => text });
  stream.setEncoding('utf8').on('data', (c: string) => (text += c));
  return stream;
}

function feed(p: PullProgress, events: Array<[number, PullEvent]>): void {
  for (const [at, e] of events) p.handle(e, at);
}

function started(): PullProgress {
  const p = new PullProgress('localhost:5000/app:1');
  feed(p, [
    [
      0,
      {
        type: 'resolved',
        reference: 'localhost:5000/app:1',
        digest: A,
        mediaType: 'x',
        manifestDigest: A,
        platform: 'linux/amd64',
        reason: 'the reference names a single-platform manifest',
      },
    ],
    [0, { type: 'config', digest: B, layers: 2, totalSize: 100 * MB }],
    [0, { type: 'blob-start', digest: A, size: 60 * MB, what: 'layer 1/2' }],
    [0, { type: 'blob-start', digest: B, size: 40 * MB, what: 'layer 2/2' }],
  ]);
  return p;
}

describe('RateMeter', () => {
  it('is the rate over the last 3 s, not the average since the start: 10 MB in the first second, then 1 MB/s', () => {
    const m = new RateMeter();
    for (let t = 0; t <= 1000; t += 100) m.add(MB, t);
    for (let t = 1100; t <= 10_000; t += 100) m.add(MB / 10, t);
    expect(m.rate(10_000)).toBeCloseTo(MB, -3);
  });

  it('falls to 0 when the bytes stall for longer than the window, and says nothing before 0.5 s of samples', () => {
    const m = new RateMeter();
    m.add(MB, 0);
    m.add(MB, 200);
    expect(m.rate(300)).toBeUndefined();
    m.add(MB, 1000);
    expect(m.rate(1000)).toBeCloseTo(2 * MB, -3);
    expect(m.rate(1000 + RateMeter.WINDOW_MS + 1)).toBe(0);
  });
});

describe('PullProgress and the rendered lines', () => {
  it('shows "resolving REFERENCE ..." before any event, on wide and narrow terminals', () => {
    const p = new PullProgress('alpine');
    for (const columns of [120, 40]) {
      expect(renderProgress(p, { columns, rows: 24, color: false, now: 0 }).map((l) => l.text)).toEqual(['resolving alpine ...']);
    }
  });

  it('draws the header, a line per layer and the total with bytes, percentage, current rate and ETA', () => {
    const p = started();
    feed(p, [
      [0, { type: 'blob-progress', digest: A, bytes: 0, size: 60 * MB }],
      [1000, { type: 'blob-progress', digest: A, bytes: 20 * MB, size: 60 * MB }],
      [0, { type: 'blob-wait', digest: B, what: 'layer 2/2', message: 'layer 2/2: waiting for process 1 on host h' }],
    ]);
    const lines = renderProgress(p, { columns: 100, rows: 24, color: false, now: 1000 }).map((l) => l.text);
    expect(lines).toEqual([
      `localhost:5000/app:1 linux/amd64 ${'a'.repeat(12)}`,
      `  ${'a'.repeat(12)}  downloading  20.0 MB / 60.0 MB  20.0 MB/s`,
      `  ${'b'.repeat(12)}  waiting for another pull of this blob`,
      '  total  20.0 MB / 100.0 MB  20%  20.0 MB/s  ETA 4s',
    ]);
  });

  it('counts bytes resumed from an earlier download as present, not as speed', () => {
    const p = started();
    feed(p, [
      [0, { type: 'blob-progress', digest: A, bytes: 50 * MB, size: 60 * MB }],
      [1000, { type: 'blob-progress', digest: A, bytes: 51 * MB, size: 60 * MB }],
    ]);
    expect(p.rate.rate(1000)).toBeCloseTo(MB, -3);
    expect(p.bytesDone).toBe(51 * MB);
  });

  it('says "applying N files" for a downloaded layer being applied, then "done"', () => {
    const p = started();
    feed(p, [
      [0, { type: 'blob-verified', digest: A, size: 60 * MB, fromCache: false, fetched: 60 * MB }],
      [0, { type: 'layer-progress', index: 0, digest: A, entries: 1234 }],
      [0, { type: 'blob-verified', digest: B, size: 40 * MB, fromCache: true, fetched: 0 }],
    ]);
    let lines = renderProgress(p, { columns: 100, rows: 24, color: false, now: 0 }).map((l) => l.text);
    expect(lines.slice(1)).toEqual([
      `  ${'a'.repeat(12)}  applying  1,234 files`,
      `  ${'b'.repeat(12)}  already in the cache  40.0 MB`,
      '  total  100.0 MB / 100.0 MB  100%  0/2 layers applied',
    ]);
    expect(renderProgress(p, { columns: 40, rows: 24, color: false, now: 0 }).map((l) => l.text)).toEqual([
      'applying layer 1/2: 1,234 files',
    ]);
    p.handle({ type: 'layer-applied', index: 0, digest: A, diffId: A, entries: 2000 }, 0);
    lines = renderProgress(p, { columns: 100, rows: 24, color: false, now: 0 }).map((l) => l.text);
    expect(lines[1]).toBe(`  ${'a'.repeat(12)}  done  60.0 MB, 2,000 files`);
  });

  it(`is one line below ${NARROW_COLUMNS} columns, and no line is ever wider than columns - 1`, () => {
    const p = started();
    feed(p, [
      [0, { type: 'blob-progress', digest: A, bytes: 0, size: 60 * MB }],
      [1000, { type: 'blob-progress', digest: A, bytes: 30 * MB, size: 60 * MB }],
    ]);
    expect(renderProgress(p, { columns: 40, rows: 24, color: false, now: 1000 }).map((l) => l.text)).toEqual([
      '30% 30.0 MB/100.0 MB 30.0 MB/s 3s',
    ]);
    for (let columns = 1; columns <= 130; columns++) {
      for (const line of renderProgress(p, { columns, rows: 24, color: true, now: 1000 })) {
        expect(line.width).toBeLessThanOrEqual(Math.max(columns - 1, 0));
        expect(textWidth(line.text.replace(/\x1b\[[0-9;]*m/g, ''))).toBe(line.width);
      }
    }
  });

  it('folds finished layers into one line when the layers do not fit on the screen', () => {
    const p = new PullProgress('x');
    p.handle(
      {
        type: 'resolved',
        reference: 'x',
        digest: A,
        mediaType: 'm',
        manifestDigest: A,
        platform: undefined,
        reason: 'the reference names a single-platform manifest',
      },
      0,
    );
    p.handle({ type: 'config', digest: A, layers: 30, totalSize: 30 }, 0);
    for (let i = 0; i < 30; i++) {
      const digest = `sha256:${String(i).padStart(64, '0')}`;
      if (i < 25) p.handle({ type: 'layer-applied', index: i, digest, diffId: digest, entries: 1 }, 0);
      else p.handle({ type: 'blob-start', digest, size: 1, what: 'layer' }, 0);
    }
    const lines = renderProgress(p, { columns: 100, rows: 10, color: false, now: 0 }).map((l) => l.text);
    expect(lines.length).toBeLessThanOrEqual(10 - 1);
    expect(lines).toContain('  25 layers done');
    expect(lines.filter((l) => / downloading /.test(l))).toHaveLength(5);
  });
});

describe('the terminal block', () => {
  it('cuts lines to the width with an ellipsis, never prints control characters, and colours only when asked', () => {
    expect(fitLine([{ text: 'abcdef' }, { text: 'ghij', style: '1' }], 8, false)).toEqual({ text: 'abcdefg…', width: 8 });
    expect(fitLine([{ text: 'a\x1b[2Jb\n' }], 10, false)).toEqual({ text: 'a?[2Jb?', width: 7 });
    expect(fitLine([{ text: 'ok', style: '32' }], 10, true)).toEqual({ text: '\x1b[32mok\x1b[0m', width: 2 });
    expect(fitLine([{ text: '日本語' }], 5, false)).toEqual({ text: '日本…', width: 5 });
  });

  it('after a shrink erases the rows the terminal reflowed its lines into (ceil(width / columns) each)', () => {
    const out = tty(120);
    const block = new LiveBlock(out);
    block.draw([
      { text: 'a'.repeat(59), width: 59 },
      { text: 'b'.repeat(55), width: 55 },
      { text: 'c'.repeat(60), width: 60 },
    ]);
    out.columns = 40;
    block.clear();
    expect(out.written().endsWith('\r\x1b[6A\x1b[J')).toBe(true);
    expect(block.visible).toBe(false);
  });
});

describe('ProgressDisplay', () => {
  it('subscribes to resize on start, redraws on it, and unsubscribes and erases on stop', () => {
    const out = tty(100);
    const display = new ProgressDisplay(out, { now: () => 0 });
    display.start('alpine');
    expect(out.listenerCount('resize')).toBe(1);
    expect(out.written()).toBe('resolving alpine ...\n');
    out.columns = 30;
    out.emit('resize');
    expect(out.written()).toBe('resolving alpine ...\n\r\x1b[1A\x1b[Jresolving alpine ...\n');
    display.stop();
    expect(out.listenerCount('resize')).toBe(0);
    const before = out.written();
    expect(before.endsWith('\r\x1b[1A\x1b[J')).toBe(true);
    out.emit('resize');
    display.handle({ type: 'config', digest: A, layers: 1, totalSize: 1 });
    expect(out.written()).toBe(before);
  });

  it('exists only on a TTY, without --json, --quiet or --no-progress, and not on TERM=dumb; NO_COLOR turns colour off', () => {
    const term = tty(80);
    const notTty = Object.assign(new PassThrough(), { isTTY: false });
    expect(progressDisplayFor(notTty, {}, {})).toBeUndefined();
    expect(progressDisplayFor(term, {}, { json: true })).toBeUndefined();
    expect(progressDisplayFor(term, {}, { quiet: true })).toBeUndefined();
    expect(progressDisplayFor(term, {}, { noProgress: true })).toBeUndefined();
    expect(progressDisplayFor(term, { TERM: 'dumb' }, {})).toBeUndefined();
    expect(progressDisplayFor(term, { TERM: 'xterm' }, {})?.color).toBe(true);
    expect(progressDisplayFor(term, { NO_COLOR: '1' }, {})?.color).toBe(false);
    // An empty NO_COLOR does not count (no-color.org).
    expect(progressDisplayFor(tty(80), { NO_COLOR: '' }, {})?.color).toBe(true);
  });

  it('draws SGR colours only when asked, and a state change within 100 ms of the last drawing after it, not never', async () => {
    for (const color of [true, false]) {
      const out = tty(80);
      let now = 0;
      const display = new ProgressDisplay(out, { color, now: () => now });
      display.start('alpine');
      display.handle(RESOLVED);
      expect(out.written()).toBe('resolving alpine ...\n');
      now = 1000;
      display.handle({ type: 'config', digest: A, layers: 1, totalSize: 1 });
      display.stop();
      const written = out.written();
      if (color) expect(written).toContain('\x1b[1malpine\x1b[0m');
      else expect(written).not.toMatch(/\x1b\[[0-9;]*m/);
    }
  });

  it('draws a state change still waiting for its 100 ms slot before erasing on stop (a pull quicker than one interval)', () => {
    const out = tty(80);
    const display = new ProgressDisplay(out, { now: () => 0 });
    display.start('alpine');
    display.handle(RESOLVED);
    display.handle({ type: 'config', digest: A, layers: 1, totalSize: 1 });
    expect(out.written()).toBe('resolving alpine ...\n');
    display.stop();
    const drawings = out.written().split(/\r\x1b\[\d+A\x1b\[J/);
    expect(drawings).toHaveLength(3);
    expect(drawings[1]).toContain('alpine');
    expect(drawings[1]).not.toContain('resolving');
    expect(drawings[2]).toBe('');
  });

  it('formats an ETA as seconds, minutes or hours', () => {
    expect([formatDuration(4.2), formatDuration(185), formatDuration(7800)]).toEqual(['5s', '3m05s', '2h10m']);
  });
});

describe('layer-progress events (--json)', () => {
  let work: string;
  let ref: string;

  beforeAll(async () => {
    const { host, url } = testRegistry();
    work = await mkdtemp(join(tmpdir(), 'pu-progress-'));
    const repo = uniqueRepo('progress');
    const files = (dir: string, n: number) => [
      { name: `${dir}/`, type: 'directory' as const },
      ...Array.from({ length: n }, (_, i) => ({ name: `${dir}/f${i}`, content: `${i}\n` })),
    ];
    await pushImage(url, repo, 'v1', { layers: [{ tar: await tarLayer(files('a', 500)) }, { tar: await tarLayer(files('b', 10)) }] });
    ref = `${host}/${repo}:v1`;
  });

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('reports the entries applied of a layer while it is applied, before its layer-applied event', async () => {
    const r = await runCli(['--json', ref, join(work, 'rootfs')]);
    expect(r.code).toBe(0);
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as PullEvent);
    const applied = events.filter((e) => e.type === 'layer-applied');
    const progress = events.filter((e) => e.type === 'layer-progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress[0]).toEqual({
      type: 'layer-progress',
      time: expect.any(String) as unknown,
      index: 0,
      digest: applied[0]!.digest,
      entries: 32,
    });
    for (const e of progress) {
      expect(e.index).toBe(0);
      expect(e.entries % 32).toBe(0);
      expect(events.indexOf(e)).toBeLessThan(events.indexOf(applied[0]!));
    }
    expect(applied.map((e) => e.entries)).toEqual([501, 11]);
  });
});
