import { describe, expect, it } from 'vitest';
import { ATTESTATION_ANNOTATION, MediaType, type Descriptor, type Platform } from '../src/image/oci.js';
import {
  compatiblePlatforms,
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  selectPlatform,
} from '../src/image/platform.js';
import { thrown } from './helpers/errors.js';

let counter = 0;
/** An index entry for `spec` ('os/arch[/variant]' as written in the index, not normalized). */
function entry(spec: string | undefined, annotations?: Record<string, string>): Descriptor {
  counter += 1;
  const d: Descriptor = {
    mediaType: MediaType.OciManifest,
    digest: `sha256:${counter.toString(16).padStart(64, '0')}`,
    size: 500 + counter,
  };
  if (spec !== undefined) {
    const [os, architecture, variant] = spec.split('/') as [string, string, string | undefined];
    d.platform = variant === undefined ? { os, architecture } : { os, architecture, variant };
  }
  if (annotations) d.annotations = annotations;
  return d;
}

const attestation = (): Descriptor =>
  entry('unknown/unknown', { [ATTESTATION_ANNOTATION]: 'attestation-manifest', 'vnd.docker.reference.digest': 'sha256:x' });

describe('hostPlatform', () => {
  it.each([
    [{ platform: 'linux', arch: 'x64' }, 'linux/amd64'],
    [{ platform: 'linux', arch: 'arm64' }, 'linux/arm64/v8'],
    [{ platform: 'linux', arch: 'arm', armVersion: '7' }, 'linux/arm/v7'],
    [{ platform: 'linux', arch: 'arm', armVersion: 6 }, 'linux/arm/v6'],
    [{ platform: 'linux', arch: 'arm', armVersion: undefined }, 'linux/arm/v7'],
    [{ platform: 'linux', arch: 'arm', armVersion: 'default' }, 'linux/arm/v7'],
    [{ platform: 'linux', arch: 'ia32' }, 'linux/386'],
    [{ platform: 'linux', arch: 'ppc64', endianness: 'LE' as const }, 'linux/ppc64le'],
    [{ platform: 'linux', arch: 'ppc64', endianness: 'BE' as const }, 'linux/ppc64'],
    [{ platform: 'linux', arch: 's390x' }, 'linux/s390x'],
    [{ platform: 'linux', arch: 'riscv64' }, 'linux/riscv64'],
    [{ platform: 'linux', arch: 'loong64' }, 'linux/loong64'],
    [{ platform: 'linux', arch: 'mips' }, 'linux/mips'],
    [{ platform: 'linux', arch: 'mipsel' }, 'linux/mipsle'],
    [{ platform: 'linux', arch: 'mips64el' }, 'linux/mips64le'],
  ])('%j -> %s with no notes', (input, expected) => {
    const { platform, notes } = hostPlatform(input);
    expect(formatPlatform(platform)).toBe(expected);
    expect(notes).toEqual([]);
  });

  it('defaults the OS to linux on macOS and says so', () => {
    const { platform, notes } = hostPlatform({ platform: 'darwin', arch: 'arm64' });
    expect(platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/host OS is darwin; pulling the linux\/arm64\/v8 image/);
  });

  it('defaults the OS to linux on Windows and says so', () => {
    const { platform, notes } = hostPlatform({ platform: 'win32', arch: 'x64' });
    expect(formatPlatform(platform)).toBe('linux/amd64');
    expect(notes.join('\n')).toMatch(/host OS is win32/);
  });

  it('passes an unknown architecture through with a note', () => {
    const { platform, notes } = hostPlatform({ platform: 'linux', arch: 'sparc64' });
    expect(platform).toEqual({ os: 'linux', architecture: 'sparc64' });
    expect(notes[0]).toMatch(/unrecognized host architecture "sparc64"/);
  });

  it('reads the real process when no input is given', () => {
    const { platform } = hostPlatform();
    expect(platform.os).toBe('linux');
    const expected = hostPlatform({ platform: process.platform, arch: process.arch }).platform.architecture;
    expect(platform.architecture).toBe(expected);
  });
});

describe('parsePlatform and normalizePlatform', () => {
  it.each([
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/x86_64', { os: 'linux', architecture: 'amd64' }],
    ['linux/x86-64', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v1', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v3', { os: 'linux', architecture: 'amd64', variant: 'v3' }],
    ['linux/aarch64', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/8', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8.2', { os: 'linux', architecture: 'arm64', variant: 'v8.2' }],
    ['linux/i386', { os: 'linux', architecture: '386' }],
    ['linux/i686', { os: 'linux', architecture: '386' }],
    ['linux/armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/armel', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/5', { os: 'linux', architecture: 'arm', variant: 'v5' }],
    ['linux/arm/v6', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['Linux/ARM64', { os: 'linux', architecture: 'arm64' }],
    ['  linux/amd64  ', { os: 'linux', architecture: 'amd64' }],
    ['macos/arm64', { os: 'darwin', architecture: 'arm64' }],
    ['darwin/amd64', { os: 'darwin', architecture: 'amd64' }],
    ['windows/amd64', { os: 'windows', architecture: 'amd64' }],
    ['linux/ppc64le', { os: 'linux', architecture: 'ppc64le' }],
    ['linux/riscv64', { os: 'linux', architecture: 'riscv64' }],
    ['arm64', { os: 'linux', architecture: 'arm64' }],
    ['aarch64', { os: 'linux', architecture: 'arm64' }],
    ['x86_64', { os: 'linux', architecture: 'amd64' }],
    ['armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['s390x', { os: 'linux', architecture: 's390x' }],
  ])('%j', (text, expected) => {
    expect(parsePlatform(text)).toStrictEqual(expected);
  });

  it.each([
    ['', /it is empty/],
    ['   ', /it is empty/],
    ['linux/', /empty part/],
    ['/amd64', /empty part/],
    ['linux//v7', /empty part/],
    ['linux/arm/v7/extra', /expected OS\/ARCH\[\/VARIANT\]/],
    ['linux/amd 64', /"amd 64" has characters other than/],
    ['linux/amd64;rm', /has characters other than/],
    ['linux', /"linux" is an OS; an architecture is needed too, e.g. linux\/amd64/],
    ['banana', /"banana" is not a known architecture/],
  ])('rejects %j with INVALID_PLATFORM', (text, message) => {
    const err = thrown(() => parsePlatform(text));
    expect(err.code).toBe('INVALID_PLATFORM');
    expect(err.message).toMatch(message);
    expect(err.hint).toMatch(/linux\/arm\/v7/);
  });

  it('normalizes a descriptor platform and keeps os.version and os.features', () => {
    const p: Platform = { os: 'Windows', architecture: 'X86_64', 'os.version': '10.0.17763.5329', 'os.features': ['win32k'] };
    expect(normalizePlatform(p)).toStrictEqual({
      os: 'windows',
      architecture: 'amd64',
      'os.version': '10.0.17763.5329',
      'os.features': ['win32k'],
    });
  });

  it('treats an empty variant as none and is idempotent', () => {
    const once = normalizePlatform({ os: 'linux', architecture: 'amd64', variant: '' });
    expect(once).toStrictEqual({ os: 'linux', architecture: 'amd64' });
    for (const text of ['linux/armhf', 'linux/arm64/v8', 'x86_64', 'linux/amd64/v2']) {
      const p = parsePlatform(text);
      expect(normalizePlatform(p)).toStrictEqual(p);
    }
  });

  it('formats os/arch[/variant]', () => {
    expect(formatPlatform({ os: 'linux', architecture: 'arm', variant: 'v7' })).toBe('linux/arm/v7');
    expect(formatPlatform({ os: 'linux', architecture: 'amd64' })).toBe('linux/amd64');
    expect(formatPlatform(parsePlatform('linux/arm64/v8'))).toBe('linux/arm64');
  });
});

describe('compatiblePlatforms (containerd platforms.Only order)', () => {
  const order = (text: string): string[] => compatiblePlatforms(parsePlatform(text)).map(formatPlatform);

  it.each([
    ['linux/amd64', ['linux/amd64', 'linux/386']],
    ['linux/amd64/v3', ['linux/amd64/v3', 'linux/amd64/v2', 'linux/amd64', 'linux/386']],
    ['linux/arm64', ['linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    [
      'linux/arm64/v8.2',
      ['linux/arm64/v8.2', 'linux/arm64/v8.1', 'linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5'],
    ],
    [
      'linux/arm64/v9.1',
      [
        'linux/arm64/v9.1',
        'linux/arm64/v9',
        'linux/arm64/v8.6',
        'linux/arm64/v8.5',
        'linux/arm64/v8.4',
        'linux/arm64/v8.3',
        'linux/arm64/v8.2',
        'linux/arm64/v8.1',
        'linux/arm64',
        'linux/arm/v8',
        'linux/arm/v7',
        'linux/arm/v6',
        'linux/arm/v5',
      ],
    ],
    ['linux/arm/v8', ['linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm/v7', ['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm', ['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm/v6', ['linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm/v5', ['linux/arm/v5']],
    ['linux/386', ['linux/386']],
    ['linux/s390x', ['linux/s390x']],
    ['linux/ppc64le', ['linux/ppc64le']],
  ])('%s', (text, expected) => {
    expect(order(text)).toEqual(expected);
  });

  it('starts with the normalized wanted platform and carries the OS everywhere', () => {
    const list = compatiblePlatforms({ os: 'Linux', architecture: 'aarch64', variant: 'v8' });
    expect(list[0]).toStrictEqual({ os: 'linux', architecture: 'arm64' });
    expect(list.every((p) => p.os === 'linux')).toBe(true);
  });
});

describe('selectPlatform', () => {
  const pick = (specs: Array<string | undefined>, wanted: string): string =>
    formatPlatform(
      selectPlatform(
        specs.map((s) => entry(s)),
        parsePlatform(wanted),
        'alpine:latest',
      ).platform,
    );

  it('picks the exact match and says so', () => {
    const list = [entry('linux/amd64'), entry('linux/arm64/v8'), entry('linux/arm/v7')];
    const choice = selectPlatform(list, parsePlatform('linux/arm/v7'), 'alpine:latest');
    expect(choice.descriptor).toBe(list[2]);
    expect(choice.platform).toStrictEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(choice.reason).toBe('exact match for linux/arm/v7');
    expect(choice.notes).toEqual([]);
  });

  it('matches arm64 entries with and without variant v8 on an arm64 host', () => {
    expect(pick(['linux/amd64', 'linux/arm64/v8'], 'linux/arm64')).toBe('linux/arm64');
    expect(pick(['linux/amd64', 'linux/arm64'], 'linux/arm64/v8')).toBe('linux/arm64');
    expect(pick(['linux/aarch64'], 'arm64')).toBe('linux/arm64');
    const host = hostPlatform({ platform: 'linux', arch: 'arm64' }).platform;
    const choice = selectPlatform([entry('linux/arm64')], host, 'x');
    expect(choice.reason).toBe('exact match for linux/arm64');
  });

  it('prefers the better rank over index order', () => {
    expect(pick(['linux/arm/v5', 'linux/arm/v6', 'linux/arm/v7'], 'linux/arm/v7')).toBe('linux/arm/v7');
    expect(pick(['linux/arm/v5', 'linux/arm/v6'], 'linux/arm/v7')).toBe('linux/arm/v6');
    expect(pick(['linux/386', 'linux/amd64'], 'linux/amd64')).toBe('linux/amd64');
  });

  it('explains an arm fallback', () => {
    const choice = selectPlatform([entry('linux/amd64'), entry('linux/arm/v6')], parsePlatform('linux/arm/v7'), 'busybox:1');
    expect(choice.reason).toBe('fallback: linux/arm/v6 runs on linux/arm/v7');
    expect(choice.notes).toEqual([]);
  });

  it('normalizes arm entries without a variant to v7 (armhf style)', () => {
    expect(pick(['linux/arm'], 'linux/arm/v7')).toBe('linux/arm/v7');
    expect(pick(['linux/armhf', 'linux/armel'], 'linux/arm/v6')).toBe('linux/arm/v6');
  });

  it('never gives a v6 host a v7 image, nor a v5 host anything else', () => {
    expect(thrown(() => pick(['linux/arm/v7', 'linux/arm64'], 'linux/arm/v6')).code).toBe('NO_MATCHING_PLATFORM');
    expect(thrown(() => pick(['linux/arm/v7', 'linux/arm/v6'], 'linux/arm/v5')).code).toBe('NO_MATCHING_PLATFORM');
    expect(pick(['linux/arm/v7', 'linux/arm/v5'], 'linux/arm/v6')).toBe('linux/arm/v5');
  });

  it('falls back from arm64 to 32-bit arm with a note', () => {
    const choice = selectPlatform(
      [entry('linux/amd64'), entry('linux/arm/v6'), entry('linux/arm/v7')],
      parsePlatform('linux/arm64'),
      'app:1',
    );
    expect(formatPlatform(choice.platform)).toBe('linux/arm/v7');
    expect(choice.reason).toBe('fallback: linux/arm/v7 runs on linux/arm64');
    expect(choice.notes[0]).toMatch(/app:1 has no linux\/arm64 image; using its 32-bit linux\/arm\/v7 image/);
  });

  it('accepts 386 on amd64 only as a last resort, with a note', () => {
    const choice = selectPlatform([entry('linux/386'), entry('linux/arm64')], parsePlatform('linux/amd64'), 'debian:12');
    expect(formatPlatform(choice.platform)).toBe('linux/386');
    expect(choice.reason).toBe('fallback: linux/386 runs on linux/amd64');
    expect(choice.notes).toHaveLength(1);
    expect(choice.notes[0]).toMatch(/debian:12 has no linux\/amd64 image; using its linux\/386 \(32-bit\) image/);
  });

  it('never falls back from 386 to amd64', () => {
    expect(thrown(() => pick(['linux/amd64'], 'linux/386')).message).toMatch(/has no linux\/386 image/);
  });

  it('does not give a plain amd64 host an amd64/v3-only image (variants are exact, as in containerd)', () => {
    expect(thrown(() => pick(['linux/amd64/v3'], 'linux/amd64')).code).toBe('NO_MATCHING_PLATFORM');
    expect(pick(['linux/amd64', 'linux/amd64/v2'], 'linux/amd64/v3')).toBe('linux/amd64/v2');
  });

  it('requires the OS to match after normalization', () => {
    expect(thrown(() => pick(['windows/amd64', 'darwin/amd64'], 'linux/amd64')).code).toBe('NO_MATCHING_PLATFORM');
    expect(pick(['Linux/AMD64'], 'linux/amd64')).toBe('linux/amd64');
    expect(pick(['linux/arm64', 'darwin/arm64'], 'macos/arm64')).toBe('darwin/arm64');
  });

  it('ignores os.version and os.features for linux', () => {
    const d = entry('linux/amd64');
    d.platform = { ...d.platform!, 'os.version': '5.15', 'os.features': ['sse4'] };
    const choice = selectPlatform([d], { os: 'linux', architecture: 'amd64', 'os.version': '6.1' }, 'x');
    expect(choice.descriptor).toBe(d);
  });

  it('compares os.version prefixes off linux', () => {
    const old = entry('windows/amd64');
    old.platform = { ...old.platform!, 'os.version': '10.0.14393.6709' };
    const current = entry('windows/amd64');
    current.platform = { ...current.platform!, 'os.version': '10.0.17763.5329' };
    const choice = selectPlatform([old, current], { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763' }, 'x');
    expect(choice.descriptor).toBe(current);
  });

  it('lets the first entry in index order win a tie', () => {
    const list = [entry('linux/arm64'), entry('linux/arm64/v8'), entry('linux/aarch64')];
    const choice = selectPlatform(list, parsePlatform('linux/arm64'), 'x');
    expect(choice.descriptor).toBe(list[0]);
    expect(choice.candidates.map((c) => c.rank)).toEqual([0, 0, 0]);
  });

  it('never chooses attestations, unknown/unknown or entries without a platform', () => {
    const att = entry('linux/amd64', { [ATTESTATION_ANNOTATION]: 'attestation-manifest' });
    const unknown = entry('unknown/unknown');
    const bare = entry(undefined);
    const real = entry('linux/386');
    const choice = selectPlatform([att, unknown, bare, real], parsePlatform('linux/amd64'), 'x');
    expect(choice.descriptor).toBe(real);
    expect(choice.candidates).toEqual([
      { descriptor: att, platform: { os: 'linux', architecture: 'amd64' }, attestation: true, rank: undefined },
      { descriptor: unknown, platform: { os: 'unknown', architecture: 'unknown' }, attestation: true, rank: undefined },
      { descriptor: bare, attestation: false, rank: undefined },
      { descriptor: real, platform: { os: 'linux', architecture: '386' }, attestation: false, rank: 1 },
    ]);
  });

  it('lists the available platforms (no attestations, no duplicates) and hints at --platform', () => {
    const list = [entry('linux/amd64'), attestation(), entry('linux/arm64/v8'), attestation(), entry('linux/arm/v7'), entry('linux/amd64')];
    const err = thrown(() => selectPlatform(list, parsePlatform('linux/s390x'), 'docker.io/library/alpine:3'));
    expect(err.code).toBe('NO_MATCHING_PLATFORM');
    expect(err.message).toBe('docker.io/library/alpine:3 has no linux/s390x image; it has: linux/amd64, linux/arm64, linux/arm/v7');
    expect(err.hint).toMatch(/--platform linux\/amd64/);
    expect(err.message).not.toMatch(/unknown/);
  });

  it('says so when an index has only attestations or is empty', () => {
    for (const list of [[attestation(), entry(undefined)], []]) {
      const err = thrown(() => selectPlatform(list, parsePlatform('linux/amd64'), 'img'));
      expect(err.code).toBe('NO_MATCHING_PLATFORM');
      expect(err.message).toBe('img has no linux/amd64 image; it lists no usable platform');
    }
  });
});
