/**
 * A loopback server in front of the real test registry that adds the OCI 1.1 referrers API
 * (GET /v2/<name>/referrers/<digest>), which Debian's distribution registry 2.8 lacks: it
 * answers from the referrers the test registers and forwards every other request unchanged,
 * unless the test intercepts it (to break, stall or trickle a signature fetch).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Descriptor } from '../../testdata/lib/image-builder.mjs';
import { startServer, type TestServer } from './registry.js';
import { referrersIndex } from './sigstore-fixtures.js';

const REFERRERS_PATH = /^\/v2\/(.+)\/referrers\/(sha256:[0-9a-f]{64})$/;
const SKIP_HEADERS = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'content-length', 'content-encoding']);

/** Answers a request itself (and returns true), or leaves it to the proxy (false). */
export type Intercept = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface ReferrersProxy extends TestServer {
  /** Registers `referrer` as referring to `subjectDigest` in `repo`. */
  add(repo: string, subjectDigest: string, referrer: Descriptor): void;
  /** The request paths seen, in order. */
  readonly requests: string[];
}

export async function startReferrersProxy(targetUrl: string, intercept?: Intercept): Promise<ReferrersProxy> {
  const referrers = new Map<string, Descriptor[]>();
  const requests: string[] = [];
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = req.url ?? '/';
    requests.push(path);
    if (intercept?.(req, res)) return;
    const m = REFERRERS_PATH.exec(path);
    if (m && req.method === 'GET') {
      // A registry with the API answers every subject, with an empty index when nothing refers to it.
      const body = JSON.stringify(referrersIndex(referrers.get(`${m[1]}@${m[2]}`) ?? []));
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json' }).end(body);
      return;
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!SKIP_HEADERS.has(k) && typeof v === 'string') headers[k] = v;
    const upstream = await fetch(`${targetUrl}${path}`, { method: req.method, headers, redirect: 'manual' });
    const body = Buffer.from(await upstream.arrayBuffer());
    const out: Record<string, string> = {};
    upstream.headers.forEach((v, k) => {
      if (!SKIP_HEADERS.has(k)) out[k] = v;
    });
    res.writeHead(upstream.status, out).end(req.method === 'HEAD' ? undefined : body);
  };
  const server = await startServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  return {
    ...server,
    requests,
    add(repo, subjectDigest, referrer) {
      const key = `${repo}@${subjectDigest}`;
      referrers.set(key, [...(referrers.get(key) ?? []), referrer]);
    },
  };
}
