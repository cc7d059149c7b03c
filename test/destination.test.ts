import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkDestination, commitStaging, createStaging, discardStaging } from '../src/outputs/staging.js';

/** A pid that just existed and is gone (a finished child). */
function deadPid(): number {
  const child = spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' });
  return Number(child.stdout.trim());
}

describe('staging directories', () => {
  it('commits by rename and leaves nothing beside DIR', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'pu-dest-'));
    const dest = join(parent, 'rootfs');
    const staging = await createStaging(dest);
    await writeFile(join(staging.out, 'f'), 'x');
    await commitStaging(staging);
    expect(await readdir(parent)).toEqual(['rootfs']);
    expect(await readFile(join(dest, 'f'), 'utf8')).toBe('x');
  });

  it('replaces a non-empty DIR only on commit (--force)', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'pu-dest-'));
    const dest = join(parent, 'rootfs');
    await mkdir(dest);
    await writeFile(join(dest, 'old'), 'old');
    await expect(checkDestination(dest, false)).rejects.toMatchObject({ code: 'DESTINATION_NOT_EMPTY' });
    await checkDestination(dest, true);
    const staging = await createStaging(dest);
    await writeFile(join(staging.out, 'new'), 'new');
    await discardStaging(staging);
    expect(await readdir(dest)).toEqual(['old']);
    const second = await createStaging(dest);
    await writeFile(join(second.out, 'new'), 'new');
    await commitStaging(second);
    expect(await readdir(dest)).toEqual(['new']);
    expect(await readdir(parent)).toEqual(['rootfs']);
  });

  it('sweeps staging directories of killed pulls, and only those', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'pu-dest-'));
    const dest = join(parent, 'rootfs');
    const dead = join(parent, '.rootfs.pull-unpack-dead01');
    const alive = join(parent, '.rootfs.pull-unpack-live01');
    const foreign = join(parent, '.rootfs.pull-unpack-other1');
    for (const d of [dead, alive, foreign]) await mkdir(join(d, 'out'), { recursive: true });
    await writeFile(join(dead, 'owner'), `${deadPid()}\n${hostname()}\n`);
    await writeFile(join(alive, 'owner'), `${process.pid}\n${hostname()}\n`);
    await writeFile(join(foreign, 'owner'), `1\nsome-other-host\n`);
    const notices: string[] = [];
    const staging = await createStaging(dest, (m) => notices.push(m));
    const names = await readdir(parent);
    expect(names).not.toContain('.rootfs.pull-unpack-dead01');
    expect(names).toContain('.rootfs.pull-unpack-live01');
    expect(names).toContain('.rootfs.pull-unpack-other1');
    expect(notices).toEqual([expect.stringContaining('interrupted pull')]);
    await discardStaging(staging);
  });
});

describe('a pull killed between the two renames of a commit', () => {
  it('gets the old DIR back from the staging directory it left', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'pu-dest-'));
    const dest = join(parent, 'rootfs');
    const stale = join(parent, '.rootfs.pull-unpack-dead02');
    await mkdir(join(stale, 'previous'), { recursive: true });
    await writeFile(join(stale, 'previous', 'mine'), 'keep me');
    await writeFile(join(stale, 'owner'), `${deadPid()}\n${hostname()}\n`);
    const staging = await createStaging(dest);
    expect(await readFile(join(dest, 'mine'), 'utf8')).toBe('keep me');
    await discardStaging(staging);
    expect((await readdir(parent)).sort()).toEqual(['rootfs']);
  });
});
