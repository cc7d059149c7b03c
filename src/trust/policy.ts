/**
 * containers-policy.json(5), read as strictly as containers/image reads it
 * (signature/policy_config.go): an unknown key, a duplicated key, a wrong type or an empty
 * requirement list rejects the whole file, since a typo in a security policy must not silently
 * weaken it. Key files are read later, when a requirement is evaluated (as c/image does), so a
 * missing key file only matters to the images whose scope names it.
 */
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { PullUnpackError } from '../errors.js';
import { parseRequirement, type PolicyRequirement } from './requirements.js';
import { objectFields, parseStrictJson } from './strict-json.js';

export type { PolicyRequirement } from './requirements.js';

/** A parsed policy: the global default and, per transport, requirements by scope. */
export interface Policy {
  /** The file it was read from, for messages. */
  path: string;
  default: PolicyRequirement[];
  /** transport name -> scope ('' is the transport's default) -> requirements. */
  transports: Map<string, Map<string, PolicyRequirement[]>>;
}

const POLICY_HINT = 'see containers-policy.json(5); every key must be known and appear once';

/** Reads and parses the policy file `path`; INVALID_POLICY (naming the file) when it is unreadable or invalid. */
export async function loadPolicy(path: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PullUnpackError('INVALID_POLICY', `cannot read the policy file ${path}: ${(err as Error).message}`, {
      cause: err,
      hint: 'give a readable file with --policy, or --insecure-policy to ignore policy files',
    });
  }
  return parsePolicy(text, path);
}

/** Parses policy.json text; `path` names it in errors. */
export function parsePolicy(text: string, path: string): Policy {
  try {
    const doc = objectFields(parseStrictJson(text), 'the policy', ['default', 'transports']);
    if (doc['default'] === undefined) throw new Error('the default policy is missing ("default")');
    const transports = new Map<string, Map<string, PolicyRequirement[]>>();
    if (doc['transports'] !== undefined) {
      for (const [transport, scopes] of Object.entries(
        objectFields(doc['transports'], '"transports"', Object.keys(doc['transports'] ?? {})),
      )) {
        transports.set(transport, parseScopes(transport, scopes));
      }
    }
    return { path, default: parseRequirements(doc['default'], '"default"'), transports };
  } catch (err) {
    throw new PullUnpackError('INVALID_POLICY', `invalid policy in ${path}: ${(err as Error).message}`, { cause: err, hint: POLICY_HINT });
  }
}

function parseScopes(transport: string, value: unknown): Map<string, PolicyRequirement[]> {
  const what = `transport "${transport}"`;
  const scopes = new Map<string, PolicyRequirement[]>();
  const fields = objectFields(value, what, Object.keys((value as object | null) ?? {}));
  for (const [scope, requirements] of Object.entries(fields)) {
    if (scope !== '') validateScope(transport, scope);
    scopes.set(scope, parseRequirements(requirements, `${what} scope "${scope}"`));
  }
  return scopes;
}

function parseRequirements(value: unknown, what: string): PolicyRequirement[] {
  if (!Array.isArray(value)) throw new Error(`${what} must be a list of requirements`);
  if (value.length === 0) throw new Error(`${what}: the list of requirements must not be empty`);
  return value.map((r, i) => parseRequirement(r, `${what} requirement ${i + 1}`));
}

/**
 * Scope syntax per transport, as c/image's ValidatePolicyConfigurationScope: any string for
 * docker (a scope that never matches is harmless), an absolute clean path other than "/" for
 * oci, oci-archive and dir, none at all but "" for docker-archive. Transports pull-unpack does
 * not read are not checked: their scopes never apply here.
 */
function validateScope(transport: string, scope: string): void {
  const invalid = (why: string): Error => new Error(`invalid scope "${scope}" for transport "${transport}": ${why}`);
  if (transport === 'docker-archive') throw invalid('docker-archive supports no scope but the default ""');
  if (transport === 'oci' || transport === 'oci-archive' || transport === 'dir') {
    if (!scope.startsWith('/')) throw invalid('it must be an absolute path');
    if (scope === '/') throw invalid('use the transport default "" instead of "/"');
    const clean = posix.normalize(scope).replace(/(.)\/+$/, '$1');
    if (clean !== scope) throw invalid(`it is not a canonical path; use "${clean}"`);
  }
}

/** Which requirements apply: the scope found, for messages ('docker "host/ns"', 'default'), and its list. */
export interface AppliedScope {
  label: string;
  requirements: PolicyRequirement[];
}

/**
 * The requirements for an image of `transport` whose policy identity is `identity`, with its
 * parent `namespaces` (most specific first): the identity's scope, else the first namespace
 * listed, else the transport's "" scope, else the global default (c/image's
 * requirementsForImageRef).
 */
export function requirementsFor(policy: Policy, transport: string, identity: string, namespaces: readonly string[]): AppliedScope {
  const scopes = policy.transports.get(transport);
  if (scopes) {
    for (const scope of [identity, ...namespaces]) {
      const found = scope === '' ? undefined : scopes.get(scope);
      if (found) return { label: `${transport} "${scope}"`, requirements: found };
    }
    const fallback = scopes.get('');
    if (fallback) return { label: `${transport} default ""`, requirements: fallback };
  }
  return { label: 'default', requirements: policy.default };
}
