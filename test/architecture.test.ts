/**
 * The shape of src/ (STYLE.md, README "Architecture"): folders are stages in the order data
 * flows, imports point only back up that order (towards the image reference), no module imports
 * itself through others, and only the CLI touches the process's streams, environment and argv.
 * Read from the TypeScript sources with the compiler's own import scanner.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '..', 'src');

/**
 * The stages, first to last. A module may import its own stage's modules and those of earlier
 * stages, never a later one: errors and limits are shared by all; pull wires the stages below
 * it; index is the public API; only the CLI sits above it.
 */
const STAGES = [
  'errors',
  'limits',
  'programs',
  'image',
  'registry',
  'tar',
  'sources',
  'trust',
  'store',
  'layer',
  'apply',
  'outputs',
  'pull',
  'index',
  'cli',
] as const;

/** Stages that unpack bytes: they never learn where the bytes came from. */
const OFFLINE_STAGES = ['tar', 'layer', 'apply'];
const NETWORK_STAGES = ['registry', 'sources', 'trust', 'store'];

/** What only the CLI may touch (the library reports through callbacks and takes options). */
const PROCESS_ONLY_IN_CLI = ['stdout', 'stderr', 'stdin', 'env', 'argv', 'exit', 'exitCode'];
/**
 * The one exception: programs.ts gives the programs it runs this process's PATH (and nothing
 * else of its environment), as a shell would.
 */
const PROCESS_ENV_ALLOWED = new Set(['programs.ts']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** src-relative paths of the modules `file` imports (static, type-only, re-exports and dynamic import()). */
function importsOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((name) => name.startsWith('.'))
    .map((name) => relative(SRC, resolve(dirname(file), name)).replace(/\.js$/, '.ts'));
}

/** The stage of a src-relative module path: its folder, or its name for a top-level file. */
function stageOf(module: string): string {
  const slash = module.indexOf('/');
  return slash === -1 ? module.replace(/\.ts$/, '') : module.slice(0, slash);
}

const modules = new Map(sourceFiles(SRC).map((file) => [relative(SRC, file), importsOf(file)]));

/** Every import cycle, each as the chain of modules that closes it. */
function cycles(): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (module: string): void => {
    state.set(module, 'open');
    path.push(module);
    for (const next of modules.get(module) ?? []) {
      if (state.get(next) === 'open') found.push([...path.slice(path.indexOf(next)), next]);
      else if (!state.has(next) && modules.has(next)) visit(next);
    }
    path.pop();
    state.set(module, 'done');
  };
  for (const module of [...modules.keys()].sort()) if (!state.has(module)) visit(module);
  return found;
}

describe('the import graph of src/', () => {
  it('has every module in a known stage and resolves every relative import', () => {
    const unknown = [...modules.keys()].filter((m) => !(STAGES as readonly string[]).includes(stageOf(m)));
    const dangling = [...modules].flatMap(([m, deps]) => deps.filter((d) => !modules.has(d)).map((d) => `${m} -> ${d}`));
    expect({ unknown, dangling }).toEqual({ unknown: [], dangling: [] });
  });

  it('has no import cycles, type-only imports included', () => {
    expect(cycles().map((c) => c.join(' -> '))).toEqual([]);
  });

  it('imports only from the same or an earlier stage (cli -> pull -> outputs ... -> registry -> image)', () => {
    const rank = (module: string): number => (STAGES as readonly string[]).indexOf(stageOf(module));
    const upward = [...modules].flatMap(([m, deps]) => deps.filter((d) => rank(d) > rank(m)).map((d) => `${m} -> ${d}`));
    expect(upward).toEqual([]);
  });

  it('keeps tar/, layer/ and apply/ away from registry/, sources/, trust/ and store/', () => {
    const crossing = [...modules].flatMap(([m, deps]) =>
      OFFLINE_STAGES.includes(stageOf(m)) ? deps.filter((d) => NETWORK_STAGES.includes(stageOf(d))).map((d) => `${m} -> ${d}`) : [],
    );
    expect(crossing).toEqual([]);
  });

  it('lets only cli/ print, exit or read process.env and argv', () => {
    const touches: string[] = [];
    for (const module of modules.keys()) {
      if (stageOf(module) === 'cli') continue;
      const file = join(SRC, module);
      const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
      const visit = (node: ts.Node): void => {
        if (ts.isPropertyAccessExpression(node) || ts.isElementAccessExpression(node)) {
          const target = node.expression.getText(source);
          const name = ts.isPropertyAccessExpression(node) ? node.name.text : node.argumentExpression.getText(source).replace(/['"]/g, '');
          const allowed = name === 'env' && PROCESS_ENV_ALLOWED.has(module);
          if (target === 'process' && PROCESS_ONLY_IN_CLI.includes(name) && !allowed) touches.push(`${module}: process.${name}`);
          if (target === 'console') touches.push(`${module}: console.${name}`);
        }
        ts.forEachChild(node, visit);
      };
      visit(source);
    }
    expect(touches).toEqual([]);
  });
});
