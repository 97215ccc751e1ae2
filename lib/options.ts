// Options objects are read once, into a plain snapshot, and a key the call does not know is an
// error that names it: a misspelt or foreign option never silently leaves a default in force.
import { fusedDpoError, invalidArgument } from './errors.js';

// TRL options fused-dpo does not have (yet), by TRL's name, with what to do instead.
const TRL_UNSUPPORTED: Record<string, string> = {
  rpo_alpha:
    "TRL's rpo_alpha adds rpo_alpha times the chosen NLL; here that is lossType [..., 'sft'] with lossWeights [..., rpo_alpha]",
  reference_free: "TRL's reference_free: pass ref as zeros ({ chosen: zeros, rejected: zeros }) instead",
  use_logits_to_keep: "TRL's use_logits_to_keep is the trainer's business: pass only the completion rows' logits (cuSeqlens)",
  padding_free: "TRL's padding_free is the packed layout here: pass logits [N, V] with cuSeqlens",
  precompute_ref_log_probs: "TRL's precompute_ref_log_probs is the trainer's business: compute ref with sequenceLogps",
  cpo_alpha: "TRL's cpo_alpha (CPO's NLL weight) is lossType [..., 'sft'] with lossWeights [..., cpo_alpha] here",
  sync_ref_model: "TRL's TR-DPO reference syncing (sync_ref_model) is the trainer's business",
  ref_model_mixup_alpha: "TRL's TR-DPO reference syncing (ref_model_mixup_alpha) is the trainer's business",
  ref_model_sync_steps: "TRL's TR-DPO reference syncing (ref_model_sync_steps) is the trainer's business",
  delta: "TRL's GRPO two-sided clipping (delta) is not supported yet by policyLoss",
  importance_sampling_level: "TRL's GRPO sequence-level importance sampling (GSPO) is not supported yet: policyLoss's ratio is per token",
  top_entropy_quantile: "TRL's GRPO entropy masking (top_entropy_quantile) is not supported yet by policyLoss",
  epsilon_low: "policyLoss's epsilon is TRL's epsilon (the lower clip, 1 - epsilon); epsilonHigh the upper",
};

// Options of another call of this library, with which call reads them: named as such, not as typos.
const OTHER_CALLS: Record<string, string> = {
  ldAlpha: "dpoLoss's and sequenceLogps' (LD-DPO's weights pair chosen and rejected sequences)",
};

const snakeCase = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

// TRL's names for options fused-dpo has under another name than TRL's in camelCase.
const TRL_RENAMED: Record<string, string> = { label_pad_token_id: 'ignoreIndex' };

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** `label_smoothing`, `LabelSmoothing`, `label-smoothing` → `labelsmoothing`: the forms a known key is mistyped in. */
const fold = (key: string) => key.replace(/[_-]/g, '').toLowerCase();

/** The known key an unknown one most likely meant (TRL's names included; a typo or two away), or null. */
export function suggestKey(key: string, known: readonly string[]): string | null {
  const renamed = TRL_RENAMED[key];
  if (renamed && known.includes(renamed)) return renamed;
  const folded = fold(key);
  const same = known.find((k) => fold(k) === folded);
  if (same) return same;
  let best: string | null = null;
  let bestDistance = Math.max(2, Math.floor(folded.length / 4)) + 1;
  for (const candidate of known) {
    const d = editDistance(folded, fold(candidate));
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function unknownOption(where: string, key: string, known: readonly string[]) {
  const trl = TRL_UNSUPPORTED[key] ?? TRL_UNSUPPORTED[snakeCase(key)];
  if (trl) return fusedDpoError(`${where}: option '${key}' is not supported: ${trl}`, 'ERR_FDPO_UNSUPPORTED_OPTION', TypeError);
  const other = Object.hasOwn(OTHER_CALLS, key) ? OTHER_CALLS[key] : undefined;
  if (other) return fusedDpoError(`${where}: option '${key}' is not read by ${where}: it is ${other}`, 'ERR_FDPO_UNKNOWN_OPTION', TypeError);
  const suggestion = suggestKey(key, known);
  const hint = suggestion ? `did you mean '${suggestion}'?` : `the options are ${known.join(', ')}`;
  return fusedDpoError(`${where}: unknown option '${key}': ${hint}`, 'ERR_FDPO_UNKNOWN_OPTION', TypeError);
}

/**
 * A plain copy of options with each known key read once (own or inherited, getters included) and
 * undefined ones left out; throws for an own enumerable key it does not know.
 */
export function snapshotOptions(where: string, options: unknown, known: readonly string[], name = 'options'): Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidArgument(name, name === 'options' ? 'an object' : `an object { ${known.join(', ')} }`, options, TypeError);
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw unknownOption(where, key, known);
  }
  const snapshot: Record<string, unknown> = {};
  for (const key of known) {
    const value = (options as Record<string, unknown>)[key];
    if (value !== undefined) snapshot[key] = value;
  }
  return snapshot;
}
