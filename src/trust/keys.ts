/**
 * Key material a policy names, read when a requirement is evaluated: the seam's
 * SigstoreRequirement from a sigstoreSigned requirement (PEM public keys, Fulcio CA
 * certificates, Rekor keys), as c/image reads keyPath/keyPaths/keyData and friends.
 */
import { readFile } from 'node:fs/promises';
import type { KeySource, PolicyRequirement } from './requirements.js';
import type { SigstoreRequirement } from './types.js';

/** The contents of every file and inline value of `source`, as text (PEM). */
export async function readKeyTexts(source: KeySource): Promise<string[]> {
  const texts = source.data.map((d) => d.toString('utf8'));
  for (const path of source.paths) {
    try {
      texts.push(await readFile(path, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read the key file ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  return texts;
}

/** The SigstoreRequirement for a policy's sigstoreSigned requirement, its files read. */
export async function sigstoreRequirementOf(
  requirement: Extract<PolicyRequirement, { type: 'sigstoreSigned' }>,
): Promise<SigstoreRequirement> {
  if (requirement.pki) throw new Error('"pki" (X.509 CA roots without Fulcio) is not supported by pull-unpack');
  const fulcio = requirement.fulcio && {
    caCertificates: (await readKeyTexts(requirement.fulcio.ca)).join('\n'),
    oidcIssuer: requirement.fulcio.oidcIssuer,
    subjectEmail: requirement.fulcio.subjectEmail,
  };
  return {
    type: 'sigstoreSigned',
    publicKeys: requirement.keys ? await readKeyTexts(requirement.keys) : [],
    fulcio,
    rekorPublicKeys: requirement.rekor ? await readKeyTexts(requirement.rekor) : [],
    signedIdentity: requirement.signedIdentity,
  };
}
