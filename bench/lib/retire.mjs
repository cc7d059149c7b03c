/**
 * Where finished runs' output trees go, and how fast the work directory's filesystem creates
 * files right now.
 *
 * On a journal-less ext4 (the root disk of the VM this benchmark was written on), the kernel
 * does not reuse an inode for 60 s after it was deleted, 360 s while its inode table block is
 * dirty (fs/ext4/ialloc.c, recently_deleted()): each new file's inode allocation then walks
 * past every recently deleted inode of its block group, one buffer lookup each. Deleting one
 * run's 13,000-100,000 files right before the next run made that run's file creation 3-10x
 * slower, by an amount that depended on what the run before it had deleted (measured with
 * `perf record`: 88% of GNU tar's CPU time in find_inode_bit / recently_deleted; the same
 * extraction takes 1.2 s on a fresh filesystem and 5-7 s right after `rm -rf` of the last
 * tree). So output trees are renamed into a trash directory (no inode is freed) and deleted
 * only when the benchmark ends. Images with few entries (the 1 GiB one) are deleted at once:
 * their runs free a handful of inodes but gigabytes of disk.
 */
import { mkdir, rename, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';

const GIB = 2 ** 30;
/** Below this much free space the trash is emptied (and that is recorded). */
const MIN_FREE_BYTES = 8 * GIB;

export class Trash {
  constructor(dir) {
    this.dir = dir;
    this.count = 0;
    /** How often the trash had to be emptied during the run (each one frees inodes the next runs walk past). */
    this.emptied = 0;
  }

  /** Moves each existing path into the trash; deletes them instead when `keep` is false. */
  async retire(paths, keep) {
    for (const path of paths) {
      if (!keep) {
        await rm(path, { recursive: true, force: true });
        continue;
      }
      await mkdir(this.dir, { recursive: true });
      try {
        await rename(path, join(this.dir, String(this.count++)));
      } catch (err) {
        if (err.code !== 'ENOENT') throw err;
      }
    }
    if (keep && (await freeBytes(this.dir)) < MIN_FREE_BYTES) await this.empty();
  }

  async empty() {
    await rm(this.dir, { recursive: true, force: true });
    this.emptied++;
  }
}

async function freeBytes(dir) {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Microseconds per file to create, write 100 bytes into and close FILES files in a new
 * directory under `dir` (synchronously, as tar does): a few milliseconds on a filesystem in
 * its normal state, 10x that and more while many inodes were freed recently (see above).
 * The probe's files go to the trash too.
 */
export async function probeCreateCost(dir, trash, files = 2000) {
  const { closeSync, mkdirSync, openSync, writeSync } = await import('node:fs');
  const probe = join(dir, `fs-probe-${process.pid}-${trash.count}`);
  mkdirSync(probe, { recursive: true });
  const body = Buffer.alloc(100, 97);
  const started = process.hrtime.bigint();
  for (let i = 0; i < files; i++) {
    const fd = openSync(join(probe, `f${i}`), 'wx');
    writeSync(fd, body);
    closeSync(fd);
  }
  const micros = Number(process.hrtime.bigint() - started) / 1e3 / files;
  await trash.retire([probe], true);
  return micros;
}
