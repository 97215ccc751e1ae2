// Turns user options into the plain, checked values the binding takes. Every rule here has a
// message naming the argument, what it expected and what it got.
import { availableParallelism } from 'node:os';

import { backendFor, type BackendName } from './backend.js';
import { DeviceTensor } from './device.js';
import { invalidArgument } from './errors.js';
import { LOSS_DEFAULTS, LOSS_TYPES, NEEDS_REF, type DType, type LabelTensor, type LossType, type Tensor } from './types.js';

export const DTYPE_CODE: Record<DType, number> = { float32: 0, bfloat16: 1, float16: 2 };

/** Host tokens. */
export interface TokenOptions extends TokenSettings {
  logits: Tensor;
  labels: LabelTensor;
}

/** Device tokens, for the CUDA backend: logits a float32/bfloat16/float16 DeviceTensor, labels on the host or an int32 DeviceTensor. */
export interface DeviceTokenOptions extends TokenSettings {
  logits: DeviceTensor;
  labels: LabelTensor | DeviceTensor;
}

export interface TokenSettings {
  /** Packed layout: logits [N, V], labels [N], sequence s = rows cuSeqlens[s]..cuSeqlens[s+1]-1. */
  cuSeqlens?: Int32Array;
  /** Label value of prompt and padding tokens (default -100). */
  ignoreIndex?: number;
  /** CPU worker threads (default: os.availableParallelism()). */
  threads?: number;
  /**
   * Run this call on 'cpu' or 'cuda' instead of the process's backend (FUSED_DPO_BACKEND, else
   * CUDA when a device answers). DeviceTensor inputs always run on CUDA.
   */
  backend?: BackendName;
  /** CUDA device for host inputs (default 0); DeviceTensor inputs run on their own device. */
  device?: number;
  /** A cudaStream_t (as a bigint) to run on, for interop with other CUDA code; default: the default stream. */
  stream?: bigint;
}

export interface CheckedTokens {
  data: Float32Array | Uint16Array | DeviceTensor;
  dtype: DType;
  shape: number[];
  rows: number;
  vocab: number;
  labels: Int32Array | DeviceTensor;
  cuSeqlens: Int32Array;
  numSeqs: number;
  ignoreIndex: number;
  threads: number;
  backend: BackendName;
  /** The CUDA device the call runs on (null on the CPU). */
  device: number | null;
  stream: bigint | null;
}

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

export function checkInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(name, `an integer in [${min}, ${max}]`, value, typeof value === 'number' ? RangeError : TypeError);
  }
  return value;
}

export function checkFinite(name: string, value: unknown, rule: string, ok: (v: number) => boolean = () => true): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) {
    throw invalidArgument(name, rule, value, typeof value === 'number' ? RangeError : TypeError);
  }
  return value;
}

// A resizable or growable buffer could shrink under a running async call: refuse it.
function checkFixedBuffer(name: string, view: ArrayBufferView): void {
  const buffer = view.buffer as ArrayBufferLike & { resizable?: boolean; growable?: boolean };
  if (buffer.resizable || buffer.growable) {
    throw invalidArgument(name, 'a typed array over a fixed-length buffer', 'a resizable/growable buffer', TypeError);
  }
}

function checkShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isInteger(d) || d < 0)) {
    throw invalidArgument(`${name}.shape`, 'an array of non-negative integers', shape, TypeError);
  }
  return shape as number[];
}

export function checkTensor(name: string, tensor: unknown): { data: Float32Array | Uint16Array; dtype: DType; shape: number[] } {
  if (!isObject(tensor)) throw invalidArgument(name, 'a tensor { data, shape, dtype? }', tensor, TypeError);
  const { data, dtype } = tensor;
  const shape = checkShape(name, tensor.shape);
  let kind: DType;
  if (data instanceof Float32Array) {
    if (dtype !== undefined && dtype !== 'float32') {
      throw invalidArgument(`${name}.dtype`, "'float32' (or omitted) for Float32Array data", dtype);
    }
    kind = 'float32';
  } else if (data instanceof Uint16Array) {
    if (dtype !== 'bfloat16' && dtype !== 'float16') {
      throw invalidArgument(`${name}.dtype`, "'bfloat16' or 'float16' for Uint16Array data", dtype);
    }
    kind = dtype;
  } else {
    throw invalidArgument(`${name}.data`, 'a Float32Array, or a Uint16Array of bfloat16/float16 bits', data, TypeError);
  }
  checkFixedBuffer(`${name}.data`, data);
  const size = shape.reduce((a, b) => a * b, 1);
  if (size !== data.length) {
    throw invalidArgument(`${name}.data`, `${size} elements (the product of shape [${shape.join(', ')}])`, data);
  }
  return { data, dtype: kind, shape };
}

function checkCuSeqlens(cu: unknown, rows: number): Int32Array {
  if (!(cu instanceof Int32Array)) throw invalidArgument('cuSeqlens', 'an Int32Array', cu, TypeError);
  checkFixedBuffer('cuSeqlens', cu);
  if (cu.length < 2) throw invalidArgument('cuSeqlens', 'at least 2 entries (one sequence)', cu);
  if (cu[0] !== 0) throw invalidArgument('cuSeqlens[0]', '0', cu[0]);
  for (let s = 1; s < cu.length; s++) {
    if (cu[s] < cu[s - 1]) throw invalidArgument(`cuSeqlens[${s}]`, `>= cuSeqlens[${s - 1}] (${cu[s - 1]}): offsets never decrease`, cu[s]);
  }
  if (cu[cu.length - 1] !== rows) {
    throw invalidArgument(`cuSeqlens[${cu.length - 1}]`, `the number of rows, ${rows}`, cu[cu.length - 1]);
  }
  return cu;
}

function checkDeviceLogits(tensor: DeviceTensor): { data: DeviceTensor; dtype: DType; shape: number[] } {
  if (tensor.dtype === 'int32') throw invalidArgument('logits.dtype', "'float32', 'bfloat16' or 'float16'", tensor.dtype);
  tensor.pointer; // throws when freed
  return { data: tensor, dtype: tensor.dtype, shape: [...tensor.shape] };
}

function checkLabels(tensor: unknown): { labels: Int32Array | DeviceTensor; shape: number[] } {
  if (tensor instanceof DeviceTensor) {
    if (tensor.dtype !== 'int32') throw invalidArgument('labels.dtype', "'int32' for a DeviceTensor of labels", tensor.dtype);
    tensor.pointer; // throws when freed
    return { labels: tensor, shape: [...tensor.shape] };
  }
  if (!isObject(tensor) || !(tensor.data instanceof Int32Array)) {
    throw invalidArgument('labels', 'a tensor { data: Int32Array, shape } or an int32 DeviceTensor', tensor, TypeError);
  }
  checkFixedBuffer('labels.data', tensor.data);
  return { labels: tensor.data, shape: checkShape('labels', tensor.shape) };
}

// Where the call runs: the backend, and for CUDA the device (DeviceTensor inputs must share one).
function checkPlacement(options: Record<string, unknown>, logits: unknown, labels: unknown) {
  const requested = options.backend;
  if (requested !== undefined && requested !== 'cpu' && requested !== 'cuda') throw invalidArgument('backend', "'cpu' or 'cuda'", requested);
  if (labels instanceof DeviceTensor && !(logits instanceof DeviceTensor)) {
    throw invalidArgument('labels', 'host labels for host logits (a DeviceTensor only with DeviceTensor logits)', labels.toString());
  }
  const onDevice = [logits, labels].filter((t): t is DeviceTensor => t instanceof DeviceTensor);
  const backend = backendFor(requested, onDevice.length > 0);
  if (options.stream !== undefined && typeof options.stream !== 'bigint') {
    throw invalidArgument('stream', 'a cudaStream_t as a bigint', options.stream, TypeError);
  }
  let device: number | null = null;
  if (backend === 'cuda') {
    device = onDevice.length > 0 ? onDevice[0].device : options.device === undefined ? 0 : checkInteger('device', options.device, 0, 1023);
    if (onDevice.some((t) => t.device !== device)) {
      throw invalidArgument('labels', `a DeviceTensor on the logits' device ${device}`, `one on device ${onDevice[1]?.device}`);
    }
  }
  return { backend, device, stream: backend === 'cuda' ? ((options.stream as bigint | undefined) ?? null) : null };
}

/** The padded layout's sequence offsets: numSeqs sequences of T rows each. */
export function paddedCuSeqlens(numSeqs: number, T: number): Int32Array {
  return Int32Array.from({ length: numSeqs + 1 }, (_, s) => s * T);
}

export function checkTokens(options: unknown): CheckedTokens {
  if (!isObject(options)) throw invalidArgument('options', 'an object', options, TypeError);
  const { data, dtype, shape } =
    options.logits instanceof DeviceTensor ? checkDeviceLogits(options.logits) : checkTensor('logits', options.logits);
  const ignoreIndex = options.ignoreIndex === undefined ? -100 : checkInteger('ignoreIndex', options.ignoreIndex, INT32_MIN, INT32_MAX);
  const threads = options.threads === undefined ? availableParallelism() : checkInteger('threads', options.threads, 1, 4096);
  const { labels, shape: labelShape } = checkLabels(options.labels);
  const placement = checkPlacement(options, options.logits, options.labels);

  const packed = options.cuSeqlens !== undefined;
  if (packed ? shape.length !== 2 : shape.length !== 3) {
    throw invalidArgument(
      'logits.shape',
      packed ? '[N, V] when cuSeqlens is given' : '[numSeqs, T, V] (or [N, V] with cuSeqlens)',
      shape,
    );
  }
  const vocab = shape[shape.length - 1];
  if (vocab < 1 || vocab > INT32_MAX) throw invalidArgument('logits.shape[-1] (V)', 'in [1, 2^31)', vocab);
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const expected = shape.slice(0, -1);
  if (labelShape.length !== expected.length || labelShape.some((d, i) => d !== expected[i])) {
    throw invalidArgument('labels.shape', `[${expected.join(', ')}] (logits.shape without V)`, labelShape);
  }
  if (!(labels instanceof DeviceTensor) && labels.length !== rows) throw invalidArgument('labels.data', `${rows} elements`, labels);

  let cuSeqlens: Int32Array;
  if (packed) {
    cuSeqlens = checkCuSeqlens(options.cuSeqlens, rows);
  } else {
    cuSeqlens = paddedCuSeqlens(shape[0]!, shape[1]!);
  }
  if (rows > INT32_MAX) throw invalidArgument('logits', 'fewer than 2^31 rows', rows);

  // (Device labels are checked on the device, before any kernel indexes with them.)
  for (let r = 0; !(labels instanceof DeviceTensor) && r < rows; r++) {
    const y = labels[r];
    if (y !== ignoreIndex && (y < 0 || y >= vocab)) {
      throw invalidArgument(`labels.data[${r}]`, `a token id in [0, ${vocab}) or ignoreIndex (${ignoreIndex})`, y);
    }
  }
  return { data, dtype, shape, rows, vocab, labels, cuSeqlens, numSeqs: cuSeqlens.length - 1, ignoreIndex, threads, ...placement };
}

export interface LossSettings {
  lossTypes: LossType[];
  lossWeights: number[];
  beta: number;
  labelSmoothing: number;
  simpoGamma: number;
  discopopTau: number;
  scale: number;
  ref: { chosen: Float64Array; rejected: Float64Array } | null;
}

function checkRefSide(name: string, value: unknown, numPairs: number): Float64Array {
  const isArrayLike = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
  if (!isArrayLike) throw invalidArgument(name, `a Float64Array (or number array) of ${numPairs} reference log-prob sums`, value, TypeError);
  const values = value as ArrayLike<number>;
  if (values.length !== numPairs) throw invalidArgument(name, `${numPairs} entries (one per pair)`, value);
  const out = Float64Array.from(values as ArrayLike<number>);
  for (let i = 0; i < numPairs; i++) {
    if (!Number.isFinite(out[i])) throw invalidArgument(`${name}[${i}]`, 'a finite number', values[i]);
  }
  return out;
}

export function checkLossSettings(options: Record<string, unknown>, numPairs: number): LossSettings {
  const rawTypes = options.lossType === undefined ? 'sigmoid' : options.lossType;
  const list = Array.isArray(rawTypes) ? rawTypes : [rawTypes];
  if (list.length < 1 || list.length > 8) throw invalidArgument('lossType', 'a loss type or a list of 1 to 8', rawTypes);
  const lossTypes = list.map((t, i) => {
    if (!(LOSS_TYPES as readonly unknown[]).includes(t)) {
      throw invalidArgument(Array.isArray(rawTypes) ? `lossType[${i}]` : 'lossType', `one of ${LOSS_TYPES.join(', ')}`, t);
    }
    return t as LossType;
  });
  let lossWeights: number[];
  if (options.lossWeights === undefined) {
    lossWeights = lossTypes.map(() => 1);
  } else {
    const w = options.lossWeights;
    if (!Array.isArray(w) || w.length !== lossTypes.length) {
      throw invalidArgument('lossWeights', `an array of ${lossTypes.length} numbers (one per lossType)`, w, TypeError);
    }
    lossWeights = w.map((x, i) => checkFinite(`lossWeights[${i}]`, x, 'a finite number'));
  }
  const beta = options.beta === undefined ? LOSS_DEFAULTS.beta : checkFinite('beta', options.beta, 'a finite number > 0', (v) => v > 0);
  const labelSmoothing =
    options.labelSmoothing === undefined ? LOSS_DEFAULTS.labelSmoothing : checkFinite('labelSmoothing', options.labelSmoothing, 'a number in [0, 0.5]', (v) => v >= 0 && v <= 0.5);
  if (lossTypes.includes('robust') && labelSmoothing >= 0.5) {
    throw invalidArgument('labelSmoothing', "below 0.5 for lossType 'robust' (it divides by 1 - 2·labelSmoothing)", labelSmoothing);
  }
  const simpoGamma = options.simpoGamma === undefined ? LOSS_DEFAULTS.simpoGamma : checkFinite('simpoGamma', options.simpoGamma, 'a finite number');
  const discopopTau =
    options.discopopTau === undefined ? LOSS_DEFAULTS.discopopTau : checkFinite('discopopTau', options.discopopTau, 'a finite number > 0', (v) => v > 0);

  const reduction = options.reduction === undefined ? 'mean' : options.reduction;
  if (reduction !== 'mean' && reduction !== 'sum') throw invalidArgument('reduction', "'mean' or 'sum'", reduction);
  let scale = reduction === 'mean' ? 1 / numPairs : 1;
  if (options.normalizer !== undefined) {
    scale = 1 / checkFinite('normalizer', options.normalizer, 'a finite number > 0', (v) => v > 0);
  }

  const needing = lossTypes.find((t) => NEEDS_REF.has(t));
  let ref: LossSettings['ref'] = null;
  if (options.ref === undefined || options.ref === null) {
    if (needing) {
      throw invalidArgument(
        'ref',
        `{ chosen, rejected } reference log-prob sums for lossType '${needing}' (from sequenceLogps on the reference model; zeros for reference-free)`,
        options.ref,
        TypeError,
      );
    }
  } else {
    if (!isObject(options.ref)) throw invalidArgument('ref', '{ chosen, rejected }', options.ref, TypeError);
    ref = {
      chosen: checkRefSide('ref.chosen', options.ref.chosen, numPairs),
      rejected: checkRefSide('ref.rejected', options.ref.rejected, numPairs),
    };
  }
  return { lossTypes, lossWeights, beta, labelSmoothing, simpoGamma, discopopTau, scale, ref };
}
