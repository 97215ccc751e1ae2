// The training library's option errors: an unknown key is refused by name, with the known key it
// resembles, and a bad value names the option, what it takes and what it got. Local to lib/train:
// the core API's options are checked by lib/validate.ts.
import { describe } from '../errors.js';

/** A bad training option; `option` is the key, so that the CLI can name its own flag instead. */
export class TrainOptionError extends RangeError {
  readonly code = 'ERR_FDPO_INVALID_ARGUMENT';

  constructor(
    readonly option: string,
    readonly expected: string,
    readonly got: unknown,
  ) {
    super(`fused-dpo: ${option} must be ${expected}, got ${describe(got)}`);
  }
}

/** An option key that the options object does not have. */
export class UnknownOptionError extends TypeError {
  readonly code = 'ERR_FDPO_INVALID_ARGUMENT';

  constructor(
    readonly where: string,
    readonly option: string,
    readonly suggestion: string | null,
  ) {
    super(`fused-dpo: ${where} has no option ${JSON.stringify(option)}${suggestion ? ` (did you mean ${JSON.stringify(suggestion)}?)` : ''}`);
  }
}

/** `batch_size`, `BatchSize`, `batchsize` → `batchsize`: the forms a known key is mistyped in. */
function fold(key: string): string {
  return key.replace(/[_-]/g, '').toLowerCase();
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** The known key `key` resembles (same letters up to case and _ or -, or a typo or two away), or null. */
export function closestKey(key: string, known: readonly string[]): string | null {
  const folded = fold(key);
  const same = known.find((k) => fold(k) === folded);
  if (same) return same;
  let best: string | null = null;
  let bestDistance = Math.max(2, Math.floor(folded.length / 4)) + 1;
  for (const k of known) {
    const d = editDistance(folded, fold(k));
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Throws an UnknownOptionError for the first own key of `options` that is not in `known`. */
export function refuseUnknownKeys(where: string, options: object | undefined, known: readonly string[]): void {
  if (options === undefined) return;
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new UnknownOptionError(where, key, closestKey(key, known));
  }
}
