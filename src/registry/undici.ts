/**
 * The parts of undici that pull-unpack uses (Agent, EnvHttpProxyAgent, buildConnector and the
 * request API), loaded from their own modules. undici's index.js loads all of undici (mocks,
 * caches, fetch, WebSocket, EventSource: 110 modules), which cost each registry command about
 * 0.13 s of CPU at start-up against 0.06 s for these (issue 15). undici is pinned to an exact
 * version in package.json, so these module paths do not move under us.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

export interface UndiciParts {
  Agent: typeof Undici.Agent;
  EnvHttpProxyAgent: typeof Undici.EnvHttpProxyAgent;
  buildConnector: typeof Undici.buildConnector;
  request: typeof Undici.request;
}

type RequestOptions = Parameters<typeof Undici.request>[1];
type ApiRequest = (this: Undici.Dispatcher, options: Record<string, unknown>) => ReturnType<typeof Undici.request>;

let loaded: UndiciParts | undefined;

/** The parts, loaded once. */
export function loadUndici(): UndiciParts {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const dispatcher = require('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
  const api = require('undici/lib/api/index.js') as { request: ApiRequest };
  // As index.js does: the proxy agents open their tunnels with connect() from here.
  Object.assign(dispatcher.prototype, api);
  const apiRequest = api.request;
  loaded = {
    Agent: require('undici/lib/dispatcher/agent.js') as typeof Undici.Agent,
    EnvHttpProxyAgent: require('undici/lib/dispatcher/env-http-proxy-agent.js') as typeof Undici.EnvHttpProxyAgent,
    buildConnector: require('undici/lib/core/connect.js') as typeof Undici.buildConnector,
    request: ((url: URL, options: RequestOptions) => requestWith(apiRequest, url, options)) as typeof Undici.request,
  };
  return loaded;
}

/**
 * undici's `request(url, options)` (index.js makeDispatcher) for the way pull-unpack calls it:
 * always a URL object and an explicit dispatcher.
 */
function requestWith(apiRequest: ApiRequest, url: URL, options: RequestOptions): ReturnType<typeof Undici.request> {
  const dispatcher = options?.dispatcher;
  if (!(url instanceof URL) || dispatcher === undefined) throw new TypeError('pull-unpack requests take a URL and a dispatcher');
  return apiRequest.call(dispatcher, {
    ...options,
    origin: url.origin,
    path: url.search ? `${url.pathname}${url.search}` : url.pathname,
    method: options?.method ?? (options?.body ? 'PUT' : 'GET'),
  });
}
