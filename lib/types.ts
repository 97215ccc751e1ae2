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
  mean_token_accuracy: number;
  num_tokens: number;
}
