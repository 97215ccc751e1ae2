// The binding's types: the plain argument objects lib/ fills after validation and
// csrc/binding/addon.cpp reads, and what the addon exports.

/** Device memory as the binding takes it (a DeviceTensor's address and size). */
export interface DeviceBuffer {
  pointer: bigint;
  byteLength: number;
}

/** The argument object the binding reads (csrc/binding/addon.cpp); lib/ fills it after validation. */
export interface NativeTokens {
  logits: Float32Array | Uint16Array | DeviceBuffer;
  dtype: number;
  rows: number;
  vocab: number;
  labels: Int32Array | DeviceBuffer;
  cuSeqlens: Int32Array;
  ignoreIndex: number;
  /** The model-head transforms (fdpo_tokens.logit_scale, softcap, temperature): 0 or absent = off. */
  logitScale?: number;
  softcap?: number;
  temperature?: number;
  /** LD-DPO (fdpo_tokens.ld_weighting / ld_alpha): null or absent = off. */
  ldAlpha?: number | null;
  threads: number;
  /** null: the CPU backend; a device index: the CUDA backend. */
  device: number | null;
  stream: bigint | null;
  /** CUDA only: receives pass A, reduce and pass B times in ms. */
  timings: Float32Array | null;
}

export interface NativeSequenceArgs extends NativeTokens {
  average: boolean;
  logps: Float64Array;
  counts: Int32Array;
}

export interface NativeLossArgs extends NativeTokens {
  kinds: Int32Array;
  weights: Float64Array;
  /** The hyperparameters, indexed by their codes in lib/loss-kinds.ts (fdpo_loss_param). */
  params: Float64Array;
  /** fdpo_f_divergence: F_DIVERGENCES's code of fDivergenceType. */
  fDivergence: number;
  scale: number;
  /** WPO (fdpo_loss_config.use_weighting); absent = off. */
  useWeighting?: boolean;
  refChosen: Float64Array | null;
  refRejected: Float64Array | null;
  /** Per-token reference log-probs, rows entries (fdpo_loss_config.ref_token_logps); null or absent = off. */
  refTokenLogps?: Float64Array | null;
  seqLogps: Float64Array;
  seqCounts: Int32Array;
  seqGrad: Float64Array;
  pairLosses: Float64Array;
  chosenRewards: Float64Array;
  rejectedRewards: Float64Array;
  stats: Float64Array;
  /** fdpo_loss_outputs.seq_plain_grad (2B), or null or absent. */
  seqPlainGrad?: Float64Array | null;
  grad: Float32Array | Uint16Array | DeviceBuffer | null;
  rowScale: Float32Array | DeviceBuffer | null;
}

export interface NativeKtoArgs extends NativeTokens {
  /** fdpo_kto_loss_type: KTO_LOSS_TYPES's code. */
  lossType: number;
  beta: number;
  desirableWeight: number;
  undesirableWeight: number;
  scale: number;
  desirable: Uint8Array;
  refLogps: Float64Array;
  /** The KL batch's policy and reference sums (null for apo_zero_unpaired). */
  klLogps: Float64Array | null;
  klRefLogps: Float64Array | null;
  seqLogps: Float64Array;
  seqCounts: Int32Array;
  seqGrad: Float64Array;
  seqLosses: Float64Array;
  rewards: Float64Array;
  stats: Float64Array;
  /** 1: z0. */
  kl: Float64Array;
  grad: Float32Array | Uint16Array | DeviceBuffer | null;
  rowScale: Float32Array | DeviceBuffer | null;
}

/** policyLoss's arguments (csrc/binding/addon.cpp fills fdpo_policy_config and fdpo_policy_outputs). */
export interface NativePolicyArgs extends NativeTokens {
  /** fdpo_policy_loss_type (POLICY_LOSSES in lib/loss-kinds.ts). */
  lossType: number;
  advantages: Float64Array;
  advantagesPerToken: boolean;
  oldLogps: Float64Array | null;
  refLogps: Float64Array | null;
  beta: number;
  epsilon: number;
  epsilonHigh: number;
  entropyCoef: number;
  maxCompletionLength: number;
  numItemsInBatch: number;
  logps: Float64Array;
  tokenGrad: Float64Array;
  stats: Float64Array;
  grad: Float32Array | Uint16Array | DeviceBuffer | null;
}

export interface NativeCudaStatus {
  compiled: boolean;
  available: boolean;
  deviceCount: number;
  runtimeVersion: number;
  driverVersion: number;
  reason: string;
}

export interface NativeAddon {
  sequenceLogps(args: NativeSequenceArgs): void;
  sequenceLogpsAsync(args: NativeSequenceArgs): Promise<void>;
  dpoLoss(args: NativeLossArgs): void;
  dpoLossAsync(args: NativeLossArgs): Promise<void>;
  dpoLossUnfused(args: NativeLossArgs): void;
  ktoLoss(args: NativeKtoArgs): void;
  ktoLossAsync(args: NativeKtoArgs): Promise<void>;
  policyLoss(args: NativePolicyArgs): void;
  policyLossAsync(args: NativePolicyArgs): Promise<void>;
  /**
   * A pooled ArrayBuffer of `bytes` for a new gradient (lib/grad-buffer.ts), or null where the pool
   * gives none (small sizes, too many lent, no external buffers, no memory). Its contents are stale.
   */
  gradientBuffer(bytes: number, heapLimit?: number): ArrayBuffer | null;
  info(): { abiVersion: number; simd: string };
  /** The loss-kind table compiled into the binary (csrc/core/fused_dpo_kinds.h). */
  lossTable(): {
    kinds: { name: string; code: number; flags: number; reads: number }[];
    params: { name: string; code: number; default: number }[];
  };
  setSimdLevel(level: string): void;
  vectorExp(input: Float32Array): Float32Array;
  copy(dst: ArrayBufferView, src: ArrayBufferView, threads: number): void;
  expThroughput(count: number, threads: number): number;
  cudaStatus(): NativeCudaStatus;
  cudaDevice(index: number): { name: string; computeCapability: string; totalMemory: number; multiprocessors: number };
  cudaAlloc(device: number, bytes: number): bigint;
  cudaFree(device: number, pointer: bigint): void;
  /** dst and src: host typed arrays or device addresses. */
  cudaCopy(device: number, dst: ArrayBufferView | bigint, src: ArrayBufferView | bigint, bytes: number): void;
  cudaCopyBandwidth(device: number, bytes: number, iterations: number): number;
}

/** Indexes of the binding's stats array (fdpo_stat in csrc/core/fused_dpo.h). */
export const STAT = {
  loss: 0,
  chosenLogitSum: 1,
  chosenTokens: 2,
  rejectedLogitSum: 3,
  rejectedTokens: 4,
  entropySum: 5,
  chosenCorrect: 6,
  count: 7,
} as const;

/** The C ABI version (FDPO_ABI_VERSION in csrc/core/fused_dpo.h) this TypeScript was written for. */
export const ABI_VERSION = 2;
