/**
 * Tars built block by block, for archives no well-behaved writer produces: any typeflag, a size
 * field that disagrees with the body, PAX and GNU long-name records in any order, zero blocks
 * anywhere. Checksums are right unless asked otherwise.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const BLOCK = 512;
export const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** The end-of-archive marker: two zero blocks. */
export const END = Buffer.alloc(2 * BLOCK);

export interface RawHeader {
  name: string | Buffer;
  /** One character ('0', '5', 'x', '\0', ...). Default '0'. */
  typeflag?: string;
  /** The size field (default: the body's length). */
  size?: number;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds; a negative one is written in base-256. */
  mtime?: number;
  devmajor?: number;
  devminor?: number;
  /** 'ustar' (POSIX, default), 'gnu' ("ustar  \0") or 'v7' (no magic). */
  magic?: 'ustar' | 'gnu' | 'v7';
}

/** One header block. */
export function header(h: RawHeader): Buffer {
  const b = Buffer.alloc(BLOCK);
  (typeof h.name === 'string' ? Buffer.from(h.name) : h.name).subarray(0, 100).copy(b, 0);
  octal(b, 100, 8, h.mode ?? 0o644);
  octal(b, 108, 8, h.uid ?? 0);
  octal(b, 116, 8, h.gid ?? 0);
  octal(b, 124, 12, h.size ?? 0);
  const mtime = h.mtime ?? 1577934245;
  if (mtime < 0) base256(b, 136, 12, mtime);
  else octal(b, 136, 12, mtime);
  b.write(h.typeflag ?? '0', 156, 'latin1');
  if (h.linkname !== undefined) b.write(h.linkname, 157, 100);
  const magic = h.magic ?? 'ustar';
  if (magic === 'ustar') b.write('ustar\u000000', 257, 'latin1');
  if (magic === 'gnu') b.write('ustar  \0', 257, 'latin1');
  if (magic !== 'v7') {
    octal(b, 329, 8, h.devmajor ?? 0);
    octal(b, 337, 8, h.devminor ?? 0);
  }
  return withChecksum(b);
}

/** Sets the checksum field of a header block (in place) and returns it. */
export function withChecksum(b: Buffer): Buffer {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

function octal(b: Buffer, offset: number, width: number, value: number): void {
  b.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, width, 'latin1');
}

function base256(b: Buffer, offset: number, width: number, value: number): void {
  let v = BigInt(value);
  for (let i = offset + width - 1; i > offset; i--, v >>= 8n) b[i] = Number(v & 0xffn);
  b[offset] = value < 0 ? 0xff : 0x80;
}

/** `data` padded with zeros to whole blocks. */
export function padded(data: Buffer): Buffer {
  const rest = data.length % BLOCK;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(BLOCK - rest)]);
}

/** A header with its body (the size field says the body's length unless `h.size` is given). */
export function member(h: RawHeader, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const data = typeof body === 'string' ? Buffer.from(body) : body;
  return Buffer.concat([header({ ...h, size: h.size ?? data.length }), padded(data)]);
}

/** A PAX record `LEN KEY=VALUE\n`. */
export function paxRecord(key: string, value: string | Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), Buffer.isBuffer(value) ? value : Buffer.from(value), Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** A PAX extended header ('x', or 'g' for a global one) holding `records`. */
export function pax(records: Record<string, string | Buffer>, typeflag: 'x' | 'g' = 'x'): Buffer {
  const data = Buffer.concat(Object.entries(records).map(([k, v]) => paxRecord(k, v)));
  return member({ name: typeflag === 'g' ? 'pax_global_header' : 'PaxHeaders/x', typeflag }, data);
}

/** A GNU long-name ('L') or long-link ('K') record. */
export function gnuLong(kind: 'L' | 'K', name: string | Buffer): Buffer {
  const data = Buffer.concat([typeof name === 'string' ? Buffer.from(name) : name, Buffer.alloc(1)]);
  return member({ name: '././@LongLink', typeflag: kind, magic: 'gnu' }, data);
}

/** An archive of `parts`, with the end-of-archive marker unless `end` is false. */
export function rawTar(parts: Buffer[], end = true): Buffer {
  return Buffer.concat(end ? [...parts, END] : parts);
}

// ---------------------------------------------------------------------------------------------
// OCI layouts and umoci

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/**
 * Writes an OCI image layout at `dir` holding one image, tagged `tag`, whose layers are the
 * uncompressed tars `layers` (linux/amd64 config; DiffIDs `diffIds`, by default the layers'
 * digests). Returns `dir`.
 */
export async function writeLayout(dir: string, layers: Buffer[], tag = 'img', diffIds = layers.map(sha256)): Promise<string> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (bytes: Buffer, mediaType: string): Promise<{ mediaType: string; digest: string; size: number }> => {
    const digest = sha256(bytes);
    await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const layerDescriptors = [];
  for (const layer of layers) layerDescriptors.push(await put(layer, 'application/vnd.oci.image.layer.v1.tar'));
  const config = await put(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } })),
    'application/vnd.oci.image.config.v1+json',
  );
  const manifest = await put(
    Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: layerDescriptors }),
    ),
    'application/vnd.oci.image.manifest.v1+json',
  );
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = { schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }] };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  return dir;
}

/** `umoci unpack` of `layout:tag` into a new bundle under `work`: its rootfs, or umoci's error. */
export async function umociUnpack(work: string, layout: string, tag = 'img'): Promise<{ rootfs: string } | { error: string }> {
  const bundle = join(await mkdtemp(join(work, 'umoci-')), 'bundle');
  return new Promise((resolve) => {
    execFile('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle], (err, _stdout, stderr) => {
      resolve(err ? { error: stderr.trim() || err.message } : { rootfs: join(bundle, 'rootfs') });
    });
  });
}
