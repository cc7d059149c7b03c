/**
 * Host platform detection, platform parsing and normalization, and ordered matching of an
 * index's entries, following containerd's `platforms` package (Normalize, Only).
 * Pure apart from hostPlatform's defaults, which read `process` and `os`.
 */
import { endianness } from 'node:os';
import { PullUnpackError } from '../errors.js';
import { isAttestation, type Descriptor, type Platform } from './oci.js';

export interface HostPlatformInput {
  /** A `process.platform` value: 'linux', 'darwin', 'win32', ... */
  platform: string;
  /** A `process.arch` value: 'x64', 'arm64', 'arm', 'ia32', ... */
  arch: string;
  /** `process.config.variables.arm_version` (e.g. '7'); only read for 'arm'. */
  armVersion?: string | number | undefined;
  /** Only read for 'ppc64'; defaults to this machine's `os.endianness()`. */
  endianness?: 'BE' | 'LE';
}

/** Node's `process.arch` -> the OCI (GOARCH) architecture and its default variant. */
const NODE_ARCH: Record<string, { architecture: string; variant?: string }> = {
  x64: { architecture: 'amd64' },
  arm64: { architecture: 'arm64', variant: 'v8' },
  ia32: { architecture: '386' },
  s390x: { architecture: 's390x' },
  s390: { architecture: 's390' },
  riscv64: { architecture: 'riscv64' },
  loong64: { architecture: 'loong64' },
  ppc: { architecture: 'ppc' },
  mips: { architecture: 'mips' },
  mipsel: { architecture: 'mipsle' },
  mips64: { architecture: 'mips64' },
  mips64el: { architecture: 'mips64le' },
};

/**
 * The platform to pull for this host. Images are Linux images, so on another OS the result
 * is linux/<arch> and `notes` says so (the caller prints notes once). Pass `input` in tests.
 */
export function hostPlatform(input?: HostPlatformInput): { platform: Platform; notes: string[] } {
  const host = input ?? currentHost();
  const notes: string[] = [];
  let platform: Platform;
  if (host.arch === 'arm') {
    const n = Number(String(host.armVersion ?? '').replace(/^v/, ''));
    const version = Number.isInteger(n) && n >= 5 && n <= 8 ? n : 7;
    platform = { os: 'linux', architecture: 'arm', variant: `v${version}` };
  } else if (host.arch === 'ppc64') {
    platform = { os: 'linux', architecture: (host.endianness ?? endianness()) === 'LE' ? 'ppc64le' : 'ppc64' };
  } else {
    const known = NODE_ARCH[host.arch];
    platform = known ? { os: 'linux', ...known } : { os: 'linux', architecture: host.arch };
    if (!known) notes.push(`unrecognized host architecture "${host.arch}"; pass --platform to choose one`);
  }
  if (host.platform !== 'linux') {
    notes.push(`the host OS is ${host.platform}; pulling the ${formatPlatform(platform)} image (container images are Linux images)`);
  }
  return { platform, notes };
}

function currentHost(): HostPlatformInput {
  // arm_version is in node's build config but not in @types/node's ProcessConfig.
  const variables = process.config.variables as unknown as Record<string, unknown>;
  const armVersion = variables['arm_version'];
  return {
    platform: process.platform,
    arch: process.arch,
    armVersion: typeof armVersion === 'string' || typeof armVersion === 'number' ? armVersion : undefined,
    endianness: endianness(),
  };
}

const PART = /^[a-z0-9][a-z0-9._-]*$/;
/** GOARCH values (containerd's isKnownArch); a bare word must be one of them. */
const KNOWN_ARCH = new Set([
  '386',
  'amd64',
  'amd64p32',
  'arm',
  'armbe',
  'arm64',
  'arm64be',
  'ppc64',
  'ppc64le',
  'loong64',
  'mips',
  'mipsle',
  'mips64',
  'mips64le',
  'mips64p32',
  'mips64p32le',
  'ppc',
  'riscv',
  'riscv64',
  's390',
  's390x',
  'sparc',
  'sparc64',
  'wasm',
]);
const KNOWN_OS = new Set([
  'aix',
  'android',
  'darwin',
  'dragonfly',
  'freebsd',
  'hurd',
  'illumos',
  'ios',
  'js',
  'linux',
  'nacl',
  'netbsd',
  'openbsd',
  'plan9',
  'solaris',
  'windows',
  'zos',
]);

/**
 * Parses `os/arch[/variant]`, or a bare architecture meaning linux/<arch>, and normalizes it.
 * Throws INVALID_PLATFORM saying what is wrong.
 */
export function parsePlatform(text: string): Platform {
  if (text.trim() === '') throw invalidPlatform(text, 'it is empty');
  const parts = text.trim().toLowerCase().split('/');
  if (parts.length > 3) throw invalidPlatform(text, 'expected OS/ARCH[/VARIANT]');
  const bad = parts.find((p) => !PART.test(p));
  if (bad !== undefined) {
    throw invalidPlatform(text, bad === '' ? 'it has an empty part' : `"${bad}" has characters other than a-z, 0-9, ".", "_", "-"`);
  }
  if (parts.length === 1) {
    if (KNOWN_OS.has(parts[0]!) || parts[0] === 'macos') {
      throw invalidPlatform(text, `"${parts[0]}" is an OS; an architecture is needed too, e.g. ${parts[0]}/amd64`);
    }
    const platform = normalizePlatform({ os: 'linux', architecture: parts[0]! });
    if (!KNOWN_ARCH.has(platform.architecture)) throw invalidPlatform(text, `"${parts[0]}" is not a known architecture`);
    return platform;
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform({ os, architecture, variant });
}

/**
 * Returns the canonical form of `p` (containerd's Normalize): lowercase OS with macos -> darwin;
 * aarch64 -> arm64 (variant v8 dropped), x86_64 -> amd64 (v1 dropped), i386/i686 -> 386,
 * armhf -> arm/v7, armel -> arm/v6, arm without variant -> arm/v7, arm/7 -> arm/v7.
 * `os.version` and `os.features` are kept as they are.
 */
export function normalizePlatform(p: Platform): Platform {
  let os = p.os.toLowerCase();
  if (os === 'macos') os = 'darwin';
  let arch = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (arch) {
    case 'i386':
    case 'i686':
      [arch, variant] = ['386', ''];
      break;
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      arch = 'amd64';
      if (variant === 'v1' || variant === '1') variant = '';
      else if (/^[2-4]$/.test(variant)) variant = `v${variant}`;
      break;
    case 'aarch64':
    case 'arm64':
      arch = 'arm64';
      if (variant === '8' || variant === 'v8') variant = '';
      break;
    case 'armhf':
    case 'armv7l':
      [arch, variant] = ['arm', 'v7'];
      break;
    case 'armel':
    case 'armv6l':
      [arch, variant] = ['arm', 'v6'];
      break;
    case 'arm':
      if (variant === '') variant = 'v7';
      else if (/^[5-8]$/.test(variant)) variant = `v${variant}`;
      break;
  }
  return build(os, arch, variant, p);
}

function build(os: string, architecture: string, variant: string, from: Platform): Platform {
  const out: Platform = { os, architecture };
  if (variant !== '') out.variant = variant;
  if (from['os.version'] !== undefined) out['os.version'] = from['os.version'];
  if (from['os.features'] !== undefined) out['os.features'] = from['os.features'];
  return out;
}

/** 'os/arch[/variant]' of `p` as given (normalize first for the canonical form). */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Acceptable platforms for `wanted`, normalized, best first (wanted itself first), as
 * containerd's platforms.Only: amd64/vN -> lower amd64 levels, then 386; arm/vN -> arm/v(N-1)
 * down to v5; arm64/v8.x -> lower v8.x, arm64/v9.x -> lower v9.x then v8.(x+5) down;
 * then arm64 falls back to 32-bit arm from v8 down to v5.
 */
export function compatiblePlatforms(wanted: Platform): Platform[] {
  const p = normalizePlatform(wanted);
  const same = (architecture: string, variant: string): Platform => build(p.os, architecture, variant, p);
  const out: Platform[] = [p];
  const level = (v: string | undefined): number => Number((v ?? '').replace(/^v/, ''));
  switch (p.architecture) {
    case 'amd64':
      for (let n = level(p.variant) - 1; n >= 1; n--) out.push(same('amd64', n === 1 ? '' : `v${n}`));
      out.push(same('386', ''));
      break;
    case 'arm':
      for (let n = level(p.variant) - 1; n >= 5; n--) out.push(same('arm', `v${n}`));
      break;
    case 'arm64': {
      const variant = p.variant ?? 'v8';
      const m = /^v(8|9)(?:\.(\d+))?$/.exec(variant);
      if (m) {
        let minor = Number(m[2] ?? 0);
        if (m[1] === '9') {
          for (let n = minor - 1; n >= 0; n--) out.push(same('arm64', n === 0 ? 'v9' : `v9.${n}`));
          // Armv9.0 corresponds to Armv8.5, so v9.x also runs v8.(x+5) and below.
          minor += 5;
          out.push(same('arm64', `v8.${minor}`));
        }
        for (let n = minor - 1; n >= 0; n--) out.push(same('arm64', n === 0 ? '' : `v8.${n}`));
      }
      const armVariant = /^v[89]\./.test(variant) ? 'v8' : variant;
      out.push(...compatiblePlatforms(same('arm', armVariant)));
      break;
    }
  }
  return out;
}

/** True when normalized `have` satisfies normalized `want`; os.version counts only off Linux. */
function matches(want: Platform, have: Platform): boolean {
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  if ((want.variant ?? '') !== (have.variant ?? '')) return false;
  const wantVersion = want['os.version'];
  const haveVersion = have['os.version'];
  if (want.os === 'linux' || !wantVersion || !haveVersion) return true;
  return haveVersion === wantVersion || haveVersion.startsWith(`${wantVersion}.`);
}

/** Where `have` ranks in compatiblePlatforms(wanted) (0: exact), or undefined when it does not run there. */
export function platformRank(wanted: Platform, have: Platform): number | undefined {
  const normalized = normalizePlatform(have);
  const rank = compatiblePlatforms(wanted).findIndex((v) => matches(v, normalized));
  return rank === -1 ? undefined : rank;
}

export interface PlatformChoice {
  /** The chosen index entry. */
  descriptor: Descriptor;
  /** Normalized platform of the chosen entry. */
  platform: Platform;
  /** E.g. 'exact match for linux/arm/v7' or 'fallback: linux/arm/v6 runs on linux/arm/v7'. */
  reason: string;
  /** Things worth telling the user, e.g. that a 386 image was chosen for amd64. */
  notes: string[];
  /** Every entry in index order; rank = position in compatiblePlatforms(wanted), or undefined. */
  candidates: Array<{ descriptor: Descriptor; platform?: Platform; attestation: boolean; rank: number | undefined }>;
}

/**
 * Picks the best entry of an index for `wanted`: lowest rank in compatiblePlatforms(wanted),
 * the first in index order on a tie. Entries without a platform, with unknown/unknown or marked
 * as attestations are never chosen. Throws NO_MATCHING_PLATFORM listing the image's platforms.
 * `what` names the image in messages.
 */
export function selectPlatform(manifests: Descriptor[], wanted: Platform, what: string): PlatformChoice {
  const vector = compatiblePlatforms(wanted);
  const target = vector[0]!;
  const candidates: PlatformChoice['candidates'] = manifests.map((descriptor) => {
    const attestation = isAttestation(descriptor);
    if (!descriptor.platform) return { descriptor, attestation, rank: undefined };
    const platform = normalizePlatform(descriptor.platform);
    const index = attestation ? -1 : vector.findIndex((v) => matches(v, platform));
    return { descriptor, platform, attestation, rank: index === -1 ? undefined : index };
  });
  let best: (typeof candidates)[number] | undefined;
  for (const c of candidates) {
    if (c.rank !== undefined && (best?.rank === undefined || c.rank < best.rank)) best = c;
  }
  if (!best || !best.platform) throw noMatch(candidates, target, what);
  const chosen = formatPlatform(best.platform);
  const wantedText = formatPlatform(target);
  const notes: string[] = [];
  if (target.architecture === 'amd64' && best.platform.architecture === '386') {
    notes.push(`${what} has no ${wantedText} image; using its ${chosen} (32-bit) image, which needs IA-32 emulation in the kernel`);
  } else if (target.architecture === 'arm64' && best.platform.architecture === 'arm') {
    notes.push(`${what} has no ${wantedText} image; using its 32-bit ${chosen} image, which needs a CPU and kernel that run AArch32 code`);
  }
  return {
    descriptor: best.descriptor,
    platform: best.platform,
    reason: best.rank === 0 ? `exact match for ${wantedText}` : `fallback: ${chosen} runs on ${wantedText}`,
    notes,
    candidates,
  };
}

function noMatch(candidates: PlatformChoice['candidates'], target: Platform, what: string): PullUnpackError {
  const available = [...new Set(candidates.filter((c) => c.platform && !c.attestation).map((c) => formatPlatform(c.platform!)))];
  const has = available.length === 0 ? 'it lists no usable platform' : `it has: ${available.join(', ')}`;
  return new PullUnpackError('NO_MATCHING_PLATFORM', `${what} has no ${formatPlatform(target)} image; ${has}`, {
    hint:
      available.length === 0
        ? 'the index holds only attestations or entries without a platform'
        : `pass --platform to pick one of them, e.g. --platform ${available[0]}`,
  });
}

function invalidPlatform(text: string, why: string): PullUnpackError {
  return new PullUnpackError('INVALID_PLATFORM', `invalid platform "${text}": ${why}`, {
    hint: 'use OS/ARCH[/VARIANT], e.g. linux/amd64, linux/arm64, linux/arm/v7, or a bare architecture',
  });
}
