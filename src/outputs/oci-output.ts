/**
 * `--output oci DIR`: an OCI image layout holding the chosen platform's manifest, config and
 * layers (Docker manifests converted to OCI media types, as `skopeo copy` does), tagged with the
 * reference's tag. Layers are fetched and verified, never unpacked: this output has no rootfs.
 */
import { isLocalReference, type ImageReference } from '../image/local-reference.js';
import { writeOciLayout } from './oci-layout.js';
import type { Output } from './output.js';
import { checkDestination, commitStaging } from './staging.js';

/** The OCI image layout written to the directory `dir` (new, empty, or replaced with --force). */
export function ociLayoutOutput(dir: string, options: { signal?: AbortSignal | undefined } = {}): Output {
  return {
    destination: dir,
    check: checkDestination,
    rootfs: async () => undefined,
    async finish(staging, image) {
      const { os, architecture, variant } = image.config.parsed;
      await writeOciLayout(
        staging.out,
        {
          manifest: image.manifest,
          config: { bytes: image.config.bytes, digest: image.config.digest },
          layers: image.layers,
          refName: refNameOf(image.reference),
          platform: os && architecture ? { os, architecture, variant } : undefined,
        },
        { signal: options.signal, convertDockerManifest: true },
      );
      return {};
    },
    commit: commitStaging,
  };
}

/** The tag to record in the layout: the reference's tag, or 'latest' for digests and local sources. */
function refNameOf(ref: ImageReference): string {
  if (isLocalReference(ref)) return ref.tag && !ref.tag.includes('/') ? ref.tag : 'latest';
  return ref.tag ?? 'latest';
}
