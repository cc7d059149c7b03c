/**
 * Which of a list of names are close to one that was mistyped: an option (`--platfrom`) or a
 * command (`inspekt`). Used for "did you mean" suggestions, never to guess silently.
 */

/**
 * The optimal string alignment distance between `a` and `b`: insertions, deletions,
 * substitutions and transpositions of two neighbours each count 1 (so `platfrom` is 1 from
 * `platform`).
 */
export function editDistance(a: string, b: string): number {
  let before: number[] = [];
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, before[j - 2]! + 1);
      current.push(best);
    }
    before = previous;
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Up to `max` of `candidates` that `word` is probably a typo of, closest first: those within an
 * edit distance of a third of the word's length (at least 1, at most 3), and those `word` is
 * the start of (`--plat` for `--platform`). Empty when nothing is close.
 */
export function closestNames(word: string, candidates: Iterable<string>, max = 1): string[] {
  const limit = Math.min(3, Math.max(1, Math.floor(word.length / 3)));
  const scored: Array<{ name: string; distance: number }> = [];
  for (const name of new Set(candidates)) {
    if (name === word) continue;
    const distance = editDistance(word.toLowerCase(), name.toLowerCase());
    // A prefix of three characters or more counts as close, after every real typo.
    if (distance <= limit) scored.push({ name, distance });
    else if (word.length >= 3 && name.startsWith(word)) scored.push({ name, distance: limit + 1 });
  }
  scored.sort((x, y) => x.distance - y.distance || x.name.localeCompare(y.name));
  return scored.slice(0, max).map((s) => s.name);
}
