/**
 * Small hostile "registries" on loopback for the credential-scoping and network-failure tests:
 * one port that speaks both TLS and plain HTTP (so a redirect or a realm can change only the
 * scheme), and bodies that trickle, break off or stall.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { digestOf } from '../../src/image/digest.js';
import { MediaType } from '../../src/image/oci.js';

export type Protocol = 'http:' | 'https:';

export interface SeenRequest {
  protocol: Protocol;
  method: string;
  url: string;
  authorization: string | undefined;
}

export type DualHandler = (req: IncomingMessage, res: ServerResponse, protocol: Protocol) => void;

export interface DualServer {
  port: number;
  /** '127.0.0.1:PORT' */
  host: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/**
 * One loopback port answering both TLS (with `cert`/`key`, PEM paths) and plain HTTP: the
 * first byte of a connection says which (0x16 opens a TLS handshake). Every request is recorded.
 */
export async function startDualServer(tls: { cert: string; key: string }, handler: DualHandler): Promise<DualServer> {
  const seen: SeenRequest[] = [];
  const serve =
    (protocol: Protocol) =>
    (req: IncomingMessage, res: ServerResponse): void => {
      seen.push({ protocol, method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
      handler(req, res, protocol);
    };
  const plain = createHttpServer(serve('http:'));
  const secure = createHttpsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, serve('https:'));
  const inner = await Promise.all([plain, secure].map((server) => listenLoopback(server)));
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
  };
  // A relay to the plain or the TLS server, chosen by the first byte (Node's HTTP server reads
  // from the socket's handle, so a sniffed and unshifted socket cannot be handed over).
  const front = createNetServer((socket) => {
    track(socket);
    socket.once('data', (first: Buffer) => {
      const upstream = connect({ host: '127.0.0.1', port: inner[first[0] === 0x16 ? 1 : 0]! });
      track(upstream);
      upstream.write(first);
      socket.pipe(upstream).on('close', () => socket.destroy());
      upstream.pipe(socket);
      upstream.on('close', () => socket.destroy());
      socket.on('close', () => upstream.destroy());
    });
  });
  const port = await listenLoopback(front);
  return {
    port,
    host: `127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        plain.closeAllConnections();
        secure.closeAllConnections();
        plain.close();
        secure.close();
        front.close(() => resolve());
      }),
  };
}

async function listenLoopback(server: NetServer): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A small valid OCI manifest (empty config, no layers) and its bytes. */
export const TINY_MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: digestOf(Buffer.from('{}')), size: 2 },
    layers: [],
  }),
);

/** Writes `body` one `bytes`-sized piece every `everyMs` (a server stalling on purpose); stops if the client leaves. */
export function trickle(res: ServerResponse, body: Buffer, bytes: number, everyMs: number): void {
  let sent = 0;
  const timer = setInterval(() => {
    if (sent >= body.length) {
      clearInterval(timer);
      res.end();
      return;
    }
    res.write(body.subarray(sent, sent + bytes));
    sent += bytes;
  }, everyMs);
  res.on('close', () => clearInterval(timer));
}

/** Announces `body` in full, sends half of it, then closes the connection. */
export function breakOff(res: ServerResponse, body: Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(200, { ...headers, 'content-length': String(body.length) });
  res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.socket?.destroy());
}

/** Announces `body` in full, sends half of it, then sends nothing more (the connection stays open). */
export function stallHalfway(res: ServerResponse, body: Buffer, headers: Record<string, string> = {}): void {
  res.writeHead(200, { ...headers, 'content-length': String(body.length) });
  res.write(body.subarray(0, Math.floor(body.length / 2)));
}
