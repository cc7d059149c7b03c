/**
 * The scheme probe (src/registry/probe.ts) against real registries on loopback, one speaking
 * plain HTTP and one TLS: a plain-HTTP registry is recognised from a bare TLS handshake, without
 * the HTTPS request that loads the CA store; everything else still goes through that request.
 */
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeScheme, type ProbeContext } from '../src/registry/probe.js';
import { loadHttp, type Http } from '../src/registry/transport.js';
import { startRegistry, type RunningRegistry } from '../testdata/lib/registry-server.mjs';
import { makePki, tempDir } from './helpers/network-fixtures.js';

let work: string;
let plain: RunningRegistry;
let tls: RunningRegistry;

beforeAll(async () => {
  work = await tempDir('probe');
  const pki = await makePki(work);
  plain = await startRegistry();
  tls = await startRegistry({ tls: { cert: pki.serverCert, key: pki.serverKey } });
});

afterAll(async () => {
  await plain?.stop();
  await tls?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** The real transport, recording every request the probe sends through it. */
async function recordingHttp(): Promise<{ http: Http; requests: string[] }> {
  const real = await loadHttp(() => true, {});
  const requests: string[] = [];
  const http: Http = {
    dispatcherFor: (url) => real.dispatcherFor(url),
    request: ((url: URL, options: never) => {
      requests.push(String(url));
      return real.request(url, options);
    }) as Http['request'],
  };
  return { http, requests };
}

function context(http: Http, endpoint: string, direct: boolean, notices: string[] = []): ProbeContext {
  return {
    http,
    registry: endpoint,
    endpoint,
    insecure: true,
    documentTimeout: 10_000,
    onNotice: (m) => notices.push(m),
    clientCertDir: `${work}/certs.d/${endpoint}`,
    direct,
  };
}

describe('probeScheme', () => {
  it('recognises a plain-HTTP registry from a bare TLS handshake, without an HTTPS request (no CA store is loaded)', async () => {
    const { http, requests } = await recordingHttp();
    expect(await probeScheme(context(http, plain.host, true), undefined)).toBe(`http://${plain.host}`);
    expect(requests).toEqual([]);
  });

  it('still sends the HTTPS request to a registry that speaks TLS, with the insecure-registry notice', async () => {
    const { http, requests } = await recordingHttp();
    const notices: string[] = [];
    expect(await probeScheme(context(http, tls.host, true, notices), undefined)).toBe(`https://${tls.host}`);
    expect(requests).toEqual([`https://${tls.host}/v2/`]);
    expect(notices.join('\n')).toMatch(/insecure registry/);
  });

  it('probes through the transport as before when connections do not go straight to the registry (a proxy)', async () => {
    const { http, requests } = await recordingHttp();
    expect(await probeScheme(context(http, plain.host, false), undefined)).toBe(`http://${plain.host}`);
    expect(requests).toEqual([`https://${plain.host}/v2/`]);
  });
});
