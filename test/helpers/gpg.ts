/**
 * GPG simple signing with the real tools: throwaway GnuPG homes and keys made by `gpg`, images
 * signed by `skopeo copy --sign-by` into a file:// lookaside that a registries.d file names.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface GpgKey {
  fingerprint: string;
  /** The public key, binary (`gpg --export`). */
  publicKeyPath: string;
  /** The public key, ASCII-armored. */
  armoredPath: string;
}

/** A GnuPG home in a new temporary directory. */
export async function gpgHome(root: string): Promise<string> {
  const home = join(root, 'gnupg');
  await mkdir(home, { mode: 0o700 });
  return home;
}

/** Makes a signing key without a passphrase in `home`; `algo` as gpg --quick-gen-key takes it. */
export async function makeGpgKey(home: string, name: string, algo = 'default'): Promise<GpgKey> {
  const env = { ...process.env, GNUPGHOME: home };
  const uid = `${name} <${name}@example.com>`;
  await exec('gpg', ['--batch', '--passphrase', '', '--quick-gen-key', uid, algo, algo === 'default' ? 'default' : 'sign', 'never'], {
    env,
  });
  const { stdout } = await exec('gpg', ['--with-colons', '--list-keys', uid], { env });
  const fingerprint = /^fpr:+([0-9A-F]{40}):/m.exec(stdout)?.[1];
  if (!fingerprint) throw new Error(`no fingerprint for ${uid}: ${stdout}`);
  const publicKeyPath = join(home, `${name}.gpg`);
  const armoredPath = join(home, `${name}.asc`);
  await writeFile(publicKeyPath, (await exec('gpg', ['--export', fingerprint], { env, encoding: 'buffer' })).stdout);
  await writeFile(armoredPath, (await exec('gpg', ['--armor', '--export', fingerprint], { env })).stdout);
  return { fingerprint, publicKeyPath, armoredPath };
}

/** A registries.d directory whose default-docker lookaside is `lookasideDir` (file://). */
export async function registriesDir(root: string, lookasideDir: string, extra = ''): Promise<string> {
  const dir = await mkdtemp(join(root, 'registries.d-'));
  await writeFile(join(dir, 'default.yaml'), `default-docker:\n  lookaside: file://${lookasideDir}\n${extra}`);
  return dir;
}

/**
 * `skopeo copy --sign-by` from `src` to `dest` (both docker references on a plain-HTTP registry);
 * with `all`, an index and every image in it (skopeo signs the index and each image).
 */
export async function skopeoSign(
  home: string,
  registriesD: string,
  fingerprint: string,
  src: string,
  dest: string,
  all = false,
): Promise<void> {
  const policy = join(registriesD, '..', 'accept-anything.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await exec(
    'skopeo',
    [
      'copy',
      '-q',
      ...(all ? ['--all'] : []),
      '--policy',
      policy,
      '--registries.d',
      registriesD,
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--sign-by',
      fingerprint,
      `docker://${src}`,
      `docker://${dest}`,
    ],
    { env: { ...process.env, GNUPGHOME: home } },
  );
}

/** Whether `skopeo copy --policy P --registries.d D docker://IMAGE dir:...` accepts the image (and its stderr). */
export async function skopeoAccepts(
  policy: string,
  registriesD: string,
  image: string,
  out: string,
): Promise<{ accepted: boolean; stderr: string }> {
  try {
    await exec('skopeo', [
      'copy',
      '-q',
      '--policy',
      policy,
      '--registries.d',
      registriesD,
      '--src-tls-verify=false',
      `docker://${image}`,
      `dir:${out}`,
    ]);
    return { accepted: true, stderr: '' };
  } catch (err) {
    return { accepted: false, stderr: String((err as { stderr?: string }).stderr ?? err) };
  }
}

/** A temporary directory for one test file. */
export function tempRoot(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `pull-unpack-${prefix}-`));
}

export interface LookasideServer {
  url: string;
  /** Every request seen, in order. */
  requests: IncomingMessage[];
  close(): Promise<void>;
}

/**
 * Serves the lookaside directory `root` over HTTP on loopback, or over HTTPS with `tls` (a
 * certificate for 127.0.0.1): files by path, 404 for anything missing.
 */
export async function serveLookaside(root: string, tls?: { cert: Buffer; key: Buffer }): Promise<LookasideServer> {
  const requests: IncomingMessage[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    requests.push(req);
    readFile(join(root, decodeURIComponent(new URL(req.url!, 'http://x').pathname)))
      .then((bytes) => res.end(bytes))
      .catch(() => {
        res.statusCode = 404;
        res.end();
      });
  };
  const server = tls ? createHttpsServer(tls, handler) : createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
