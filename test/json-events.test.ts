/**
 * `--json` against docs/events.schema.json: every line of real runs (a pull, a cached pull, a
 * bundle, failures, inspect) is validated with ajv, and the fields issue 14 asked for are checked:
 * a time on every event, the layer index on blob events, the platform and reason in `resolved`
 * for a single manifest, an `error` event before a failing exit.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull, pullBundle } from '../src/index.js';
import { pushImage, tarLayer } from '../testdata/lib/image-builder.mjs';
import { eventSchemaErrors, inspectSchemaErrors } from './helpers/events-schema.js';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';

const { host, url } = testRegistry();
const RFC3339_MS_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
let root: string;
let ref: string;
let layerDigests: string[];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pull-unpack-json-'));
  const repo = uniqueRepo('json');
  const layers = [
    { tar: await tarLayer([{ name: 'a.txt', content: 'a\n' }]) },
    { tar: await tarLayer([{ name: 'b.txt', content: 'b\n' }]) },
  ];
  const pushed = await pushImage(url, repo, 'v1', { layers, config: { architecture: 'arm64', os: 'linux' } });
  layerDigests = (pushed.manifest as { layers: Array<{ digest: string }> }).layers.map((l) => l.digest);
  ref = `${host}/${repo}:v1`;
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let runs = 0;
function dest(): string {
  return join(root, `out-${++runs}`);
}

/** The run's events, after checking each line against the schema. */
function validEvents(stdout: string): Array<Record<string, unknown>> {
  const { events, errors } = eventSchemaErrors(stdout);
  expect(errors).toEqual([]);
  expect(events.length).toBeGreaterThan(0);
  return events;
}

describe('--json events follow docs/events.schema.json', () => {
  it('every line of a pull is a documented event with an RFC 3339 UTC time in ms, in order', async () => {
    const r = await runCli([ref, dest(), '--json']);
    expect(r.code).toBe(0);
    const events = validEvents(r.stdout);
    const times = events.map((e) => e['time'] as string);
    for (const t of times) expect(t).toMatch(RFC3339_MS_UTC);
    expect([...times].sort()).toEqual(times);
    expect(events.at(-1)!['type']).toBe('done');
  });

  it('blob-start, blob-progress and blob-verified carry the index of their layer', async () => {
    const cache = join(root, 'cache-index');
    const r = await runCli([ref, dest(), '--json', '--cache-dir', cache]);
    expect(r.code).toBe(0);
    const events = validEvents(r.stdout);
    for (const type of ['blob-start', 'blob-verified']) {
      const seen = events.filter((e) => e['type'] === type);
      expect(seen.map((e) => [e['index'], e['digest']]).sort()).toEqual(layerDigests.map((d, i) => [i, d]));
    }
    for (const e of events.filter((e) => e['type'] === 'blob-progress')) expect(layerDigests[e['index'] as number]).toBe(e['digest']);
    // From the cache, only blob-verified: with the index too.
    const again = validEvents((await runCli([ref, dest(), '--json', '--cache-dir', cache])).stdout);
    const cached = again.filter((e) => e['type'] === 'blob-verified');
    expect(cached.map((e) => [e['index'], e['digest'], e['fromCache']])).toEqual(layerDigests.map((d, i) => [i, d, true]));
  });

  it('resolved names the platform (from the config) and the reason for a single-manifest image', async () => {
    const r = await runCli([ref, dest(), '--json']);
    const resolved = validEvents(r.stdout).find((e) => e['type'] === 'resolved');
    expect(resolved).toMatchObject({ platform: 'linux/arm64', reason: 'the reference names a single-platform manifest' });
  });

  it('a --bundle pull writes only documented events', async () => {
    const r = await runCli(['--bundle', ref, dest(), '--json', '--', '/bin/sh']);
    expect(r.code).toBe(0);
    expect(validEvents(r.stdout).at(-1)).toMatchObject({ type: 'done' });
  });

  it('a failing pull ends with an error event (code, message, hint) and no done', async () => {
    const r = await runCli([`${host}/${uniqueRepo('missing')}:nope`, dest(), '--json']);
    expect(r.code).toBe(1);
    const events = validEvents(r.stdout);
    expect(events.map((e) => e['type'])).toEqual(['error']);
    expect(events[0]).toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('nope') as unknown });
    expect(r.stderr).toContain(events[0]!['message'] as string);

    const busy = dest();
    await mkdir(busy);
    await writeFile(join(busy, 'keep.txt'), 'mine\n');
    const notEmpty = await runCli([ref, busy, '--json']);
    expect(notEmpty.code).toBe(1);
    const last = validEvents(notEmpty.stdout).at(-1)!;
    expect(last['type']).toBe('error');
    expect(last['hint']).toEqual(expect.stringContaining('--force'));
    expect(notEmpty.stderr).toContain(`hint: ${last['hint'] as string}`);
  });

  it('a usage error with --json is an error event with code USAGE', async () => {
    const r = await runCli([ref, dest(), '--json', '--concurrency', '0']);
    expect(r.code).toBe(2);
    expect(validEvents(r.stdout)).toEqual([
      expect.objectContaining({ type: 'error', code: 'USAGE', message: expect.stringContaining('--concurrency') as unknown }),
    ]);
  });

  it('inspect --json is one document the schema describes, and an error event when it fails', async () => {
    const r = await runCli(['inspect', '--json', ref]);
    expect(r.code).toBe(0);
    expect(inspectSchemaErrors(JSON.parse(r.stdout))).toEqual([]);
    const failed = await runCli(['inspect', '--json', `${host}/${uniqueRepo('missing')}:nope`]);
    expect(failed.code).toBe(1);
    expect(validEvents(failed.stdout)).toEqual([expect.objectContaining({ type: 'error', code: 'NOT_FOUND' })]);
  });
});

describe('the library returns the summary --json prints as done', () => {
  it.each([
    ['pull', [] as string[]],
    ['pullBundle', ['--bundle']],
  ])('%s: result.summary equals the done event of the same pull by the CLI', async (fn, flag) => {
    const dir = dest();
    const result = fn === 'pull' ? await pull(ref, dir) : await pullBundle(ref, dir, { overrides: { cmd: ['/bin/sh'] } });
    const cli = await runCli([...flag, ref, dir, '--json', '--no-cache', '--force', ...(flag.length ? ['--', '/bin/sh'] : [])]);
    expect(cli.code).toBe(0);
    const { type, time: _time, ...done } = validEvents(cli.stdout).at(-1)!;
    expect(type).toBe('done');
    expect(done).toEqual(JSON.parse(JSON.stringify(result.summary)));
    expect(result.summary).toMatchObject({ reference: result.reference, manifestDigest: result.manifestDigest, path: result.path });
    expect(result.summary).not.toHaveProperty('config');
    expect(result.summary).not.toHaveProperty('spec');
    if (fn === 'pullBundle') expect(done['rootless']).toBe(false);
  });
});
