/**
 * Correctness the user sees (issue 11, section 5): a single-platform image is checked against
 * the platform asked for, `inspect` answers "is there an image for X?" with its exit code, and
 * the --max-* limits reach every source (registry, oci:, oci-archive:, docker-archive:).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspect, pull, type InspectResult } from '../src/index.js';
import { formatPlatform, hostPlatform } from '../src/image/platform.js';
import { pushImage, pushMultiPlatform, sha256, tarLayer } from '../testdata/lib/image-builder.mjs';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';
import { failure } from './helpers/errors.js';

const run = promisify(execFile);
const { host, url } = testRegistry();
/** An architecture this host is not (and cannot fall back to). */
const host_ = hostPlatform().platform;
const FOREIGN = host_.architecture === 's390x' ? 'ppc64le' : 's390x';

let root: string;
let repo: string;
/** Single-platform images: linux/amd64, linux/<FOREIGN>, linux/arm/v6, and one whose config names no platform. */
let amd64Ref: string;
let foreignRef: string;
let armV6Ref: string;
let noPlatformRef: string;
let multiRef: string;

const out = (name: string): string => join(root, name);

async function single(tag: string, config: Record<string, unknown>): Promise<string> {
  const tar = await tarLayer([{ name: `${tag}.txt`, content: `${tag}\n` }]);
  await pushImage(url, repo, tag, { layers: [{ tar }], config });
  return `${host}/${repo}:${tag}`;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'platform-limits-'));
  repo = uniqueRepo('single-platform');
  amd64Ref = await single('amd64', { os: 'linux', architecture: 'amd64' });
  foreignRef = await single('foreign', { os: 'linux', architecture: FOREIGN });
  armV6Ref = await single('armv6', { os: 'linux', architecture: 'arm', variant: 'v6' });
  // JSON leaves undefined out: this config has no os and no architecture.
  noPlatformRef = await single('none', { os: undefined, architecture: undefined });
  await pushMultiPlatform(url, repo, 'multi', ['linux/amd64', 'linux/arm64']);
  multiRef = `${host}/${repo}:multi`;
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('--platform on a single-platform image', () => {
  it('--platform linux/arm64 on an image built for linux/amd64 fails naming both, and writes nothing', async () => {
    const r = await runCli(['--platform', 'linux/arm64', amd64Ref, out('wrong')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/:amd64 is built for linux\/amd64, not linux\/arm64\nhint: .*--platform linux\/amd64/);
    await expect(readdir(out('wrong'))).rejects.toMatchObject({ code: 'ENOENT' });
    const err = await failure(pull(amd64Ref, out('wrong-lib'), { platform: 'linux/arm64' }));
    expect(err.code).toBe('NO_MATCHING_PLATFORM');
  });

  it('the same refusal for a local oci: source', async () => {
    const layout = out('amd64-layout');
    expect((await runCli(['--output', 'oci', amd64Ref, layout])).code).toBe(0);
    const r = await runCli(['--platform', 'linux/arm64', `oci:${layout}:amd64`, out('wrong-local')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is built for linux\/amd64, not linux\/arm64/);
  });

  it('pulls when the image runs on the platform asked for: exact, or by fallback (arm/v6 on arm/v7)', async () => {
    expect((await runCli(['--platform', 'linux/amd64', amd64Ref, out('exact')])).stderr).toBe('');
    const r = await runCli(['--platform', 'linux/arm/v7', armV6Ref, out('fallback')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('linux/arm/v6');
  });

  it(`without --platform, an image for another architecture (linux/${FOREIGN}) is pulled with a warning`, async () => {
    const r = await runCli([foreignRef, out('foreign')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(
      `warning: ${foreignRef} is built for linux/${FOREIGN}, not for this host's ${formatPlatform(host_)}: it may not run here\n`,
    );
    expect(await readdir(out('foreign'))).toContain('foreign.txt');
  });

  it('a config that names no platform is pulled; with --platform a warning says it cannot be checked', async () => {
    const quiet = await runCli([noPlatformRef, out('none-host')]);
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe('');
    const asked = await runCli(['--platform', 'linux/arm64', noPlatformRef, out('none-asked')]);
    expect(asked.code).toBe(0);
    expect(asked.stderr).toBe(`warning: the config of ${noPlatformRef} names no platform; it cannot be checked against linux/arm64\n`);
  });
});

describe('inspect --platform exit status', () => {
  it('inspect --platform X with no match prints the listing and exits 1; a match exits 0', async () => {
    const none = await runCli(['inspect', '--platform', 'linux/arm/v6', multiRef]);
    expect(none.code).toBe(1);
    expect(none.stdout).toMatch(/platforms \(2\):/);
    expect(none.stdout).toMatch(/for linux\/arm\/v6: no match\n.*it has: linux\/amd64, linux\/arm64/);
    const json = await runCli(['inspect', '--json', '--platform', 'linux/arm/v6', multiRef]);
    expect(json.code).toBe(1);
    expect((JSON.parse(json.stdout) as InspectResult).pick).toMatchObject({ code: 'NO_MATCHING_PLATFORM' });
    expect((await runCli(['inspect', '--platform', 'linux/arm64', multiRef])).code).toBe(0);
  });

  it('inspect --platform on a single-platform image built for another platform is no match, exit 1', async () => {
    const r = await runCli(['inspect', '--platform', 'linux/arm64', amd64Ref]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/platform: {2}linux\/amd64 \(from the image config\)/);
    expect(r.stdout).toMatch(/for linux\/arm64: no match\n.*is built for linux\/amd64, not linux\/arm64/);
    const lib = await inspect(foreignRef);
    expect(lib.pick).toMatchObject({ platform: `linux/${FOREIGN}`, notes: [expect.stringMatching(/it may not run here/)] });
  });
});

/** A `docker save` archive of one image with `layer`. */
async function dockerArchive(file: string, layer: Buffer): Promise<string> {
  const config = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(layer)] } };
  const p = pack();
  p.entry({ name: 'manifest.json' }, JSON.stringify([{ Config: 'config.json', RepoTags: ['app:1'], Layers: ['l/layer.tar'] }]));
  p.entry({ name: 'config.json' }, JSON.stringify(config));
  p.entry({ name: 'l/layer.tar' }, layer);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  await writeFile(file, Buffer.concat(chunks));
  return file;
}

describe('limits reach every source', () => {
  let layout: string;
  let archive: string;
  let saved: string;

  beforeAll(async () => {
    layout = out('limits-layout');
    expect((await runCli(['--output', 'oci', amd64Ref, layout])).code).toBe(0);
    archive = out('limits-layout.tar');
    await run('tar', ['-cf', archive, '-C', layout, '.']);
    saved = await dockerArchive(out('saved.tar'), await tarLayer([{ name: 'saved.txt', content: 'saved\n' }]));
  });

  it.each([
    ['oci:', () => `oci:${layout}:amd64`],
    ['oci-archive:', () => `oci-archive:${archive}:amd64`],
    ['docker-archive:', () => `docker-archive:${saved}`],
  ])('%s honours --max-manifest-size (TOO_LARGE naming the flag)', async (_name, image) => {
    const dest = out(`small-manifest-${_name.replace(':', '')}`);
    const r = await runCli(['--max-manifest-size', '50', image(), dest]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/over the 50-byte limit\nhint: raise it with --max-manifest-size/);
    await expect(readdir(dest)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await runCli([image(), `${dest}-default`])).code).toBe(0);
  });

  it.each([
    ['a registry', () => amd64Ref],
    ['oci:', () => `oci:${layout}:amd64`],
    ['docker-archive:', () => `docker-archive:${saved}`],
  ])('inspect of %s honours --max-config-size', async (_name, image) => {
    const r = await runCli(['inspect', '--max-config-size', '16', image()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/over the 16-byte limit\nhint: raise it with --max-config-size/);
  });
});
