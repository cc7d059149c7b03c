/**
 * Fixtures for test/secrets.test.ts: the secrets to look for (plain, base64, and as the
 * credential part of every Authorization value a server saw), searches of text, errors and
 * directory trees for them, a recording proxy in front of a registry that can answer some
 * requests itself (a 500 echoing the Authorization header, a redirect to another host), and the
 * CLI run in-process with the staging area searched at every --json event.
 */
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { inspect } from 'node:util';
import { main } from '../../src/cli/main.js';
import { startServer, type CliRun, type TestServer } from './registry.js';

/** One string that must never show: `label` names it in failures without repeating it. */
export interface Needle {
  label: string;
  value: string;
}

/**
 * The needles for `secrets`: each value itself and its base64, plus base64("user:password")
 * for each pair (the Basic credential). Values shorter than 6 characters are refused: they
 * would match by chance.
 */
export function needlesFor(secrets: Record<string, string>, pairs: Array<[string, string]> = []): Needle[] {
  const out: Needle[] = [];
  for (const [label, value] of Object.entries(secrets)) {
    if (value.length < 6) throw new Error(`secret ${label} is too short to search for`);
    out.push({ label, value }, { label: `${label} (base64)`, value: Buffer.from(value).toString('base64') });
  }
  for (const [user, password] of pairs)
    out.push({ label: `basic ${user}:<password ${password.length} chars>`, value: Buffer.from(`${user}:${password}`).toString('base64') });
  return out;
}

/** The credential part of Authorization values ("Basic X" / "Bearer X" -> X), as needles. */
export function authorizationNeedles(values: Iterable<string>): Needle[] {
  const out = new Map<string, Needle>();
  for (const value of values) {
    const credential = value.replace(/^\S+\s+/, '');
    if (credential.length >= 6)
      out.set(credential, { label: `Authorization credential ${value.split(' ')[0]} #${out.size + 1}`, value: credential });
  }
  return [...out.values()];
}

/** Labels of the needles found in `text`. */
export function leaksIn(text: string, needles: Needle[]): string[] {
  return [...new Set(needles.filter((n) => text.includes(n.value)).map((n) => n.label))];
}

/** An error's message, hint and every cause's message and hint, one per line. */
export function errorMessages(err: unknown): string {
  const lines: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 20; depth++) {
    const x = e as { message?: unknown; hint?: unknown; cause?: unknown };
    lines.push(String(x.message ?? e), String(x.hint ?? ''));
    e = x.cause;
  }
  return lines.join('\n');
}

/** What `console.error(err)` would print: stack, own properties (RegistryError.detail...) and causes. */
export function inspectedError(err: unknown): string {
  return inspect(err, { depth: 20, breakLength: Infinity, maxStringLength: Infinity });
}

/**
 * Needles found in the files under `dir` (contents, names and symlink targets), as
 * `path: label`. Symlinks are not followed. Synchronous, so it can run inside an event callback.
 */
export function leaksInTree(dir: string, needles: Needle[]): string[] {
  const found: string[] = [];
  const walk = (path: string): void => {
    let st;
    try {
      st = lstatSync(path);
    } catch {
      return; // removed meanwhile (a staging directory being cleaned up)
    }
    for (const label of leaksIn(basename(path), needles)) found.push(`${path} (name): ${label}`);
    if (st.isSymbolicLink()) for (const label of leaksIn(readlinkSync(path), needles)) found.push(`${path} (link): ${label}`);
    if (st.isFile()) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(path);
      } catch {
        return;
      }
      const text = bytes.toString('latin1');
      for (const label of leaksIn(
        text,
        needles.map((n) => ({ ...n, value: Buffer.from(n.value).toString('latin1') })),
      ))
        found.push(`${path}: ${label}`);
    }
    if (st.isDirectory()) {
      let names: string[];
      try {
        names = readdirSync(path);
      } catch {
        return;
      }
      for (const name of names) walk(join(path, name));
    }
  };
  walk(dir);
  return found;
}

/** The staging directories beside `dest` right now. */
export function stagingBeside(dest: string): string[] {
  const prefix = `.${basename(dest)}.pull-unpack-`;
  try {
    return readdirSync(dirname(dest))
      .filter((n) => n.startsWith(prefix))
      .map((n) => join(dirname(dest), n));
  } catch {
    return [];
  }
}

export interface ScannedRun extends CliRun {
  /** Leaks found in the staging area while the pull ran (searched at every --json event). */
  stagingLeaks: string[];
  /** How many times a staging directory was there to search. */
  stagingScans: number;
}

/**
 * Runs the CLI in-process (like runCliStdin) with `--json` expected in `argv`; at every event it
 * writes, the staging directories beside `dest` are searched for `needles()`.
 */
export async function runCliScanning(
  argv: string[],
  env: NodeJS.ProcessEnv,
  stdin: string | undefined,
  dest: string,
  needles: () => Needle[],
): Promise<ScannedRun> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const stagingLeaks: string[] = [];
  let stagingScans = 0;
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      for (const dir of stagingBeside(dest)) {
        stagingScans++;
        stagingLeaks.push(...leaksInTree(dir, needles()));
      }
      callback();
    },
  });
  const stderr = new PassThrough();
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await main(argv, { stdout, stderr, env, stdin: stdin === undefined ? undefined : Readable.from([Buffer.from(stdin)]) });
  const stdoutBytes = Buffer.concat(out);
  return {
    code,
    stdout: stdoutBytes.toString('utf8'),
    stderr: Buffer.concat(err).toString('utf8'),
    stdoutBytes,
    stagingLeaks,
    stagingScans,
  };
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

/** Answers a request itself (returns true) or lets the front forward it (false). */
export type Intercept = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface RecordingFront extends TestServer {
  /** Every request, with its headers, in order. */
  readonly seen: SeenRequest[];
  /** Every Authorization value received. */
  readonly authorizations: Set<string>;
  /** Replaced per test; default forwards everything. */
  intercept: Intercept;
}

const HOP = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'content-length', 'content-encoding']);

/** A proxy in front of the registry at `targetUrl` that records every request and may answer some itself. */
export async function startRecordingFront(targetUrl: string): Promise<RecordingFront> {
  const seen: SeenRequest[] = [];
  const authorizations = new Set<string>();
  const front = { intercept: (() => false) as Intercept };
  const forward = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && typeof v === 'string') headers[k] = v;
    const upstream = await fetch(`${targetUrl}${req.url ?? '/'}`, { method: req.method, headers, redirect: 'manual' });
    const body = Buffer.from(await upstream.arrayBuffer());
    const outHeaders: Record<string, string> = {};
    upstream.headers.forEach((v, k) => {
      if (!HOP.has(k)) outHeaders[k] = v;
    });
    outHeaders['content-length'] = req.method === 'HEAD' ? (upstream.headers.get('content-length') ?? '0') : String(body.length);
    res.writeHead(upstream.status, outHeaders);
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const server = await startServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } });
    if (req.headers.authorization) authorizations.add(req.headers.authorization);
    if (front.intercept(req, res)) return;
    forward(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
  });
  return Object.assign(front, server, { seen, authorizations });
}

/** A JSON error body in the distribution spec's shape. */
export function registryErrorBody(code: string, message: string, detail: unknown): string {
  return JSON.stringify({ errors: [{ code, message, detail }] });
}
