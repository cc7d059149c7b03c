/**
 * Image references with Docker's "normalized named" rules (distribution/reference
 * `ParseNormalizedNamed`): `alpine` is `docker.io/library/alpine:latest`.
 * Parsed once at the edge into an immutable value; nothing downstream re-parses strings.
 *
 * Grammar (distribution/reference/reference.go):
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [ registry "/" ] component ( "/" component )*
 *   registry  := host [ ":" port ]      host := domain-name | IPv4 | "[" IPv6 "]"
 *   component := [a-z0-9]+ ( ( [._] | __ | [-]+ ) [a-z0-9]+ )*
 *   tag       := [\w][\w.-]{0,127}
 */
import { isIPv6 } from 'node:net';
import { PullUnpackError } from '../errors.js';
import { parseDigest } from './digest.js';

export interface Reference {
  /** 'docker.io', 'localhost:5000', 'ghcr.io', '[::1]:5000'. */
  readonly registry: string;
  /** 'library/alpine'. */
  readonly repository: string;
  /** 'latest' when neither tag nor digest was given; undefined for a digest-only reference. */
  readonly tag: string | undefined;
  /** 'sha256:<hex>' when given; it decides what is fetched, the tag is then informational. */
  readonly digest: string | undefined;
  /** The full canonical form: 'docker.io/library/alpine:latest', 'r/x:t@sha256:...'. */
  toString(): string;
}

const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io']);
const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';
const OFFICIAL_PREFIX = 'library/';
const DEFAULT_TAG = 'latest';
/** distribution/reference NameTotalLengthMax, applied to `registry/repository`. */
const NAME_MAX = 255;

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]{0,127}$/;
const DOMAIN_NAME = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*$/;
/** An image ID: Docker refuses it as a name so it is never mistaken for a repository. */
const IMAGE_ID = /^[a-f0-9]{64}$/;

/**
 * Parses `text` into a normalized reference. Throws INVALID_REFERENCE saying what is wrong;
 * an invalid or unsupported digest is also reported as INVALID_REFERENCE, with the
 * INVALID_DIGEST / UNSUPPORTED_DIGEST_ALGORITHM error from parseDigest as its `cause`.
 */
export function parseReference(text: string): Reference {
  if (text === '') throw invalid(text, 'the reference is empty');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw invalid(text, 'a reference is not a URL', 'drop the scheme, e.g. ghcr.io/owner/image:tag');
  }
  if (IMAGE_ID.test(text)) {
    throw invalid(text, 'a 64-character hex string is an image ID, not a repository name', 'use NAME@sha256:<hex> to pull by digest');
  }
  const { rest, digest } = splitDigest(text);
  const { name, tag } = splitTag(text, rest);
  const { registry, path } = splitRegistry(name);
  checkRegistry(text, registry);
  checkPath(text, path);
  const repository = registry === DOCKER_HUB && !path.includes('/') ? OFFICIAL_PREFIX + path : path;
  const fullName = `${registry}/${repository}`;
  if (fullName.length > NAME_MAX) {
    throw invalid(text, `the name "${fullName}" is ${fullName.length} characters long; at most ${NAME_MAX} are allowed`);
  }
  return makeReference(registry, repository, tag ?? (digest === undefined ? DEFAULT_TAG : undefined), digest);
}

/** What to put in /v2/<name>/manifests/<this>: the digest when present, else the tag. */
export function manifestReference(ref: Reference): string {
  return ref.digest ?? ref.tag ?? DEFAULT_TAG;
}

/** The host:port to contact: 'docker.io' -> 'registry-1.docker.io', others unchanged. */
export function registryEndpoint(registry: string): string {
  return DOCKER_HUB_ALIASES.has(registry) ? DOCKER_HUB_ENDPOINT : registry;
}

/** A short, familiar form for messages: 'alpine:latest', 'user/app:1', 'localhost:5000/x:t'. */
export function familiarName(ref: Reference): string {
  let name = `${ref.registry}/${ref.repository}`;
  if (ref.registry === DOCKER_HUB) {
    name = ref.repository;
    const rest = name.slice(OFFICIAL_PREFIX.length);
    // Like Docker's FamiliarName: 'library/' is hidden only when one component follows it.
    if (name.startsWith(OFFICIAL_PREFIX) && !rest.includes('/')) name = rest;
  }
  return name + suffix(ref.tag, ref.digest);
}

function makeReference(registry: string, repository: string, tag: string | undefined, digest: string | undefined): Reference {
  const canonical = `${registry}/${repository}${suffix(tag, digest)}`;
  return Object.freeze({ registry, repository, tag, digest, toString: () => canonical });
}

function suffix(tag: string | undefined, digest: string | undefined): string {
  return (tag === undefined ? '' : `:${tag}`) + (digest === undefined ? '' : `@${digest}`);
}

function splitDigest(text: string): { rest: string; digest: string | undefined } {
  const at = text.indexOf('@');
  if (at === -1) return { rest: text, digest: undefined };
  const digest = text.slice(at + 1);
  if (digest === '') throw invalid(text, 'it ends with "@" but no digest follows');
  if (digest.includes('@')) throw invalid(text, 'it contains more than one "@"');
  try {
    parseDigest(digest);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    const hint = cause instanceof PullUnpackError ? cause.hint : undefined;
    throw invalid(text, why, hint, cause);
  }
  return { rest: text.slice(0, at), digest };
}

function splitTag(text: string, rest: string): { name: string; tag: string | undefined } {
  // The tag's ":" is the one after the last "/"; earlier ones belong to a registry port.
  const colon = rest.indexOf(':', rest.lastIndexOf('/') + 1);
  if (colon === -1) return { name: rest, tag: undefined };
  const tag = rest.slice(colon + 1);
  if (tag === '') throw invalid(text, 'it ends with ":" but no tag follows');
  if (!TAG.test(tag)) {
    throw invalid(text, `invalid tag "${tag}": a tag is 1 to 128 letters, digits, "_", "." or "-" and must not start with "." or "-"`);
  }
  return { name: rest.slice(0, colon), tag };
}

/**
 * Docker's splitDockerDomain: the first component is a registry when it contains "." or ":",
 * is "localhost", or has uppercase letters (which a repository may not have); otherwise
 * the reference is on Docker Hub.
 */
function splitRegistry(name: string): { registry: string; path: string } {
  const slash = name.indexOf('/');
  if (slash === -1) return { registry: DOCKER_HUB, path: name };
  const first = name.slice(0, slash);
  const isRegistry = /[.:]/.test(first) || first === 'localhost' || first !== first.toLowerCase();
  if (!isRegistry) return { registry: DOCKER_HUB, path: name };
  const registry = DOCKER_HUB_ALIASES.has(first) ? DOCKER_HUB : first;
  return { registry, path: name.slice(slash + 1) };
}

function checkRegistry(text: string, registry: string): void {
  let host = registry;
  let port: string | undefined;
  if (registry.startsWith('[')) {
    const close = registry.indexOf(']');
    host = close === -1 ? registry : registry.slice(0, close + 1);
    const after = registry.slice(host.length);
    if (after !== '' && !after.startsWith(':')) throw invalid(text, `invalid registry "${registry}"`);
    if (after !== '') port = after.slice(1);
    if (close === -1 || !isIPv6(host.slice(1, -1))) {
      throw invalid(text, `invalid registry "${registry}": "${host}" is not a bracketed IPv6 address`);
    }
  } else {
    const colon = registry.indexOf(':');
    if (colon !== -1) [host, port] = [registry.slice(0, colon), registry.slice(colon + 1)];
    if (!DOMAIN_NAME.test(host)) {
      const hint = registry.split(':').length > 2 ? 'write an IPv6 registry in brackets, e.g. [::1]:5000/name' : undefined;
      throw invalid(text, `invalid registry host "${host}" in "${registry}"`, hint);
    }
  }
  if (port !== undefined && !(/^[0-9]{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535)) {
    throw invalid(text, `invalid registry port "${port}" in "${registry}": expected a number from 1 to 65535`);
  }
}

function checkPath(text: string, path: string): void {
  for (const component of path.split('/')) {
    if (component === '') throw invalid(text, `the repository "${path}" has an empty path component`);
    if (COMPONENT.test(component)) continue;
    if (COMPONENT.test(component.toLowerCase())) throw invalid(text, 'repository name must be lowercase');
    throw invalid(text, `invalid path component "${component}": use lowercase letters and digits separated by ".", "_", "__" or "-"`);
  }
}

function invalid(text: string, why: string, hint?: string, cause?: unknown): PullUnpackError {
  const shown = text.length > 300 ? `${text.slice(0, 300)}...` : text;
  return new PullUnpackError('INVALID_REFERENCE', `invalid reference "${shown}": ${why}`, { hint, cause });
}
