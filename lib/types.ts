/** Element types the kernels read and write. bfloat16 and float16 travel as raw bits in a Uint16Array. */
export type DType = 'float32' | 'bfloat16' | 'float16';

/** A dense row-major host tensor. */
export interface Tensor {
  data: Float32Array | Uint16Array;
  shape: readonly number[];
  /** Required for Uint16Array data; defaults to 'float32' for Float32Array. */
  dtype?: DType;
}

export interface LabelTensor {
  data: Int32Array;
  shape: readonly number[];
}

export const LOSS_TYPES = [
  'sigmoid',
  'hinge',
  'ipo',
  'robust',
  'exo_pair',
  'nca_pair',
  'bco_pair',
  'sppo_hard',
  'apo_zero',
  'apo_down',
  'discopop',
  'sigmoid_norm',
  'aot',
  'aot_unpaired',
  'sft',
  'simpo',
  'orpo',
] as const;

export type LossType = (typeof LOSS_TYPES)[number];

/** Loss types that need the reference model's sequence log-probs: all but sft, simpo and orpo. */
export const NEEDS_REF: ReadonlySet<LossType> = new Set<LossType>(
  LOSS_TYPES.filter((t) => t !== 'sft' && t !== 'simpo' && t !== 'orpo'),
);

/** The loss options' defaults (TRL's): one place for lib/ and everything that restates them. */
export const LOSS_DEFAULTS = { beta: 0.1, labelSmoothing: 0, simpoGamma: 0.5, discopopTau: 0.05 } as const;

/** Loss types whose metrics (rewards, logps) are reported on averaged log-probs, as TRL's CPO/ORPO trainers do. */
export const REPORTS_AVERAGED: ReadonlySet<LossType> = new Set<LossType>(['simpo', 'orpo']);

export interface DpoMetrics {
  'rewards/chosen': number;
  'rewards/rejected': number;
  'rewards/accuracies': number;
  'rewards/margins': number;
  'logps/chosen': number;
  'logps/rejected': number;
  'logits/chosen': number;
  'logits/rejected': number;
  entropy: number;
  meanTokenAccuracy: number;
  numTokens: number;
}
