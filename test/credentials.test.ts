import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  credentialHelperRunner,
  credentialProvider,
  findCredentials,
  readPasswordFromStream,
  type CredentialLookupOptions,
  type HelperResult,
} from '../src/registry/credentials.js';
import { isPullUnpackError } from '../src/errors.js';

let root: string;
let home: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'credentials-test-'));
  home = join(root, 'home');
  await mkdir(home);
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');

async function writeJson(file: string, doc: unknown): Promise<string> {
  await mkdir(join(file, '..'), { recursive: true });
  await writeFile(file, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return file;
}

const dockerConfig = (doc: unknown): Promise<string> => writeJson(join(home, '.docker', 'config.json'), doc);

interface Harness {
  options: CredentialLookupOptions;
  notices: string[];
  helperCalls: Array<[string, string]>;
}

/** Options with an isolated HOME and a fake helper runner answering from `helpers`. */
function harness(env: NodeJS.ProcessEnv = {}, helpers: Record<string, HelperResult> = {}): Harness {
  const notices: string[] = [];
  const helperCalls: Array<[string, string]> = [];
  const options: CredentialLookupOptions = {
    env,
    homeDir: home,
    onNotice: (m) => notices.push(m),
    runHelper: async (name, serverUrl) => {
      helperCalls.push([name, serverUrl]);
      return helpers[name] ?? { status: 'missing' };
    },
  };
  return { options, notices, helperCalls };
}

const helperAnswer = (username: string, secret: string, serverUrl = 'x'): HelperResult => ({
  status: 'exited',
  exitCode: 0,
  stdout: JSON.stringify({ ServerURL: serverUrl, Username: username, Secret: secret }),
  stderr: '',
});

describe('docker config auths entries', () => {
  it('decodes a base64 auth whose password contains colons', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('alice:pa:ss:word') } } });
    const h = harness();
    expect(await findCredentials('ghcr.io', h.options)).toEqual({ username: 'alice', password: 'pa:ss:word' });
    expect(h.notices).toEqual([]);
  });

  it('reads username + password fields', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { username: 'bob', password: 's3cret' } } });
    expect(await findCredentials('ghcr.io', harness().options)).toEqual({ username: 'bob', password: 's3cret' });
  });

  it('reads an identitytoken', async () => {
    await dockerConfig({ auths: { 'myreg.example': { identitytoken: 'refresh-token-value' } } });
    expect(await findCredentials('myreg.example', harness().options)).toEqual({ identityToken: 'refresh-token-value' });
  });

  it('keeps username and identitytoken together when both are present', async () => {
    await dockerConfig({ auths: { 'myreg.example': { auth: b64('carol:'), identitytoken: 'tok' } } });
    expect(await findCredentials('myreg.example', harness().options)).toEqual({ username: 'carol', password: '', identityToken: 'tok' });
  });

  it('ignores an auth that is not user:password, with a notice that holds no secret', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('no-colon-here') } } });
    const h = harness();
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.notices).toHaveLength(1);
    expect(h.notices[0]).toContain('not base64');
    expect(h.notices[0]).not.toContain('no-colon-here');
    expect(h.notices[0]).not.toContain(b64('no-colon-here'));
  });

  it('returns undefined for a registry with no entry', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('a:b') } } });
    const h = harness();
    expect(await findCredentials('quay.io', h.options)).toBeUndefined();
    expect(h.notices).toEqual([]);
  });

  it('skips an empty entry (as docker login leaves with a store)', async () => {
    await dockerConfig({ auths: { 'ghcr.io': {} } });
    expect(await findCredentials('ghcr.io', harness().options)).toBeUndefined();
  });
});

describe('config keys', () => {
  it.each(['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io', 'https://registry-1.docker.io'])(
    'matches Docker Hub under the key %s',
    async (key) => {
      await dockerConfig({ auths: { [key]: { auth: b64('hubuser:hubpass') } } });
      expect(await findCredentials('docker.io', harness().options)).toEqual({ username: 'hubuser', password: 'hubpass' });
    },
  );

  it('prefers the legacy Docker Hub key over other spellings', async () => {
    await dockerConfig({
      auths: { 'docker.io': { auth: b64('other:x') }, 'https://index.docker.io/v1/': { auth: b64('legacy:y') } },
    });
    expect(await findCredentials('docker.io', harness().options)).toEqual({ username: 'legacy', password: 'y' });
  });

  it('matches https://host:port to host:port', async () => {
    await dockerConfig({ auths: { 'https://myreg.example:5000': { auth: b64('u:p') } } });
    expect(await findCredentials('myreg.example:5000', harness().options)).toEqual({ username: 'u', password: 'p' });
    expect(await findCredentials('myreg.example', harness().options)).toBeUndefined();
  });

  it('matches http://host/v2/ to host', async () => {
    await dockerConfig({ auths: { 'http://myreg.example/v2/': { auth: b64('u:p') } } });
    expect(await findCredentials('myreg.example', harness().options)).toEqual({ username: 'u', password: 'p' });
  });

  it('matches an IPv4 loopback registry with a port', async () => {
    await dockerConfig({ auths: { '127.0.0.1:5000': { username: 'u', password: 'p' } } });
    expect(await findCredentials('127.0.0.1:5000', harness().options)).toEqual({ username: 'u', password: 'p' });
    expect(await findCredentials('127.0.0.1:5001', harness().options)).toBeUndefined();
  });
});

describe('config file location', () => {
  it('reads $DOCKER_CONFIG/config.json instead of ~/.docker/config.json when DOCKER_CONFIG is set', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('from-home:x') } } });
    const dir = join(root, 'docker-config');
    await writeJson(join(dir, 'config.json'), { auths: { 'ghcr.io': { auth: b64('from-docker-config:y') } } });
    expect(await findCredentials('ghcr.io', harness({ DOCKER_CONFIG: dir }).options)).toEqual({
      username: 'from-docker-config',
      password: 'y',
    });
    expect(await findCredentials('ghcr.io', harness().options)).toEqual({ username: 'from-home', password: 'x' });
  });

  it('uses env.HOME when homeDir is not given', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('envhome:x') } } });
    expect(await findCredentials('ghcr.io', { env: { HOME: home } })).toEqual({ username: 'envhome', password: 'x' });
  });

  it('takes DOCKER_AUTH_CONFIG before the config file', async () => {
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('file:x') } } });
    const env = { DOCKER_AUTH_CONFIG: JSON.stringify({ auths: { 'ghcr.io': { auth: b64('env:y') } } }) };
    expect(await findCredentials('ghcr.io', harness(env).options)).toEqual({ username: 'env', password: 'y' });
    expect(await findCredentials('quay.io', harness(env).options)).toBeUndefined();
  });
});

describe('credential helpers', () => {
  it('asks the credHelpers entry for its registry with the bare host as server URL', async () => {
    await dockerConfig({ credHelpers: { 'ghcr.io': 'ghhelper' }, auths: { 'ghcr.io': { auth: b64('file:x') } } });
    const h = harness({}, { ghhelper: helperAnswer('helperuser', 'helperpass') });
    expect(await findCredentials('ghcr.io', h.options)).toEqual({ username: 'helperuser', password: 'helperpass' });
    expect(h.helperCalls).toEqual([['ghhelper', 'ghcr.io']]);
  });

  it('does not ask a credHelpers entry for another registry', async () => {
    await dockerConfig({ credHelpers: { 'ghcr.io': 'ghhelper' }, auths: { 'quay.io': { auth: b64('q:x') } } });
    const h = harness({}, { ghhelper: helperAnswer('helperuser', 'helperpass') });
    expect(await findCredentials('quay.io', h.options)).toEqual({ username: 'q', password: 'x' });
    expect(h.helperCalls).toEqual([]);
  });

  it('asks credsStore for every registry without a credHelpers entry, giving Docker Hub its legacy URL', async () => {
    await dockerConfig({ credsStore: 'desktop', credHelpers: { 'ghcr.io': 'ghhelper' }, auths: { 'https://index.docker.io/v1/': {} } });
    const h = harness({}, { desktop: helperAnswer('hub', 'hubpass'), ghhelper: helperAnswer('gh', 'ghpass') });
    expect(await findCredentials('docker.io', h.options)).toEqual({ username: 'hub', password: 'hubpass' });
    expect(await findCredentials('ghcr.io', h.options)).toEqual({ username: 'gh', password: 'ghpass' });
    expect(await findCredentials('127.0.0.1:5000', h.options)).toEqual({ username: 'hub', password: 'hubpass' });
    expect(h.helperCalls).toEqual([
      ['desktop', 'https://index.docker.io/v1/'],
      ['ghhelper', 'ghcr.io'],
      ['desktop', '127.0.0.1:5000'],
    ]);
  });

  it('uses only the store when credsStore is set, as docker does (file auths are not read)', async () => {
    await dockerConfig({ credsStore: 'desktop', auths: { 'ghcr.io': { auth: b64('file:x') } } });
    const h = harness({}, { desktop: { status: 'exited', exitCode: 1, stdout: 'credentials not found in native keychain\n', stderr: '' } });
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.notices).toEqual([
      'credential helper docker-credential-desktop has no credentials for ghcr.io (pulling from ghcr.io anonymously)',
    ]);
  });

  it('maps Username "<token>" to an identity token', async () => {
    await dockerConfig({ credsStore: 'store' });
    const h = harness({}, { store: helperAnswer('<token>', 'identity-token-value') });
    expect(await findCredentials('myreg.example', h.options)).toEqual({ identityToken: 'identity-token-value' });
  });

  it('a missing helper is a notice and the lookup goes on anonymously', async () => {
    await dockerConfig({ credsStore: 'nosuch' });
    const h = harness();
    expect(await findCredentials('docker.io', h.options)).toBeUndefined();
    expect(h.notices).toEqual(['credential helper docker-credential-nosuch not found on PATH (pulling from docker.io anonymously)']);
  });

  it('a missing helper falls through to podman auth.json', async () => {
    await dockerConfig({ credsStore: 'nosuch' });
    const authFile = await writeJson(join(root, 'auth.json'), { auths: { 'docker.io': { auth: b64('podman:p') } } });
    const h = harness({ REGISTRY_AUTH_FILE: authFile });
    expect(await findCredentials('docker.io', h.options)).toEqual({ username: 'podman', password: 'p' });
    expect(h.notices).toEqual([`credential helper docker-credential-nosuch not found on PATH (using credentials from ${authFile})`]);
  });

  it('a failing helper is a notice with its redacted output', async () => {
    await dockerConfig({ credsStore: 'broken' });
    const stderr = 'error: token=abcdef0123456789 rejected';
    const h = harness({}, { broken: { status: 'exited', exitCode: 3, stdout: '', stderr } });
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.notices).toHaveLength(1);
    expect(h.notices[0]).toContain('docker-credential-broken failed (exit 3)');
    expect(h.notices[0]).not.toContain('abcdef0123456789');
  });

  it('a helper timeout, a crash, or a rejecting runner are notices', async () => {
    await dockerConfig({ credsStore: 'slow' });
    for (const runHelper of [
      async (): Promise<HelperResult> => ({ status: 'timeout' }),
      async (): Promise<HelperResult> => ({ status: 'failed', message: 'killed by SIGSEGV' }),
      async (): Promise<HelperResult> => {
        throw new Error('EACCES');
      },
    ]) {
      const notices: string[] = [];
      expect(await findCredentials('ghcr.io', { env: {}, homeDir: home, runHelper, onNotice: (m) => notices.push(m) })).toBeUndefined();
      expect(notices).toHaveLength(1);
      expect(notices[0]).toMatch(
        /^credential helper docker-credential-slow (timed out|could not run: killed by SIGSEGV|could not run: EACCES) \(pulling/,
      );
    }
  });

  it('a helper answering malformed JSON is a notice that does not quote the answer', async () => {
    await dockerConfig({ credsStore: 'weird' });
    const h = harness({}, { weird: { status: 'exited', exitCode: 0, stdout: 'hunter2-not-json', stderr: '' } });
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.notices).toHaveLength(1);
    expect(h.notices[0]).toContain('without usable credentials');
    expect(h.notices[0]).not.toContain('hunter2');
  });

  it('refuses a helper name that could be a path', async () => {
    await dockerConfig({ credsStore: '../../bin/sh' });
    const h = harness();
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.helperCalls).toEqual([]);
    expect(h.notices[0]).toContain('not a valid helper name');
  });
});

describe('podman / skopeo auth.json', () => {
  it('reads REGISTRY_AUTH_FILE', async () => {
    const authFile = await writeJson(join(root, 'custom-auth.json'), { auths: { 'quay.io': { auth: b64('quser:qpass') } } });
    expect(await findCredentials('quay.io', harness({ REGISTRY_AUTH_FILE: authFile }).options)).toEqual({
      username: 'quser',
      password: 'qpass',
    });
  });

  it('reads $XDG_RUNTIME_DIR/containers/auth.json', async () => {
    const runtime = join(root, 'run');
    await writeJson(join(runtime, 'containers', 'auth.json'), { auths: { 'quay.io': { auth: b64('xdg:p') } } });
    expect(await findCredentials('quay.io', harness({ XDG_RUNTIME_DIR: runtime }).options)).toEqual({ username: 'xdg', password: 'p' });
  });

  it('REGISTRY_AUTH_FILE replaces the XDG_RUNTIME_DIR file', async () => {
    const runtime = join(root, 'run');
    await writeJson(join(runtime, 'containers', 'auth.json'), { auths: { 'quay.io': { auth: b64('xdg:p') } } });
    const authFile = await writeJson(join(root, 'other.json'), { auths: {} });
    expect(await findCredentials('quay.io', harness({ XDG_RUNTIME_DIR: runtime, REGISTRY_AUTH_FILE: authFile }).options)).toBeUndefined();
  });

  it('falls back to $XDG_CONFIG_HOME/containers/auth.json (default ~/.config)', async () => {
    await writeJson(join(home, '.config', 'containers', 'auth.json'), { auths: { 'quay.io': { auth: b64('cfg:p') } } });
    expect(await findCredentials('quay.io', harness({ XDG_RUNTIME_DIR: join(root, 'empty-run') }).options)).toEqual({
      username: 'cfg',
      password: 'p',
    });
  });

  it('matches a host key but not a repository-specific key', async () => {
    const authFile = await writeJson(join(root, 'auth.json'), {
      auths: {
        'quay.io/someorg': { auth: b64('org:p') },
        'registry.example/team/app': { auth: b64('app:p') },
        'https://legacy.example/v1/': { auth: b64('legacy:p') },
      },
    });
    const env = { REGISTRY_AUTH_FILE: authFile };
    expect(await findCredentials('quay.io', harness(env).options)).toBeUndefined();
    expect(await findCredentials('registry.example', harness(env).options)).toBeUndefined();
    expect(await findCredentials('legacy.example', harness(env).options)).toEqual({ username: 'legacy', password: 'p' });
  });
});

describe('precedence and malformed files', () => {
  it('explicit > docker config > podman', async () => {
    const authFile = await writeJson(join(root, 'auth.json'), { auths: { 'ghcr.io': { auth: b64('podman:p') } } });
    const env = { REGISTRY_AUTH_FILE: authFile };
    expect(await findCredentials('ghcr.io', harness(env).options)).toEqual({ username: 'podman', password: 'p' });
    await dockerConfig({ auths: { 'ghcr.io': { auth: b64('docker:d') } } });
    expect(await findCredentials('ghcr.io', harness(env).options)).toEqual({ username: 'docker', password: 'd' });
    const explicit = { username: 'cli', password: 'c' };
    expect(await findCredentials('ghcr.io', { ...harness(env).options, explicit })).toEqual(explicit);
  });

  it('malformed docker config JSON: a notice naming the file, then podman is read', async () => {
    const file = await dockerConfig('{"auths": {"ghcr.io": {"auth": "c2VjcmV0OnZhbHVl"}');
    const authFile = await writeJson(join(root, 'auth.json'), { auths: { 'ghcr.io': { auth: b64('podman:p') } } });
    const h = harness({ REGISTRY_AUTH_FILE: authFile });
    expect(await findCredentials('ghcr.io', h.options)).toEqual({ username: 'podman', password: 'p' });
    expect(h.notices).toEqual([`${file} is not a valid JSON object; ignoring it (using credentials from ${authFile})`]);
  });

  it('malformed podman JSON is a notice too, and the lookup ends anonymous', async () => {
    const authFile = await writeJson(join(root, 'auth.json'), 'not json at all');
    const h = harness({ REGISTRY_AUTH_FILE: authFile });
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.notices).toEqual([`${authFile} is not a valid JSON object; ignoring it (pulling from ghcr.io anonymously)`]);
  });

  it('an unreadable config (a directory) is a notice, not an error', async () => {
    await mkdir(join(home, '.docker', 'config.json'), { recursive: true });
    const h = harness();
    expect(await findCredentials('ghcr.io', h.options)).toBeUndefined();
    expect(h.notices).toHaveLength(1);
    expect(h.notices[0]).toContain('EISDIR');
  });

  it('no config anywhere: anonymous without notices', async () => {
    const h = harness({ XDG_RUNTIME_DIR: join(root, 'nothing') });
    expect(await findCredentials('docker.io', h.options)).toBeUndefined();
    expect(h.notices).toEqual([]);
  });
});

describe('credentialProvider', () => {
  it('looks up lazily and only once', async () => {
    await dockerConfig({ credsStore: 'counted' });
    const h = harness({}, { counted: helperAnswer('u', 'p') });
    const provide = credentialProvider('ghcr.io', h.options);
    expect(h.helperCalls).toHaveLength(0);
    const [a, b] = await Promise.all([provide(), provide()]);
    expect(await provide()).toEqual({ username: 'u', password: 'p' });
    expect(a).toBe(b);
    expect(h.helperCalls).toHaveLength(1);
  });
});

describe('real credential helper processes', () => {
  let bin: string;

  async function writeHelper(name: string, script: string): Promise<void> {
    const file = join(bin, `docker-credential-${name}`);
    await writeFile(file, `#!/bin/sh\n${script}\n`);
    await chmod(file, 0o755);
  }

  beforeEach(async () => {
    bin = join(root, 'bin');
    await mkdir(bin);
    await writeHelper(
      'testhelper',
      [
        '[ "$1" = "get" ] || { echo "unexpected action $1" >&2; exit 2; }',
        'url=$(cat)',
        'if [ "$url" = "https://index.docker.io/v1/" ]; then',
        '  printf \'{"ServerURL":"%s","Username":"hubuser","Secret":"hub:secret"}\' "$url"',
        'elif [ "$url" = "127.0.0.1:5000" ]; then',
        '  printf \'{"ServerURL":"%s","Username":"<token>","Secret":"idtoken"}\' "$url"',
        'else',
        '  echo "credentials not found in native keychain"',
        '  exit 1',
        'fi',
      ].join('\n'),
    );
    await dockerConfig({ credsStore: 'testhelper' });
  });

  const env = (): NodeJS.ProcessEnv => ({ PATH: `${bin}:/usr/bin:/bin` });

  it('runs docker-credential-testhelper from options.env PATH with the server URL on stdin', async () => {
    const notices: string[] = [];
    const options = { env: env(), homeDir: home, onNotice: (m: string) => notices.push(m) };
    expect(await findCredentials('docker.io', options)).toEqual({ username: 'hubuser', password: 'hub:secret' });
    expect(await findCredentials('127.0.0.1:5000', options)).toEqual({ identityToken: 'idtoken' });
    expect(notices).toEqual([]);
  });

  it('"credentials not found" exit 1 is a notice and anonymous', async () => {
    const notices: string[] = [];
    expect(await findCredentials('ghcr.io', { env: env(), homeDir: home, onNotice: (m) => notices.push(m) })).toBeUndefined();
    expect(notices).toEqual([
      'credential helper docker-credential-testhelper has no credentials for ghcr.io (pulling from ghcr.io anonymously)',
    ]);
  });

  it('a helper not on the PATH given in env is reported missing', async () => {
    const notices: string[] = [];
    const result = await findCredentials('docker.io', {
      env: { PATH: join(root, 'empty') },
      homeDir: home,
      onNotice: (m) => notices.push(m),
    });
    expect(result).toBeUndefined();
    expect(notices).toEqual(['credential helper docker-credential-testhelper not found on PATH (pulling from docker.io anonymously)']);
  });

  it('a helper that hangs is killed after the timeout', async () => {
    await writeHelper('hang', 'exec sleep 30');
    const started = Date.now();
    expect(await credentialHelperRunner(env(), 300)('hang', 'ghcr.io')).toEqual({ status: 'timeout' });
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('a helper that exits without reading stdin still reports its exit status', async () => {
    await writeHelper('noread', 'echo "boom" >&2; exit 4');
    expect(await credentialHelperRunner(env())('noread', 'ghcr.io')).toEqual({
      status: 'exited',
      exitCode: 4,
      stdout: '',
      stderr: 'boom\n',
    });
  });
});

describe('readPasswordFromStream', () => {
  it.each([
    ['s3cret\n', 's3cret'],
    ['s3cret\r\n', 's3cret'],
    ['s3cret', 's3cret'],
    ['s3cret\n\n', 's3cret\n'],
    [' spaced pass \n', ' spaced pass '],
  ])('reads %j as %j', async (input, expected) => {
    expect(await readPasswordFromStream(Readable.from([Buffer.from(input)]))).toBe(expected);
  });

  it('joins chunks', async () => {
    expect(await readPasswordFromStream(Readable.from(['ab', 'cd\r', '\n']))).toBe('abcd');
  });

  it.each(['', '\n', '\r\n'])('refuses the empty password %j', async (input) => {
    const err = await readPasswordFromStream(Readable.from([Buffer.from(input)])).catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'USAGE')).toBe(true);
  });

  it('refuses a stream of more than 64 KiB', async () => {
    const err = await readPasswordFromStream(Readable.from([Buffer.alloc(70_000, 0x61)])).catch((e: unknown) => e);
    expect(isPullUnpackError(err, 'TOO_LARGE')).toBe(true);
  });
});
