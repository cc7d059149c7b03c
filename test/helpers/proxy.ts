/**
 * A loopback HTTP proxy in front of the test registry that can misbehave on blob downloads:
 * flip a byte, drop the connection half-way, stall half-way, or hold each blob response back
 * for a while (to observe download concurrency). Everything else is forwarded unchanged.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startServer, type TestServer } from './registry.js';

export type BlobMode = 'pass' | 'flip-byte' | 'drop-half' | 'stall-half';

export interface ProxyOptions {
  /** What to do to blob GET responses, or to the blob with a given digest (default 'pass'). */
  blobs?: BlobMode | ((digest: string) => BlobMode);
  /** Only blobs whose digest this returns true for misbehave (default: all). */
  only?: (digest: string) => boolean;
  /** Hold each blob response back this long before answering (default 0). */
  delayMs?: number;
  /** Misbehave on this many blob responses only, then pass (default: every time). */
  times?: number;
}

export interface RegistryProxy extends TestServer {
  /** Every request seen, in order, as 'METHOD /path'. */
  readonly requests: string[];
  /** Digests of the blob GETs seen, in order. */
  readonly blobRequests: string[];
  /** The most blob GETs that were being answered at the same time. */
  readonly maxInFlight: number;
}

const BLOB_PATH = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/;
// Hop-by-hop and length headers are the proxy's own business.
const SKIP_HEADERS = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding', 'content-length']);

/** Starts a proxy that forwards to the registry at `targetUrl` (e.g. 'http://127.0.0.1:5000'). */
export async function startRegistryProxy(targetUrl: string, options: ProxyOptions = {}): Promise<RegistryProxy> {
  const blobRequests: string[] = [];
  const requests: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let misbehaved = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    requests.push(`${req.method ?? 'GET'} ${req.url ?? '/'}`);
    const digest = req.method === 'GET' ? BLOB_PATH.exec(req.url ?? '')?.[1] : undefined;
    if (digest) {
      blobRequests.push(digest);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.on('close', () => inFlight--);
      if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (!SKIP_HEADERS.has(k) && typeof v === 'string') headers[k] = v;
    const upstream = await fetch(`${targetUrl}${req.url ?? '/'}`, { method: req.method, headers, redirect: 'manual' });
    const body = Buffer.from(await upstream.arrayBuffer());
    const outHeaders: Record<string, string> = {};
    upstream.headers.forEach((v, k) => {
      if (!SKIP_HEADERS.has(k) && k !== 'content-encoding') outHeaders[k] = v;
    });
    // 206 too: a client resuming with a Range request meets the same trouble again.
    const targeted = digest !== undefined && (upstream.status === 200 || upstream.status === 206) && (options.only?.(digest) ?? true);
    const wanted = typeof options.blobs === 'function' ? options.blobs(digest!) : (options.blobs ?? 'pass');
    const mode = targeted && misbehaved < (options.times ?? Infinity) ? wanted : 'pass';
    if (mode !== 'pass') misbehaved++;
    // HEAD answers carry the real length but no body.
    outHeaders['content-length'] = req.method === 'HEAD' ? (upstream.headers.get('content-length') ?? '0') : String(body.length);
    res.writeHead(upstream.status, outHeaders);
    if (req.method === 'HEAD') return void res.end();
    sendBody(res, body, mode);
  };
  return {
    ...(await startServer((req, res) => {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(502);
        res.end(String(err));
      });
    })),
    blobRequests,
    requests,
    get maxInFlight() {
      return maxInFlight;
    },
  };
}

function sendBody(res: ServerResponse, body: Buffer, mode: BlobMode): void {
  const half = body.subarray(0, Math.floor(body.length / 2));
  switch (mode) {
    case 'pass':
      res.end(body);
      return;
    case 'flip-byte': {
      const tampered = Buffer.from(body);
      const i = Math.floor(tampered.length / 2);
      tampered[i] = tampered[i]! ^ 0xff;
      res.end(tampered);
      return;
    }
    case 'drop-half':
      res.write(half, () => res.socket?.destroy());
      return;
    case 'stall-half':
      // Never ends: only the client giving up (or the proxy closing) finishes this response.
      res.write(half);
      return;
  }
}
