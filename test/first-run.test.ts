/**
 * Install and first run (issue 14): shell completion sourced in a real bash and a real zsh and
 * asked to complete, checked against the CLI's own option tables; the manual page rendered by
 * groff and checked against the same tables; a fresh copy of the repository packed with
 * `npm pack` and installed offline (the tarball into a project, the clone globally with its
 * man page); and `make demo`'s script run with a HOME of its own, leaving no blob cache behind.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INSPECT_OPTIONS, PULL_OPTIONS } from '../src/cli/main.js';
import { CACHE_OPTIONS } from '../src/cli/cache.js';
import type { OptionTable } from '../src/cli/completion.js';
import { BIN } from './helpers/crash-fixtures.js';
import { runCli } from './helpers/registry.js';
import { openTerminal } from './helpers/tmux.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAN_PAGE = join(ROOT, 'docs', 'pull-unpack.1');

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'pu-first-run-'));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Every option of a table as the command line spells it: `--name` and `-x`. */
function spelled(table: OptionTable): string[] {
  return Object.entries(table).flatMap(([name, o]) => [`--${name}`, ...(o.short ? [`-${o.short}`] : [])]);
}

// ---- shell completion ----

/**
 * Sources `pull-unpack completion bash` in a real bash (in `cwd`) and completes `line`, whose
 * last word (possibly empty) is the one being completed; returns COMPREPLY sorted.
 */
async function completeBash(line: string, cwd = work): Promise<string[]> {
  const script = [
    `source <('${process.execPath}' '${BIN}' completion bash)`,
    // As bash fills them for `complete -F`, splitting at COMP_WORDBREAKS (':' and '=' too).
    'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}',
    'COMP_WORDS=(); w=""; for ((k = 0; k < ${#COMP_LINE}; k++)); do c="${COMP_LINE:k:1}";',
    '  case "$c" in " ") [ -n "$w" ] && COMP_WORDS+=("$w"); w="" ;; ":"|"=") [ -n "$w" ] && COMP_WORDS+=("$w"); COMP_WORDS+=("$c"); w="" ;; *) w+="$c" ;; esac; done',
    // A line ending at a word break completes that break itself ("--output=" has cur "=").
    '{ [ -n "$w" ] || [ "${COMP_LINE: -1}" = " " ]; } && COMP_WORDS+=("$w"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))',
    'complete -p pull-unpack >/dev/null || exit 3',
    '_pull_unpack pull-unpack "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"',
    'printf "%s\\n" "${COMPREPLY[@]}"',
  ].join('\n');
  const { stdout } = await run('bash', ['--norc', '--noprofile', '-c', script, 'bash', line], { cwd });
  return stdout.split('\n').filter(Boolean).sort();
}

/** The same in a real zsh, through compinit and bashcompinit as a user's shell has them. */
async function completeZsh(words: string[], cwd = work): Promise<string[]> {
  const script = [
    `source <('${process.execPath}' '${BIN}' completion zsh)`,
    '[[ $_comps[pull-unpack] == "_bash_complete -F _pull_unpack" ]] || exit 3',
    // What zsh's _bash_complete sets up before it runs compgen -F for the word being completed
    // (PREFIX is that word, as zsh's completion sets it).
    'words=("$@"); CURRENT=$#; PREFIX="${words[CURRENT]}"; COMP_WORDS=("$@"); COMP_CWORD=$((CURRENT - 1))',
    'compgen -F _pull_unpack -- "${words[CURRENT]}"',
  ].join('\n');
  const { stdout } = await run('zsh', ['-f', '-c', script, 'zsh', ...words], { cwd, env: { ...process.env, HOME: work, ZDOTDIR: work } });
  // _bash_complete hands these to compadd, which keeps those matching the word typed so far.
  const typed = words.at(-1) ?? '';
  return stdout
    .split('\n')
    .filter((m) => m && m.startsWith(typed))
    .sort();
}

describe('shell completion', () => {
  let tree: string;

  beforeAll(async () => {
    tree = join(work, 'tree');
    await mkdir(join(tree, 'aa-dir'), { recursive: true });
    await mkdir(join(tree, 'ab-dir'));
    await writeFile(join(tree, 'ac-file'), '');
    await writeFile(join(tree, 'certs.pem'), '');
  });

  it('bash: offers exactly the options each command accepts, from the option tables', async () => {
    expect(await completeBash('pull-unpack --')).toEqual(
      spelled(PULL_OPTIONS)
        .filter((f) => f.startsWith('--'))
        .sort(),
    );
    expect(await completeBash('pull-unpack inspect -')).toEqual(spelled(INSPECT_OPTIONS).sort());
    expect(await completeBash('pull-unpack cache prune --')).toEqual(
      spelled(CACHE_OPTIONS)
        .filter((f) => f.startsWith('--'))
        .sort(),
    );
    expect(await completeBash('pull-unpack cache prune -')).toEqual(spelled(CACHE_OPTIONS).sort());
    expect(await completeBash('pull-unpack --pla')).toEqual(['--platform']);
    expect(await completeBash('pull-unpack inspect --fo')).toEqual([]);
  });

  it('bash: subcommands, their words, and the values of --output, --volume-mode and --platform', async () => {
    expect(await completeBash('pull-unpack ')).toEqual(['cache', 'completion', 'help', 'inspect']);
    expect(await completeBash('pull-unpack cache ')).toEqual(['ls', 'prune']);
    expect(await completeBash('pull-unpack completion ')).toEqual(['bash', 'zsh']);
    expect(await completeBash('pull-unpack alpine --output ')).toEqual(['oci', 'rootfs', 'tar']);
    expect(await completeBash('pull-unpack alpine -o t')).toEqual(['tar']);
    expect(await completeBash('pull-unpack alpine --output=')).toEqual(['oci', 'rootfs', 'tar']);
    expect(await completeBash('pull-unpack --bundle --volume-mode ')).toEqual(['none', 'tmpfs']);
    expect(await completeBash('pull-unpack --platform linux/arm')).toEqual(['linux/arm/v6', 'linux/arm/v7', 'linux/arm64']);
  });

  it('bash: DIR after IMAGE completes directories (an option value or a host:port is not IMAGE), files for --cacert', async () => {
    expect(await completeBash('pull-unpack alpine a', tree)).toEqual(['aa-dir', 'ab-dir']);
    expect(await completeBash('pull-unpack --platform linux/arm64 localhost:5000/app a', tree)).toEqual(['aa-dir', 'ab-dir']);
    expect(await completeBash('pull-unpack a', tree)).toEqual([]);
    expect(await completeBash('pull-unpack --cacert c', tree)).toEqual(['certs.pem']);
    expect(await completeBash('pull-unpack --bundle alpine ./b -- a', tree)).toEqual([]);
  });

  it('zsh: the script loads compinit and bashcompinit and completes options, values and subcommands', async () => {
    expect(await completeZsh(['pull-unpack', '--pla'])).toEqual(['--platform']);
    expect(await completeZsh(['pull-unpack', '--'])).toEqual(
      spelled(PULL_OPTIONS)
        .filter((f) => f.startsWith('--'))
        .sort(),
    );
    expect(await completeZsh(['pull-unpack', 'alpine', '--output', ''])).toEqual(['oci', 'rootfs', 'tar']);
    expect(await completeZsh(['pull-unpack', 'cache', ''])).toEqual(['ls', 'prune']);
    expect(await completeZsh(['pull-unpack', 'alpine', 'a'], tree)).toEqual(['aa-dir', 'ab-dir']);
  });

  it('in an interactive bash and zsh on a terminal, Tab completes --pla to --platform and --output to its values', async () => {
    for (const shell of [
      ['bash', '--norc', '--noprofile'],
      ['zsh', '-f'],
    ]) {
      const t = await openTerminal({
        columns: 120,
        rows: 20,
        cwd: work,
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: work },
        shell,
      });
      try {
        await t.type(`source <('${process.execPath}' '${BIN}' completion ${shell[0]}); echo loaded`);
        await t.waitFor((lines) => lines.includes('loaded'), `the ${shell[0]} completion loaded`, 20_000);
        await t.keys('-l', 'pull-unpack --pla');
        await t.keys('Tab');
        await t.waitFor((lines) => lines.some((l) => l.endsWith('pull-unpack --platform')), `${shell[0]}: --pla completed`, 20_000);
        await t.keys('-l', 'linux/arm64 alpine --output r');
        await t.keys('Tab');
        await t.waitFor(
          (lines) => lines.some((l) => /pull-unpack --platform +linux\/arm64 alpine --output rootfs$/.test(l)),
          `${shell[0]}: --output r completed`,
          20_000,
        );
      } finally {
        await t.close();
      }
    }
  });

  it('completion without bash or zsh is a usage error', async () => {
    const r = await runCli(['completion', 'fish']);
    expect(r).toMatchObject({ code: 2, stdout: '' });
    expect(r.stderr).toContain('completion takes one shell: bash or zsh');
  });
});

// ---- the manual page and --help ----

describe('the manual page', () => {
  it('renders with groff without a warning and documents every option of every command', async () => {
    const { stderr } = await run('groff', ['-man', '-Tutf8', '-ww', '-z', MAN_PAGE]);
    expect(stderr).toBe('');
    const page = (await readFile(MAN_PAGE, 'utf8')).replace(/\\-/g, '-');
    const missing = [...spelled(PULL_OPTIONS), ...spelled(INSPECT_OPTIONS), ...spelled(CACHE_OPTIONS)].filter(
      (flag) => !new RegExp(`(^|[^\\w-])${flag.replace(/-/g, '\\-')}(?![\\w-])`, 'm').test(page),
    );
    expect(missing).toEqual([]);
    for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'ENVIRONMENT', 'FILES', 'EXIT STATUS', 'EXAMPLES']) {
      expect(page).toMatch(new RegExp(`^\\.SH "?${section}"?$`, 'm'));
    }
  });

  it('--help names every long option of every command, and the completion command', async () => {
    const help = (await runCli(['--help'])).stdout;
    const missing = [...spelled(PULL_OPTIONS), ...spelled(INSPECT_OPTIONS), ...spelled(CACHE_OPTIONS)]
      .filter((f) => f.startsWith('--'))
      .filter((f) => !new RegExp(`${f}(?![\\w-])`).test(help));
    expect(missing).toEqual([]);
    expect(help).toContain('pull-unpack completion bash|zsh');
  });
});

// ---- install ----

describe('install', () => {
  let copy: string;
  let tarball: string;

  beforeAll(async () => {
    // A fresh clone: the files git would check out, no dist/; node_modules from this checkout.
    copy = join(work, 'clone');
    const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT });
    for (const file of stdout.split('\0').filter(Boolean)) {
      if (!existsSync(join(ROOT, file))) continue;
      await mkdir(dirname(join(copy, file)), { recursive: true });
      await cp(join(ROOT, file), join(copy, file));
    }
    await symlink(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
    expect(existsSync(join(copy, 'dist'))).toBe(false);
    const packed = JSON.parse((await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: copy })).stdout) as Array<{
      filename: string;
      files: Array<{ path: string }>;
    }>;
    tarball = join(work, packed[0]!.filename);
  }, 180_000);

  it('npm pack of a fresh clone builds dist/ and ships the command, the library and the man page, not the sources', async () => {
    const { stdout } = await run('tar', ['-tzf', tarball]);
    const files = stdout.split('\n').filter(Boolean);
    expect(files).toEqual(
      expect.arrayContaining([
        'package/bin/pull-unpack.js',
        'package/dist/cli/main.js',
        'package/dist/index.d.ts',
        'package/docs/pull-unpack.1',
        'package/README.md',
      ]),
    );
    expect(files.filter((f) => /^package\/(src|test|testdata|scripts)\//.test(f))).toEqual([]);
  });

  it('the tarball installs (offline, its dependencies from the lockfile) and runs', async () => {
    const project = join(work, 'project');
    await mkdir(project);
    await cp(tarball, join(project, 'pull-unpack.tgz'));
    await writeFile(
      join(project, 'package.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, dependencies: { 'pull-unpack': 'file:pull-unpack.tgz' } }),
    );
    await writeFile(join(project, 'package-lock.json'), JSON.stringify(await consumerLock()));
    await run('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project });
    const { stdout } = await run(join(project, 'node_modules', '.bin', 'pull-unpack'), ['--version']);
    expect(stdout).toBe('pull-unpack 0.1.0\n');
  });

  it('npm install -g of the clone puts pull-unpack on PATH and its man page where man finds it', async () => {
    const prefix = join(work, 'prefix');
    await run('npm', ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', '--loglevel=error', copy], {
      cwd: work,
    });
    const { stdout } = await run('pull-unpack', ['--version'], {
      env: { ...process.env, PATH: `${join(prefix, 'bin')}:${process.env['PATH']}` },
    });
    expect(stdout).toBe('pull-unpack 0.1.0\n');
    const man = await run('man', ['-w', 'pull-unpack'], { env: { ...process.env, MANPATH: join(prefix, 'share', 'man') } });
    expect(man.stdout.trim()).toBe(join(copy, 'docs', 'pull-unpack.1'));
  });

  it('the README says how: npm install -g . or npm link from a clone, npm pack for a tarball, and that npx needs the published package', async () => {
    const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    const top = readme.slice(0, readme.indexOf('\n## '));
    for (const command of [
      'npm ci && npm run build',
      'npm install -g .',
      'npm link',
      'npm pack',
      'npm install -g ./pull-unpack-0.1.0.tgz',
      'man pull-unpack',
    ]) {
      expect(top).toContain(command);
    }
    expect(top).toMatch(/`npx pull-unpack` runs the package published on the\s+npm registry/);
  });
});

/**
 * A lockfile for a project depending on the tarball, with this checkout's locked versions of its
 * dependencies (npm ci of this checkout put them in the npm cache, so no registry is asked).
 */
async function consumerLock(): Promise<unknown> {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dependencies?: Record<string, string>; dev?: boolean; engines?: unknown }>;
  };
  const root = lock.packages['']!;
  const packages: Record<string, unknown> = {
    '': { name: 'consumer', version: '1.0.0', dependencies: { 'pull-unpack': 'file:pull-unpack.tgz' } },
    'node_modules/pull-unpack': {
      version: '0.1.0',
      resolved: 'file:pull-unpack.tgz',
      dependencies: root.dependencies,
      bin: { 'pull-unpack': 'bin/pull-unpack.js' },
      engines: root.engines,
    },
  };
  const add = (name: string): void => {
    const key = `node_modules/${name}`;
    if (packages[key]) return;
    const { dev: _dev, ...entry } = lock.packages[key]!;
    packages[key] = entry;
    for (const dep of Object.keys(entry.dependencies ?? {})) add(dep);
  };
  for (const dep of Object.keys(root.dependencies ?? {})) add(dep);
  return { name: 'consumer', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

// ---- make demo ----

describe('make demo', () => {
  it("runs the tour with a temporary blob cache: nothing is left in the user's cache", async () => {
    const home = join(work, 'home');
    await mkdir(home);
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, PULL_UNPACK_DEMO_SKIP_SETUP: '1' };
    delete env['XDG_CACHE_HOME'];
    const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(join(ROOT, 'scripts', 'demo.sh'), [], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, out }));
    });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/\$ \.\/bin\/pull-unpack\.js \S+\/demo\/hello:latest \S+\/rootfs\n.* -> \S+\/rootfs \(/);
    expect(existsSync(join(home, '.cache'))).toBe(false);
    expect(await readdir(home)).toEqual([]);
  }, 120_000);
});
