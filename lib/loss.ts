// The public loss and log-prob calls: validate, fill the binding's argument object, run, and
// shape the results.
import { DeviceTensor, ELEMENT_BYTES, holdingTensors } from './device.js';
import { invalidArgument } from './errors.js';
import { STAT, type DeviceBuffer, type NativeLossArgs, type NativeSequenceArgs } from './binding.js';
import { native } from './native.js';
import { LOSS_TYPES, REPORTS_AVERAGED, type DpoMetrics, type DType, type LossType, type Tensor } from './types.js';
import {
  checkLossSettings,
  checkTensor,
  checkTokens,
  DTYPE_CODE,
  type CheckedTokens,
  type DeviceTokenOptions,
  type TokenOptions,
} from './validate.js';

export interface SequenceLogpsSettings {
  /** Divide each sum by its token count (clamped to >= 1). Default false. */
  average?: boolean;
}

/** Host or device tokens; the results are host arrays either way. */
export type SequenceLogpsOptions = (TokenOptions | DeviceTokenOptions) & SequenceLogpsSettings;

export interface SequenceLogpsResult {
  /** One per sequence: the sum (or mean) of the completion tokens' log-probs, in float64. */
  logps: Float64Array;
  /** One per sequence: the number of non-ignored tokens. */
  counts: Int32Array;
}

/** The loss's settings, shared by host and device calls. */
export interface LossSettingsOptions {
  /** Reference sequence log-prob sums (as sequenceLogps returns them), B each. */
  ref?: { chosen: ArrayLike<number>; rejected: ArrayLike<number> } | null;
  beta?: number;
  lossType?: LossType | LossType[];
  lossWeights?: number[];
  labelSmoothing?: number;
  simpoGamma?: number;
  discopopTau?: number;
  reduction?: 'mean' | 'sum';
  /** Divide the summed loss by this count instead (data-parallel shards). Overrides reduction. */
  normalizer?: number;
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
  /** ∂loss/∂(sequence log-prob sum), per sequence (2B). */
  sequenceGrad: Float64Array;
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
}

function bufferOf<T>(value: T | DeviceTensor): T | DeviceBuffer {
  return value instanceof DeviceTensor ? value.nativeBuffer() : value;
}

function tokenArgs(t: CheckedTokens) {
  return {
    logits: bufferOf(t.data),
    dtype: DTYPE_CODE[t.dtype],
    rows: t.rows,
    vocab: t.vocab,
    labels: bufferOf(t.labels),
    cuSeqlens: t.cuSeqlens,
    ignoreIndex: t.ignoreIndex,
    threads: t.threads,
    device: t.device,
    stream: t.stream,
    timings: null,
  };
}

function prepareSequenceLogps(options: SequenceLogpsOptions): NativeSequenceArgs {
  const tokens = checkTokens(options);
  if (options.average !== undefined && typeof options.average !== 'boolean') {
    throw invalidArgument('average', 'a boolean', options.average, TypeError);
  }
  return {
    ...tokenArgs(tokens),
    average: options.average === true,
    logps: new Float64Array(tokens.numSeqs),
    counts: new Int32Array(tokens.numSeqs),
  };
}

/** Per-sequence log-prob sums (or means) and token counts: forward only, one read of the logits. */
export function sequenceLogps(options: SequenceLogpsOptions): SequenceLogpsResult {
  const args = prepareSequenceLogps(options);
  native().sequenceLogps(args);
  return { logps: args.logps, counts: args.counts };
}

/** sequenceLogps on the libuv thread pool; the event loop stays free. */
export async function sequenceLogpsAsync(options: SequenceLogpsOptions): Promise<SequenceLogpsResult> {
  const args = prepareSequenceLogps(options);
  const { logits, labels, cuSeqlens } = args;
  await holdingTensors([options.logits, options.labels, logits, labels, cuSeqlens], () => native().sequenceLogpsAsync(args));
  return { logps: args.logps, counts: args.counts };
}

function newLike(dtype: DType, length: number): Float32Array | Uint16Array {
  return dtype === 'float32' ? new Float32Array(length) : new Uint16Array(length);
}

type GradData = Float32Array | Uint16Array | DeviceTensor;

function gradTarget(grad: AnyDpoLossOptions['grad'], tokens: CheckedTokens): GradData | null {
  const elements = tokens.rows * tokens.vocab;
  if (grad === undefined || grad === true) {
    if (tokens.data instanceof DeviceTensor) return DeviceTensor.alloc(tokens.shape, tokens.dtype, { device: tokens.data.device });
    return newLike(tokens.dtype, elements);
  }
  if (grad === false) return null;
  if (grad === 'inplace') return tokens.data;
  const onDevice = tokens.data instanceof DeviceTensor;
  if (grad instanceof DeviceTensor) {
    if (!onDevice) throw invalidArgument('grad', 'a host tensor for host logits (a DeviceTensor only for device logits)', grad.toString());
    if (grad.dtype !== tokens.dtype) throw invalidArgument('grad.dtype', `the logits dtype '${tokens.dtype}'`, grad.dtype);
    if (grad.byteLength !== elements * ELEMENT_BYTES[tokens.dtype]) {
      throw invalidArgument('grad.shape', `${elements} elements (as many as logits)`, grad.shape);
    }
    if (grad.device !== tokens.device) throw invalidArgument('grad.device', `the call's device ${tokens.device}`, grad.device);
    grad.pointer; // throws when freed
    return grad;
  }
  if (typeof grad !== 'object' || grad === null || onDevice) {
    const target = onDevice ? 'a DeviceTensor' : 'a tensor';
    throw invalidArgument('grad', `true, false, 'inplace' or ${target} to fill`, grad, TypeError);
  }
  const target = checkTensor('grad', grad);
  if (target.dtype !== tokens.dtype) throw invalidArgument('grad.dtype', `the logits dtype '${tokens.dtype}'`, target.dtype);
  if (target.data.length !== elements) {
    throw invalidArgument('grad.data', `${elements} elements (as many as logits)`, target.data);
  }
  return target.data;
}

type AnyDpoLossOptions = DpoLossOptions | DeviceDpoLossOptions;
type AnyDpoLossResult = DpoLossResult<Tensor | DeviceTensor, Float32Array | DeviceTensor>;

interface PreparedLoss {
  args: NativeLossArgs;
  finish(): AnyDpoLossResult;
  /** Frees the device outputs this call allocated (when it fails). */
  release(): void;
  /** Every tensor the call reads or writes. */
  tensors: readonly unknown[];
}

function prepareDpoLoss(options: AnyDpoLossOptions): PreparedLoss {
  const tokens = checkTokens(options);
  if (tokens.numSeqs < 2 || tokens.numSeqs % 2 !== 0) {
    throw invalidArgument(
      options.cuSeqlens ? 'cuSeqlens' : 'logits.shape[0]',
      'an even number of sequences, 2B (B chosen then B rejected), B >= 1',
      tokens.numSeqs,
    );
  }
  const numPairs = tokens.numSeqs / 2;
  const settings = checkLossSettings(options as unknown as Record<string, unknown>, numPairs);
  if (options.deferScale !== undefined && typeof options.deferScale !== 'boolean') {
    throw invalidArgument('deferScale', 'a boolean', options.deferScale, TypeError);
  }
  if (options.deferScale && options.grad === false) {
    throw invalidArgument('deferScale', 'used with a gradient (grad not false)', options.grad);
  }
  const gradData = gradTarget(options.grad, tokens);
  const rowScale = !options.deferScale
    ? null
    : gradData instanceof DeviceTensor
      ? DeviceTensor.alloc([tokens.rows], 'float32', { device: gradData.device })
      : new Float32Array(tokens.rows);
  const args: NativeLossArgs = {
    ...tokenArgs(tokens),
    kinds: Int32Array.from(settings.lossTypes, (t) => LOSS_TYPES.indexOf(t)),
    weights: Float64Array.from(settings.lossWeights),
    beta: settings.beta,
    labelSmoothing: settings.labelSmoothing,
    simpoGamma: settings.simpoGamma,
    discopopTau: settings.discopopTau,
    scale: settings.scale,
    refChosen: settings.ref?.chosen ?? null,
    refRejected: settings.ref?.rejected ?? null,
    seqLogps: new Float64Array(tokens.numSeqs),
    seqCounts: new Int32Array(tokens.numSeqs),
    seqGrad: new Float64Array(tokens.numSeqs),
    pairLosses: new Float64Array(numPairs),
    chosenRewards: new Float64Array(numPairs),
    rejectedRewards: new Float64Array(numPairs),
    stats: new Float64Array(STAT.count),
    grad: gradData === null ? null : bufferOf(gradData),
    rowScale: rowScale === null ? null : bufferOf(rowScale),
  };
  const averaged = settings.lossTypes.some((t) => REPORTS_AVERAGED.has(t));
  const allocated = [gradData !== options.grad && gradData !== tokens.data ? gradData : null, rowScale];
  return {
    args,
    tensors: [tokens.data, tokens.labels, gradData, rowScale],
    release() {
      for (const t of allocated) if (t instanceof DeviceTensor) t.free();
    },
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
        grad: gradData === null || gradData instanceof DeviceTensor ? gradData : { data: gradData, shape: tokens.shape, dtype: tokens.dtype },
        rowScale,
        metrics: metricsOf(args, chosenLogps, rejectedLogps),
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
    meanTokenAccuracy: ratio(s[STAT.chosenCorrect], s[STAT.chosenTokens]),
    numTokens: tokens,
  };
}

/** The DPO-family loss, its metrics and its gradient with respect to the logits. */
export function dpoLoss(options: DpoLossOptions): DpoLossResult;
export function dpoLoss(options: DeviceDpoLossOptions): DpoLossResult<DeviceTensor, DeviceTensor>;
export function dpoLoss(options: AnyDpoLossOptions): AnyDpoLossResult {
  const prepared = prepareDpoLoss(options);
  runReleasingOnError(prepared, () => native().dpoLoss(prepared.args));
  return prepared.finish();
}

/** dpoLoss on the libuv thread pool; the event loop stays free. Same bits as dpoLoss. */
export function dpoLossAsync(options: DpoLossOptions): Promise<DpoLossResult>;
export function dpoLossAsync(options: DeviceDpoLossOptions): Promise<DpoLossResult<DeviceTensor, DeviceTensor>>;
export async function dpoLossAsync(options: AnyDpoLossOptions): Promise<AnyDpoLossResult> {
  const prepared = prepareDpoLoss(options);
  try {
    const { cuSeqlens, refChosen, refRejected } = prepared.args;
    await holdingTensors([...prepared.tensors, cuSeqlens, refChosen, refRejected], () => native().dpoLossAsync(prepared.args));
  } catch (error) {
    prepared.release();
    throw error;
  }
  return prepared.finish();
}

// A failed call frees the device outputs it allocated.
function runReleasingOnError(prepared: PreparedLoss, run: () => void): void {
  try {
    run();
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
  const prepared = prepareDpoLoss({ ...options, backend: 'cuda' });
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
  const prepared = prepareDpoLoss({ ...options, backend: 'cpu' });
  native().dpoLossUnfused(prepared.args);
  return prepared.finish() as DpoLossResult;
}

