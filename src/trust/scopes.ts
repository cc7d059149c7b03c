/**
 * How containers/image names an image for policy.json scopes and registries.d namespaces
 * (ImageReference.PolicyConfigurationIdentity / PolicyConfigurationNamespaces):
 *  - docker: 'host/repo:tag' or 'host/repo@digest', then 'host/repo', each parent namespace,
 *    'host[:port]', and wildcards '*.example.com', '*.com' of the host without its port
 *    (docker/policyconfiguration/naming.go);
 *  - oci, oci-archive: the absolute path with symlinks resolved, then each parent directory
 *    but "/" (oci/layout/oci_transport.go: the ref name is not part of the identity);
 *  - docker-archive: no identity at all: only the transport's "" scope or the default apply.
 */
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isLocalReference, type ImageReference } from '../image/local-reference.js';
import { parseReference } from '../image/reference.js';
import type { NamedReference } from './identity.js';

export interface PolicyImage {
  transport: 'docker' | 'oci' | 'oci-archive' | 'docker-archive';
  identity: string;
  /** Parent scopes, most specific first. */
  namespaces: string[];
  /** The docker reference signatures must claim (c/image DockerReference()); undefined for oci layouts. */
  dockerReference: NamedReference | undefined;
}

/**
 * The policy view of `image` as the user gave it. A reference with both a tag and a digest is
 * taken by its digest, as it is pulled (c/image's docker transport refuses such references).
 */
export async function policyImage(image: ImageReference): Promise<PolicyImage> {
  if (!isLocalReference(image)) {
    const name = `${image.registry}/${image.repository}`;
    const dockerReference = { name, tag: image.digest === undefined ? image.tag : undefined, digest: image.digest };
    const identity = image.digest === undefined ? `${name}:${image.tag ?? 'latest'}` : `${name}@${image.digest}`;
    return { transport: 'docker', identity, namespaces: dockerNamespaces(name), dockerReference };
  }
  if (image.transport === 'docker-archive') {
    const tagged = image.tag === undefined ? undefined : parseReference(image.tag);
    const dockerReference = tagged && { name: `${tagged.registry}/${tagged.repository}`, tag: tagged.tag, digest: undefined };
    return { transport: 'docker-archive', identity: '', namespaces: [], dockerReference };
  }
  const resolved = await realpath(resolve(image.path)).catch(() => resolve(image.path));
  return { transport: image.transport, identity: resolved, namespaces: pathNamespaces(resolved), dockerReference: undefined };
}

/** 'host:5000/a/b' -> ['host:5000/a/b', 'host:5000/a', 'host:5000', '*.<domain suffixes of host>']. */
export function dockerNamespaces(name: string): string[] {
  const namespaces: string[] = [];
  let rest = name;
  for (;;) {
    namespaces.push(rest);
    const slash = rest.lastIndexOf('/');
    if (slash === -1) break;
    rest = rest.slice(0, slash);
  }
  // The port is dropped before the wildcards: '*.example.com' matches example.com:8443 too.
  let host = rest.includes(':') ? rest.slice(0, rest.indexOf(':')) : rest;
  for (let dot = host.indexOf('.'); dot !== -1; dot = host.indexOf('.')) {
    host = host.slice(dot + 1);
    namespaces.push(`*.${host}`);
  }
  return namespaces;
}

/** '/a/b/c' -> ['/a/b/c', '/a/b', '/a']. */
function pathNamespaces(path: string): string[] {
  const namespaces: string[] = [];
  for (let p = path; p !== '/' && p.lastIndexOf('/') !== -1; p = p.slice(0, p.lastIndexOf('/'))) namespaces.push(p);
  return namespaces;
}
