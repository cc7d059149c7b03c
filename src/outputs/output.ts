/**
 * What a pull writes: the `Output` seam between the pull (resolve, verify, unpack into a staging
 * directory) and the four results it can leave: a rootfs directory, a runc bundle, one tar of
 * the flattened filesystem, an OCI image layout. Each is all or nothing: it is built in the
 * staging directory and moved into place only when everything succeeded.
 */
import type { OwnerRecord } from '../apply/owners.js';
import type { ImageReference } from '../image/local-reference.js';
import type { Descriptor, ImageConfig } from '../image/oci.js';
import { checkDestination, commitStaging, type Staging } from './staging.js';

/** A verified layer of the pulled image and its blob file (in the cache or the staging directory). */
export interface PulledLayerFile {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
  path: string;
}

/** What a pull hands its output once every layer is verified (and unpacked, for an output with a rootfs). */
export interface PulledImage {
  /** The image as the user named it. */
  reference: ImageReference;
  /** The platform's manifest, exactly as served, and its descriptor. */
  manifest: { bytes: Buffer; descriptor: Descriptor };
  config: { parsed: ImageConfig; bytes: Buffer; digest: string };
  /** In manifest order. */
  layers: PulledLayerFile[];
  /** Where the layers were unpacked; undefined for an output without a rootfs. */
  rootfs: string | undefined;
}

/**
 * One kind of result. The pull calls, in order: `check` (before anything is fetched), `rootfs`
 * (once the image is resolved and its signatures accepted), `finish` (after the last layer), and
 * `commit` (only when nothing failed); on failure the staging directory is removed instead.
 * `R` is what the output adds to the pull's result (the bundle's runtime spec).
 */
export interface Output<R extends object = object> {
  /** The path the result goes to, or undefined for a stream (the tar on standard output). */
  readonly destination: string | undefined;
  /** Where entry owners are recorded instead of chown(2) (a rootless bundle sets them through the user's id maps in `commit`). */
  readonly owners?: OwnerRecord | undefined;
  /** Refuses a destination this output cannot replace; returns it as an absolute path. */
  check(dest: string, force: boolean): Promise<string>;
  /** Prepares `staging`; returns where the layers are unpacked, or undefined to only verify them. */
  rootfs(staging: Staging): Promise<string | undefined>;
  /** Writes the rest of the result into `staging` from the verified image. */
  finish(staging: Staging, image: PulledImage): Promise<R>;
  /** Moves the staged result to its destination and removes the staging directory. */
  commit(staging: Staging): Promise<void>;
}

/** The root filesystem in the directory `dir` (new, empty, or replaced with --force). */
export function rootfsOutput(dir: string): Output {
  return {
    destination: dir,
    check: checkDestination,
    rootfs: async (staging) => staging.out,
    finish: async () => ({}),
    commit: commitStaging,
  };
}
