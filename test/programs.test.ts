/**
 * The one runner of short-lived programs (src/programs.ts), with real programs: what it keeps of
 * their output, how a missing, slow, killed or aborted program ends, and the descriptor it hands
 * over as fd 3 (the xattr tools name files through /proc/self/fd/3).
 */
import { open, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExit, findProgram, runProgram, whyFailed } from '../src/programs.js';
import { failure } from './helpers/errors.js';

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-programs-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('runProgram', () => {
  it('feeds the input and returns what the program printed and how it exited', async () => {
    const result = await runProgram('sh', ['-c', 'cat; echo oops >&2; exit 3'], { input: 'hello' });
    expect(result).toEqual({ status: 'exited', code: 3, stdout: Buffer.from('hello'), stderr: 'oops\n', truncated: false });
    expect(whyFailed(result)).toBe('oops');
  });

  it('keeps at most maxStdout bytes of a program that prints more, reads the rest, and says it was truncated', async () => {
    const result = await runProgram('head', ['-c', String(3 * 1024 * 1024), '/dev/zero'], { maxStdout: 1024 * 1024 });
    expect(result.status).toBe('exited');
    if (result.status !== 'exited') return;
    expect({ code: result.code, kept: result.stdout.length, truncated: result.truncated }).toEqual({
      code: 0,
      kept: 1024 * 1024,
      truncated: true,
    });
  });

  it('caps stderr too', async () => {
    const result = await runProgram('sh', ['-c', 'head -c 100000 /dev/zero | tr "\\0" x >&2'], { maxStderr: 10 });
    expect(result).toMatchObject({ status: 'exited', code: 0, stderr: 'xxxxxxxxxx' });
  });

  it('says a program that is not installed is missing', async () => {
    expect(await runProgram('pull-unpack-no-such-program', [])).toEqual({ status: 'missing' });
  });

  it('says a program that cannot be executed failed, with the errno code', async () => {
    const script = join(work, 'not-executable');
    await writeFile(script, '#!/bin/sh\n', { mode: 0o644 });
    expect(await runProgram(script, [])).toEqual({ status: 'failed', message: 'EACCES' });
  });

  it('kills a program that outlives its timeout, without waiting for it', async () => {
    const result = await runProgram('sleep', ['30'], { timeoutMs: 20 });
    expect(result).toEqual({ status: 'timeout' });
  });

  it('reports a program killed by a signal', async () => {
    const result = await runProgram('sh', ['-c', 'kill -TERM $$']);
    expect(result).toEqual({ status: 'killed', signal: 'SIGTERM' });
    expect(whyFailed(result)).toBe('was killed by SIGTERM');
  });

  it('rejects with ABORTED when the signal fires, and kills the program', async () => {
    const controller = new AbortController();
    const running = runProgram('sh', ['-c', 'echo started; exec sleep 30'], { signal: controller.signal });
    controller.abort();
    expect((await failure(running)).code).toBe('ABORTED');
    expect((await failure(runProgram('true', [], { signal: controller.signal }))).code).toBe('ABORTED');
  });

  it('hands `fd3` to the program as its descriptor 3', async () => {
    const file = join(work, 'fd3.txt');
    await writeFile(file, 'through fd 3');
    const handle = await open(file, 'r');
    try {
      const result = await runProgram('cat', ['/proc/self/fd/3'], { fd3: handle.fd });
      expect(result).toMatchObject({ status: 'exited', code: 0, stdout: Buffer.from('through fd 3') });
    } finally {
      await handle.close();
    }
  });
});

describe('program lookup and messages', () => {
  it('finds a program on PATH by absolute path, and not one that is absent', () => {
    expect(findProgram('sh')).toMatch(/^\/.*\/sh$/);
    expect(findProgram('pull-unpack-no-such-program')).toBeNull();
  });

  it('describes exits and signals', () => {
    expect(describeExit(2, null)).toBe('failed (exit 2)');
    expect(describeExit(null, 'SIGKILL')).toBe('was killed by SIGKILL');
  });
});
