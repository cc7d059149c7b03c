/**
 * Other outputs than a rootfs directory: the flattened filesystem as one tar stream
 * (`--output tar FILE|-`) and an OCI image layout of the chosen platform (`--output oci DIR`).
 * Both run the same verified pull into a staging directory and are all or nothing.
 */
import { createWriteStream } from 'node:fs';
import { lstat, rename } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { removeTree, type Staging } from './staging.js';
import { PullUnpackError } from '../errors.js';
import { writeOciLayout } from './oci-layout.js';
import { writeTreeAsTar } from './tar.js';
import { parseLocalReference } from '../image/local-reference.js';
import { parseReference } from '../image/reference.js';
import { pullInto, type PullOptions, type PullResult } from '../pull.js';

/**
 * Pulls `image` and writes its flattened filesystem (whiteouts applied, hardlinks kept) as one
 * tar stream to the file `dest`, or to `stdout` when `dest` is '-'. A file appears only when
 * complete; bytes already written to a stream cannot be taken back, so a failure there ends
 * the stream with an error.
 */
export async function pullTar(
  image: string,
  dest: string,
  options: PullOptions & { stdout?: Writable | undefined } = {},
): Promise<PullResult> {
  const toStream = dest === '-';
  const tarIn = (staging: Staging): string => join(staging.dir, 'flattened.tar');
  return pullInto(image, toStream ? join(process.cwd(), 'pull-unpack-export') : dest, options, {
    rootfsIn: (staging) => staging.out,
    checkDestination: toStream ? async (d) => resolve(d) : checkFileDestination,
    finish: async (staging, rootfs) => {
      const out = toStream ? options.stdout : createWriteStream(tarIn(staging));
      if (!out) throw new PullUnpackError('USAGE', 'writing a tar to standard output needs a stream to write to');
      await writeTreeAsTar(rootfs, out, {
        signal: options.signal,
        onWarning: (message) => options.onEvent?.({ type: 'warning', message }),
      });
    },
    commit: async (staging) => {
      if (!toStream) await rename(tarIn(staging), staging.dest);
      await removeTree(staging.dir);
    },
  });
}

/**
 * Pulls `image` into an OCI image layout at `dir` holding the chosen platform's manifest,
 * config and layers (Docker manifests converted to OCI media types, as `skopeo copy` does),
 * tagged with the reference's tag. Layers are fetched and verified, not unpacked.
 */
export async function pullOci(image: string, dir: string, options: PullOptions = {}): Promise<PullResult> {
  return pullInto(image, dir, options, {
    rootfsIn: (staging) => join(staging.scratch, 'unused-rootfs'),
    skipApply: true,
    finish: async (staging, _rootfs, pulled, pulledImage) => {
      await writeOciLayout(
        staging.out,
        {
          manifest: pulledImage.manifest,
          config: { bytes: pulledImage.configBytes, digest: pulled.configDigest },
          layers: pulled.layers.map((l, i) => ({ digest: l.digest, size: l.size, path: pulledImage.layerPaths[i]! })),
          refName: refNameOf(image),
          platform:
            pulled.config.os && pulled.config.architecture
              ? { os: pulled.config.os, architecture: pulled.config.architecture, variant: pulled.config.variant }
              : undefined,
        },
        { signal: options.signal, convertDockerManifest: true },
      );
    },
  });
}

/** The tag to record in the layout: the reference's tag, or 'latest' for digests and local sources. */
function refNameOf(image: string): string {
  const local = parseLocalReference(image);
  if (local) return local.tag && !local.tag.includes('/') ? local.tag : 'latest';
  return parseReference(image).tag ?? 'latest';
}

/** A tar file destination: new, or replaced only with --force; its directory must exist. */
async function checkFileDestination(file: string, force: boolean): Promise<string> {
  const dest = resolve(file);
  try {
    await lstat(dirname(dest));
  } catch {
    throw new PullUnpackError('DESTINATION_INVALID', `the directory of ${dest} does not exist`);
  }
  let info;
  try {
    info = await lstat(dest);
  } catch {
    return dest;
  }
  if (info.isDirectory()) throw new PullUnpackError('DESTINATION_INVALID', `${dest} is a directory; --output tar writes a file`);
  if (!force) {
    throw new PullUnpackError('DESTINATION_NOT_EMPTY', `${dest} already exists`, { hint: 'pass --force to replace it' });
  }
  return dest;
}
