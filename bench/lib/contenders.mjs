/**
 * The contenders: each is a shell script (run by measure.mjs) that turns one image into a
 * directory tree, plus the paths it writes so the runner can start and end each run clean.
 *
 *   pull-unpack-cold  bin/pull-unpack.js from the registry (with a fresh empty --cache-dir when
 *                     the CLI has one)
 *   pull-unpack-warm  bin/pull-unpack.js --offline from a filled --cache-dir (only when the CLI
 *                     has --cache-dir and --offline)
 *   curl-tar          curl each layer blob from the registry piped into GNU tar, layers in order:
 *                     the wire-plus-extract limit
 *   tar-local         GNU tar of each layer blob from local disk: the local extract limit
 *   skopeo-umoci      skopeo copy to an OCI layout, then umoci unpack into a bundle
 *   baseline-cold     (with --baseline DIR) another build of pull-unpack, cold and warm as above,
 *   baseline-warm     to compare two commits in the same rounds
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { TAG } from './push.mjs';

const q = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;

/** What the pull-unpack CLI at `bin` supports, read from its --help. */
export function pullUnpackFeatures(bin) {
  const help = execFileSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
  return { cacheDir: help.includes('--cache-dir'), offline: help.includes('--offline') };
}

/**
 * The contenders for `image` (pushed as `repo` to `host`), writing under `work`. Each has
 * id, label, paths (removed before and after every run), prepare (mkdirs, untimed) and script.
 */
export function contendersFor({ image, repo, host, work, bin, features, baseline }) {
  const ref = `${host}/${repo}:${TAG}`;
  const url = (digest) => `http://${host}/v2/${repo}/blobs/${digest}`;
  const zstd = image.layers[0].mediaType.endsWith('+zstd');
  const out = (id) => join(work, `${id}-out`);
  const list = pullUnpackContenders({ id: 'pull-unpack', label: 'pull-unpack', bin, features, ref, host, work });
  if (baseline) list.push(...pullUnpackContenders({ id: 'baseline', label: 'baseline', ...baseline, ref, host, work }));
  const extract = (source) => (zstd ? `zstd -dc ${source} | tar -xf - -C ${q(out('curl'))}` : `tar -xzf ${source} -C ${q(out('curl'))}`);
  list.push(
    {
      id: 'curl-tar',
      label: 'curl | tar',
      paths: [out('curl')],
      prepare: [out('curl')],
      script: ['set -eo pipefail', ...image.layers.map((l) => `curl -sSf ${q(url(l.digest))} | ${extract('-')}`)].join('\n'),
    },
    {
      id: 'tar-local',
      label: 'GNU tar (local)',
      paths: [out('tar')],
      prepare: [out('tar')],
      script: ['set -e', ...image.layers.map((l) => `tar ${zstd ? '--zstd ' : '-z '}-xf ${q(l.blob)} -C ${q(out('tar'))}`)].join('\n'),
    },
    {
      id: 'skopeo-umoci',
      label: 'skopeo + umoci',
      paths: [join(work, 'skopeo-layout'), out('umoci')],
      prepare: [],
      script: [
        'set -e',
        `skopeo --insecure-policy copy -q --src-tls-verify=false docker://${ref} oci:${join(work, 'skopeo-layout')}:${TAG}`,
        `umoci unpack --image ${q(`${join(work, 'skopeo-layout')}:${TAG}`)} ${q(out('umoci'))}`,
      ].join('\n'),
    },
  );
  return list;
}

/** The cold and warm runs of one pull-unpack build (`bin`), ids `${id}-cold` and `${id}-warm`. */
function pullUnpackContenders({ id, label, bin, features, ref, host, work }) {
  const pu = `exec ${q(process.execPath)} ${q(bin)} --quiet --insecure-registry ${q(host)}`;
  const out = join(work, `${id}-cold-out`);
  const coldCache = join(work, `${id}-cold-cache`);
  const warmCache = join(work, `${id}-warm-cache`);
  const list = [
    {
      id: `${id}-cold`,
      label: `${label} cold`,
      paths: [out, coldCache],
      prepare: [],
      script: `${pu}${features.cacheDir ? ` --cache-dir ${q(coldCache)}` : ''} ${q(ref)} ${q(out)}`,
    },
  ];
  if (features.cacheDir && features.offline) {
    const warmOut = join(work, `${id}-warm-out`);
    list.push({
      id: `${id}-warm`,
      label: `${label} warm`,
      paths: [warmOut],
      prepare: [],
      script: `${pu} --offline --cache-dir ${q(warmCache)} ${q(ref)} ${q(warmOut)}`,
      // Filled once, untimed, before the first round.
      fill: `${pu} --cache-dir ${q(warmCache)} ${q(ref)} ${q(join(work, `${id}-warm-fill`))}`,
      fillPaths: [warmCache, join(work, `${id}-warm-fill`)],
    });
  }
  return list;
}

/** Where a contender's tree ends up (for the correctness check). */
export function treeOf(contender, work) {
  if (contender.id === 'skopeo-umoci') return join(work, 'umoci-out', 'rootfs');
  return contender.paths[0];
}

/** The ids that are always reported, with "n/a" when absent. */
export const ALL_CONTENDERS = ['pull-unpack-cold', 'pull-unpack-warm', 'curl-tar', 'tar-local', 'skopeo-umoci'];
