/**
 * The progress display in a real pseudo-terminal (tmux, test/helpers/tmux.ts): the built CLI
 * pulls through a proxy that trickles blob bodies, so the display is on screen for seconds, and
 * the assertions read the screen and the scrollback (capture-pane, wrapped lines joined) at every
 * output of the pane: no line wider than the terminal, nothing left over or repeated in the
 * scrollback, a resize redrawn in place, Ctrl-C clearing the display, NO_COLOR and --no-progress.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { BIN, spawnCli, stagingDirs, startTrickleProxy, type TrickleProxy } from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import { openTerminal, type Terminal } from './helpers/tmux.js';
import { formatBytes } from '../src/cli/progress.js';

const MiB = 1024 * 1024;
const PROMPT = '$ sh pull.sh; echo EXIT=$?';

let work: string;
/** ~1.6 MB/s per blob: a pull takes about two seconds. */
let normal: TrickleProxy;
/** ~0.4 MB/s per blob: a pull takes long enough to resize or interrupt it. */
let slow: TrickleProxy;
let repo: string;
let layerDigests: string[];
/** formatBytes of each layer and of all together, as the display and the result line show them. */
let sizes: { layers: string[]; total: string };
let seq = 0;
let terminal: Terminal | undefined;

beforeAll(async () => {
  if (!existsSync('/usr/bin/tmux')) throw new Error('tmux is missing: scripts/setup.sh installs it');
  const registry = testRegistry();
  work = await mkdtemp(join(tmpdir(), 'pu-terminal-'));
  repo = uniqueRepo('terminal');
  // Random bytes do not compress: each blob is 3 MiB on the wire.
  const layer = async (k: number) => ({
    tar: await tarLayer([
      { name: `l${k}/`, type: 'directory' },
      { name: `l${k}/blob`, content: randomBytes(3 * MiB) },
      ...Array.from({ length: 40 }, (_, i) => ({ name: `l${k}/f${i}`, content: `file ${i}\n` })),
    ]),
  });
  const pushed = await pushImage(registry.url, repo, 'v1', { layers: [await layer(0), await layer(1)] });
  layerDigests = pushed.layers.map((l) => l.digest);
  sizes = { layers: pushed.layers.map((l) => formatBytes(l.size)), total: formatBytes(pushed.layers.reduce((n, l) => n + l.size, 0)) };
  normal = await startTrickleProxy(registry.url, { chunkBytes: 16 * 1024, intervalMs: 10 });
  slow = await startTrickleProxy(registry.url, { chunkBytes: 8 * 1024, intervalMs: 20 });
});

afterEach(async () => {
  slow?.release();
  await terminal?.close();
  terminal = undefined;
});

afterAll(async () => {
  await normal?.close();
  await slow?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

interface Session {
  terminal: Terminal;
  dir: string;
  cache: string;
}

/**
 * A terminal of `columns` x `rows` in a fresh directory holding pull.sh, which runs the built CLI
 * with `args` then IMAGE (through `proxy`) and DIR. The prompt line stays short, so only the
 * CLI's own output can be wider than the terminal.
 */
async function session(
  columns: number,
  proxy: TrickleProxy,
  args: string[] = [],
  env: Record<string, string> = {},
  rows = 20,
): Promise<Session> {
  const cwd = join(work, `run-${++seq}`);
  await mkdir(cwd);
  const dir = join(cwd, 'rootfs');
  const cache = join(cwd, 'cache');
  const quoted = [BIN, '--cache-dir', cache, ...args, `${proxy.host}/${repo}:v1`, dir].map((a) => `'${a}'`).join(' ');
  await writeFile(join(cwd, 'pull.sh'), `exec '${process.execPath}' ${quoted}\n`);
  terminal = await openTerminal({
    columns,
    rows,
    cwd,
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: cwd, ...env },
  });
  // Typed before the shell's prompt, a command would be echoed ahead of it.
  await terminal.waitFor((lines) => lines.includes('$'), 'the prompt');
  return { terminal, dir, cache };
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const isDisplay = (line: string): boolean => /resolving|downloading|total|\d+%|waiting|applying/.test(line);
const exited = (code: number) => (lines: string[]) => lines.includes(`EXIT=${code}`);

/**
 * Waits until the screen matches `until`, checking every screen seen on the way: no line wider
 * than `columns - 1` (the display keeps the last column free; the result line is not the
 * display's and may wrap).
 */
async function watch(t: Terminal, columns: number, until: (lines: string[]) => boolean, what: string): Promise<string[]> {
  const tooWide: string[] = [];
  const screen = await t.waitFor((lines) => {
    for (const l of lines) if (l.length > columns - 1 && !l.includes(' -> ') && !tooWide.includes(l)) tooWide.push(l);
    return until(lines);
  }, what);
  expect(tooWide).toEqual([]);
  return screen;
}

describe('progress on a terminal', () => {
  it('at 40 columns: one line, never wider than the terminal, and only the result left in the scrollback', async () => {
    const { terminal: t, dir } = await session(40, normal);
    await t.type('sh pull.sh; echo EXIT=$?');
    const mid = await watch(t, 40, (lines) => lines.some((l) => /^\d+% .*MB/.test(l)), 'the one-line display');
    expect(mid.filter(isDisplay)).toHaveLength(1);
    await watch(t, 40, exited(0), 'the end of the pull');
    const scrollback = await t.capture({ history: true });
    expect(scrollback).toEqual([
      PROMPT,
      expect.stringMatching(new RegExp(`-> ${dir} \\(2 layers, ${escape(sizes.total)}\\)$`)),
      'EXIT=0',
      '$',
    ]);
  });

  it('at 120 columns: a header, one line per layer and a total line with bytes, percentage, rate and ETA', async () => {
    const { terminal: t, dir } = await session(120, normal);
    await t.type('sh pull.sh; echo EXIT=$?');
    const mid = await watch(t, 120, (lines) => lines.some((l) => /^ {2}total .*ETA/.test(l)), 'the total line with an ETA');
    const at = mid.indexOf(PROMPT);
    const display = mid.slice(at + 1);
    // A single manifest's platform comes from its config (pushImage's default: linux/amd64).
    expect(display[0]).toMatch(new RegExp(`^${normal.host}/${repo}:v1 linux/amd64 [0-9a-f]{12}$`));
    const short = layerDigests.map((d) => d.slice(7, 19));
    expect(display.slice(1, 3)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^ {2}(${short.join('|')}) {2}(downloading {2}[\\d.]+ [kM]?B / (${sizes.layers.map(escape).join('|')})( {2}[\\d.]+ [kM]?B/s)?|done .*)$`,
        ),
      ),
      expect.stringMatching(new RegExp(`^ {2}(${short.join('|')}) {2}`)),
    ]);
    expect(display[3]).toMatch(
      new RegExp(`^ {2}total {2}[\\d.]+ [kM]?B / ${escape(sizes.total)} {2}\\d+% {2}[\\d.]+ [kM]?B/s {2}ETA \\d+s$`),
    );
    expect(display).toHaveLength(4);
    await watch(t, 120, exited(0), 'the end of the pull');
    expect(await t.capture({ history: true })).toEqual([PROMPT, expect.stringMatching(new RegExp(`-> ${dir} `)), 'EXIT=0', '$']);
  });

  it('redraws in place when the terminal shrinks to 40 columns and grows back mid-pull (SIGWINCH)', async () => {
    const { terminal: t, dir } = await session(120, slow);
    // Output above the display first: on a shrink, tmux keeps the cursor's row and pushes what
    // the reflow adds above it into the scrollback, where no program can erase it. With the
    // display at the bottom of a full screen, its reflowed rows all stay on screen.
    await t.type('seq 30; sh pull.sh; echo EXIT=$?');
    const below30 = (lines: string[]): string[] => lines.slice(lines.lastIndexOf('30') + 1);
    await watch(t, 120, (lines) => lines.some((l) => /^ {2}total .*%/.test(l)), 'the wide display');
    // tmux reflows at once and sends SIGWINCH a few ms later: a draw in between is applied to
    // the new width with an erase counted for the old one, and no program can tell. With the
    // download held, the display draws only on its 500 ms tick: resizing right after one keeps
    // the resize clear of the next.
    slow.hold();
    await t.nextOutput();
    await t.resize(40, 20);
    // Until the program gets SIGWINCH and redraws, the screen shows the wide lines as the
    // terminal reflowed them: only the screen after the redraw is held to the new width.
    const narrow = await t.waitFor((lines) => lines.some((l) => /^\d+% /.test(l)), 'the one-line display after the shrink');
    expect(below30(narrow)).toEqual([expect.stringMatching(new RegExp(`^\\d+% [\\d.]+ [kM]?B/${escape(sizes.total)}`))]);
    expect(narrow.filter((l) => l.length > 39)).toEqual([]);
    await t.nextOutput();
    await t.resize(120, 20);
    const wide = await watch(t, 120, (lines) => lines.some((l) => /^ {2}total .*%/.test(l)), 'the wide display after growing back');
    expect(below30(wide)).toEqual([
      expect.stringContaining(repo),
      expect.stringMatching(/^ {2}[0-9a-f]{12} {2}/),
      expect.stringMatching(/^ {2}[0-9a-f]{12} {2}/),
      expect.stringMatching(/^ {2}total {2}/),
    ]);
    slow.release();
    await t.keys('C-c');
    await watch(t, 120, exited(130), 'the interrupted pull');
    const seq30 = Array.from({ length: 30 }, (_, i) => String(i + 1));
    expect(await t.capture({ history: true })).toEqual([
      '$ seq 30; sh pull.sh; echo EXIT=$?',
      ...seq30,
      'pull-unpack: the operation was aborted',
      'EXIT=130',
      '$',
    ]);
    expect(existsSync(dir)).toBe(false);
  });

  it('Ctrl-C clears the display: exit 130, only the error line after the prompt, no staging left', async () => {
    const { terminal: t, dir } = await session(120, slow);
    await t.type('sh pull.sh; echo EXIT=$?');
    await watch(t, 120, (lines) => lines.some((l) => / downloading /.test(l)), 'a download on screen');
    await t.keys('C-c');
    await watch(t, 120, exited(130), 'the interrupted pull');
    expect(await t.capture({ history: true })).toEqual([PROMPT, 'pull-unpack: the operation was aborted', 'EXIT=130', '$']);
    expect(existsSync(dir)).toBe(false);
    expect(await stagingDirs(dir)).toEqual([]);
  });

  it('says "waiting for another pull of this blob" while another process downloads it, then takes over when that one dies', async () => {
    const { terminal: t, dir, cache } = await session(120, normal);
    const other = spawnCli(['--json', '--cache-dir', cache, `${slow.host}/${repo}:v1`, join(work, `other-${seq}`)]);
    await other.until((e) => e.type === 'blob-progress' && e['digest'] === layerDigests[1]);
    await t.type('sh pull.sh; echo EXIT=$?');
    await watch(t, 120, (lines) => lines.some((l) => / {2}waiting for another pull of this blob$/.test(l)), 'the lock wait on screen');
    other.child.kill('SIGKILL');
    await other.exited;
    await watch(t, 120, exited(0), 'the pull that took over');
    expect(await t.capture({ history: true })).toEqual([PROMPT, expect.stringMatching(new RegExp(`-> ${dir} `)), 'EXIT=0', '$']);
  });

  it('colours the display on a terminal, and not with NO_COLOR set', async () => {
    const sgr = /\x1b\[[0-9;]*m/;
    const colored = await session(120, normal);
    await colored.terminal.type('sh pull.sh; echo EXIT=$?');
    await watch(colored.terminal, 120, (lines) => lines.some((l) => /^ {2}total /.test(l)), 'the display');
    const withEscapes = await colored.terminal.capture({ escapes: true });
    expect(withEscapes.filter((l) => sgr.test(l) && l.includes('total'))).not.toEqual([]);
    await watch(colored.terminal, 120, exited(0), 'the end of the pull');
    await colored.terminal.close();

    const plain = await session(120, normal, [], { NO_COLOR: '1' });
    await plain.terminal.type('sh pull.sh; echo EXIT=$?');
    const seen: string[] = [];
    await plain.terminal.waitFor((lines) => {
      seen.push(...lines.filter(isDisplay));
      return lines.some((l) => /^ {2}total /.test(l));
    }, 'the display');
    expect((await plain.terminal.capture({ escapes: true })).filter((l) => sgr.test(l))).toEqual([]);
    await watch(plain.terminal, 120, exited(0), 'the end of the pull');
    expect(seen).not.toEqual([]);
  });

  it('--no-progress draws nothing on a terminal: the screen shows only the result', async () => {
    const { terminal: t, dir } = await session(120, normal, ['--no-progress']);
    await t.type('sh pull.sh; echo EXIT=$?');
    const displayed: string[] = [];
    await t.waitFor((lines) => {
      displayed.push(...lines.filter((l) => l !== PROMPT && isDisplay(l)));
      return lines.includes('EXIT=0');
    }, 'the end of the pull');
    expect(displayed).toEqual([]);
    expect(normal.blobRequests.length).toBeGreaterThan(0);
    expect(await t.capture({ history: true })).toEqual([PROMPT, expect.stringMatching(new RegExp(`-> ${dir} `)), 'EXIT=0', '$']);
  });
});
