/**
 * containers-policy.json(5) `signedIdentity`: which docker reference a signature may claim for
 * the image being pulled. Parsed strictly (c/image signature/policy_config.go) and matched as
 * c/image's signature/policy_reference_match.go does, with references normalized as Docker does
 * (`busybox` is `docker.io/library/busybox`) but, unlike a pull, no default tag added: a
 * signature that names only a repository matches only matchRepository and exactRepository.
 */
import { parseReference } from '../image/reference.js';
import { objectFields } from './strict-json.js';
import type { IdentityMatcher, SignedIdentity } from './types.js';

/** A docker reference as distribution/reference's ParseNormalizedNamed returns it. */
export interface NamedReference {
  /** 'docker.io/library/busybox'. */
  name: string;
  tag: string | undefined;
  digest: string | undefined;
}

/** Parses `text` like ParseNormalizedNamed: normalized, and without a default tag. */
export function parseNamed(text: string): NamedReference {
  const ref = parseReference(text);
  const beforeDigest = text.split('@')[0]!;
  const explicitTag = beforeDigest.indexOf(':', beforeDigest.lastIndexOf('/') + 1) !== -1;
  return { name: `${ref.registry}/${ref.repository}`, tag: explicitTag ? ref.tag : undefined, digest: ref.digest };
}

/** 'name[:tag][@digest]', Go's reference String(). */
export function formatNamed(ref: NamedReference): string {
  return `${ref.name}${ref.tag === undefined ? '' : `:${ref.tag}`}${ref.digest === undefined ? '' : `@${ref.digest}`}`;
}

function isNameOnly(ref: NamedReference): boolean {
  return ref.tag === undefined && ref.digest === undefined;
}

function tryParseNamed(text: string): NamedReference | undefined {
  try {
    return parseNamed(text);
  } catch {
    return undefined;
  }
}

// distribution/reference's domain and name grammar, for remapIdentity's prefixes.
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const PATH_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';
const DOMAIN_ONLY = new RegExp(`^${DOMAIN}$`);
const DOMAIN_PREFIX = new RegExp(`^${DOMAIN}/`);
const NAME = new RegExp(`^(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);

/** Parses a `signedIdentity` object; throws an Error saying what is wrong with it. */
export function parseSignedIdentity(value: unknown, what: string): SignedIdentity {
  const type = (value as { type?: unknown } | null)?.type;
  const exact = (keys: string[]): Record<string, unknown> => objectFields(value, what, ['type', ...keys], ['type', ...keys]);
  const text = (fields: Record<string, unknown>, key: string): string => {
    if (typeof fields[key] !== 'string') throw new Error(`${what}: "${key}" must be a string`);
    return fields[key];
  };
  switch (type) {
    case 'matchExact':
    case 'matchRepoDigestOrExact':
    case 'matchRepository':
      exact([]);
      return { type };
    case 'exactReference': {
      const dockerReference = text(exact(['dockerReference']), 'dockerReference');
      const ref = tryParseNamed(dockerReference);
      if (!ref) throw new Error(`${what}: invalid dockerReference "${dockerReference}"`);
      if (isNameOnly(ref)) throw new Error(`${what}: dockerReference "${dockerReference}" contains neither a tag nor a digest`);
      return { type, dockerReference };
    }
    case 'exactRepository': {
      const dockerRepository = text(exact(['dockerRepository']), 'dockerRepository');
      if (!tryParseNamed(dockerRepository)) throw new Error(`${what}: invalid dockerRepository "${dockerRepository}"`);
      return { type, dockerRepository };
    }
    case 'remapIdentity': {
      const fields = exact(['prefix', 'signedPrefix']);
      const prefix = text(fields, 'prefix');
      const signedPrefix = text(fields, 'signedPrefix');
      for (const p of [prefix, signedPrefix]) {
        if (!(DOMAIN_ONLY.test(p) || (NAME.test(p) && DOMAIN_PREFIX.test(p)))) throw new Error(`${what}: prefix "${p}" is not valid`);
      }
      return { type, prefix, signedPrefix };
    }
    default:
      throw new Error(`${what}: unknown signedIdentity type ${JSON.stringify(type)}`);
  }
}

/**
 * Whether a signature's claimed docker reference is acceptable for the image the user named
 * (`intended`, fully explicit: a tag or a digest; undefined for an image with no docker name,
 * such as an oci: layout, which only exactReference and exactRepository can match).
 */
export function identityMatcher(identity: SignedIdentity, intended: NamedReference | undefined): IdentityMatcher {
  return (claimed) => {
    const signature = tryParseNamed(claimed);
    if (!signature) return false;
    switch (identity.type) {
      case 'matchExact':
        return (
          intended !== undefined && !isNameOnly(intended) && !isNameOnly(signature) && formatNamed(signature) === formatNamed(intended)
        );
      case 'matchRepoDigestOrExact':
        return intended !== undefined && matchRepoDigestOrExact(intended, signature);
      case 'matchRepository':
        return intended !== undefined && signature.name === intended.name;
      case 'exactReference': {
        const wanted = parseNamed(identity.dockerReference);
        return !isNameOnly(signature) && formatNamed(signature) === formatNamed(wanted);
      }
      case 'exactRepository':
        return signature.name === parseNamed(identity.dockerRepository).name;
      case 'remapIdentity': {
        const remapped = intended && remap(intended, identity.prefix, identity.signedPrefix);
        return remapped !== undefined && matchRepoDigestOrExact(remapped, signature);
      }
    }
  };
}

/** A tagged image needs exactly its reference signed; a digest-only one any tag of its repository. */
function matchRepoDigestOrExact(intended: NamedReference, signature: NamedReference): boolean {
  if (isNameOnly(signature)) return false;
  if (intended.tag !== undefined) return formatNamed(signature) === formatNamed(intended);
  if (intended.digest !== undefined) return signature.name === intended.name;
  return false;
}

/**
 * remapIdentity: when the image's name is `prefix` or under it (at a "/" boundary), the
 * signature must name it with `signedPrefix` instead; the rewritten reference must be in
 * canonical form (c/image uses reference.ParseNamed), else nothing matches.
 */
function remap(intended: NamedReference, prefix: string, signedPrefix: string): NamedReference | undefined {
  const name = intended.name;
  const under = name === prefix || (name.startsWith(prefix) && name[prefix.length] === '/');
  if (!under) return intended;
  const rewritten = formatNamed(intended).replace(prefix, signedPrefix);
  const parsed = tryParseNamed(rewritten);
  return parsed && formatNamed(parsed) === rewritten ? parsed : undefined;
}
