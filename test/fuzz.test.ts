/**
 * Property-based fuzzing (fast-check, bounded runs) of the parsers and the layer applier:
 * references, platform matching, manifests, random stacks of hostile-looking layers applied
 * into a root with a sentinel directory beside it, and a few full pulls of such stacks from the
 * test registry (a failed pull leaves DIR as it was and no staging directory behind).
 */
import { lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDigest } from '../src/image/digest.js';
import { isPullUnpackError, PullUnpackError } from '../src/errors.js';
import { isAttestation, parseManifest, type Descriptor, type Platform } from '../src/image/oci.js';
import { compatiblePlatforms, normalizePlatform, selectPlatform } from '../src/image/platform.js';
import { pull } from '../src/pull.js';
import { parseReference } from '../src/image/reference.js';
import { pushImage } from '../testdata/lib/image-builder.mjs';
import {
  contentType,
  damage,
  damageSpec,
  generatedReference,
  indexEntries,
  manifestLike,
  mutatedManifest,
  referenceLikeString,
  wantedPlatform,
} from './helpers/fuzz-arbitraries.js';
import {
  applyStack,
  buildStack,
  expectOutsideUnchanged,
  layerStack,
  makeWorkspace,
  outsideState,
  removeWorkspace,
  whiteoutNames,
} from './helpers/fuzz-layers.js';
import { testRegistry, uniqueRepo } from './helpers/registry.js';
import { buildTar } from './helpers/tar.js';
import { diffTrees, snapshotTree } from './helpers/tree.js';

/** Fixed seed so a failure reproduces; fast-check prints the counterexample and its path. */
const SEED = 0x5eed_8b;
/**
 * Each file-system property stops starting new runs after this long (the rest pass at once), so
 * the file stays under a minute on a busy machine. fast-check's interruptAfterTimeLimit would
 * abandon the run in flight, leaving its workspace behind.
 */
const TIME_BUDGET_MS = 20_000;
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]{0,127}$/;

/** Runs `f`, returning its value or the error it threw (never rethrowing). */
function attempt<T>(f: () => T): { ok: true; value: T } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: f() };
  } catch (error) {
    return { ok: false, error };
  }
}

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err);
}

describe('reference parser', () => {
  it('arbitrary strings either parse to a reference that round-trips, or fail with INVALID_REFERENCE', () => {
    fc.assert(
      fc.property(referenceLikeString, (text) => {
        const r = attempt(() => parseReference(text));
        if (!r.ok) {
          expect(isPullUnpackError(r.error, 'INVALID_REFERENCE'), describeError(r.error)).toBe(true);
          return;
        }
        const ref = r.value;
        for (const c of ref.repository.split('/')) expect(c).toMatch(COMPONENT);
        if (ref.tag !== undefined) expect(ref.tag).toMatch(TAG);
        if (ref.digest !== undefined) parseDigest(ref.digest);
        const again = parseReference(ref.toString());
        expect(fieldsOf(again)).toEqual(fieldsOf(ref));
        expect(again.toString()).toBe(ref.toString());
      }),
      { numRuns: 3000, seed: SEED },
    );
  });

  it('references from the grammar parse to their normalized fields and round-trip through toString', () => {
    fc.assert(
      fc.property(generatedReference, (g) => {
        const r = attempt(() => parseReference(g.text));
        if (`${g.registry}/${g.repository}`.length > 255) {
          expect(r.ok ? 'parsed' : (r.error as PullUnpackError).code).toBe('INVALID_REFERENCE');
          return;
        }
        if (!r.ok) throw new Error(`${JSON.stringify(g.text)} was refused: ${describeError(r.error)}`);
        expect(fieldsOf(r.value)).toEqual({ registry: g.registry, repository: g.repository, tag: g.tag, digest: g.digest });
        expect(fieldsOf(parseReference(r.value.toString()))).toEqual(fieldsOf(r.value));
      }),
      { numRuns: 2000, seed: SEED },
    );
  });
});

function fieldsOf(ref: { registry: string; repository: string; tag: string | undefined; digest: string | undefined }) {
  return { registry: ref.registry, repository: ref.repository, tag: ref.tag, digest: ref.digest };
}

describe('platform matcher', () => {
  /** The rank selectPlatform must give `d`: its position in the wanted platform's vector. */
  function rankOf(vector: Platform[], d: Descriptor): number | undefined {
    if (!d.platform || isAttestation(d)) return undefined;
    const have = normalizePlatform(d.platform);
    const index = vector.findIndex((want) => {
      if (want.os !== have.os || want.architecture !== have.architecture || (want.variant ?? '') !== (have.variant ?? '')) return false;
      const [w, h] = [want['os.version'], have['os.version']];
      // os.version only counts off Linux, and a longer build number matches its prefix.
      return want.os === 'linux' || !w || !h || h === w || h.startsWith(`${w}.`);
    });
    return index === -1 ? undefined : index;
  }

  it('picks the best-ranked, first-listed compatible entry, never an attestation; or throws NO_MATCHING_PLATFORM when none fits', () => {
    fc.assert(
      fc.property(indexEntries, wantedPlatform, (entries, wanted) => {
        const vector = compatiblePlatforms(wanted);
        const ranks = entries.map((d) => rankOf(vector, d));
        const best = Math.min(...ranks.map((r) => r ?? Number.POSITIVE_INFINITY));
        const r = attempt(() => selectPlatform(entries, wanted, 'fuzz'));
        if (best === Number.POSITIVE_INFINITY) {
          expect(r.ok ? 'chosen' : (r.error as PullUnpackError).code).toBe('NO_MATCHING_PLATFORM');
          return;
        }
        if (!r.ok) throw new Error(`no pick although entry ${ranks.indexOf(best)} fits: ${describeError(r.error)}`);
        const chosen = entries.indexOf(r.value.descriptor);
        expect(chosen).toBe(ranks.indexOf(best));
        expect(isAttestation(entries[chosen]!)).toBe(false);
        expect(r.value.platform).toEqual(normalizePlatform(entries[chosen]!.platform!));
        expect(
          vector.some(
            (v) =>
              v.os === r.value.platform.os &&
              v.architecture === r.value.platform.architecture &&
              (v.variant ?? '') === (r.value.platform.variant ?? ''),
          ),
        ).toBe(true);
        expect(r.value.reason.startsWith('exact match')).toBe(best === 0);
      }),
      { numRuns: 3000, seed: SEED },
    );
  });
});

describe('manifest parser', () => {
  /** What is wrong with a parsed descriptor, or undefined when it is well formed. */
  function descriptorProblem(value: unknown): string | undefined {
    const d = value as Record<string, unknown>;
    if (typeof d['mediaType'] !== 'string' || d['mediaType'] === '') return 'mediaType';
    if (typeof d['digest'] !== 'string' || !attempt(() => parseDigest(d['digest'] as string)).ok) return 'digest';
    if (typeof d['size'] !== 'number' || !Number.isSafeInteger(d['size']) || d['size'] < 0) return 'size';
    if (d['urls'] !== undefined && !(Array.isArray(d['urls']) && d['urls'].every((u) => typeof u === 'string'))) return 'urls';
    const p = d['platform'] as Record<string, unknown> | undefined;
    if (p === undefined) return undefined;
    if (typeof p !== 'object' || p === null || typeof p['os'] !== 'string' || typeof p['architecture'] !== 'string') return 'platform';
    for (const key of ['variant', 'os.version'])
      if (p[key] !== undefined && typeof p[key] !== 'string') return `platform.${key} is ${JSON.stringify(p[key])}`;
    const features = p['os.features'];
    if (features !== undefined && !(Array.isArray(features) && features.every((f) => typeof f === 'string')))
      return `platform.os.features is ${JSON.stringify(features)}`;
    return undefined;
  }

  /** parseManifest either refuses `bytes` with a PullUnpackError or returns a result every later stage can use. */
  function checkParse(bytes: Buffer, type: string | undefined): void {
    const r = attempt(() => parseManifest(bytes, type, 'fuzz'));
    if (!r.ok) {
      expect(r.error instanceof PullUnpackError, describeError(r.error)).toBe(true);
      return;
    }
    const parsed = r.value;
    const descriptors = parsed.kind === 'index' ? parsed.index.manifests : [parsed.manifest.config, ...parsed.manifest.layers];
    expect(Array.isArray(descriptors)).toBe(true);
    for (const d of descriptors) expect(descriptorProblem(d), JSON.stringify(d)).toBeUndefined();
    if (parsed.kind === 'index') {
      // The resolver's next step: choosing an entry must not trip over what parsing let through.
      const pick = attempt(() => selectPlatform(parsed.index.manifests, { os: 'linux', architecture: 'amd64' }, 'fuzz'));
      if (!pick.ok) expect(isPullUnpackError(pick.error, 'NO_MATCHING_PLATFORM'), describeError(pick.error)).toBe(true);
    }
  }

  it('random bytes and JSON: a PullUnpackError or a result, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)),
          fc.json({ maxDepth: 3 }).map((t) => Buffer.from(t)),
        ),
        contentType,
        (bytes, type) => checkParse(bytes, type),
      ),
      { numRuns: 2000, seed: SEED },
    );
  });

  it('nearly valid manifests and indexes, also damaged byte by byte: a PullUnpackError or a well-formed result', () => {
    fc.assert(
      fc.property(manifestLike, contentType, damageSpec, (doc, type, how) =>
        checkParse(damage(Buffer.from(JSON.stringify(doc)), how), type),
      ),
      { numRuns: 3000, seed: SEED },
    );
  });

  it('valid manifests and indexes with one value replaced or removed: a PullUnpackError or a well-formed result', () => {
    fc.assert(
      fc.property(mutatedManifest, contentType, (doc, type) => checkParse(Buffer.from(JSON.stringify(doc)), type)),
      { numRuns: 3000, seed: SEED },
    );
  });

  it('an index entry whose platform.variant or os.version is not a string is INVALID_MANIFEST, not a TypeError later', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    for (const platform of [
      { os: 'linux', architecture: 'arm', variant: 7 },
      { os: 'windows', architecture: 'amd64', 'os.version': 10 },
    ]) {
      const bytes = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 1, platform }],
        }),
      );
      const parsed = attempt(() => parseManifest(bytes, undefined, 'fuzz'));
      const then =
        parsed.ok && parsed.value.kind === 'index'
          ? attempt(() =>
              selectPlatform(
                parsed.value.kind === 'index' ? parsed.value.index.manifests : [],
                { os: 'windows', architecture: 'amd64', 'os.version': '10.0' },
                'fuzz',
              ),
            )
          : undefined;
      expect({
        parsed: parsed.ok ? 'accepted' : (parsed.error as PullUnpackError).code,
        then: then && (then.ok ? 'chosen' : describeError(then.error)),
      }).toEqual({ parsed: 'INVALID_MANIFEST', then: undefined });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The layer applier

describe('layer applier', () => {
  const outcomes = new Map<string, number>();

  afterAll(() => {
    // Shows how often runs fail and why (a fuzzer that only ever fails early tests little).
    console.info(`applier fuzz outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}`);
  });

  it('random layer stacks: success or a PullUnpackError, nothing outside the root touched, no whiteout left', async () => {
    const deadline = Date.now() + TIME_BUDGET_MS;
    await fc.assert(
      fc.asyncProperty(layerStack, async (stack) => {
        if (Date.now() > deadline) return;
        const ws = await makeWorkspace(true);
        try {
          const before = await outsideState(ws);
          const err = await applyStack(ws, await buildStack(stack, ws));
          const outcome = err === undefined ? 'ok' : isPullUnpackError(err) ? err.code : `unexpected ${describeError(err)}`;
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
          if (err !== undefined && !isPullUnpackError(err)) throw err;
          await expectOutsideUnchanged(ws, before, true);
          expect((await lstat(ws.root)).isDirectory()).toBe(true);
          if (err === undefined) expect(await whiteoutNames(ws.root)).toEqual([]);
        } finally {
          await removeWorkspace(ws);
        }
      }),
      { numRuns: 400, seed: SEED },
    );
    const runs = [...outcomes.values()].reduce((a, b) => a + b, 0);
    expect(runs).toBeGreaterThanOrEqual(40);
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(runs / 5);
  });

  it('a hardlink whose target lies inside the path it replaces is CORRUPT_LAYER, not a filesystem error', async () => {
    // Found by the fuzzer: "q1" (a directory holding q1/f1) is removed to make room for the
    // link, which takes its target with it; link(2) then fails with ENOENT and the error is
    // reported as DESTINATION_INVALID ("the filesystem refuses"), blaming the user's disk.
    const ws = await makeWorkspace(true);
    try {
      const layers = [await buildTar([{ name: 'q1/f1', content: 'x' }]), await buildTar([{ name: 'q1', type: 'link', linkname: 'q1/f1' }])];
      const err = await applyStack(ws, layers);
      expect(isPullUnpackError(err) ? { code: err.code, message: err.message } : describeError(err)).toEqual({
        code: 'CORRUPT_LAYER',
        message: expect.stringContaining('q1'),
      });
    } finally {
      await removeWorkspace(ws);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Full pulls of random stacks

describe('pull() of random layer stacks from the registry', () => {
  let registry: { host: string; url: string };
  let cacheRoot: string;
  let runs = 0;
  const outcomes: string[] = [];

  beforeAll(async () => {
    registry = testRegistry();
    cacheRoot = await mkdtemp(join(tmpdir(), 'pu-fuzz-cache-'));
  });

  afterAll(async () => {
    console.info(`pull fuzz outcomes: ${outcomes.join(', ')}`);
    if (cacheRoot) await rm(cacheRoot, { recursive: true, force: true });
  });

  it('a pull fails exactly when applying the stack directly fails; a failed pull leaves DIR as it was and no staging directory', async () => {
    const deadline = Date.now() + TIME_BUDGET_MS;
    await fc.assert(
      fc.asyncProperty(
        layerStack,
        fc.constantFrom<'absent' | 'empty' | 'populated'>('absent', 'empty', 'populated'),
        async (stack, destination) => {
          if (Date.now() > deadline) return;
          const ws = await makeWorkspace(destination !== 'absent');
          const direct = await makeWorkspace(true);
          try {
            if (destination === 'populated') {
              await mkdir(join(ws.root, 'old', 'q1'), { recursive: true });
              await writeFile(join(ws.root, 'old', 'q1', 'keep'), 'previous content\n');
              await symlink('../sentinel', join(ws.root, 'q1'));
            }
            const before = await outsideState(ws);
            const tars = await buildStack(stack, ws);
            // The same bytes applied directly: absolute targets are re-rooted, so either root sees the same.
            const expectedErr = await applyStack(direct, tars);
            const repo = uniqueRepo('fuzz');
            await pushImage(registry.url, repo, 'v1', { layers: tars.map((tar) => ({ tar })) });
            const dirBefore = destination === 'absent' ? undefined : await snapshotTree(ws.root);
            let err: unknown;
            try {
              await pull(`${registry.host}/${repo}:v1`, ws.root, { force: true, cacheDir: join(cacheRoot, String(++runs)) });
            } catch (e) {
              err = e;
            }
            outcomes.push(err === undefined ? 'ok' : isPullUnpackError(err) ? err.code : describeError(err));
            if (err !== undefined && !isPullUnpackError(err)) throw err;
            // Nothing beside DIR: no staging directory left, success or not.
            expect((await readdir(ws.work)).sort()).toEqual(
              err === undefined || destination !== 'absent' ? ['root', 'sentinel'] : ['sentinel'],
            );
            await expectOutsideUnchanged(ws, before, false);
            expect(err === undefined ? 'ok' : err.code).toBe(expectedErr === undefined ? 'ok' : (expectedErr as PullUnpackError).code);
            if (err !== undefined) {
              if (dirBefore) expect(diffTrees(dirBefore, await snapshotTree(ws.root))).toEqual([]);
              return;
            }
            // The pulled tree is the directly applied one (implicit parents get "now" as mtime: ignored).
            const pulled = await snapshotTree(ws.root);
            const applied = await snapshotTree(direct.root);
            pulled.delete('.');
            applied.delete('.');
            expect(diffTrees(applied, pulled, { ignoreDirMtime: true })).toEqual([]);
          } finally {
            await removeWorkspace(ws);
            await removeWorkspace(direct);
          }
        },
      ),
      { numRuns: 10, seed: SEED },
    );
  });
});
