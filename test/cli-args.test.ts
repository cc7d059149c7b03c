/**
 * Arguments and help (issue 14): the built CLI's own messages for unknown options (with a
 * did-you-mean), each command's own usage, -V, and likely mistakes recognised with a hint and
 * exit 2 before anything is fetched.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from './helpers/crash-fixtures.js';

const exec = promisify(execFile);
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-cli-args-'));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Runs the built CLI (node bin/pull-unpack.js) in `cwd` with stdin closed; never throws for an exit code. */
function runBin(args: string[], cwd = work): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [BIN, ...args], { cwd, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(new Error(`cannot run the CLI: ${err.message}`));
      else resolve({ code: child.exitCode ?? -1, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** node:util parseArgs' own advice, wrong here: after DIR, `--` starts the bundle's command. */
const PARSE_ARGS_TEXT = /place it at the end of the command after '--'|Unknown option '/;

describe('unknown options', () => {
  it('--platfrom is refused with exit 2, our own message and "did you mean --platform?", never parseArgs text', async () => {
    const r = await runBin(['--platfrom', 'linux/amd64', 'alpine', join(work, 'typo')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pull-unpack: unknown option --platfrom (did you mean --platform?)');
    expect(r.stderr).toContain("hint: run 'pull-unpack --help' for usage");
    expect(r.stderr).not.toMatch(PARSE_ARGS_TEXT);
    expect(r.stdout).toBe('');
  });

  it('an unknown option of inspect gets a did-you-mean from inspect options, and points to inspect --help', async () => {
    const r = await runBin(['inspect', '--rwa', 'alpine']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown option --rwa for inspect (did you mean --raw?)');
    expect(r.stderr).toContain("run 'pull-unpack inspect --help' for usage");
    expect(r.stderr).not.toMatch(PARSE_ARGS_TEXT);
  });

  it('an option of another command is named as such (--raw is an option of inspect, --force of a pull)', async () => {
    const raw = await runBin(['alpine', join(work, 'raw'), '--raw']);
    expect(raw.code).toBe(2);
    expect(raw.stderr).toContain('unknown option --raw: it is an option of pull-unpack inspect');
    const force = await runBin(['inspect', '--force', 'alpine']);
    expect(force.code).toBe(2);
    expect(force.stderr).toContain('unknown option --force for inspect: it is an option of a pull (pull-unpack IMAGE DIR)');
  });

  it('an unknown cache option or cache command gets a did-you-mean and exit 2', async () => {
    const option = await runBin(['cache', 'ls', '--jsno']);
    expect(option.code).toBe(2);
    expect(option.stderr).toContain('unknown option --jsno for cache (did you mean --json?)');
    expect(option.stderr).not.toMatch(PARSE_ARGS_TEXT);
    const command = await runBin(['cache', 'prnue', '--all', '--cache-dir', join(work, 'no-cache')]);
    expect(command.code).toBe(2);
    expect(command.stderr).toContain('unknown cache command "prnue" (did you mean cache prune?)');
  });

  it('a string option followed by another option is refused, with how to pass a value that starts with "-"', async () => {
    const r = await runBin(['alpine', join(work, 'dash'), '--platform', '--force']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--platform needs a value, not the option --force');
    expect(r.stderr).toContain('--platform=--force');
  });

  it('a first word close to a command (inspekt) is still tried as IMAGE, and its failure suggests the command', async () => {
    // DIR "/" is refused by the destination guard, before anything is fetched: the pull was tried.
    const tried = await runBin(['inspekt', '/']);
    expect(tried.code).toBe(2);
    expect(tried.stderr).toContain('refusing to replace /');
    expect(tried.stderr).toContain(`did you mean 'pull-unpack inspect'? ("inspekt" was taken as an IMAGE)`);
    const alone = await runBin(['inspekt']);
    expect(alone.code).toBe(2);
    expect(alone.stderr).toContain('expected DIR after IMAGE');
    expect(alone.stderr).toContain(`did you mean 'pull-unpack inspect'?`);
  });
});

describe('help and version', () => {
  it('-V prints the version as --version does', async () => {
    const long = await runBin(['--version']);
    const short = await runBin(['-V']);
    expect(long.code).toBe(0);
    expect(short).toEqual(long);
    expect(short.stdout).toMatch(/^pull-unpack \d+\.\d+\.\d+\n$/);
  });

  it('inspect --help and help inspect print inspect usage only', async () => {
    const r = await runBin(['inspect', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage:\n {2}pull-unpack inspect IMAGE \[options\]\n/);
    expect(r.stdout).toContain('--raw');
    expect(r.stdout).not.toContain('bundle options');
    expect(r.stdout).not.toContain('cache prune');
    expect(await runBin(['help', 'inspect'])).toEqual(r);
  });

  it('cache --help and help cache print cache usage only', async () => {
    const r = await runBin(['cache', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage:\n {2}pull-unpack cache ls/);
    expect(r.stdout).toContain('--older-than DURATION');
    expect(r.stdout).not.toContain('--platform');
    expect(await runBin(['help', 'cache'])).toEqual(r);
    expect(await runBin(['cache', 'ls', '-h'])).toEqual(r);
  });

  it('completion --help, help pull and IMAGE DIR --help print their own usage', async () => {
    const completion = await runBin(['completion', '--help']);
    expect(completion.code).toBe(0);
    expect(completion.stdout).toMatch(/^Usage:\n {2}pull-unpack completion bash\|zsh\n/);
    expect(await runBin(['help', 'completion'])).toEqual(completion);
    const pull = await runBin(['help', 'pull']);
    expect(pull.code).toBe(0);
    expect(pull.stdout).toMatch(/^Usage:\n {2}pull-unpack \[pull\] IMAGE DIR \[options\]\n/);
    expect(pull.stdout).toContain('bundle options');
    expect(pull.stdout).not.toContain('inspect options');
    expect(await runBin(['alpine', 'dir', '--help'])).toEqual(pull);
  });

  it('help for an unknown command is a usage error with a did-you-mean', async () => {
    const r = await runBin(['help', 'inspekt']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no help for "inspekt" (did you mean inspect?)');
  });
});

describe('likely mistakes, refused with a hint before anything is fetched', () => {
  /** A fresh directory under `work` to run the CLI in. */
  async function caseDir(): Promise<string> {
    return await mkdtemp(join(work, 'case-'));
  }

  it('IMAGE and DIR swapped: a path to an existing directory as IMAGE and an image reference as DIR', async () => {
    const cwd = await caseDir();
    await mkdir(join(cwd, 'rootfs'));
    const r = await runBin(['./rootfs', 'alpine:3.19'], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('IMAGE and DIR look swapped: ./rootfs is a directory and alpine:3.19 reads as an image');
    expect(r.stderr).toContain('hint: IMAGE comes first: pull-unpack alpine:3.19 ./rootfs');
    expect(await readdir(cwd)).toEqual(['rootfs']);
    expect(await readdir(join(cwd, 'rootfs'))).toEqual([]);
  });

  it('a bare IMAGE that is also a directory here is still tried; its failure says IMAGE and DIR may be swapped', async () => {
    const cwd = await caseDir();
    await mkdir(join(cwd, 'rootfs'));
    await mkdir(join(cwd, 'empty-cache'));
    // --offline with an empty cache: the pull of docker.io/library/rootfs fails without the network.
    const r = await runBin(['--offline', '--cache-dir', 'empty-cache', 'rootfs', 'alpine:3.19'], cwd);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('docker.io/library/rootfs:latest was never pulled into the cache');
    expect(r.stderr).toContain(
      'rootfs is also a directory here: if IMAGE and DIR are swapped, IMAGE comes first: pull-unpack alpine:3.19 rootfs',
    );
  });

  it('a bare IMAGE that is also a file here (a busybox binary) is still tried; its failure names the file', async () => {
    const cwd = await caseDir();
    await writeFile(join(cwd, 'busybox'), '\x7fELF not a tar\n');
    await mkdir(join(cwd, 'empty-cache'));
    const r = await runBin(['--offline', '--cache-dir', 'empty-cache', 'busybox', 'out'], cwd);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('docker.io/library/busybox:latest was never pulled into the cache');
    expect(r.stderr).toContain('busybox is also a file here');
  });

  it('a tar of an OCI layout given as IMAGE: suggests oci-archive:PATH (pull and inspect)', async () => {
    const cwd = await caseDir();
    await mkdir(join(cwd, 'layout'));
    await writeFile(join(cwd, 'layout', 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(cwd, 'layout', 'index.json'), '{"schemaVersion":2,"manifests":[]}');
    await exec('tar', ['-cf', 'image.tar', '-C', 'layout', '.'], { cwd });
    const r = await runBin(['image.tar', 'out'], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('image.tar is a file, not an image reference');
    expect(r.stderr).toContain('hint: it holds an OCI image layout: read it as oci-archive:image.tar');
    const inspected = await runBin(['inspect', 'image.tar'], cwd);
    expect(inspected.code).toBe(2);
    expect(inspected.stderr).toContain('read it as oci-archive:image.tar');
    expect((await readdir(cwd)).sort()).toEqual(['image.tar', 'layout']);
  });

  it('a docker save archive given as IMAGE: suggests docker-archive:PATH', async () => {
    const cwd = await caseDir();
    await writeFile(join(cwd, 'manifest.json'), '[{"Config":"c.json","RepoTags":["a:1"],"Layers":[]}]');
    await exec('tar', ['-cf', 'saved.tar', 'manifest.json'], { cwd });
    const r = await runBin(['saved.tar', 'out'], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('hint: it is a docker save archive: read it as docker-archive:saved.tar');
  });

  it('an OCI layout directory given as IMAGE: suggests oci:PATH', async () => {
    const cwd = await caseDir();
    await mkdir(join(cwd, 'layout'));
    await writeFile(join(cwd, 'layout', 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const r = await runBin(['layout', 'out'], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('layout is an OCI image layout, not an image reference');
    expect(r.stderr).toContain('hint: read it as one: oci:layout');
  });

  it('any other file given as IMAGE: says it is neither, and names the local prefixes', async () => {
    const cwd = await caseDir();
    await writeFile(join(cwd, 'notes.txt'), 'not an image\n');
    const r = await runBin(['notes.txt', 'out'], cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('notes.txt is a file, not an image reference (nor a tar of an OCI layout or of docker save)');
    expect(r.stderr).toContain('oci:DIR, oci-archive:FILE or docker-archive:FILE');
  });
});
