/**
 * inspect and the resolver against the real distribution registry started by `make test`,
 * with images this file builds and pushes itself.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { inspect, type InspectResult } from '../src/index.js';
import { digestOf } from '../src/image/digest.js';
import { MediaType } from '../src/image/oci.js';
import { parsePlatform } from '../src/image/platform.js';
import { parseReference } from '../src/image/reference.js';
import { resolveImage } from '../src/sources/resolve.js';
import { openImage } from '../src/sources/open.js';
import { pushImage, pushIndex, pushMultiPlatform, tarLayer, type PushedMultiPlatform } from '../testdata/lib/image-builder.mjs';
import { runCli, testRegistry, uniqueRepo } from './helpers/registry.js';

const run = promisify(execFile);
const { host, url } = testRegistry();
const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/arm/v7', 'linux/arm/v6', 'linux/ppc64le', 'linux/s390x'];

let multi: PushedMultiPlatform;
let multiRef: string;
let listRef: string;
let list: PushedMultiPlatform;
let singleRef: string;
let singleDigest: string;
let nestedRef: string;
let nestedDigest: string;
let x86Ref: string;

function pickOf(r: InspectResult): { digest: string; platform: string; reason: string; notes: string[] } {
  if (!('digest' in r.pick)) throw new Error(`expected a pick, got: ${r.pick.error}`);
  return r.pick;
}

function imageFor(m: PushedMultiPlatform, platform: string): string {
  const image = m.images.find((i) => i.platform === platform);
  if (!image) throw new Error(`no ${platform} image pushed`);
  return image.descriptor.digest;
}

beforeAll(async () => {
  const repo = uniqueRepo('multi');
  multi = await pushMultiPlatform(url, repo, 'v1', PLATFORMS, { attestation: true });
  multiRef = `${host}/${repo}:v1`;

  const listRepo = uniqueRepo('dockerlist');
  list = await pushMultiPlatform(url, listRepo, 'v1', ['linux/amd64', 'linux/arm64', 'linux/arm/v7'], { format: 'docker' });
  listRef = `${host}/${listRepo}:v1`;

  const singleRepo = uniqueRepo('single');
  const single = await pushImage(url, singleRepo, 'v1', {
    layers: [{ tar: await tarLayer([{ name: 'hello.txt', content: 'hi\n' }]) }],
    config: { architecture: 'arm64', os: 'linux' },
    format: 'docker',
  });
  singleRef = `${host}/${singleRepo}:v1`;
  singleDigest = single.descriptor.digest;

  const nestedRepo = uniqueRepo('nested');
  const inner = await pushMultiPlatform(url, nestedRepo, 'inner', ['linux/arm64', 'linux/arm/v7'], { attestation: true });
  const amd = await pushImage(url, nestedRepo, null, { layers: [{ tar: await tarLayer([{ name: 'amd.txt', content: 'amd\n' }]) }] });
  const outer = await pushIndex(url, nestedRepo, 'v1', [
    { descriptor: { ...amd.descriptor }, platform: { os: 'linux', architecture: 'amd64' } },
    { descriptor: { ...inner.descriptor } },
  ]);
  nestedRef = `${host}/${nestedRepo}:v1`;
  nestedDigest = inner.descriptor.digest;
  expect(outer.digest).toMatch(/^sha256:/);

  const x86Repo = uniqueRepo('x86');
  await pushMultiPlatform(url, x86Repo, 'v1', ['linux/386', 'linux/arm64']);
  x86Ref = `${host}/${x86Repo}:v1`;
});

describe('inspect an OCI index', () => {
  it('reports the index, its digest and every entry with attestations marked', async () => {
    const r = await inspect(multiRef, { platform: 'linux/amd64' });
    expect(r.kind).toBe('index');
    expect(r.mediaType).toBe(MediaType.OciIndex);
    expect(r.digest).toBe(multi.descriptor.digest);
    expect(r.size).toBe(multi.descriptor.size);
    const images = r.platforms.filter((p) => !p.attestation);
    expect(images.map((p) => p.platform)).toEqual(PLATFORMS);
    const attestations = r.platforms.filter((p) => p.attestation);
    expect(attestations).toHaveLength(PLATFORMS.length);
    expect(attestations.every((p) => p.platform === 'unknown/unknown')).toBe(true);
  });

  it.each([
    ['linux/amd64', 'linux/amd64'],
    ['linux/arm64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['aarch64', 'linux/arm64'],
    ['linux/arm/v7', 'linux/arm/v7'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/arm/v6', 'linux/arm/v6'],
    ['linux/armel', 'linux/arm/v6'],
    ['linux/ppc64le', 'linux/ppc64le'],
    ['linux/s390x', 'linux/s390x'],
  ])('--platform %s picks %s', async (wanted, expected) => {
    const pick = pickOf(await inspect(multiRef, { platform: wanted }));
    expect(pick.platform).toBe(expected);
    expect(pick.digest).toBe(imageFor(multi, expected));
  });

  it('an arm/v7 host falls back to v6 when the image has no v7', async () => {
    const repo = uniqueRepo('armv6');
    const pushed = await pushMultiPlatform(url, repo, 'v1', ['linux/amd64', 'linux/arm/v6', 'linux/arm/v5']);
    const pick = pickOf(await inspect(`${host}/${repo}:v1`, { platform: 'linux/arm/v7' }));
    expect(pick.digest).toBe(imageFor(pushed, 'linux/arm/v6'));
    expect(pick.reason).toMatch(/v6/);
  });

  it('never gives a v6 host the v7 image', async () => {
    const repo = uniqueRepo('v7only');
    await pushMultiPlatform(url, repo, 'v1', ['linux/arm/v7', 'linux/amd64']);
    const r = await inspect(`${host}/${repo}:v1`, { platform: 'linux/arm/v6' });
    expect(r.pick).toMatchObject({ code: 'NO_MATCHING_PLATFORM' });
  });

  it('gives amd64 the 386 image only as a last resort, with a note', async () => {
    const pick = pickOf(await inspect(x86Ref, { platform: 'linux/amd64' }));
    expect(pick.platform).toBe('linux/386');
    expect(pick.notes.join(' ')).toMatch(/386/);
  });

  it('reports no match with the platforms the image has', async () => {
    const r = await inspect(multiRef, { platform: 'linux/riscv64' });
    expect(r.pick).toMatchObject({ code: 'NO_MATCHING_PLATFORM' });
    const message = 'error' in r.pick ? r.pick.error : '';
    for (const p of PLATFORMS) expect(message).toContain(p);
    expect(message).not.toContain('unknown/unknown');
  });
});

describe('resolver', () => {
  it('resolves an index to the platform manifest and verifies it', async () => {
    const opened = await openImage(parseReference(multiRef), {});
    expect(opened.reference).toBe('v1');
    const resolved = await resolveImage(opened.source, opened.reference, parsePlatform('linux/arm/v7'));
    expect(resolved.manifestDescriptor.digest).toBe(imageFor(multi, 'linux/arm/v7'));
    expect(resolved.manifest.layers.length).toBeGreaterThan(0);
    expect(resolved.choice?.platform).toMatchObject({ os: 'linux', architecture: 'arm', variant: 'v7' });
  });

  it('follows a nested index', async () => {
    const r = await inspect(nestedRef, { platform: 'linux/arm/v7' });
    const nested = r.platforms.filter((p) => p.via.length === 1);
    expect(nested.length).toBeGreaterThanOrEqual(2);
    expect(nested.every((p) => p.via[0] === nestedDigest)).toBe(true);
    expect(pickOf(r).platform).toBe('linux/arm/v7');
    expect(pickOf(await inspect(nestedRef, { platform: 'linux/amd64' })).platform).toBe('linux/amd64');
  });

  it('resolves a reference by digest, and refuses a digest the registry does not have', async () => {
    const byDigest = `${multiRef.replace(/:v1$/, '')}@${multi.descriptor.digest}`;
    expect((await inspect(byDigest, { platform: 'linux/arm64' })).digest).toBe(multi.descriptor.digest);
    const missing = `${multiRef.replace(/:v1$/, '')}@sha256:${'0'.repeat(64)}`;
    await expect(inspect(missing)).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404, registryCode: 'MANIFEST_UNKNOWN' });
  });

  it('the digest of tag@digest decides', async () => {
    const ref = `${multiRef.replace(/:v1$/, ':no-such-tag')}@${multi.descriptor.digest}`;
    expect((await inspect(ref, { platform: 'linux/amd64' })).digest).toBe(multi.descriptor.digest);
  });

  it('maps a missing tag to a typed NOT_FOUND error from the registry', async () => {
    await expect(inspect(`${host}/${uniqueRepo('none')}:nope`)).rejects.toMatchObject({ code: 'NOT_FOUND', status: 404 });
  });
});

describe('inspect a Docker manifest list and a single manifest', () => {
  it('reports a Docker manifest list', async () => {
    const r = await inspect(listRef, { platform: 'linux/arm/v7' });
    expect(r.kind).toBe('index');
    expect(r.mediaType).toBe(MediaType.DockerManifestList);
    expect(r.digest).toBe(list.descriptor.digest);
    expect(pickOf(r).digest).toBe(imageFor(list, 'linux/arm/v7'));
  });

  it('reports a single manifest with the platform of its config; another --platform gets no match naming both', async () => {
    const r = await inspect(singleRef, { platform: 'linux/arm64' });
    expect(r.kind).toBe('manifest');
    expect(r.mediaType).toBe(MediaType.DockerManifest);
    expect(r.digest).toBe(singleDigest);
    expect(r.configPlatform).toBe('linux/arm64');
    expect(r.platforms).toEqual([]);
    expect(pickOf(r)).toMatchObject({ digest: singleDigest, platform: 'linux/arm64', notes: [] });
    const other = await inspect(singleRef, { platform: 'linux/amd64' });
    expect(other.pick).toMatchObject({
      code: 'NO_MATCHING_PLATFORM',
      error: expect.stringMatching(/built for linux\/arm64, not linux\/amd64/),
    });
  });
});

describe('pull-unpack inspect (CLI)', () => {
  it('prints a human report with the platforms and the pick', async () => {
    const r = await runCli(['inspect', '--platform', 'linux/arm/v7', multiRef]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('OCI image index');
    expect(r.stdout).toContain(multi.descriptor.digest);
    expect(r.stdout).toContain('attestation');
    expect(r.stdout).toMatch(/\* linux\/arm\/v7/);
    expect(r.stdout).toContain(`for linux/arm/v7: linux/arm/v7 ${imageFor(multi, 'linux/arm/v7')}`);
  });

  it('--raw prints the manifest bytes exactly as served', async () => {
    const r = await runCli(['inspect', '--raw', multiRef]);
    expect(r.code).toBe(0);
    const served = Buffer.from(
      await (
        await fetch(`${url}/v2/${parseReference(multiRef).repository}/manifests/v1`, {
          headers: { accept: MediaType.OciIndex },
        })
      ).arrayBuffer(),
    );
    expect(r.stdoutBytes.equals(served)).toBe(true);
  });

  it('--json prints one JSON document', async () => {
    const r = await runCli(['inspect', '--json', '--platform', 'linux/arm64', multiRef]);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as InspectResult;
    expect(doc).toMatchObject({ kind: 'index', digest: multi.descriptor.digest, wanted: 'linux/arm64' });
    expect(doc.pick).toMatchObject({ platform: 'linux/arm64', digest: imageFor(multi, 'linux/arm64') });
    expect(doc.platforms).toHaveLength(PLATFORMS.length * 2);
  });

  it('exits 1 with a one-line message for an invalid reference, 2 for bad usage', async () => {
    const bad = await runCli(['inspect', `${host}/Upper/Case:v1`]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/lowercase/);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    expect((await runCli(['inspect'])).code).toBe(2);
    expect((await runCli(['inspect', '--bogus', multiRef])).code).toBe(2);
    expect((await runCli(['inspect', '--platform', 'linux', multiRef])).code).toBe(1);
  });

  it('lists the platforms and the pick of an image copied by skopeo copy --all', async () => {
    const target = `${host}/${uniqueRepo('skopeo')}:copied`;
    await run('skopeo', [
      'copy',
      '--all',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${multiRef}`,
      `docker://${target}`,
    ]);
    const r = await runCli(['inspect', target]);
    expect(r.code).toBe(0);
    for (const p of PLATFORMS) expect(r.stdout).toContain(p);
    expect(r.stdout).toMatch(/this host \(linux\/(amd64|arm64|arm\/v7)\): /);
    expect(r.stdout).not.toContain('no match');
  });
});

describe('inspect shows the picked image as skopeo inspect does', () => {
  const RUN_CONFIG = {
    Entrypoint: ['/bin/sh', '-c'],
    Cmd: ['echo hi'],
    Env: ['PATH=/bin', 'GREETING=hello world'],
    WorkingDir: '/srv',
    User: 'bob:wheel',
    ExposedPorts: { '80/tcp': {}, '53/udp': {} },
    Labels: { 'org.example.team': 'one', flavour: 'two' },
  };
  let richRef: string;
  let rich: PushedMultiPlatform;

  beforeAll(async () => {
    const repo = uniqueRepo('rich');
    rich = await pushMultiPlatform(url, repo, 'v1', ['linux/amd64', 'linux/arm64'], { config: { config: RUN_CONFIG } });
    richRef = `${host}/${repo}:v1`;
  });

  async function skopeo(...args: string[]): Promise<Record<string, unknown>> {
    const { stdout } = await run('skopeo', [
      'inspect',
      '--tls-verify=false',
      '--override-os',
      'linux',
      '--override-arch',
      'arm64',
      ...args,
    ]);
    return JSON.parse(stdout) as Record<string, unknown>;
  }

  it('--json reports created, Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, labels and layers as skopeo inspect does', async () => {
    const r = await runCli(['inspect', '--json', '--platform', 'linux/arm64', richRef]);
    expect(r.code).toBe(0);
    const image = (JSON.parse(r.stdout) as InspectResult).image!;
    const shown = await skopeo(`docker://${richRef}`);
    const config = (await skopeo('--config', `docker://${richRef}`)) as { config: typeof RUN_CONFIG };
    const platformDigest = imageFor(rich, 'linux/arm64');
    const manifest = (await skopeo('--raw', `docker://${richRef.replace(/:v1$/, '')}@${platformDigest}`)) as {
      layers: Array<{ size: number }>;
    };
    expect(image.manifestDigest).toBe(platformDigest);
    expect(new Date(image.created!).getTime()).toBe(new Date(shown['Created'] as string).getTime());
    expect(image.labels).toEqual(shown['Labels']);
    expect(image.env).toEqual(shown['Env']);
    expect(image.layers).toBe((shown['Layers'] as string[]).length);
    expect(image.layersSize).toBe(manifest.layers.reduce((n, l) => n + l.size, 0));
    expect(image.entrypoint).toEqual(config.config.Entrypoint);
    expect(image.cmd).toEqual(config.config.Cmd);
    expect(image.workingDir).toBe(config.config.WorkingDir);
    expect(image.user).toBe(config.config.User);
    expect([...image.exposedPorts].sort()).toEqual(Object.keys(config.config.ExposedPorts).sort());
  });

  it('the text report names this host when no --platform is given and lists the image settings', async () => {
    const r = await runCli(['inspect', richRef]);
    expect(r.code).toBe(0);
    const hostLine = r.stdout.match(/ {2}this host \(([^)]+)\): (\S+) (sha256:\w+)/);
    expect(hostLine).not.toBeNull();
    expect(r.stdout).not.toMatch(/^ {2}for /m);
    expect(r.stdout).toMatch(/^ {4}entrypoint: +\["\/bin\/sh","-c"\]$/m);
    expect(r.stdout).toMatch(/^ {4}cmd: +\["echo hi"\]$/m);
    expect(r.stdout).toMatch(/^ {4}env: +PATH=\/bin\n {18}GREETING=hello world$/m);
    expect(r.stdout).toMatch(/^ {4}workingDir: +\/srv$/m);
    expect(r.stdout).toMatch(/^ {4}user: +bob:wheel$/m);
    expect(r.stdout).toMatch(/^ {4}exposedPorts: +80\/tcp, 53\/udp$/m);
    expect(r.stdout).toMatch(/^ {4}labels: +org\.example\.team=one\n {18}flavour=two$/m);
    expect(r.stdout).toMatch(/^ {4}layers: +1 \(\d+ B compressed, \d+ bytes\)$/m);
    expect(r.stdout).toMatch(/^ {4}created: +2024-01-01T00:00:00/m);
    const withPlatform = await runCli(['inspect', '--platform', 'linux/arm64', richRef]);
    expect(withPlatform.stdout).toContain(`  for linux/arm64: linux/arm64 ${imageFor(rich, 'linux/arm64')}`);
    expect(withPlatform.stdout).not.toContain('this host');
  });

  it("labels the platform table's size column as the manifest's size", async () => {
    const r = await runCli(['inspect', richRef]);
    expect(r.stdout).toMatch(/^ {5}PLATFORM +MANIFEST DIGEST +MANIFEST SIZE$/m);
    const row = r.stdout.split('\n').find((l) => l.includes(imageFor(rich, 'linux/arm64')) && l.includes(' B'));
    const size = rich.images.find((i) => i.platform === 'linux/arm64')!.descriptor.size;
    expect(row).toMatch(new RegExp(` ${size} B$`));
  });

  it("--raw --platform prints the chosen platform's manifest bytes exactly as served", async () => {
    const digest = imageFor(rich, 'linux/arm64');
    const r = await runCli(['inspect', '--raw', '--platform', 'linux/arm64', richRef]);
    expect(r.code).toBe(0);
    const { stdout } = await run(
      'skopeo',
      ['inspect', '--raw', '--tls-verify=false', `docker://${richRef.replace(/:v1$/, '')}@${digest}`],
      {
        encoding: 'buffer',
      },
    );
    expect(r.stdoutBytes.equals(stdout)).toBe(true);
    expect(digestOf(r.stdoutBytes)).toBe(digest);
    const none = await runCli(['inspect', '--raw', '--platform', 'linux/s390x', richRef]);
    expect(none.code).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/no linux\/s390x image/);
  });
});
