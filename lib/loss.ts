// The public loss and log-prob calls: validate, fill the binding's argument object, run, and
// shape the results.
import { invalidArgument } from './errors.js';
import { native, STAT, type NativeLossArgs, type NativeSequenceArgs } from './native.js';
import { LOSS_TYPES, REPORTS_AVERAGED, type DpoMetrics, type DType, type LossType, type Tensor } from './types.js';
import { checkLossSettings, checkTensor, checkTokens, DTYPE_CODE, type CheckedTokens, type TokenOptions } from './validate.js';

export interface SequenceLogpsOptions extends TokenOptions {
  /** Divide each sum by its token count (clamped to >= 1). Default false. */
  average?: boolean;
}

export interface SequenceLogpsResult {
  /** One per sequence: the sum (or mean) of the completion tokens' log-probs, in float64. */
  logps: Float64Array;
  /** One per sequence: the number of non-ignored tokens. */
  counts: Int32Array;
}

export interface DpoLossOptions extends TokenOptions {
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
  /** true: a new array · 'inplace': over the logits · false: none · a tensor to fill. Default true. */
  grad?: boolean | 'inplace' | Tensor;
  /**
   * Deferred scale: grad receives the unscaled onehot − p, written in the forward pass (one read
   * and one write of the logits in all), and rowScale the per-row factor G that makes it the
   * gradient. For trainers that apply G on the hidden-size side of the next matmul.
   */
  deferScale?: boolean;
}

export interface DpoLossResult {
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
  /** ∂loss/∂logits, in the logits' dtype and shape, or null when grad: false; unscaled with deferScale. */
  grad: Tensor | null;
  /** With deferScale: one factor per row (0 for ignored rows); the gradient is rowScale[r]·grad[r, :]. */
  rowScale: Float32Array | null;
  metrics: DpoMetrics;
}

function tokenArgs(t: CheckedTokens) {
  return {
    logits: t.data,
    dtype: DTYPE_CODE[t.dtype],
    rows: t.rows,
    vocab: t.vocab,
    labels: t.labels,
    cuSeqlens: t.cuSeqlens,
    ignoreIndex: t.ignoreIndex,
    threads: t.threads,
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
  await native().sequenceLogpsAsync(args);
  return { logps: args.logps, counts: args.counts };
}

function newLike(dtype: DType, length: number): Float32Array | Uint16Array {
  return dtype === 'float32' ? new Float32Array(length) : new Uint16Array(length);
}

function gradTarget(grad: DpoLossOptions['grad'], tokens: CheckedTokens): Float32Array | Uint16Array | null {
  if (grad === undefined || grad === true) return newLike(tokens.dtype, tokens.data.length);
  if (grad === false) return null;
  if (grad === 'inplace') return tokens.data;
  if (typeof grad !== 'object' || grad === null) {
    throw invalidArgument('grad', "true, false, 'inplace' or a tensor to fill", grad, TypeError);
  }
  const target = checkTensor('grad', grad);
  if (target.dtype !== tokens.dtype) throw invalidArgument('grad.dtype', `the logits dtype '${tokens.dtype}'`, target.dtype);
  if (target.data.length !== tokens.data.length) {
    throw invalidArgument('grad.data', `${tokens.data.length} elements (as many as logits)`, target.data);
  }
  return target.data;
}

interface PreparedLoss {
  args: NativeLossArgs;
  finish(): DpoLossResult;
}

function prepareDpoLoss(options: DpoLossOptions): PreparedLoss {
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
  const gradData = gradTarget(options.grad, tokens);
  if (options.deferScale && !gradData) throw invalidArgument('deferScale', 'used with a gradient (grad not false)', options.grad);
  const rowScale = options.deferScale ? new Float32Array(tokens.rows) : null;
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
    grad: gradData,
    rowScale,
  };
  const averaged = settings.lossTypes.some((t) => REPORTS_AVERAGED.has(t));
  return {
    args,
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
        grad: gradData ? { data: gradData, shape: tokens.shape, dtype: tokens.dtype } : null,
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
export function dpoLoss(options: DpoLossOptions): DpoLossResult {
  const prepared = prepareDpoLoss(options);
  native().dpoLoss(prepared.args);
  return prepared.finish();
}

/** dpoLoss on the libuv thread pool; the event loop stays free. Same bits as dpoLoss. */
export async function dpoLossAsync(options: DpoLossOptions): Promise<DpoLossResult> {
  const prepared = prepareDpoLoss(options);
  await native().dpoLossAsync(prepared.args);
  return prepared.finish();
}

/**
 * The same results through the unfused native baseline (log-softmax to a full buffer, then one
 * op per pass). For the benchmark: not exported from the package.
 */
export function dpoLossUnfused(options: DpoLossOptions): DpoLossResult {
  const prepared = prepareDpoLoss(options);
  native().dpoLossUnfused(prepared.args);
  return prepared.finish();
}

