/**
 * `--password-stdin` on a terminal (issue 14): in a real pseudo-terminal (tmux), the CLI prompts
 * "Password: " on stderr and reads the line without echo, then leaves the terminal as it found
 * it, also after Ctrl-C; a password piped in is read as before, with no prompt. Checked against
 * a real registry with Basic auth (htpasswd).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import { BIN } from './helpers/crash-fixtures.js';
import { HTPASSWD, HT_PASSWORD, HT_USER, pushSmallImage, tempDir } from './helpers/network-fixtures.js';
import { openTerminal, type Terminal } from './helpers/tmux.js';

let work: string;
let registry: RunningRegistry;
let seq = 0;
const terminals: Terminal[] = [];

beforeAll(async () => {
  work = await tempDir('password-prompt');
  registry = await startRegistry({ htpasswd: HTPASSWD });
  await pushSmallImage(`http://${HT_USER}:${HT_PASSWORD}@${registry.host}`, 'team/app', 'v1');
});

afterAll(async () => {
  for (const t of terminals) await t.close();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** A terminal in a fresh directory holding pull.sh: a pull from the Basic-auth registry with --password-stdin. */
async function session(): Promise<{ terminal: Terminal; dir: string }> {
  const cwd = join(work, `run-${++seq}`);
  await mkdir(cwd);
  const dir = join(cwd, 'rootfs');
  const args = [BIN, '--cache-dir', join(cwd, 'cache'), '--username', HT_USER, '--password-stdin', `${registry.host}/team/app:v1`, dir];
  await writeFile(join(cwd, 'pull.sh'), `exec '${process.execPath}' ${args.map((a) => `'${a}'`).join(' ')}\n`);
  const terminal = await openTerminal({ columns: 120, rows: 20, cwd, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: cwd } });
  terminals.push(terminal);
  await terminal.waitFor((lines) => lines.includes('$'), 'the prompt');
  return { terminal, dir };
}

const exitLine = (lines: string[]): string | undefined => lines.find((l) => /^EXIT=\d+$/.test(l));

/** The terminal's settings after the CLI: `stty -a` names `echo` and `icanon`, or `-echo` and `-icanon` when they are off. */
async function sttySettings(terminal: Terminal): Promise<string[]> {
  await terminal.type('stty -a | tr " ;" "\\n\\n" | grep -E "^-?(echo|icanon)$" | tr "\\n" " "; echo STTY""-DONE');
  // The quotes keep the typed command itself from matching.
  const lines = await terminal.waitFor((l) => l.some((x) => x.endsWith('STTY-DONE')), 'stty -a');
  return lines
    .find((x) => x.endsWith('STTY-DONE'))!
    .replace('STTY-DONE', '')
    .trim()
    .split(/\s+/);
}

describe('--password-stdin on a terminal', () => {
  it('prompts "Password: " on the terminal, reads the password without echo, and leaves echo on', async () => {
    const { terminal, dir } = await session();
    await terminal.type('sh pull.sh; echo EXIT=$?');
    await terminal.waitFor((lines) => lines.some((l) => l.startsWith('Password:')), 'the password prompt');
    await terminal.type(HT_PASSWORD);
    const lines = await terminal.waitFor((l) => exitLine(l) !== undefined, 'the pull to end');
    expect(exitLine(lines)).toBe('EXIT=0');
    expect(existsSync(join(dir, 'etc'))).toBe(true);
    const history = await terminal.capture({ history: true });
    expect(history.join('\n')).not.toContain(HT_PASSWORD);
    expect((await sttySettings(terminal)).sort()).toEqual(['echo', 'icanon']);
  });

  it('Ctrl-C at the password prompt exits 130, writes nothing, and leaves echo on', async () => {
    const { terminal, dir } = await session();
    await terminal.type('sh pull.sh; echo EXIT=$?');
    await terminal.waitFor((lines) => lines.some((l) => l.startsWith('Password:')), 'the password prompt');
    await terminal.keys('p', 'a', 'r', 't', 'C-c');
    const lines = await terminal.waitFor((l) => exitLine(l) !== undefined, 'the CLI to exit');
    expect(exitLine(lines)).toBe('EXIT=130');
    expect(existsSync(dir)).toBe(false);
    expect((await sttySettings(terminal)).sort()).toEqual(['echo', 'icanon']);
  });

  it('a password piped in on a terminal session is read as before, with no prompt', async () => {
    const { terminal, dir } = await session();
    await terminal.type(`printf '%s\\n' '${HT_PASSWORD}' | sh pull.sh; echo EXIT=$?`);
    const lines = await terminal.waitFor((l) => exitLine(l) !== undefined, 'the pull to end');
    expect(exitLine(lines)).toBe('EXIT=0');
    expect(lines.some((l) => l.startsWith('Password:'))).toBe(false);
    expect(existsSync(join(dir, 'etc'))).toBe(true);
  });
});
