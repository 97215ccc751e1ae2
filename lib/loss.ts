// The public loss and log-prob calls: validate, fill the binding's argument object, run, and
// shape the results.
import { STAT, type DeviceBuffer, type NativeLossArgs, type NativeSequenceArgs } from './binding.js';
import { DeviceTensor, holdingTensors } from './device.js';
import { newGradient } from './grad-buffer.js';
import { checkNotInFlight, whileInFlight, type CallBuffers } from './in-flight.js';
import { F_DIVERGENCES, HYPERPARAMETER_NAMES, LOSS_KINDS, type FDivergenceType, type HyperparameterName, type LossType } from './loss-kinds.js';
import { native } from './native.js';
import { firstNonFinite, type NonFiniteRow } from './non-finite.js';
import { snapshotOptions } from './options.js';
import type { DpoMetrics, DType, Tensor } from './types.js';
import {
  checkAverage,
  checkDeferScale,
  checkGradTarget,
  checkLdAlpha,
  checkLossSettings,
  checkPairs,
  checkTokens,
  DTYPE_CODE,
  TOKEN_KEYS,
  type CheckedTokens,
  type DeviceTokenOptions,
  type TokenOptions,
} from './validate.js';

export interface SequenceLogpsSettings {
  /** Divide each sum by its token count (clamped to >= 1). Default false. */
  average?: boolean;
  /**
   * LD-DPO's pair-aware form (TRL's ld_alpha): the 2B sequences are B chosen then B rejected, and
   * each sum weighs the first min(N_c, N_r) completion tokens by 1, the later ones by ldAlpha in
   * [0, 1], as dpoLoss weighs the policy's: reference scores that match it. Default: off.
   */
  ldAlpha?: number;
}

/** Host or device tokens; the results are host arrays either way. */
export type SequenceLogpsOptions = (TokenOptions | DeviceTokenOptions) & SequenceLogpsSettings;

export interface SequenceLogpsResult {
  /** One per sequence: the sum (or mean) of the completion tokens' log-probs, in float64. */
  logps: Float64Array;
  /** One per sequence: the number of non-ignored tokens. */
  counts: Int32Array;
  /** The first scored row holding an inf, NaN or beyond-±1.7e38 logit (its logps entry is not finite), or null. */
  nonFinite: NonFiniteRow | null;
}

const SEQUENCE_KEYS = [...TOKEN_KEYS, 'average', 'ldAlpha'] as const;

/**
 * The loss's settings, shared by host and device calls. The hyperparameters (beta,
 * labelSmoothing, simpoGamma, discopopTau) are lib/loss-kinds.ts's table, each with TRL's default.
 */
export interface LossSettingsOptions extends Partial<Record<HyperparameterName, number>> {
  /**
   * The reference: log-prob sums (as sequenceLogps returns them), B each; or per-token log-probs
   * { tokenLogps }, a Float64Array or Float32Array with one entry per row (as labels.data; ignored
   * rows are not read), which make each log-ratio a sum of per-token differences in float64.
   */
  ref?: { chosen: ArrayLike<number>; rejected: ArrayLike<number> } | { tokenLogps: Float64Array | Float32Array } | null;
  /**
   * LD-DPO (TRL's ld_alpha): per pair, the first min(N_c, N_r) completion tokens of both sequences
   * weigh 1 and later ones ldAlpha in [0, 1], in the policy's scores and the gradient. Per-token
   * ref gets the same weights; sums should come from sequenceLogps with the same ldAlpha (the
   * paper) or without it (TRL). Default: off.
   */
  ldAlpha?: number;
  lossType?: LossType | LossType[];
  lossWeights?: number[];
  /**
   * f-DPO (TRL's f_divergence_type): how the log-ratios make the margin Δ that sigmoid, hinge, ipo,
   * robust, exo_pair, discopop and sigmoid_norm read. Default 'reverse_kl' (DPO's Δ = a − b).
   */
  fDivergenceType?: FDivergenceType;
  reduction?: 'mean' | 'sum';
  /** Divide the summed loss by this count instead (data-parallel shards). Overrides reduction. */
  normalizer?: number;
  /**
   * WPO (TRL's use_weighting): pair i's loss and gradient times min(1, w_c·w_r), w_s = exp(mean
   * over s's completion tokens of (logp − log Σ_v p_v²)), detached. No extra read of the logits.
   */
  useWeighting?: boolean;
  /**
   * Deferred scale: grad receives the unscaled onehot − p, written in the forward pass (one read
   * and one write of the logits in all), and rowScale the per-row factor G that makes it the
   * gradient. For trainers that apply G on the hidden-size side of the next matmul.
   */
  deferScale?: boolean;
}

export interface DpoLossOptions extends TokenOptions, LossSettingsOptions {
  /** true: a new array · 'inplace': over the logits · false: none · a tensor to fill. Default true. */
  grad?: boolean | 'inplace' | Tensor;
}

/** Device logits: the gradient (and rowScale) stay on the GPU. */
export interface DeviceDpoLossOptions extends DeviceTokenOptions, LossSettingsOptions {
  /** true: a new DeviceTensor · 'inplace': over the logits · false: none · a DeviceTensor to fill. Default true. */
  grad?: boolean | 'inplace' | DeviceTensor;
}

/**
 * The loss call's results. G and S are the gradient's and row scales' types: host arrays for host
 * logits, DeviceTensors for device logits (see dpoLoss's overloads).
 */
export interface DpoLossResult<G extends Tensor | DeviceTensor = Tensor, S extends Float32Array | DeviceTensor = Float32Array> {
  loss: number;
  losses: Float64Array;
  chosenLogps: Float64Array;
  rejectedLogps: Float64Array;
  chosenRewards: Float64Array;
  rejectedRewards: Float64Array;
  /** Non-ignored tokens per sequence (2B: chosen then rejected). */
  tokenCounts: Int32Array;
  /** ∂loss/∂(sequence log-prob sum), per sequence (2B); with ldAlpha, ∂loss/∂(its LD-weighted score). */
  sequenceGrad: Float64Array;
  /**
   * With ldAlpha: ∂loss/∂(the plain, unweighted sum), per sequence (2B), from the NLL terms (sft,
   * orpo), which read plain sums as TRL does; a token's gradient scale is then sequenceGrad·w_t +
   * plainSequenceGrad. null without ldAlpha (sequenceGrad holds everything).
   */
  plainSequenceGrad: Float64Array | null;
  /**
   * ∂loss/∂logits, in the logits' dtype and shape, or null when grad: false; unscaled with
   * deferScale. A DeviceTensor when the logits are one (or when one was given to fill).
   */
  grad: G | null;
  /**
   * With deferScale: one factor per row (0 for ignored rows); the gradient is rowScale[r]·grad[r, :].
   * A float32 DeviceTensor when the logits are one.
   */
  rowScale: S | null;
  metrics: DpoMetrics;
  /**
   * The first scored row holding an inf, NaN or beyond-±1.7e38 logit, when there is one (the loss is then NaN or inf):
   * its sequence and its row (row is null for DeviceTensor logits, which are not read back).
   */
  nonFinite: NonFiniteRow | null;
}

const LOSS_KEYS = [
  ...TOKEN_KEYS,
  'ref',
  'lossType',
  'lossWeights',
  ...HYPERPARAMETER_NAMES,
  'fDivergenceType',
  'reduction',
  'normalizer',
  'useWeighting',
  'ldAlpha',
  'deferScale',
  'grad',
] as const;

export function bufferOf<T>(value: T | DeviceTensor): T | DeviceBuffer {
  return value instanceof DeviceTensor ? value.nativeBuffer() : value;
}

export function tokenArgs(t: CheckedTokens, ldAlpha: number | null = null) {
  return {
    ldAlpha,
    logits: bufferOf(t.data),
    dtype: DTYPE_CODE[t.dtype],
    rows: t.rows,
    vocab: t.vocab,
    labels: bufferOf(t.labels),
    cuSeqlens: t.cuSeqlens,
    ignoreIndex: t.ignoreIndex,
    ...t.head,
    threads: t.threads,
    device: t.device,
    stream: t.stream,
    timings: null,
  };
}

interface PreparedSequenceLogps {
  args: NativeSequenceArgs;
  tokens: CheckedTokens;
  buffers: CallBuffers;
  finish(): SequenceLogpsResult;
}

// The host memory a call reads (the tokens) and writes.
export function tokenReads(tokens: CheckedTokens): CallBuffers['reads'] {
  return [['logits', tokens.data], ['labels', tokens.labels], ['cuSeqlens', tokens.cuSeqlens]];
}

function prepareSequenceLogps(options: SequenceLogpsOptions): PreparedSequenceLogps {
  const o = snapshotOptions('sequenceLogps', options, SEQUENCE_KEYS);
  const tokens = checkTokens(o);
  const ldAlpha = checkLdAlpha(o.ldAlpha, tokens, o.cuSeqlens !== undefined);
  const args: NativeSequenceArgs = {
    ...tokenArgs(tokens, ldAlpha),
    average: checkAverage(o.average),
    logps: new Float64Array(tokens.numSeqs),
    counts: new Int32Array(tokens.numSeqs),
  };
  const finish = () => ({ logps: args.logps, counts: args.counts, nonFinite: firstNonFinite(tokens, args.logps) });
  return { args, tokens, buffers: { reads: tokenReads(tokens), writes: [] }, finish };
}

/** Per-sequence log-prob sums (or means) and token counts: forward only, one read of the logits. */
export function sequenceLogps(options: SequenceLogpsOptions): SequenceLogpsResult {
  const prepared = prepareSequenceLogps(options);
  checkNotInFlight(prepared.buffers);
  native().sequenceLogps(prepared.args);
  return prepared.finish();
}

/** sequenceLogps on the libuv thread pool; the event loop stays free. */
export async function sequenceLogpsAsync(options: SequenceLogpsOptions): Promise<SequenceLogpsResult> {
  const prepared = prepareSequenceLogps(options);
  await whileInFlight(prepared.buffers, () =>
    holdingTensors([prepared.tokens.data, prepared.tokens.labels, prepared.tokens.cuSeqlens], () => native().sequenceLogpsAsync(prepared.args)),
  );
  return prepared.finish();
}

export type GradData = Float32Array | Uint16Array | DeviceTensor;

export function gradData(grad: AnyDpoLossOptions['grad'], tokens: CheckedTokens): GradData | null {
  const target = checkGradTarget(grad, tokens);
  switch (target.kind) {
    case 'none':
      return null;
    case 'inplace':
      return tokens.data;
    case 'given':
      return target.data;
    case 'new':
      if (tokens.data instanceof DeviceTensor) return DeviceTensor.alloc(tokens.shape, tokens.dtype, { device: tokens.data.device });
      return newGradient(tokens.dtype, tokens.rows * tokens.vocab);
  }
}

/** The tensors a call holds, and how it frees what it allocated (see callTensors). */
export interface HeldTensors {
  /** The tensors an async call holds: the caller's (marked untransferable, or kept from free()), and the DeviceTensors it allocated. */
  tensors: readonly unknown[];
  /** Frees the device outputs this call allocated (when it fails). */
  release(): void;
}

/** What a call holds while it runs: its tokens, the caller's grad target, and the outputs it allocated (gradOption says which grad is new). */
export function callTensors(tokens: CheckedTokens, gradOption: unknown, grad: GradData | null, ...outputs: unknown[]): HeldTensors {
  const newGrad = gradOption === undefined || gradOption === true;
  const allocated = [newGrad ? grad : null, ...outputs].filter((t): t is DeviceTensor => t instanceof DeviceTensor);
  return {
    tensors: [tokens.data, tokens.labels, tokens.cuSeqlens, newGrad ? null : grad, ...allocated],
    release() {
      for (const t of allocated) t.free();
    },
  };
}

type AnyDpoLossOptions = DpoLossOptions | DeviceDpoLossOptions;
type AnyDpoLossResult = DpoLossResult<Tensor | DeviceTensor, Float32Array | DeviceTensor>;

interface PreparedLoss extends HeldTensors {
  args: NativeLossArgs;
  finish(): AnyDpoLossResult;
  /** The host memory it reads and writes. */
  buffers: CallBuffers;
}

function prepareDpoLoss(options: AnyDpoLossOptions, where = 'dpoLoss'): PreparedLoss {
  const o = snapshotOptions(where, options, LOSS_KEYS);
  const tokens = checkTokens(o);
  const numPairs = checkPairs(tokens, o.cuSeqlens !== undefined);
  const settings = checkLossSettings(o, numPairs, tokens);
  const ldAlpha = checkLdAlpha(o.ldAlpha, tokens, o.cuSeqlens !== undefined);
  const ref = settings.ref;
  const refSums = ref && 'chosen' in ref ? ref : null;
  const deferScale = checkDeferScale(o.deferScale, o.grad);
  const grad = gradData(o.grad as AnyDpoLossOptions['grad'], tokens);
  const rowScale = !deferScale
    ? null
    : grad instanceof DeviceTensor
      ? DeviceTensor.alloc([tokens.rows], 'float32', { device: grad.device })
      : new Float32Array(tokens.rows);
  const args: NativeLossArgs = {
    ...tokenArgs(tokens, ldAlpha),
    kinds: Int32Array.from(settings.lossTypes, (t) => LOSS_KINDS[t].code),
    weights: Float64Array.from(settings.lossWeights),
    params: Float64Array.from(HYPERPARAMETER_NAMES, (name) => settings.hyperparameters[name]),
    fDivergence: F_DIVERGENCES[settings.fDivergenceType],
    scale: settings.scale,
    useWeighting: settings.useWeighting,
    refChosen: refSums?.chosen ?? null,
    refRejected: refSums?.rejected ?? null,
    refTokenLogps: ref && 'tokenLogps' in ref ? ref.tokenLogps : null,
    seqLogps: new Float64Array(tokens.numSeqs),
    seqCounts: new Int32Array(tokens.numSeqs),
    seqGrad: new Float64Array(tokens.numSeqs),
    pairLosses: new Float64Array(numPairs),
    chosenRewards: new Float64Array(numPairs),
    rejectedRewards: new Float64Array(numPairs),
    stats: new Float64Array(STAT.count),
    seqPlainGrad: ldAlpha === null ? null : new Float64Array(tokens.numSeqs),
    grad: grad === null ? null : bufferOf(grad),
    rowScale: rowScale === null ? null : bufferOf(rowScale),
  };
  const averaged = settings.lossTypes.some((t) => LOSS_KINDS[t].reportsAveraged);
  return {
    args,
    ...callTensors(tokens, o.grad, grad, rowScale),
    buffers: { reads: tokenReads(tokens), writes: [['grad', grad]] },
    finish() {
      const side = (offset: number) =>
        Float64Array.from({ length: numPairs }, (_, i) => {
          const sum = args.seqLogps[offset + i];
          return averaged ? sum / Math.max(args.seqCounts[offset + i], 1) : sum;
        });
      const chosenLogps = side(0);
      const rejectedLogps = side(numPairs);
      return {
        loss: args.stats[STAT.loss],
        losses: args.pairLosses,
        chosenLogps,
        rejectedLogps,
        chosenRewards: args.chosenRewards,
        rejectedRewards: args.rejectedRewards,
        tokenCounts: args.seqCounts,
        sequenceGrad: args.seqGrad,
        plainSequenceGrad: args.seqPlainGrad ?? null,
        grad: grad === null || grad instanceof DeviceTensor ? grad : { data: grad, shape: tokens.shape, dtype: tokens.dtype },
        rowScale,
        metrics: metricsOf(args, chosenLogps, rejectedLogps),
        nonFinite: firstNonFinite(tokens, args.seqLogps),
      };
    },
  };
}

function mean(values: ArrayLike<number>, f: (i: number) => number = (i) => values[i]): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += f(i);
  return values.length > 0 ? sum / values.length : 0;
}

function ratio(numerator: number, denominator: number): number {
  return denominator > 0 ? numerator / denominator : 0;
}

function metricsOf(args: NativeLossArgs, chosenLogps: Float64Array, rejectedLogps: Float64Array): DpoMetrics {
  const s = args.stats;
  const chosen = args.chosenRewards, rejected = args.rejectedRewards;
  const tokens = s[STAT.chosenTokens] + s[STAT.rejectedTokens];
  return {
    'rewards/chosen': mean(chosen),
    'rewards/rejected': mean(rejected),
    'rewards/accuracies': mean(chosen, (i) => (chosen[i] > rejected[i] ? 1 : 0)),
    'rewards/margins': mean(chosen, (i) => chosen[i] - rejected[i]),
    'logps/chosen': mean(chosenLogps),
    'logps/rejected': mean(rejectedLogps),
    'logits/chosen': ratio(s[STAT.chosenLogitSum], s[STAT.chosenTokens]),
    'logits/rejected': ratio(s[STAT.rejectedLogitSum], s[STAT.rejectedTokens]),
    entropy: ratio(s[STAT.entropySum], tokens),
    mean_token_accuracy: ratio(s[STAT.chosenCorrect], s[STAT.chosenTokens]),
    num_tokens: tokens,
  };
}

/** The DPO-family loss, its metrics and its gradient with respect to the logits. */
export function dpoLoss(options: DpoLossOptions): DpoLossResult;
export function dpoLoss(options: DeviceDpoLossOptions): DpoLossResult<DeviceTensor, DeviceTensor>;
export function dpoLoss(options: AnyDpoLossOptions): AnyDpoLossResult {
  const prepared = prepareDpoLoss(options);
  runReleasingOnError(prepared, () => {
    checkNotInFlight(prepared.buffers);
    native().dpoLoss(prepared.args);
  });
  return prepared.finish();
}

/** dpoLoss on the libuv thread pool; the event loop stays free. Same bits as dpoLoss. */
export function dpoLossAsync(options: DpoLossOptions): Promise<DpoLossResult>;
export function dpoLossAsync(options: DeviceDpoLossOptions): Promise<DpoLossResult<DeviceTensor, DeviceTensor>>;
export async function dpoLossAsync(options: AnyDpoLossOptions): Promise<AnyDpoLossResult> {
  const prepared = prepareDpoLoss(options, 'dpoLossAsync');
  await runHeldAsync(prepared, () => native().dpoLossAsync(prepared.args));
  return prepared.finish();
}

// A failed call frees the device outputs it allocated.
export function runReleasingOnError(prepared: HeldTensors, run: () => void): void {
  try {
    run();
  } catch (error) {
    prepared.release();
    throw error;
  }
}

/** Runs an async call with its host memory in flight and its tensors held; a failed call frees the device outputs it allocated. */
export async function runHeldAsync(prepared: HeldTensors & { buffers: CallBuffers }, run: () => Promise<void>): Promise<void> {
  try {
    await whileInFlight(prepared.buffers, () => holdingTensors(prepared.tensors, run));
  } catch (error) {
    prepared.release();
    throw error;
  }
}

/**
 * dpoLoss on the CUDA backend with the kernels timed by CUDA events: pass A, the reduce and pass
 * B in ms. For test/gpu/ and benchmarks: not exported from the package.
 */
export function dpoLossTimed(options: AnyDpoLossOptions): { result: AnyDpoLossResult; timings: Float32Array } {
  const prepared = prepareDpoLoss({ ...options, backend: 'cuda' }, 'dpoLossTimed');
  const timings = new Float32Array(3);
  prepared.args.timings = timings;
  runReleasingOnError(prepared, () => native().dpoLoss(prepared.args));
  return { result: prepared.finish(), timings };
}

/**
 * The same results through the unfused native baseline (log-softmax to a full buffer, then one
 * op per pass). For the benchmark: not exported from the package.
 */
export function dpoLossUnfused(options: DpoLossOptions): DpoLossResult {
  const prepared = prepareDpoLoss({ ...options, backend: 'cpu' }, 'dpoLossUnfused');
  native().dpoLossUnfused(prepared.args);
  return prepared.finish() as DpoLossResult;
}

