/**
 * Real filesystems that refuse writes, for the storage-failure tests: a small tmpfs (ENOSPC), a
 * read-only bind mount (EROFS), a btrfs subvolume with a qgroup limit on a loop device (EDQUOT),
 * and a directory that the unprivileged user `nobody` may not write (EACCES). Mounting needs
 * root; `NEEDS_ROOT` says why a test is skipped without it.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const IS_ROOT = process.getuid?.() === 0;
export const NEEDS_ROOT = IS_ROOT ? '' : ' (skipped: mounting a filesystem needs root)';

/** Mounts a tmpfs of `size` (e.g. '2m') at `dir` (created), runs `fn`, and unmounts it. */
export async function withTmpfs<T>(dir: string, size: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir]);
  try {
    return await fn();
  } finally {
    execFileSync('umount', [dir]);
  }
}

/** Makes `dir` (created) a read-only bind mount of itself while `fn` runs. */
export async function withReadOnly<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true });
  execFileSync('mount', ['--bind', dir, dir]);
  try {
    execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
    return await fn();
  } finally {
    execFileSync('umount', [dir]);
  }
}

/**
 * Mounts a fresh btrfs (on a loop device) at `dir` with quotas on, and runs `fn` with a subvolume
 * of it limited to `limit` (e.g. '1M'): writes beyond that fail with EDQUOT.
 */
export async function withQuota<T>(dir: string, limit: string, fn: (subvolume: string) => Promise<T>): Promise<T> {
  const image = join(await mkdtemp(join(tmpdir(), 'pu-btrfs-')), 'fs.img');
  execFileSync('truncate', ['-s', '128M', image]);
  execFileSync('mkfs.btrfs', ['-q', image]);
  await mkdir(dir, { recursive: true });
  execFileSync('mount', ['-o', 'loop', image, dir]);
  try {
    const subvolume = join(dir, 'limited');
    execFileSync('btrfs', ['quota', 'enable', dir]);
    execFileSync('btrfs', ['subvolume', 'create', subvolume], { stdio: 'ignore' });
    execFileSync('btrfs', ['qgroup', 'limit', limit, subvolume]);
    return await fn(subvolume);
  } finally {
    execFileSync('umount', [dir]);
    await rm(join(image, '..'), { recursive: true, force: true });
  }
}

/** The uid and gid of `nobody`, for running the CLI unprivileged with setpriv(1). */
export const NOBODY = { uid: 65534, gid: 65534 };
