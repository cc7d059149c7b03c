/**
 * `--output tar -` with a terminal on stdout (issue 14): refused, as `docker save` refuses, with
 * a hint, before anything is fetched; redirected or piped, the tar is written as before. Run in
 * a real pseudo-terminal (tmux).
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { BIN } from './helpers/crash-fixtures.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import { openTerminal, type Terminal } from './helpers/tmux.js';

let work: string;
let image: string;
let terminal: Terminal;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-tar-tty-'));
  const { url, host } = testRegistry();
  const repo = uniqueRepo('tar-tty');
  await pushImage(url, repo, 'v1', { layers: [{ tar: await tarLayer([{ name: 'hello.txt', content: 'hello\n' }]) }] });
  image = `${host}/${repo}:v1`;
  await mkdir(join(work, 'cache'));
  const args = [BIN, '--cache-dir', join(work, 'cache'), '--output', 'tar', image, '-'];
  await writeFile(join(work, 'tar.sh'), `exec '${process.execPath}' ${args.map((a) => `'${a}'`).join(' ')}\n`);
  terminal = await openTerminal({ columns: 120, rows: 20, cwd: work, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: work } });
  await terminal.waitFor((lines) => lines.includes('$'), 'the prompt');
});

afterAll(async () => {
  await terminal?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

const exitLine = (lines: string[]): string | undefined => lines.find((l) => /^EXIT=\d+$/.test(l));

describe('--output tar - and a terminal', () => {
  it('refuses to write the tar to a terminal: exit 2 with a hint, nothing fetched', async () => {
    await terminal.type('sh tar.sh; echo EXIT=$?');
    const lines = await terminal.waitFor((l) => exitLine(l) !== undefined, 'the CLI to exit');
    expect(exitLine(lines)).toBe('EXIT=2');
    expect(lines).toContain('pull-unpack: refusing to write a tar to the terminal');
    expect(lines).toContain('hint: redirect it (> file.tar), pipe it, or write a file: --output tar FILE');
    expect(await readdir(join(work, 'cache'))).toEqual([]);
  });

  it('writes the tar when stdout is redirected, though stderr is the terminal', async () => {
    await terminal.type('sh tar.sh > out.tar; echo REDIRECTED=$?; tar -tf out.tar');
    const lines = await terminal.waitFor((l) => l.includes('hello.txt'), 'the tar listing');
    expect(lines).toContain('REDIRECTED=0');
    expect(await readdir(join(work, 'cache'))).not.toEqual([]);
  });
});
