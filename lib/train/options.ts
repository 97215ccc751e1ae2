// The training library's option errors: an unknown key is refused by name, with the known key it
// resembles (lib/options.ts's suggestKey, as for the core API), and a bad value names the option,
// what it takes and what it got.
import { describe } from '../errors.js';
import { suggestKey } from '../options.js';

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
  readonly code = 'ERR_FDPO_UNKNOWN_OPTION';

  constructor(
    readonly where: string,
    readonly option: string,
    readonly suggestion: string | null,
  ) {
    super(`fused-dpo: ${where} has no option ${JSON.stringify(option)}${suggestion ? ` (did you mean ${JSON.stringify(suggestion)}?)` : ''}`);
  }
}

/** Throws an UnknownOptionError for the first own key of `options` that is not in `known`. */
export function refuseUnknownKeys(where: string, options: object | undefined, known: readonly string[]): void {
  if (options === undefined) return;
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new UnknownOptionError(where, key, suggestKey(key, known));
  }
}
