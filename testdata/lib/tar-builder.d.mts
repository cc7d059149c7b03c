/** Types for tar-builder.mjs: deterministic tar layers for tests and scripts. */

export type LayerCompression = 'gzip' | 'zstd' | 'none';

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device' | 'block-device' | 'contiguous-file';

export interface TarEntry {
  name: string;
  /** Default 'file'. */
  type?: TarEntryType;
  /** Permission bits (with setuid/setgid/sticky); default 0o644, 0o755 for directories. 0 is kept. */
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** A Date or seconds since the epoch; default FIXED_MTIME. */
  mtime?: Date | number;
  /** Target of a symlink or hard link. */
  linkname?: string;
  /** File content (files only). */
  content?: string | Uint8Array;
  /** PAX extended header records, e.g. {'SCHILY.xattr.user.k': 'v'}. */
  pax?: Record<string, string>;
  devmajor?: number;
  devminor?: number;
}

/** 2024-01-01T00:00:00Z: the mtime of every entry and the `created` of every config by default. */
export declare const FIXED_MTIME: Date;

/** An uncompressed tar of `entries`, in the given order. */
export declare function tarLayer(entries: readonly TarEntry[]): Promise<Buffer>;

export interface TarDirectoryOptions {
  /** Every entry's mtime; default FIXED_MTIME; null keeps the real mtimes. */
  mtime?: Date | number | null;
  /** GNU tar --format; default 'gnu'. */
  format?: 'gnu' | 'pax' | 'ustar' | 'posix' | 'oldgnu' | 'v7';
}

/** A tar of the tree at `dir` made by GNU tar, sorted by name, with numeric owners. */
export declare function tarDirectory(dir: string, options?: TarDirectoryOptions): Promise<Buffer>;

/** Tar entries (owned by 0:0, FIXED_MTIME) for the tree at `dir`, sorted, names prefixed by `prefix`. */
export declare function entriesFromDirectory(dir: string, prefix?: string): Promise<TarEntry[]>;

/** `tarBytes` compressed with gzip (node:zlib), zstd (the zstd CLI) or not at all. */
export declare function compressLayer(tarBytes: Uint8Array, compression: LayerCompression): Promise<Buffer>;
