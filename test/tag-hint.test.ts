/**
 * A 404 for a tag names the tags that exist (GET /v2/NAME/tags/list, bounded), against the real
 * registry; a registry that refuses the listing, or answers it badly, leaves the error as it was.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pull, type PullUnpackError } from '../src/index.js';
import { pushImage, pushManifest, tarLayer } from '../testdata/lib/image-builder.mjs';
import { failure } from './helpers/errors.js';
import { runCli, startServer, testRegistry, uniqueRepo, type TestServer } from './helpers/registry.js';

const { host, url } = testRegistry();
const NOT_FOUND_HINT = 'check the repository name and tag; private images also answer 404 without credentials';
let root: string;
let few: string;
let many: string;

async function pushTags(repo: string, tags: string[]): Promise<void> {
  const image = await pushImage(url, repo, tags[0]!, { layers: [{ tar: await tarLayer([{ name: 'a.txt', content: 'a\n' }]) }] });
  for (const tag of tags.slice(1)) await pushManifest(url, repo, tag, image.manifestBytes);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pull-unpack-tags-'));
  few = uniqueRepo('tags-few');
  await pushTags(few, ['1.0', '1.1', 'latest']);
  many = uniqueRepo('tags-many');
  await pushTags(many, ['a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8']);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('a 404 for a tag names the tags that exist', () => {
  it('lists them in the hint of the CLI and of the library error', async () => {
    const r = await runCli([`${host}/${few}:1.2`, join(root, 'few')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not found \(HTTP 404/);
    expect(r.stderr).toContain(`hint: tags that exist: 1.0, 1.1, latest; ${NOT_FOUND_HINT}\n`);
    const err = await failure(pull(`${host}/${few}:1.2`, join(root, 'few-lib')));
    expect(err).toMatchObject({ code: 'NOT_FOUND', status: 404, registryCode: 'MANIFEST_UNKNOWN' });
    expect(err.hint).toBe(`tags that exist: 1.0, 1.1, latest; ${NOT_FOUND_HINT}`);
  });

  it('names a few and counts the rest', async () => {
    const r = await runCli(['inspect', `${host}/${many}:b1`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('hint: tags that exist: a1, a2, a3, a4, a5 (and 3 more);');
  });

  it('says nothing extra for a repository that does not exist, or for a digest', async () => {
    const r = await runCli(['inspect', `${host}/${uniqueRepo('none')}:v1`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`hint: ${NOT_FOUND_HINT}\n`);
    const byDigest = await runCli(['inspect', `${host}/${few}@sha256:${'0'.repeat(64)}`]);
    expect(byDigest.code).toBe(1);
    expect(byDigest.stderr).not.toContain('tags that exist');
  });
});

describe('a registry that refuses or mangles the tag list', () => {
  let server: TestServer;
  let tagsAnswer: (res: import('node:http').ServerResponse) => void;
  let tagRequests: string[];

  beforeAll(async () => {
    server = await startServer((req, res) => {
      if (req.url === '/v2/') {
        res.writeHead(200).end('{}');
      } else if (req.url?.startsWith('/v2/app/tags/list')) {
        tagRequests.push(req.url);
        tagsAnswer(res);
      } else {
        res
          .writeHead(404, { 'content-type': 'application/json' })
          .end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
      }
    });
  });

  afterAll(async () => {
    await server.close();
  });

  async function hintWith(answer: (res: import('node:http').ServerResponse) => void): Promise<PullUnpackError> {
    tagsAnswer = answer;
    tagRequests = [];
    return failure(pull(`${server.host}/app:v2`, join(root, 'hostile'), { insecureRegistries: [server.host], attempts: 1 }));
  }

  it('asks for one bounded page, and lists valid tag names only', async () => {
    const err = await hintWith((res) =>
      res.writeHead(200).end(JSON.stringify({ name: 'app', tags: ['v1', 'bad\u001b[2J', '../x', 'v3'] })),
    );
    expect(tagRequests).toEqual(['/v2/app/tags/list?n=100']);
    expect(err.hint).toBe(`tags that exist: v1, v3; ${NOT_FOUND_HINT}`);
  });

  it.each([
    ['refused (401)', (res: import('node:http').ServerResponse) => res.writeHead(401).end()],
    ['refused (403)', (res: import('node:http').ServerResponse) => res.writeHead(403).end()],
    ['not JSON', (res: import('node:http').ServerResponse) => res.writeHead(200).end('<html>')],
    ['over 64 KiB', (res: import('node:http').ServerResponse) => res.writeHead(200).end(JSON.stringify({ tags: Array(20000).fill('v1') }))],
    ['no tags', (res: import('node:http').ServerResponse) => res.writeHead(200).end('{"name":"app","tags":null}')],
  ])('keeps the 404 error as it was when the listing is %s', async (_name, answer) => {
    const err = await hintWith(answer);
    expect(err).toMatchObject({ code: 'NOT_FOUND', status: 404 });
    expect(err.hint).toBe(NOT_FOUND_HINT);
  });
});
