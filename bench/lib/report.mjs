/**
 * Summaries of the runs (median, spread, peak RSS), the ratios and issue 15's targets, and the
 * plain-text tables the runner prints. Pure functions of the results object.
 */

const MIB_KIB = 1024;

/** {median, min, max} wall ms, peak RSS (KiB) and median CPU seconds of one contender's runs. */
export function summarize(runs) {
  const walls = runs.map((r) => r.wallMs).sort((a, b) => a - b);
  const cpus = runs.map((r) => r.cpuS).sort((a, b) => a - b);
  return {
    runs: runs.length,
    medianMs: median(walls),
    minMs: walls[0],
    maxMs: walls[walls.length - 1],
    medianCpuS: median(cpus),
    peakTreeRssKiB: Math.max(...runs.map((r) => r.treeRssKiB)),
    peakMaxRssKiB: Math.max(...runs.map((r) => r.maxRssKiB)),
    // The 1-minute load average before each run: well above the core count means other work competed.
    meanLoad: runs.reduce((n, r) => n + (r.loadBefore ?? 0), 0) / runs.length,
  };
}

function median(sorted) {
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const ms = (imageResult, id) => imageResult?.contenders[id]?.summary?.medianMs;
const cpu = (imageResult, id) => imageResult?.contenders[id]?.summary?.medianCpuS;

/** The pairs compared, as [what, numerator, denominator]. */
const PAIRS = [
  ['pull-unpack cold / curl|tar', 'pull-unpack-cold', 'curl-tar'],
  ['pull-unpack cold / skopeo+umoci', 'pull-unpack-cold', 'skopeo-umoci'],
  ['pull-unpack cold / GNU tar (local)', 'pull-unpack-cold', 'tar-local'],
  ['pull-unpack warm / GNU tar (local)', 'pull-unpack-warm', 'tar-local'],
  ['pull-unpack cold / baseline cold', 'pull-unpack-cold', 'baseline-cold'],
  ['pull-unpack warm / baseline warm', 'pull-unpack-warm', 'baseline-warm'],
];

/**
 * The ratios of medians the issue asks about: `value` of wall times, `cpu` of CPU seconds
 * (steadier when other work shares the machine); undefined where a side is missing.
 */
export function ratios(byName) {
  const ratio = (get, image, a, b) => {
    const x = get(byName[image], a);
    const y = get(byName[image], b);
    return x !== undefined && y !== undefined ? x / y : undefined;
  };
  const out = [];
  for (const name of Object.keys(byName)) {
    for (const [what, a, b] of PAIRS) out.push({ image: name, what, value: ratio(ms, name, a, b), cpu: ratio(cpu, name, a, b) });
  }
  return out;
}

/**
 * Issue 15's targets, each {target, status: PASS|FAIL|N/A, value, limit, detail, cpu}: `value`
 * is the ratio of wall-time medians the target is judged on; `cpu` the same ratio of CPU
 * medians, shown beside it.
 */
export function checkTargets(byName) {
  const find = (image, what) => ratios({ [image]: byName[image] }).find((r) => r.what === what);
  const out = [];
  const ratioTarget = (target, image, what, limit) => {
    const r = byName[image] ? find(image, what) : undefined;
    const cpuNote = r?.cpu === undefined ? '' : `; CPU ${r.cpu.toFixed(2)}x`;
    out.push({ ...judge(target, r?.value, limit, (v) => `${v.toFixed(2)}x (limit ${limit.toFixed(1)}x)${cpuNote}`), cpu: r?.cpu });
  };
  ratioTarget('cold pull of (i) <= 0.9x curl|tar', 'distro-gzip', 'pull-unpack cold / curl|tar', 0.9);
  ratioTarget('cold pull of (ii) <= 0.9x curl|zstd|tar', 'distro-zstd', 'pull-unpack cold / curl|tar', 0.9);
  ratioTarget('warm-cache unpack of (i) <= 1.0x GNU tar', 'distro-gzip', 'pull-unpack warm / GNU tar (local)', 1.0);
  ratioTarget('warm-cache unpack of (ii) <= 1.0x GNU tar', 'distro-zstd', 'pull-unpack warm / GNU tar (local)', 1.0);
  ratioTarget('(iii) pull-unpack cold <= 1.0x GNU tar', 'small-files', 'pull-unpack cold / GNU tar (local)', 1.0);
  ratioTarget('(iv) pull-unpack cold <= 1.0x curl|tar', 'large-files', 'pull-unpack cold / curl|tar', 1.0);
  const rss = byName['large-files']?.contenders['pull-unpack-cold']?.summary?.peakMaxRssKiB;
  out.push(
    judge(
      'peak RSS of pull-unpack on (iv) < 150 MiB',
      rss === undefined ? undefined : rss / MIB_KIB,
      150,
      (v) => `${v.toFixed(0)} MiB (limit 150 MiB)`,
      true,
    ),
  );
  // "Nothing slower than today": against skopeo + umoci always, and against the baseline build when given.
  for (const name of Object.keys(byName)) {
    ratioTarget(`faster than skopeo+umoci on ${name}`, name, 'pull-unpack cold / skopeo+umoci', 1.0);
  }
  for (const name of Object.keys(byName)) {
    if (byName[name].contenders['baseline-cold']?.summary === undefined) continue;
    ratioTarget(`cold ${name} not slower than the baseline`, name, 'pull-unpack cold / baseline cold', 1.0);
    ratioTarget(`warm ${name} not slower than the baseline`, name, 'pull-unpack warm / baseline warm', 1.0);
  }
  return out;
}

function judge(target, value, limit, show, strict = false) {
  if (value === undefined) return { target, status: 'N/A', detail: 'not measured' };
  const pass = strict ? value < limit : value <= limit;
  const margin = ((value / limit - 1) * 100).toFixed(0);
  const detail = `${show(value)}: ${pass ? `${-margin}% under` : `${margin}% over`}`;
  return { target, status: pass ? 'PASS' : 'FAIL', value, limit, detail };
}

/** The results table: one row per image x contender. */
export function formatTable(images, contenderLabels) {
  const rows = [['image', 'contender', 'median', 'min-max', 'CPU', 'peak RSS tree', 'max proc RSS', 'load']];
  for (const image of images) {
    for (const [id, label] of Object.entries(contenderLabels)) {
      const c = image.contenders[id];
      if (c === undefined && id.startsWith('baseline-')) continue;
      if (!c?.summary) {
        rows.push([image.label, label, c?.reason ?? 'n/a']);
        continue;
      }
      const s = c.summary;
      rows.push([
        image.label,
        label,
        secs(s.medianMs),
        `${secs(s.minMs, false)}-${secs(s.maxMs)}`,
        `${s.medianCpuS.toFixed(2)} s`,
        mib(s.peakTreeRssKiB),
        mib(s.peakMaxRssKiB),
        s.meanLoad.toFixed(1),
      ]);
    }
  }
  return align(rows);
}

export function formatRatios(list, labels) {
  const rows = [['image', 'ratio of medians', 'wall', 'CPU']];
  for (const r of list) {
    if (r.value !== undefined)
      rows.push([labels[r.image] ?? r.image, r.what, `${r.value.toFixed(2)}x`, r.cpu === undefined ? '' : `${r.cpu.toFixed(2)}x`]);
  }
  return align(rows);
}

/** What creating a small file cost on the work directory's filesystem just before each image's rounds. */
export function formatCreateCost(images) {
  const rows = [['image', 'filesystem: us per small file created (2,000 in one directory, just before the rounds)']];
  for (const image of images) if (image.createMicros !== undefined) rows.push([image.label, image.createMicros.toFixed(0)]);
  return align(rows);
}

/** The start-up figures: median wall and CPU of `--version` and `inspect`. */
export function formatStartup(startup) {
  const rows = [['start-up', 'median', 'min-max', 'CPU', 'max proc RSS']];
  for (const { label, summary: s } of Object.values(startup)) {
    rows.push([
      label,
      secs3(s.medianMs),
      `${secs3(s.minMs, false)}-${secs3(s.maxMs)}`,
      `${s.medianCpuS.toFixed(3)} s`,
      mib(s.peakMaxRssKiB),
    ]);
  }
  return align(rows);
}

export function formatTargets(list) {
  return align([['status', 'target', 'measured'], ...list.map((t) => [t.status, t.target, t.detail])]);
}

const secs = (msValue, unit = true) => `${(msValue / 1000).toFixed(2)}${unit ? ' s' : ''}`;
const secs3 = (msValue, unit = true) => `${(msValue / 1000).toFixed(3)}${unit ? ' s' : ''}`;
const mib = (kib) => `${(kib / MIB_KIB).toFixed(0)} MiB`;

/** Left-aligned columns separated by two spaces, with a rule under the header. */
export function align(rows) {
  // A short row's last cell (a note like "n/a (...)") spans the columns after it.
  const widths = rows[0].map((_, i) =>
    Math.max(...rows.filter((r) => r.length === rows[0].length || i < r.length - 1).map((r) => String(r[i] ?? '').length)),
  );
  const line = (r) =>
    r
      .map((cell, i) => String(cell ?? '').padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}
