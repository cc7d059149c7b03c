/**
 * The CLI's signature-verification flags and the files skopeo and podman read by default,
 * turned into the library's TrustOptions: --policy FILE, else $HOME/.config/containers/policy.json,
 * else /etc/containers/policy.json when present (containers-policy.json(5)); --registries.d DIR,
 * else $HOME/.config/containers/registries.d when present, else /etc/containers/registries.d
 * (containers-registries.d(5)); --insecure-policy ignores policy files; --verify-* add a cosign
 * check. With no policy file and no --verify-* flag, nothing is verified (as before).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ParseArgsConfig } from 'node:util';
import { PullUnpackError } from '../errors.js';
import type { TrustOptions } from '../trust/evaluate.js';

export const TRUST_FLAGS = {
  policy: { type: 'string' },
  'insecure-policy': { type: 'boolean' },
  'registries.d': { type: 'string' },
  'verify-key': { type: 'string', multiple: true },
  'verify-identity': { type: 'string' },
  'verify-issuer': { type: 'string' },
  'trusted-root': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export interface TrustFlagValues {
  policy?: string | undefined;
  'insecure-policy'?: boolean | undefined;
  'registries.d'?: string | undefined;
  'verify-key'?: string[] | undefined;
  'verify-identity'?: string | undefined;
  'verify-issuer'?: string | undefined;
  'trusted-root'?: string | undefined;
}

const SYSTEM_POLICY = '/etc/containers/policy.json';
const SYSTEM_REGISTRIES_D = '/etc/containers/registries.d';

/** TrustOptions from the flags and the environment; `notice` hears "--insecure-policy" once. */
export function trustOptionsFrom(values: TrustFlagValues, env: NodeJS.ProcessEnv, notice: (message: string) => void): TrustOptions {
  const home = env['HOME'] || homedir();
  const userDir = join(home, '.config', 'containers');
  if (values.policy !== undefined && values['insecure-policy'])
    throw new PullUnpackError('USAGE', '--policy and --insecure-policy contradict each other');
  const identity = values['verify-identity'];
  if (!identity && (values['verify-issuer'] !== undefined || values['trusted-root'] !== undefined)) {
    throw new PullUnpackError('USAGE', '--verify-issuer and --trusted-root go with --verify-identity');
  }
  if (identity && (values['verify-key'] ?? []).length > 0)
    throw new PullUnpackError('USAGE', 'give --verify-key or --verify-identity, not both');
  if (values['insecure-policy'])
    notice('--insecure-policy: policy files are ignored; images are accepted without checking signatures (unless --verify-* asks)');
  const userPolicy = join(userDir, 'policy.json');
  const policyPath = values['insecure-policy']
    ? undefined
    : (values.policy ?? (existsSync(userPolicy) ? userPolicy : existsSync(SYSTEM_POLICY) ? SYSTEM_POLICY : undefined));
  const userRegistries = join(userDir, 'registries.d');
  const registriesDir = values['registries.d'] ?? (existsSync(userRegistries) ? userRegistries : SYSTEM_REGISTRIES_D);
  // c/image's built-in lookaside when registries.d names none (docker/registries_d.go).
  const defaultLookaside =
    process.geteuid?.() === 0 ? 'file:///var/lib/containers/sigstore' : pathToFileURL(join(home, '.local/share/containers/sigstore')).href;
  const verify =
    (values['verify-key'] ?? []).length > 0 || identity
      ? { keyPaths: values['verify-key'] ?? [], identity, issuer: values['verify-issuer'], trustedRootPath: values['trusted-root'] }
      : undefined;
  return { policyPath, insecurePolicy: values['insecure-policy'], registriesDir, defaultLookaside, verify };
}
