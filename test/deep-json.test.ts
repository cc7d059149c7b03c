/**
 * Deep JSON (issue 11, section 4): no document from outside may overflow the stack. Every
 * parser of such a document bounds the nesting depth (src/image/json.ts); each kind of
 * document is tried here with a field nested 6000 levels deep (V8's JSON.stringify overflows
 * at about 4000; Go's encoding/json, and so the registry, accepts up to 10000).
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonDepth, MAX_JSON_DEPTH, parseJson } from '../src/image/json.js';
import { findCredentials } from '../src/registry/credentials.js';
import { pushBlob, pushImage, pushManifest, tarLayer, type PushedImage } from '../testdata/lib/image-builder.mjs';
import { runCli, startServer, testRegistry, uniqueRepo } from './helpers/registry.js';
import { thrown } from './helpers/errors.js';

const { host, url } = testRegistry();
const DEEP = 6000;
const deepValue = (n = DEEP): string => '['.repeat(n) + ']'.repeat(n);
/** The JSON object `doc` with one more field holding arrays nested `DEEP` levels deep. */
const withDeepField = (doc: object): Buffer => Buffer.from(`${JSON.stringify(doc).slice(0, -1)},"x":${deepValue()}}`);

let root: string;
let image: PushedImage;
let repo: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'deep-json-'));
  repo = uniqueRepo('deep');
  image = await pushImage(url, repo, 'plain', {
    layers: [{ tar: await tarLayer([{ name: 'hello.txt', content: 'hi\n' }]) }],
    format: 'docker',
  });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** The CLI failed with one clean line naming the nesting, not a stack overflow. */
function expectDepthRefusal(r: { code: number; stderr: string }, code = 1): void {
  expect(r.stderr).toMatch(new RegExp(`nests arrays or objects more than ${MAX_JSON_DEPTH} levels deep`));
  expect(r.stderr).not.toMatch(/RangeError|unexpected error|\n\s+at /);
  expect(r.code).toBe(code);
}

describe('the shared JSON parser', () => {
  it('counts depth outside strings only, escaped quotes and backslashes included', () => {
    const text = '{"a":"[[[{{\\"[[","b":[{"c":[1,"]]]\\\\"]}],"d":"\\\\\\"["}';
    expect(jsonDepth(text)).toBe(4);
    expect(jsonDepth('"\\\\"[')).toBe(1);
    expect(jsonDepth('["unterminated [[[[')).toBe(1);
    expect(jsonDepth('[]'.repeat(1000))).toBe(1);
    expect(parseJson(Buffer.from(text), 'doc')).toEqual(JSON.parse(text));
  });

  it(`accepts ${MAX_JSON_DEPTH} levels and refuses one more with a clear error, never RangeError`, () => {
    expect(parseJson(deepValue(MAX_JSON_DEPTH), 'doc')).toBeInstanceOf(Array);
    const err = thrown(() => parseJson(deepValue(MAX_JSON_DEPTH + 1), 'the thing', { code: 'INVALID_CONFIG', hint: 'h' }));
    expect(err).toMatchObject({ code: 'INVALID_CONFIG', hint: 'h' });
    expect(err.message).toBe(`the thing nests arrays or objects more than ${MAX_JSON_DEPTH} levels deep`);
    expect(thrown(() => parseJson(deepValue(1_000_000), 'doc')).code).toBe('INVALID_MANIFEST');
    expect(thrown(() => parseJson('{"a":', 'doc')).message).toBe('doc is not JSON');
  });
});

describe('documents from a registry', () => {
  it('--output oci of a Docker manifest with a field nested 6000 deep: INVALID_MANIFEST, no RangeError, nothing written', async () => {
    const bytes = withDeepField(image.manifest);
    await pushManifest(url, repo, 'deep-manifest', bytes, image.manifest.mediaType);
    const dest = join(root, 'oci-out');
    const r = await runCli(['--output', 'oci', '--no-cache', `${host}/${repo}:deep-manifest`, dest]);
    expectDepthRefusal(r);
    expect(r.stderr).toMatch(/manifest of .*:deep-manifest nests/);
    await expect(readdir(dest)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('an image config with a field nested 6000 deep is INVALID_CONFIG', async () => {
    const config = await pushBlob(url, repo, withDeepField(image.config));
    const manifest = { ...image.manifest, config: { ...image.manifest.config, digest: config.digest, size: config.size } };
    await pushManifest(url, repo, 'deep-config', manifest);
    const r = await runCli(['--no-cache', `${host}/${repo}:deep-config`, join(root, 'deep-config')]);
    expectDepthRefusal(r);
    expect(r.stderr).toMatch(/config of .* nests/);
  });

  it('inspect refuses an index with a field nested 6000 deep', async () => {
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ ...image.descriptor, platform: { os: 'linux', architecture: 'amd64' } }],
    };
    await pushManifest(url, repo, 'deep-index', withDeepField(index), index.mediaType);
    expectDepthRefusal(await runCli(['inspect', `${host}/${repo}:deep-index`]));
  });

  it('a token answer nested 6000 deep is UNAUTHORIZED, and its token is not used', async () => {
    const seen: string[] = [];
    const server = await startServer((req, res) => {
      seen.push(`${req.url} ${req.headers.authorization ?? '-'}`);
      if (req.url?.startsWith('/token')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(withDeepField({ token: 'deep-token' }));
        return;
      }
      if (req.headers.authorization === 'Bearer deep-token') {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
        return;
      }
      res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${server.host}/token",service="fake"` });
      res.end();
    });
    try {
      const r = await runCli(['inspect', `${server.host}/team/app:v1`]);
      expectDepthRefusal(r);
      expect(r.stderr).toMatch(/token server/);
      expect(seen.filter((s) => s.endsWith('Bearer deep-token'))).toEqual([]);
    } finally {
      await server.close();
    }
  });
});

describe('local documents', () => {
  it('an OCI layout whose index.json has a field nested 6000 deep is refused', async () => {
    const layout = join(root, 'layout');
    expect((await runCli(['--output', 'oci', '--no-cache', `${host}/${repo}:plain`, layout])).code).toBe(0);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as object;
    await writeFile(join(layout, 'index.json'), withDeepField(index));
    const r = await runCli(['--no-cache', `oci:${layout}:plain`, join(root, 'from-layout')]);
    expectDepthRefusal(r);
    expect(r.stderr).toMatch(/index\.json nests/);
  });

  it('a docker save manifest.json with a field nested 6000 deep is refused', async () => {
    const layer = await tarLayer([{ name: 'a.txt', content: 'a\n' }]);
    const p = pack();
    p.entry(
      { name: 'manifest.json' },
      Buffer.concat([Buffer.from('['), withDeepField({ Config: 'c.json', RepoTags: [], Layers: [] }), Buffer.from(']')]),
    );
    p.entry({ name: 'c.json' }, JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    p.entry({ name: 'l.tar' }, layer);
    p.finalize();
    const chunks: Buffer[] = [];
    for await (const c of p) chunks.push(c as Buffer);
    const file = join(root, 'deep-save.tar');
    await writeFile(file, Buffer.concat(chunks));
    const r = await runCli(['--no-cache', `docker-archive:${file}`, join(root, 'from-save')]);
    expectDepthRefusal(r);
    expect(r.stderr).toMatch(/manifest\.json nests/);
  });

  it('a cache index.json nested 6000 deep is reported as damaged and replaced, not a crash', async () => {
    const cache = join(root, 'cache');
    expect((await runCli(['--cache-dir', cache, `${host}/${repo}:plain`, join(root, 'cached-1')])).code).toBe(0);
    const index = JSON.parse(await readFile(join(cache, 'index.json'), 'utf8')) as object;
    await writeFile(join(cache, 'index.json'), withDeepField(index));
    // The index is read when the pull records its reference, after the rootfs is in place: the
    // pull succeeds and the damaged index is replaced (SECURITY.md: the cache heals itself).
    const r = await runCli(['--cache-dir', cache, `${host}/${repo}:plain`, join(root, 'cached-2')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: the cache's index\.json .* is damaged: replacing it/);
    expect(r.stderr).not.toMatch(/RangeError|unexpected error/);
    const healed = JSON.parse(await readFile(join(cache, 'index.json'), 'utf8')) as { manifests: unknown[] };
    expect(healed.manifests).toHaveLength(1);
  });

  it('a pull-unpack config file nested 6000 deep is a usage error', async () => {
    const file = join(root, 'config.json');
    await writeFile(file, withDeepField({ insecureRegistries: [] }));
    expectDepthRefusal(await runCli(['inspect', '--config', file, `${host}/${repo}:plain`]), 2);
  });

  it('a docker config.json nested 6000 deep is ignored with a notice, its credentials unused', async () => {
    const home = join(root, 'home');
    await mkdir(join(home, '.docker'), { recursive: true });
    const auth = Buffer.from('alice:secret').toString('base64');
    await writeFile(join(home, '.docker', 'config.json'), withDeepField({ auths: { 'ghcr.io': { auth } } }));
    const notices: string[] = [];
    const found = await findCredentials('ghcr.io', { env: {}, homeDir: home, onNotice: (m) => notices.push(m) });
    expect(found).toBeUndefined();
    expect(notices).toEqual([
      `${join(home, '.docker', 'config.json')} is not a valid JSON object; ignoring it (pulling from ghcr.io anonymously)`,
    ]);
  });
});
