import { describe, expect, it } from 'vitest';
import { isPullUnpackError } from '../src/errors.js';
import { familiarName, manifestReference, parseReference, registryEndpoint } from '../src/image/reference.js';
import { thrown } from './helpers/errors.js';

const HEX = 'a'.repeat(64);
const DIGEST = `sha256:${HEX}`;
const DIGEST512 = `sha512:${'b'.repeat(128)}`;

describe('parseReference: valid references', () => {
  it.each([
    // [input, registry, repository, tag, digest, canonical]
    ['alpine', 'docker.io', 'library/alpine', 'latest', undefined, 'docker.io/library/alpine:latest'],
    ['alpine:3.19', 'docker.io', 'library/alpine', '3.19', undefined, 'docker.io/library/alpine:3.19'],
    ['user/app', 'docker.io', 'user/app', 'latest', undefined, 'docker.io/user/app:latest'],
    ['user/app:1', 'docker.io', 'user/app', '1', undefined, 'docker.io/user/app:1'],
    ['docker.io/alpine', 'docker.io', 'library/alpine', 'latest', undefined, 'docker.io/library/alpine:latest'],
    ['index.docker.io/alpine', 'docker.io', 'library/alpine', 'latest', undefined, 'docker.io/library/alpine:latest'],
    ['index.docker.io/user/app:v2', 'docker.io', 'user/app', 'v2', undefined, 'docker.io/user/app:v2'],
    ['docker.io/library/alpine:edge', 'docker.io', 'library/alpine', 'edge', undefined, 'docker.io/library/alpine:edge'],
    ['host:5000/a/b:tag', 'host:5000', 'a/b', 'tag', undefined, 'host:5000/a/b:tag'],
    ['ghcr.io/owner/image', 'ghcr.io', 'owner/image', 'latest', undefined, 'ghcr.io/owner/image:latest'],
    ['localhost/x', 'localhost', 'x', 'latest', undefined, 'localhost/x:latest'],
    ['localhost:5000/x', 'localhost:5000', 'x', 'latest', undefined, 'localhost:5000/x:latest'],
    ['[::1]:5000/x', '[::1]:5000', 'x', 'latest', undefined, '[::1]:5000/x:latest'],
    ['[2001:db8::1]/team/x:t', '[2001:db8::1]', 'team/x', 't', undefined, '[2001:db8::1]/team/x:t'],
    ['127.0.0.1:5000/x', '127.0.0.1:5000', 'x', 'latest', undefined, '127.0.0.1:5000/x:latest'],
    ['registry-1.docker.io/alpine', 'registry-1.docker.io', 'alpine', 'latest', undefined, 'registry-1.docker.io/alpine:latest'],
    ['a/b/c/d/e', 'docker.io', 'a/b/c/d/e', 'latest', undefined, 'docker.io/a/b/c/d/e:latest'],
    [`alpine@${DIGEST}`, 'docker.io', 'library/alpine', undefined, DIGEST, `docker.io/library/alpine@${DIGEST}`],
    [`alpine:3@${DIGEST}`, 'docker.io', 'library/alpine', '3', DIGEST, `docker.io/library/alpine:3@${DIGEST}`],
    [`r.io:443/x:t@${DIGEST512}`, 'r.io:443', 'x', 't', DIGEST512, `r.io:443/x:t@${DIGEST512}`],
    ['a.b-c/d__e/f-g_h.i--j:T_1.x-', 'a.b-c', 'd__e/f-g_h.i--j', 'T_1.x-', undefined, 'a.b-c/d__e/f-g_h.i--j:T_1.x-'],
    [
      'x:_leading_underscore_tag',
      'docker.io',
      'library/x',
      '_leading_underscore_tag',
      undefined,
      'docker.io/library/x:_leading_underscore_tag',
    ],
    ['x:' + 'a'.repeat(128), 'docker.io', 'library/x', 'a'.repeat(128), undefined, `docker.io/library/x:${'a'.repeat(128)}`],
    // Docker's splitDockerDomain: an uppercase first component can only be a registry host.
    ['MyHost/app', 'MyHost', 'app', 'latest', undefined, 'MyHost/app:latest'],
    // With no "/", "localhost:5000" is the repository "localhost" with tag "5000", as in Docker.
    ['localhost:5000', 'docker.io', 'library/localhost', '5000', undefined, 'docker.io/library/localhost:5000'],
  ])('%s', (input, registry, repository, tag, digest, canonical) => {
    const ref = parseReference(input);
    expect(ref.registry).toBe(registry);
    expect(ref.repository).toBe(repository);
    expect(ref.tag).toBe(tag);
    expect(ref.digest).toBe(digest);
    expect(ref.toString()).toBe(canonical);
    expect(String(ref)).toBe(canonical);
  });

  it('round-trips: the canonical form parses to the same reference', () => {
    for (const input of ['alpine', 'user/app:1', `[::1]:5000/x:t@${DIGEST}`, `ghcr.io/o/i@${DIGEST}`]) {
      const ref = parseReference(input);
      const again = parseReference(ref.toString());
      expect(again.toString()).toBe(ref.toString());
      expect([again.registry, again.repository, again.tag, again.digest]).toEqual([ref.registry, ref.repository, ref.tag, ref.digest]);
    }
  });

  it('returns an immutable value', () => {
    const ref = parseReference('alpine');
    expect(Object.isFrozen(ref)).toBe(true);
    expect(() => {
      (ref as { tag: string | undefined }).tag = 'x';
    }).toThrow(TypeError);
  });

  it('accepts a name of exactly 255 characters', () => {
    const path = 'a'.repeat(255 - 'docker.io/'.length);
    expect(parseReference(`docker.io/x/${path.slice(2)}`).toString()).toBe(`docker.io/x/${path.slice(2)}:latest`);
  });
});

describe('parseReference: invalid references', () => {
  it.each([
    ['', /the reference is empty/],
    ['Alpine', /repository name must be lowercase/],
    ['user/App', /repository name must be lowercase/],
    ['ghcr.io/Owner/image', /repository name must be lowercase/],
    ['a//b', /empty path component/],
    ['/alpine', /empty path component/],
    ['alpine/', /empty path component/],
    ['ghcr.io/', /empty path component/],
    ['alpine:', /ends with ":" but no tag follows/],
    ['alpine@', /ends with "@" but no digest follows/],
    ['alpine:@' + DIGEST, /ends with ":" but no tag follows/],
    ['alpine:-bad', /invalid tag "-bad"/],
    ['alpine:.bad', /invalid tag ".bad"/],
    ['alpine:a+b', /invalid tag "a\+b"/],
    ['alpine:' + 'a'.repeat(129), /invalid tag/],
    ['al pine', /invalid path component "al pine"/],
    ['alpine_', /invalid path component "alpine_"/],
    ['-alpine', /invalid path component "-alpine"/],
    ['a___b', /invalid path component "a___b"/],
    ['a..b', /invalid path component "a..b"/],
    ['a/b!c', /invalid path component "b!c"/],
    ['ex_ample.com/x', /invalid registry host "ex_ample.com"/],
    ['-host.io/x', /invalid registry host "-host.io"/],
    ['host.io:/x', /invalid registry port ""/],
    ['host.io:abc/x', /invalid registry port "abc"/],
    ['host.io:0/x', /invalid registry port "0"/],
    ['host.io:70000/x', /invalid registry port "70000"/],
    ['::1/x', /invalid registry host ""/],
    ['[::1/x', /not a bracketed IPv6 address/],
    ['[not-ipv6]:5000/x', /"\[not-ipv6\]" is not a bracketed IPv6 address/],
    ['[::1]5000/x', /invalid registry "\[::1\]5000"/],
    ['https://ghcr.io/o/i', /a reference is not a URL/],
    [HEX, /image ID, not a repository name/],
    [`a@${DIGEST}@${DIGEST}`, /more than one "@"/],
    ['x/' + 'a'.repeat(300), /characters long; at most 255 are allowed/],
  ])('%j', (input, message) => {
    const err = thrown(() => parseReference(input));
    expect(err.code).toBe('INVALID_REFERENCE');
    expect(err.message).toMatch(message);
    expect(err.message.startsWith('invalid reference "')).toBe(true);
  });

  it('counts the registry in the 255-character limit', () => {
    const path = 'a'.repeat(255 - 'docker.io/x/'.length + 1);
    expect(thrown(() => parseReference(`x/${path}`)).message).toMatch(/is 256 characters long/);
  });

  it('suggests brackets for an unbracketed IPv6 registry', () => {
    expect(thrown(() => parseReference('::1:5000/x')).hint).toMatch(/\[::1\]:5000/);
  });
});

describe('parseReference: digests are checked with parseDigest and reported as INVALID_REFERENCE', () => {
  it.each([
    [`alpine@sha256:${'a'.repeat(63)}`, 'INVALID_DIGEST', /expected 64 lowercase hex digits/],
    [`alpine@sha256:${'A'.repeat(64)}`, 'INVALID_DIGEST', /expected 64 lowercase hex digits/],
    ['alpine@sha256', 'INVALID_DIGEST', /expected ALGORITHM:HEX/],
    [`alpine@md5:${'a'.repeat(32)}`, 'UNSUPPORTED_DIGEST_ALGORITHM', /unsupported digest algorithm "md5"/],
  ])('%s', (input, causeCode, message) => {
    const err = thrown(() => parseReference(input));
    expect(err.code).toBe('INVALID_REFERENCE');
    expect(err.message).toMatch(message);
    expect(isPullUnpackError(err.cause, causeCode as 'INVALID_DIGEST')).toBe(true);
  });

  it('keeps the hint of the digest error', () => {
    expect(thrown(() => parseReference(`x@blake3:${HEX}`)).hint).toMatch(/sha256 and sha512/);
  });
});

describe('manifestReference', () => {
  it('is the tag without a digest', () => {
    expect(manifestReference(parseReference('alpine'))).toBe('latest');
    expect(manifestReference(parseReference('alpine:3.19'))).toBe('3.19');
  });
  it('is the digest when one is present, even with a tag', () => {
    expect(manifestReference(parseReference(`alpine@${DIGEST}`))).toBe(DIGEST);
    expect(manifestReference(parseReference(`alpine:3@${DIGEST}`))).toBe(DIGEST);
  });
});

describe('registryEndpoint', () => {
  it.each([
    ['docker.io', 'registry-1.docker.io'],
    ['index.docker.io', 'registry-1.docker.io'],
    ['ghcr.io', 'ghcr.io'],
    ['localhost:5000', 'localhost:5000'],
    ['[::1]:5000', '[::1]:5000'],
  ])('%s -> %s', (registry, endpoint) => {
    expect(registryEndpoint(registry)).toBe(endpoint);
  });
  it('maps a parsed Docker Hub reference', () => {
    expect(registryEndpoint(parseReference('index.docker.io/user/app').registry)).toBe('registry-1.docker.io');
  });
});

describe('familiarName', () => {
  it.each([
    ['alpine', 'alpine:latest'],
    ['docker.io/library/alpine:3', 'alpine:3'],
    ['user/app:1', 'user/app:1'],
    ['library/a/b', 'library/a/b:latest'],
    ['localhost:5000/x:t', 'localhost:5000/x:t'],
    ['ghcr.io/o/i', 'ghcr.io/o/i:latest'],
    [`alpine@${DIGEST}`, `alpine@${DIGEST}`],
    [`alpine:3@${DIGEST}`, `alpine:3@${DIGEST}`],
  ])('%s -> %s', (input, familiar) => {
    expect(familiarName(parseReference(input))).toBe(familiar);
  });
});

describe('references with a tag and a digest', () => {
  it('keep the tag, and the digest decides what is fetched', () => {
    const ref = parseReference(`ghcr.io/o/i:1.0@${DIGEST}`);
    expect(ref.tag).toBe('1.0');
    expect(ref.digest).toBe(DIGEST);
    expect(ref.toString()).toBe(`ghcr.io/o/i:1.0@${DIGEST}`);
    expect(manifestReference(ref)).toBe(DIGEST);
  });
  it('are frozen values, sha512 digests included', () => {
    const ref = parseReference(`alpine@${DIGEST512}`);
    expect(ref.digest).toBe(DIGEST512);
    expect(ref.tag).toBeUndefined();
    expect(Object.isFrozen(ref)).toBe(true);
  });
  it('with a bad digest are INVALID_REFERENCE, caused by the digest error itself', () => {
    expect((thrown(() => parseReference('alpine:1@sha256:nope')).cause as { code?: string }).code).toBe('INVALID_DIGEST');
    const md5 = thrown(() => parseReference(`alpine:1@md5:${'a'.repeat(32)}`));
    expect({ code: md5.code, cause: (md5.cause as { code?: string }).code }).toEqual({
      code: 'INVALID_REFERENCE',
      cause: 'UNSUPPORTED_DIGEST_ALGORITHM',
    });
  });
});
