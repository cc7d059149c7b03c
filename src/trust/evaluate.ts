/**
 * Whether an image may be used, as skopeo and podman decide it: the policy file's requirements
 * for the image's scope must all hold (c/image's IsRunningImageAllowed; the first that fails
 * decides), and so must the --verify-* requirement when given. Runs on the digest the
 * reference resolved to, before any layer is fetched.
 */
import { PullUnpackError } from '../errors.js';
import { isLocalReference, type ImageReference } from '../image/local-reference.js';
import type { ImageSource } from '../sources/source.js';
import { checkRequirement, checkSigstore, type CheckedImage, type CheckResult } from './checks.js';
import { readLookaside, type LookasideOptions } from './lookaside.js';
import { loadPolicy, requirementsFor, type Policy, type PolicyRequirement } from './policy.js';
import { EMPTY_REGISTRIES_CONFIG, loadRegistriesDir, lookasideFor, useSigstoreAttachments, type RegistriesConfig } from './registries-d.js';
import { policyImage, type PolicyImage } from './scopes.js';
import { requirementFromVerifyOptions } from './sigstore-options.js';
import type { SignatureReport, VerifyOptions } from './types.js';
import { isUnavailable, whileChecking } from './unavailable.js';

/** Signature verification settings of a pull or an inspect (the CLI's --policy, --registries.d, --verify-*). */
export interface TrustOptions {
  /** A containers-policy.json(5) file to enforce. */
  policyPath?: string | undefined;
  /** Ignore `policyPath` (--insecure-policy). */
  insecurePolicy?: boolean | undefined;
  /** The containers-registries.d(5) directory: lookaside URLs, use-sigstore-attachments. */
  registriesDir?: string | undefined;
  /** The lookaside used when registries.d names none (c/image: /var/lib/containers/sigstore for root). */
  defaultLookaside?: string | undefined;
  /** A cosign check applied to every image, with or without a policy (--verify-key, --verify-identity). */
  verify?: VerifyOptions | undefined;
  /** `policyPath` already read (prepareTrust); read when the image is checked otherwise. */
  policy?: Policy | undefined;
}

/**
 * `options` with the policy file read and parsed, so that an unreadable or invalid policy fails
 * an operation before anything is fetched (INVALID_POLICY).
 */
export async function prepareTrust(options: TrustOptions | undefined): Promise<TrustOptions | undefined> {
  if (!options?.policyPath || options.insecurePolicy || options.policy) return options;
  return { ...options, policy: await loadPolicy(options.policyPath) };
}

/** What was checked and how it came out. */
export interface TrustVerdict {
  accepted: boolean;
  /** False for insecureAcceptAnything, which looks at no signature (nothing worth reporting when it accepts). */
  checksSignatures: boolean;
  /** Which rules applied: 'policy /etc/containers/policy.json, scope docker "quay.io/ns"', '--verify-key'. */
  scope: string;
  /** The requirement that failed (or the last one checked), described. */
  requirement: string;
  reason: string | undefined;
  /** What to do about the failure, when something specific applies. */
  hint?: string | undefined;
  signatures: SignatureReport[];
}

export interface TrustTarget {
  source: ImageSource;
  /** The image as the user gave it (a registry reference or oci:/oci-archive:/docker-archive:). */
  image: ImageReference;
  /** The digest the reference resolved to (the index when a tag names an index) and its bytes. */
  digest: string;
  manifestBytes: Buffer;
  signal?: AbortSignal | undefined;
  onNotice?: ((message: string) => void) | undefined;
  lookaside?: LookasideOptions | undefined;
}

/** True when `options` asks for any check at all. */
export function wantsTrust(options: TrustOptions | undefined): options is TrustOptions {
  return (
    !!options &&
    ((!!options.policyPath && !options.insecurePolicy) || (options.verify?.keyPaths.length ?? 0) > 0 || !!options.verify?.identity)
  );
}

/**
 * Evaluates the policy (and --verify-* requirement) for `target`. With `all`, every requirement is
 * checked and its signatures reported (for inspect); otherwise checking stops at the first failure.
 */
export async function evaluateTrust(options: TrustOptions, target: TrustTarget, all = false): Promise<TrustVerdict[]> {
  const verdicts: TrustVerdict[] = [];
  const policy = options.policyPath && !options.insecurePolicy ? (options.policy ?? (await loadPolicy(options.policyPath))) : undefined;
  const verify = options.verify && wantsTrust({ verify: options.verify }) ? await requirementFromVerifyOptions(options.verify) : undefined;
  const image = await policyImage(target.image);
  const checked = await checkedImage(options, target, image);
  if (policy) {
    const scope = requirementsFor(policy, image.transport, image.identity, image.namespaces);
    const label = `policy ${policy.path}, scope ${scope.label}`;
    const count = scope.requirements.length;
    for (const [i, requirement] of scope.requirements.entries()) {
      const described = `requirement ${i + 1}${count > 1 ? ` of ${count}` : ''}, ${describeRequirement(requirement)}`;
      const checks = requirement.type !== 'insecureAcceptAnything';
      const verdict = await check(label, described, checks, () => checkRequirement(requirement, checked));
      verdicts.push(verdict);
      if (!verdict.accepted && !all) return verdicts;
    }
  }
  if (verify) {
    const label = verifyLabel(options.verify!);
    verdicts.push(await check(label, describeVerify(options.verify!), true, () => checkSigstore(verify, checked)));
  }
  return verdicts;
}

/** The verdict of one requirement; signatures that cannot be read fail the check with their own error, saying what was checked. */
async function check(
  scope: string,
  requirement: string,
  checksSignatures: boolean,
  run: () => Promise<CheckResult>,
): Promise<TrustVerdict> {
  let result: CheckResult;
  try {
    result = await run();
  } catch (err) {
    throw isUnavailable(err) ? whileChecking(err, `${scope}: ${requirement}`) : err;
  }
  const { ok: accepted, reason, hint, signatures } = result;
  return { accepted, checksSignatures, scope, requirement, reason, hint, signatures };
}

function describeVerify(verify: VerifyOptions): string {
  if (verify.keyPaths.length > 0) return `a cosign signature by ${verify.keyPaths.length === 1 ? 'that key' : 'one of those keys'}`;
  return `a keyless cosign signature from ${verify.issuer ?? ''}`;
}

function verifyLabel(verify: VerifyOptions): string {
  return verify.keyPaths.length > 0 ? `--verify-key ${verify.keyPaths.join(', ')}` : `--verify-identity ${verify.identity ?? ''}`;
}

/**
 * The image as the requirement checks see it: its trust context and where its signatures are.
 * registries.d is read only when a signature requirement needs it.
 */
async function checkedImage(options: TrustOptions, target: TrustTarget, image: PolicyImage): Promise<CheckedImage> {
  const docker = image.transport === 'docker';
  let registries: Promise<RegistriesConfig> | undefined;
  const config = (): Promise<RegistriesConfig> =>
    (registries ??= docker && options.registriesDir ? loadRegistriesDir(options.registriesDir) : Promise.resolve(EMPTY_REGISTRIES_CONFIG));
  let simple: Promise<{ blobs: Buffer[]; where: string }> | undefined;
  const readSimple = async (): Promise<{ blobs: Buffer[]; where: string }> => {
    const lookaside = docker ? (lookasideFor(await config(), image.identity, image.namespaces) ?? options.defaultLookaside) : undefined;
    if (!lookaside)
      return {
        blobs: [],
        where: docker ? 'no lookaside configured in registries.d' : `${image.transport}: images carry no GPG signatures`,
      };
    const repoPath = image.dockerReference!.name.slice(image.dockerReference!.name.indexOf('/') + 1);
    try {
      return {
        blobs: await readLookaside(lookaside, repoPath, target.digest, { ...target.lookaside, signal: target.signal }),
        where: `lookaside ${lookaside}`,
      };
    } catch (err) {
      if (isUnavailable(err)) throw err;
      throw new Error(`cannot read the lookaside signatures (${lookaside}): ${(err as Error).message}`, { cause: err });
    }
  };
  return {
    ctx: {
      source: target.source,
      reference: isLocalReference(target.image) ? undefined : target.image,
      digest: target.digest,
      signal: target.signal,
      offline: target.lookaside?.offline,
      onNotice: target.onNotice,
    },
    manifestBytes: target.manifestBytes,
    dockerReference: image.dockerReference,
    simpleSignatures: () => (simple ??= readSimple()),
    sigstoreDisabled: async () =>
      docker && !useSigstoreAttachments(await config(), image.identity, image.namespaces)
        ? sigstoreDisabled(image.dockerReference!.name, options.registriesDir)
        : undefined,
  };
}

/** Why a sigstoreSigned requirement cannot hold for a registry image whose registries.d settings leave attachments off (as c/image). */
function sigstoreDisabled(repository: string, registriesDir: string | undefined): { reason: string; hint: string } {
  const where = registriesDir ? `registries.d (${registriesDir})` : 'no registries.d directory';
  return {
    reason: `sigstore signatures are not looked up for ${repository}: ${where} sets no use-sigstore-attachments: true for it`,
    hint: `add "use-sigstore-attachments: true" for the registry or namespace (or default-docker) in a registries.d file, as podman and skopeo need too; see containers-registries.d(5)`,
  };
}

/** A requirement in a few words: 'signedBy (GPGKeys, keyPath /etc/pki/key.gpg)'. */
export function describeRequirement(requirement: PolicyRequirement): string {
  switch (requirement.type) {
    case 'signedBy':
      return `signedBy (${requirement.keyType}, ${requirement.keys.describe}, signedIdentity ${requirement.signedIdentity.type})`;
    case 'sigstoreSigned': {
      const by =
        requirement.keys?.describe ??
        (requirement.fulcio ? `fulcio ${requirement.fulcio.oidcIssuer} ${requirement.fulcio.subjectEmail}` : 'pki');
      return `sigstoreSigned (${by}, signedIdentity ${requirement.signedIdentity.type})`;
    }
    default:
      return requirement.type;
  }
}

/** The first rejection of `verdicts` as the error a pull fails with (one line and a hint), if any. */
export function rejectionError(display: string, verdicts: TrustVerdict[]): PullUnpackError | undefined {
  const failed = verdicts.find((v) => !v.accepted);
  if (!failed) return undefined;
  return new PullUnpackError(
    'SIGNATURE_REJECTED',
    `${display} rejected by ${failed.scope}: ${failed.requirement}: ${failed.reason ?? 'not accepted'}`,
    {
      hint:
        failed.hint ??
        (failed.scope.startsWith('policy')
          ? 'pull-unpack inspect with the same --policy lists the signatures found; no layer was downloaded'
          : 'check the key or identity given; no layer was downloaded'),
    },
  );
}

/** The JSON events of a verification: one per requirement checked. */
export type TrustEvent =
  | { type: 'signature-verified'; scope: string; requirement: string; signatures: SignatureReport[] }
  | { type: 'signature-rejected'; scope: string; requirement: string; reason: string; signatures: SignatureReport[] };

/**
 * Checks `target` when `options` asks for any check; reports each verdict to `emit` and throws
 * SIGNATURE_REJECTED (INVALID_POLICY for a bad policy or registries.d) when the image is refused.
 */
export async function enforceTrust(
  options: TrustOptions | undefined,
  target: TrustTarget,
  display: string,
  emit: (event: TrustEvent) => void,
): Promise<void> {
  if (!wantsTrust(options)) return;
  const verdicts = await evaluateTrust(options, target);
  for (const v of verdicts) {
    const { scope, requirement, signatures } = v;
    if (v.accepted && !v.checksSignatures) continue;
    emit(
      v.accepted
        ? { type: 'signature-verified', scope, requirement, signatures }
        : { type: 'signature-rejected', scope, requirement, reason: v.reason ?? 'not accepted', signatures },
    );
  }
  const rejected = rejectionError(display, verdicts);
  if (rejected) throw rejected;
}
