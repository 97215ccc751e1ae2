// fused-dpo/tfjs: the DPO loss as a differentiable tfjs op. The forward pass copies the logits
// and labels out of the backend (no copy on the CPU backend), runs the core's fused dpoLoss, and
// keeps its logits gradient; tf.customGrad hands that gradient, times dy, to tfjs's autograd. No
// math of its own: everything numeric is the core's.
import * as tf from '@tensorflow/tfjs-core';

import { fusedDpoError, invalidArgument } from './errors.js';
import {
  dpoLoss as coreDpoLoss,
  sequenceLogps as coreSequenceLogps,
  type DpoLossOptions,
  type DpoLossResult,
  type DpoMetrics,
  type SequenceLogpsOptions,
  type SequenceLogpsResult,
} from './index.js';

/** The core's results for one call, less the gradient (which tfjs's autograd now holds). */
export type TfjsDpoLossDetails = Omit<DpoLossResult, 'grad' | 'rowScale'>;

/** Reference sequence log-prob sums, B each: arrays (full float64 precision) or 1-D tf.Tensors (float32). */
export interface TfjsReference {
  chosen: ArrayLike<number> | tf.Tensor;
  rejected: ArrayLike<number> | tf.Tensor;
}

// The keys this adapter sets itself: the tensors are positional, and the gradient is tfjs's.
const ADAPTER_KEYS: Record<string, string> = {
  logits: 'logits is the first argument (a tf.Tensor)',
  labels: 'labels is the second argument (an int32 tf.Tensor)',
  ref: 'ref is the third argument ({ chosen, rejected })',
  grad: 'the gradient flows through tfjs (tf.grad, tf.variableGrads, optimizer.minimize)',
  deferScale: "deferScale's unscaled gradient has no place in tfjs's autograd",
};

/** The core's loss options (beta, lossType, cuSeqlens, ...), less those the adapter sets, plus onMetrics. */
export interface TfjsDpoLossOptions extends Omit<DpoLossOptions, 'logits' | 'labels' | 'ref' | 'grad' | 'deferScale'> {
  /** Called after each forward pass with its metrics and the core's per-pair and per-sequence results. */
  onMetrics?: (metrics: DpoMetrics, details: TfjsDpoLossDetails) => void;
}

export type TfjsSequenceLogpsOptions = Omit<SequenceLogpsOptions, 'logits' | 'labels'>;

let last: TfjsDpoLossDetails | null = null;

/** The metrics of the last dpoLoss call's forward pass (null before the first). */
export function lastMetrics(): DpoMetrics | null {
  return last?.metrics ?? null;
}

/** The core's full results of the last dpoLoss call's forward pass, less the gradient (null before the first). */
export function lastDetails(): TfjsDpoLossDetails | null {
  return last;
}

function checkTensorArg(name: string, value: unknown, dtype: 'float32' | 'int32', hint: string): tf.Tensor {
  if (!(value instanceof tf.Tensor)) throw invalidArgument(name, `a tf.Tensor (${dtype})`, value, TypeError);
  if (value.isDisposed) throw invalidArgument(name, 'a tf.Tensor that is not disposed', 'a disposed tensor', TypeError);
  if (value.dtype !== dtype) throw invalidArgument(`${name}.dtype`, `'${dtype}' (${hint})`, value.dtype, TypeError);
  return value;
}

const checkLogits = (value: unknown) =>
  checkTensorArg('logits', value, 'float32', 'tfjs has no bfloat16 or float16 tensors: for those, call fused-dpo\'s dpoLoss with the raw bits in a Uint16Array');

const checkLabels = (value: unknown) =>
  checkTensorArg('labels', value, 'int32', "token ids: tf.cast(labels, 'int32')");

// The options less the adapter's own keys; a key the adapter sets is refused, naming it.
function passThrough<T extends object>(where: string, options: unknown, refused: readonly string[]): Partial<T> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw invalidArgument('options', 'an object', options, TypeError);
  const copy = { ...(options as Record<string, unknown>) };
  for (const key of refused) {
    if (Object.hasOwn(copy, key)) {
      throw fusedDpoError(`${where}: option '${key}' is set by fused-dpo/tfjs: ${ADAPTER_KEYS[key]}`, 'ERR_FDPO_INVALID_ARGUMENT', TypeError);
    }
  }
  return copy as Partial<T>;
}

function refSide(name: string, value: unknown): unknown {
  if (!(value instanceof tf.Tensor)) return value; // arrays: the core checks them
  if (value.isDisposed) throw invalidArgument(name, 'a tf.Tensor that is not disposed', 'a disposed tensor', TypeError);
  if (value.rank !== 1) throw invalidArgument(`${name}.shape`, 'a 1-D tensor [B]', value.shape, TypeError);
  return value.dataSync();
}

function hostRef(ref: unknown): DpoLossOptions['ref'] {
  if (ref === undefined || ref === null || typeof ref !== 'object') return ref as DpoLossOptions['ref']; // the core names what it needs
  const { chosen, rejected, ...others } = ref as Record<string, unknown>;
  // Other keys go through, for the core to refuse by name.
  return { ...others, chosen: refSide('ref.chosen', chosen), rejected: refSide('ref.rejected', rejected) } as DpoLossOptions['ref'];
}

// Whether tfjs is recording a gradient tape (inside tf.grad, tf.variableGrads, optimizer.minimize).
// Outside one, the forward pass asks the core for no gradient: one read of the logits instead of
// two reads and a write.
function recordingGradients(): boolean {
  return tf.engine().state.gradientDepth > 0;
}

// dy·grad. dy is 1 when the loss itself is differentiated (the usual case): then the gradient
// tensor is shared (tf.clone copies no data), where tfjs's multiply would cost a pass over R×V.
function scaledGrad(dy: tf.Tensor, grad: tf.Tensor): tf.Tensor {
  return dy.dataSync()[0] === 1 ? tf.clone(grad) : tf.mul(dy, grad);
}

/**
 * The DPO-family loss of logits [2B, T, V] (or [N, V] with options.cuSeqlens) as a scalar
 * float32 tf.Tensor whose gradient with respect to the logits is fused-dpo's.
 */
export function dpoLoss(logits: tf.Tensor, labels: tf.Tensor, ref: TfjsReference | null | undefined, options?: TfjsDpoLossOptions): tf.Scalar {
  const where = 'fused-dpo/tfjs dpoLoss';
  checkLogits(logits);
  checkLabels(labels);
  const { onMetrics, ...coreOptions } = passThrough<TfjsDpoLossOptions>(where, options, Object.keys(ADAPTER_KEYS));
  if (onMetrics !== undefined && typeof onMetrics !== 'function') throw invalidArgument('onMetrics', 'a function', onMetrics, TypeError);
  const hostReference = hostRef(ref);
  const labelTensor = { data: labels.dataSync() as Int32Array, shape: labels.shape };
  const withGrad = recordingGradients();

  const lossOf = tf.customGrad((...args) => {
    const input = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    const { grad, rowScale: _rowScale, ...details } = coreDpoLoss({
      ...coreOptions,
      logits: { data: input.dataSync() as Float32Array, shape: input.shape },
      labels: labelTensor,
      ref: hostReference,
      grad: withGrad,
    });
    last = details;
    if (grad !== null) save([tf.tensor(grad.data, input.shape, 'float32')]);
    onMetrics?.(details.metrics, details);
    return {
      value: tf.scalar(details.loss, 'float32'),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => scaledGrad(dy, saved[0]!),
    };
  });
  return lossOf(logits) as tf.Scalar;
}

/** Per-sequence log-prob sums (or means, with average) and token counts, for the reference pass. Forward only. */
export function sequenceLogps(logits: tf.Tensor, labels: tf.Tensor, options?: TfjsSequenceLogpsOptions): SequenceLogpsResult {
  const where = 'fused-dpo/tfjs sequenceLogps';
  checkLogits(logits);
  checkLabels(labels);
  const coreOptions = passThrough<TfjsSequenceLogpsOptions>(where, options, ['logits', 'labels']);
  return coreSequenceLogps({
    ...coreOptions,
    logits: { data: logits.dataSync() as Float32Array, shape: logits.shape },
    labels: { data: labels.dataSync() as Int32Array, shape: labels.shape },
  } as SequenceLogpsOptions);
}
