// The one table of loss kinds and their hyperparameters. Everything else reads it: validation, the
// binding's argument object, the float64 reference, the doctor, the bench, the tests; and
// scripts/generate-loss-kinds.ts writes csrc/core/fused_dpo_kinds.h from it for the C side (the
// enum codes, the properties and the defaults), which test/loss-kinds.test.ts keeps current.
// A kind's code is its ABI number: never reuse or renumber one, only append.

/** A loss hyperparameter: its ABI index into fdpo_loss_config.params, default (TRL's) and range. */
export interface Hyperparameter {
  readonly code: number;
  readonly default: number;
  /** What validation accepts, as the error message says it. */
  readonly rule: string;
  readonly ok: (value: number) => boolean;
  /** TRL's name for it (DPOConfig, or CPOConfig for simpo_gamma and alpha), or null where TRL has none. */
  readonly trl: string | null;
  readonly doc: string;
}

export const HYPERPARAMETERS = {
  beta: {
    code: 0,
    default: 0.1,
    rule: 'a finite number > 0',
    ok: (v: number) => v > 0,
    trl: 'beta',
    doc: 'β, the KL penalty (the reward scale)',
  },
  labelSmoothing: {
    code: 1,
    default: 0,
    rule: 'a number in [0, 0.5]',
    ok: (v: number) => v >= 0 && v <= 0.5,
    trl: 'label_smoothing',
    doc: 'ε, the probability that a preference label is flipped',
  },
  simpoGamma: {
    code: 2,
    default: 0.5,
    rule: 'a finite number',
    ok: () => true,
    trl: 'simpo_gamma',
    doc: "γ, simpo's target reward margin",
  },
  discopopTau: {
    code: 3,
    default: 0.05,
    rule: 'a finite number > 0',
    ok: (v: number) => v > 0,
    trl: 'discopop_tau',
    doc: "τ, discopop's mixing temperature",
  },
  fAlphaDivergenceCoef: {
    code: 4,
    default: 0.5,
    rule: 'a finite number > 0',
    ok: (v: number) => v > 0,
    trl: 'f_alpha_divergence_coef',
    doc: "α of fDivergenceType 'alpha_divergence'",
  },
  lengthPenalty: {
    code: 5,
    default: 0,
    rule: 'a finite number',
    ok: () => true,
    trl: null,
    doc: "R-DPO's λ: u = βΔ + λ·(N_c − N_r)",
  },
  alpha: {
    code: 6,
    default: 0,
    rule: 'a finite number',
    ok: () => true,
    trl: 'alpha',
    doc: "AlphaPO's α of simpo: rewards (1 − p̄^(−α))/α of the length-normalised probability p̄ (0: SimPO)",
  },
  unlikelihoodAlpha: {
    code: 7,
    default: 1,
    rule: 'a finite number >= 0',
    ok: (v: number) => v >= 0,
    trl: null,
    doc: "α, the weight of unlikelihood's term −log(1 − e^{π̄_r})",
  },
} as const satisfies Record<string, Hyperparameter>;

/** fDivergenceType's values (TRL's f_divergence_type, plus forward_kl), with their ABI codes (fdpo_f_divergence). */
export const F_DIVERGENCES = { reverse_kl: 0, forward_kl: 1, js_divergence: 2, alpha_divergence: 3 } as const;

export type FDivergenceType = keyof typeof F_DIVERGENCES;

export type HyperparameterName = keyof typeof HYPERPARAMETERS;

/** How a kind's loss is computed by the reduce (csrc/core/reduce_math.h). */
export interface LossKind {
  /** The ABI code (fdpo_loss_kind). */
  readonly code: number;
  /** Reads the reference model's sequence log-probs. */
  readonly needsRef: boolean;
  /** Scores sequences by their token-mean log-prob instead of the sum. */
  readonly averagedScores: boolean;
  /** Rewards and logps metrics are reported on averaged log-probs (as TRL's CPO/ORPO trainers do, and its DPOTrainer for ipo). */
  readonly reportsAveraged: boolean;
  /** Each pair's loss depends on the other pairs of the batch (sorts, batch sums). */
  readonly couplesBatch: boolean;
  /** Has a pair-local term (loss_math.h's pairLoss). */
  readonly pairTerm: boolean;
  /** Adds the token-mean NLL of the chosen completions (TRL's sft, and ORPO's NLL part). */
  readonly chosenNll: boolean;
  /** Reads the margin Δ (or Δ̄) of the log-ratios, which fDivergenceType shapes (as TRL's `logits`). */
  readonly margin: boolean;
  /** The hyperparameters its formula reads. */
  readonly reads: readonly HyperparameterName[];
}

// A pair-local loss of the log-ratios; margin: of their margin Δ (u = βΔ + λ·(N_c − N_r) unless averaged).
const pairLocal = (reads: readonly HyperparameterName[], { margin = false, averagedScores = false, reportsAveraged = false } = {}) => ({
  needsRef: true,
  averagedScores,
  reportsAveraged,
  couplesBatch: false,
  pairTerm: true,
  chosenNll: false,
  margin,
  reads: margin
    ? ([...reads, 'fAlphaDivergenceCoef', ...(averagedScores ? [] : (['lengthPenalty'] as const))] as readonly HyperparameterName[])
    : reads,
});

const sorted = {
  needsRef: true,
  averagedScores: false,
  reportsAveraged: false,
  couplesBatch: true,
  pairTerm: false,
  chosenNll: false,
  margin: false,
} as const;

export const LOSS_KINDS = {
  sigmoid: { code: 0, ...pairLocal(['beta', 'labelSmoothing'], { margin: true }) },
  hinge: { code: 1, ...pairLocal(['beta'], { margin: true }) },
  // (TRL's DPOTrainer divides the log-probs by the token counts when ipo is in the list, so its
  // rewards and logps metrics are the averaged ones.)
  ipo: { code: 2, ...pairLocal(['beta'], { margin: true, averagedScores: true, reportsAveraged: true }) },
  robust: { code: 3, ...pairLocal(['beta', 'labelSmoothing'], { margin: true }) },
  exo_pair: { code: 4, ...pairLocal(['beta', 'labelSmoothing'], { margin: true }) },
  nca_pair: { code: 5, ...pairLocal(['beta']) },
  bco_pair: { code: 6, ...pairLocal(['beta']) },
  sppo_hard: { code: 7, ...pairLocal(['beta']) },
  apo_zero: { code: 8, ...pairLocal(['beta']) },
  apo_down: { code: 9, ...pairLocal(['beta']) },
  discopop: { code: 10, ...pairLocal(['beta', 'discopopTau'], { margin: true }) },
  sigmoid_norm: { code: 11, ...pairLocal(['beta'], { margin: true, averagedScores: true }) },
  aot: { code: 12, ...sorted, reads: ['beta', 'labelSmoothing'] },
  aot_unpaired: { code: 13, ...sorted, reads: ['beta', 'labelSmoothing'] },
  sft: {
    code: 14,
    needsRef: false,
    averagedScores: false,
    reportsAveraged: false,
    couplesBatch: true,
    pairTerm: false,
    chosenNll: true,
    margin: false,
    reads: [],
  },
  simpo: {
    code: 15,
    needsRef: false,
    averagedScores: true,
    reportsAveraged: true,
    couplesBatch: false,
    pairTerm: true,
    chosenNll: false,
    margin: false,
    reads: ['beta', 'labelSmoothing', 'simpoGamma', 'alpha'],
  },
  orpo: {
    code: 16,
    needsRef: false,
    averagedScores: true,
    reportsAveraged: true,
    couplesBatch: true,
    pairTerm: true,
    chosenNll: true,
    margin: false,
    reads: ['beta'],
  },
  // Welleck et al.'s unlikelihood on the token-mean sequence score: −π̄_c − α·log(1 − e^{π̄_r}).
  unlikelihood: {
    code: 17,
    needsRef: false,
    averagedScores: true,
    reportsAveraged: false,
    couplesBatch: false,
    pairTerm: true,
    chosenNll: false,
    margin: false,
    reads: ['unlikelihoodAlpha'],
  },
} as const satisfies Record<string, LossKind>;

export type LossType = keyof typeof LOSS_KINDS;

/** The loss type names, in ABI-code order. */
export const LOSS_TYPES = (Object.keys(LOSS_KINDS) as LossType[]).sort((a, b) => LOSS_KINDS[a].code - LOSS_KINDS[b].code);

export function lossKind(type: LossType): LossKind {
  return LOSS_KINDS[type];
}

/** Hyperparameter names, in ABI-index order. */
export const HYPERPARAMETER_NAMES = (Object.keys(HYPERPARAMETERS) as HyperparameterName[]).sort(
  (a, b) => HYPERPARAMETERS[a].code - HYPERPARAMETERS[b].code,
);

/** The hyperparameters' defaults by name (TRL's). */
export const LOSS_DEFAULTS = Object.fromEntries(HYPERPARAMETER_NAMES.map((n) => [n, HYPERPARAMETERS[n].default])) as {
  readonly [K in HyperparameterName]: (typeof HYPERPARAMETERS)[K]['default'];
};

/** A loss type of a call with its own config struct: its ABI code, and what it computes (the header's comment). */
export interface CallLossType {
  code: number;
  doc: string;
}

/** The C enum a table of call loss types becomes in fused_dpo_kinds.h (scripts/loss-kinds-header.ts). */
export interface CallLossEnum {
  /** The typedef's name. */
  type: string;
  /** The constants' prefix; the count's name. */
  prefix: string;
  count: string;
  doc: string;
  table: Readonly<Record<string, CallLossType>>;
}

// { name: code } of a table of call loss types: the code maps the calls look values up in.
function codesOf<T extends Record<string, CallLossType>>(table: T): { readonly [K in keyof T]: T[K]['code'] } {
  return Object.fromEntries(Object.entries(table).map(([name, t]) => [name, t.code])) as { readonly [K in keyof T]: T[K]['code'] };
}

/** policyLoss's loss types (TRL's GRPOConfig.loss_type), the token weights w_t each applies. */
export const POLICY_LOSSES = {
  grpo: { code: 0, doc: 'w_t = 1 / (S * max(N_s, 1)): the mean over sequences of token means' },
  bnpo: { code: 1, doc: 'w_t = 1 / max(N, 1): the token mean over the batch (N = completion tokens)' },
  dr_grpo: { code: 2, doc: 'w_t = 1 / (S * max_completion_length)' },
  dapo: { code: 3, doc: 'w_t = 1 / num_items_in_batch (max(N, 1) when 0)' },
} as const satisfies Record<string, CallLossType>;

/** TRL's GRPO loss_type values and their codes (fdpo_policy_loss_type). */
export const POLICY_LOSS_TYPES = codesOf(POLICY_LOSSES);

export type PolicyLossType = keyof typeof POLICY_LOSS_TYPES;

/**
 * ktoLoss's loss types (TRL's KTOConfig.loss_type) with their ABI codes (fdpo_kto_loss_type), and
 * its hyperparameters (TRL's KTOConfig names and defaults). They travel in fdpo_kto_config's own
 * fields, not in fdpo_loss_config.params: code is null.
 */
export const KTO_LOSSES = {
  kto: { code: 0, doc: 'reference point z0 from the KL batch' },
  apo_zero_unpaired: { code: 1, doc: 'z0 = 0, no KL batch' },
} as const satisfies Record<string, CallLossType>;

export const KTO_LOSS_TYPES = codesOf(KTO_LOSSES);

export type KtoLossType = keyof typeof KTO_LOSS_TYPES;

/** The calls' loss-type enums of the C ABI, in the order the header states them. */
export const CALL_LOSS_ENUMS: readonly CallLossEnum[] = [
  {
    type: 'fdpo_policy_loss_type',
    prefix: 'FDPO_POLICY_',
    count: 'FDPO_POLICY_LOSS_TYPE_COUNT',
    doc: "fdpo_policy_config.loss_type: TRL's GRPO loss_type, the token weights w_t",
    table: POLICY_LOSSES,
  },
  {
    type: 'fdpo_kto_loss_type',
    prefix: 'FDPO_KTO_LOSS_',
    count: 'FDPO_KTO_LOSS_COUNT',
    doc: "fdpo_kto_config.loss_type: TRL's KTOConfig loss_type",
    table: KTO_LOSSES,
  },
];

export const KTO_HYPERPARAMETERS = {
  beta: { ...HYPERPARAMETERS.beta, code: null, doc: 'β, the reward scale of the log-ratios' },
  desirableWeight: {
    code: null,
    default: 1,
    rule: 'a finite number >= 0',
    ok: (v: number) => v >= 0,
    trl: 'desirable_weight',
    doc: "λ_D, the weight of a desirable sequence's loss",
  },
  undesirableWeight: {
    code: null,
    default: 1,
    rule: 'a finite number >= 0',
    ok: (v: number) => v >= 0,
    trl: 'undesirable_weight',
    doc: "λ_U, the weight of an undesirable sequence's loss",
  },
} as const;

export type KtoHyperparameterName = keyof typeof KTO_HYPERPARAMETERS;
