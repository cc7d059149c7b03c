/**
 * Hostile tar layers for the differential tests (test/tar-differential.test.ts, test/tar-codec.test.ts):
 * fast-check arbitraries of entries with odd typeflags, sizes on header-only types with a setuid
 * decoy header behind them, trailing slashes, PAX and GNU long names and records, zero blocks
 * mid-stream, appended archives and global headers; and the bytes they make.
 */
import fc from 'fast-check';
import { END, gnuLong, member, pax, rawTar, ZERO_BLOCK } from './raw-tar.js';

/** Over 100 bytes, so it needs a PAX or GNU record; its first 100 bytes do not end in '/'. */
const LONG = `${'long-directory-name-x/'.repeat(6)}file`;
const names = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('a', 'b', 'd', 'd/e', LONG) },
  { weight: 1, arbitrary: fc.constantFrom('d/', 'x/', 'd/f/', `${LONG}/`) },
);
const targets = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('a', 'b', 'd/e', LONG) },
  { weight: 1, arbitrary: fc.constant('missing') },
);

export interface EntrySpec {
  kind: 'entry';
  name: string;
  typeflag: string;
  /** 'body': the content; 'decoy': the size of one block holding a setuid header; 'none': size 0. */
  body: 'body' | 'decoy' | 'none';
  content: string;
  linkname: string;
  mode: number;
  /** How a long name or link target travels: in the header (cut at 100 bytes), PAX or GNU records. */
  via: 'header' | 'pax' | 'gnu';
  paxExtra: Record<string, string>;
}
export type Part = EntrySpec | { kind: 'zero-block' } | { kind: 'end-marker' } | { kind: 'global'; records: Record<string, string> };

const entry: fc.Arbitrary<EntrySpec> = fc.record({
  kind: fc.constant('entry' as const),
  name: names,
  typeflag: fc.oneof(
    { weight: 8, arbitrary: fc.constant('0') },
    { weight: 3, arbitrary: fc.constantFrom('5', '2', '1', '\0') },
    { weight: 1, arbitrary: fc.constantFrom('6', '3', '4', '7', 'V', 'D') },
  ),
  body: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('body' as const, 'none' as const) },
    { weight: 1, arbitrary: fc.constant('decoy' as const) },
  ),
  content: fc.string({ maxLength: 700 }),
  linkname: targets,
  mode: fc.constantFrom(0o644, 0o755, 0o4755, 0o600),
  via: fc.constantFrom('header', 'pax', 'gnu'),
  paxExtra: fc.oneof(
    { weight: 4, arbitrary: fc.constant<Record<string, string>>({}) },
    {
      weight: 1,
      arbitrary: fc.constantFrom<Record<string, string>>(
        { uid: '3000000', gid: '3000001' },
        { mtime: '-315619200' },
        { size: '512' },
        { mtime: '4102444800.5' },
      ),
    },
  ),
});

const part: fc.Arbitrary<Part> = fc.oneof(
  { weight: 20, arbitrary: entry },
  { weight: 1, arbitrary: fc.constant({ kind: 'zero-block' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'end-marker' as const }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom<Part>({ kind: 'global', records: { comment: 'x' } }, { kind: 'global', records: { path: 'g' } }),
  },
);

/** 1 to 8 parts (buildLayer ends them with the end-of-archive marker). */
export const hostileLayer = fc.array(part, { minLength: 1, maxLength: 8 });

const DECOY = member({ name: 'decoy-suid', mode: 0o4755 });

function buildPart(p: Part): Buffer {
  if (p.kind === 'zero-block') return ZERO_BLOCK;
  if (p.kind === 'end-marker') return END;
  if (p.kind === 'global') return pax(p.records, 'g');
  const meta: Buffer[] = [];
  let name = p.name;
  let linkname = p.linkname;
  // PAX records beside GNU long names are refused: only now and then (a 'decoy' entry).
  const records: Record<string, string> = p.via === 'gnu' && p.body !== 'decoy' ? {} : { ...p.paxExtra };
  if (p.via === 'pax') {
    records['path'] = name;
    records['linkpath'] = linkname;
    name = name.slice(-20);
    linkname = linkname.slice(-20);
  }
  if (Object.keys(records).length > 0) meta.push(pax(records));
  if (p.via === 'gnu') {
    meta.push(gnuLong('L', name), gnuLong('K', linkname));
    name = name.slice(-20);
    linkname = linkname.slice(-20);
  }
  // Hostile shapes mostly come with a decoy: otherwise header-only types get no body, and names
  // ending in '/' are directories.
  const headerOnly = '123456'.includes(p.typeflag);
  const typeflag = p.body !== 'decoy' && p.typeflag === '0' && p.name.endsWith('/') ? '5' : p.typeflag;
  const body = headerOnly && p.body === 'body' ? 'none' : p.body;
  const h = { name: name.slice(0, 100), typeflag, linkname: linkname.slice(0, 100), mode: p.mode, devmajor: 1, devminor: 3 };
  if (body === 'decoy') return Buffer.concat([...meta, member({ ...h, size: 512 }), DECOY]);
  if (body === 'none') return Buffer.concat([...meta, member(h)]);
  return Buffer.concat([...meta, member(h, p.content)]);
}

export function buildLayer(parts: Part[]): Buffer {
  return rawTar(parts.map(buildPart));
}
