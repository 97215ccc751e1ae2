// Turns user options into the plain, checked values the binding takes. Every option rule lives
// here, each with a message naming the argument, what it expected and what it got. User values
// are read once (options through snapshotOptions, typed arrays through the intrinsic getters), so
// a getter or Proxy that answers differently on each read cannot pass one value to validation and
// another to the binding.
import { availableParallelism } from 'node:os';

import { backendFor, type BackendName } from './backend.js';
import { DeviceTensor, ELEMENT_BYTES } from './device.js';
import { invalidArgument } from './errors.js';
import { typedArrayFacts, type TypedArrayFacts } from './intrinsics.js';
import {
  F_DIVERGENCES,
  HYPERPARAMETERS,
  KTO_HYPERPARAMETERS,
  KTO_LOSS_TYPES,
  POLICY_LOSS_TYPES,
  type PolicyLossType,
  type KtoLossType,
  HYPERPARAMETER_NAMES,
  LOSS_KINDS,
  LOSS_TYPES,
  type FDivergenceType,
  type HyperparameterName,
  type LossType,
} from './loss-kinds.js';
import { snapshotOptions } from './options.js';
import type { DType, LabelTensor, Tensor } from './types.js';

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
  /**
   * Model-head transforms, applied to every logit in this order (TRL's) inside both passes, the
   * gradient taken with respect to the raw logits: z·logitScale (Cohere), then
   * softcap·tanh(z/softcap) (Gemma 2/3), then z/temperature. Each off by default; when given,
   * finite and > 0.
   */
  logitScale?: number;
  softcap?: number;
  temperature?: number;
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

/** The keys of TokenSettings and the tensors, which every call takes. */
export const TOKEN_KEYS = [
  'logits',
  'labels',
  'cuSeqlens',
  'ignoreIndex',
  'logitScale',
  'softcap',
  'temperature',
  'threads',
  'backend',
  'device',
  'stream',
] as const;

/** The model-head transforms, 0 where off (as fdpo_tokens takes them). */
export interface HeadTransforms {
  logitScale: number;
  softcap: number;
  temperature: number;
}

const HEAD_TRANSFORM_KEYS = ['logitScale', 'softcap', 'temperature'] as const;

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
  head: HeadTransforms;
  threads: number;
  backend: BackendName;
  /** The CUDA device the call runs on (null on the CPU). */
  device: number | null;
  stream: bigint | null;
}

/** Sequences per call at most (the per-sequence outputs cost about 50 bytes each). */
export const MAX_SEQUENCES = 2 ** 26;
/** Sequences per call at most when they hold no rows at all ([S, 0, V]): no data bounds their work. */
export const MAX_EMPTY_SEQUENCES = 2 ** 16;

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;

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

// A typed array of the given kinds, by its internal slots. A resizable or growable buffer could
// shrink under a running async call: refuse it.
function checkTypedArray(name: string, value: unknown, kinds: readonly string[], expected: string): TypedArrayFacts {
  const facts = typedArrayFacts(value);
  if (!facts || !kinds.includes(facts.kind)) throw invalidArgument(name, expected, value, TypeError);
  if (facts.resizable) throw invalidArgument(name, 'a typed array over a fixed-length buffer', 'a resizable/growable buffer', TypeError);
  return facts;
}

// A shape read once into a plain array.
function checkShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw invalidArgument(`${name}.shape`, 'an array of non-negative integers', shape, TypeError);
  const dims: unknown[] = Array.from(shape as unknown[]);
  if (dims.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
    throw invalidArgument(`${name}.shape`, 'an array of non-negative integers', dims, TypeError);
  }
  return dims as number[];
}

// A host tensor's fields, each read once.
function tensorFields(name: string, tensor: unknown, what: string): { data: unknown; shape: unknown; dtype: unknown } {
  if (typeof tensor !== 'object' || tensor === null) throw invalidArgument(name, what, tensor, TypeError);
  const t = tensor as Record<string, unknown>;
  return { data: t.data, shape: t.shape, dtype: t.dtype };
}

export function checkTensor(name: string, tensor: unknown): { data: Float32Array | Uint16Array; dtype: DType; shape: number[] } {
  return checkTensorFields(name, tensorFields(name, tensor, 'a tensor { data, shape, dtype? }'));
}

function checkTensorFields(
  name: string,
  { data, dtype, shape: rawShape }: { data: unknown; shape: unknown; dtype: unknown },
): { data: Float32Array | Uint16Array; dtype: DType; shape: number[] } {
  const facts = checkTypedArray(`${name}.data`, data, ['Float32Array', 'Uint16Array'], 'a Float32Array, or a Uint16Array of bfloat16/float16 bits');
  const shape = checkShape(name, rawShape);
  let kind: DType;
  if (facts.kind === 'Float32Array') {
    if (dtype !== undefined && dtype !== 'float32') {
      throw invalidArgument(`${name}.dtype`, "'float32' (or omitted) for Float32Array data", dtype);
    }
    kind = 'float32';
  } else {
    if (dtype !== 'bfloat16' && dtype !== 'float16') {
      throw invalidArgument(`${name}.dtype`, "'bfloat16' or 'float16' for Uint16Array data", dtype);
    }
    kind = dtype;
  }
  const size = shape.reduce((a, b) => a * b, 1);
  if (size !== facts.length) {
    throw invalidArgument(`${name}.data`, `${size} elements (the product of shape [${shape.join(', ')}])`, `${facts.length} elements`);
  }
  return { data: data as Float32Array | Uint16Array, dtype: kind, shape };
}

function checkCuSeqlens(value: unknown, rows: number): { cuSeqlens: Int32Array; numSeqs: number } {
  const { length } = checkTypedArray('cuSeqlens', value, ['Int32Array'], 'an Int32Array');
  const cu = value as Int32Array;
  if (length < 2) throw invalidArgument('cuSeqlens', 'at least 2 entries (one sequence)', `${length} entries`);
  if (length - 1 > MAX_SEQUENCES) throw invalidArgument('cuSeqlens', `at most ${MAX_SEQUENCES + 1} entries (${MAX_SEQUENCES} sequences)`, `${length} entries`);
  if (cu[0] !== 0) throw invalidArgument('cuSeqlens[0]', '0', cu[0]);
  for (let s = 1; s < length; s++) {
    if (cu[s] < cu[s - 1]) throw invalidArgument(`cuSeqlens[${s}]`, `>= cuSeqlens[${s - 1}] (${cu[s - 1]}): offsets never decrease`, cu[s]);
  }
  if (cu[length - 1] !== rows) throw invalidArgument(`cuSeqlens[${length - 1}]`, `the number of rows, ${rows}`, cu[length - 1]);
  return { cuSeqlens: cu, numSeqs: length - 1 };
}

function checkDeviceLogits(tensor: DeviceTensor): { data: DeviceTensor; dtype: DType; shape: number[] } {
  if (tensor.dtype === 'int32') throw invalidArgument('logits.dtype', "'float32', 'bfloat16' or 'float16'", tensor.dtype);
  tensor.pointer; // throws when freed
  return { data: tensor, dtype: tensor.dtype, shape: [...tensor.shape] };
}

function checkLabels(tensor: unknown): { labels: Int32Array | DeviceTensor; shape: number[]; length?: number } {
  if (tensor instanceof DeviceTensor) {
    if (tensor.dtype !== 'int32') throw invalidArgument('labels.dtype', "'int32' for a DeviceTensor of labels", tensor.dtype);
    tensor.pointer; // throws when freed
    return { labels: tensor, shape: [...tensor.shape] };
  }
  const what = 'a tensor { data: Int32Array, shape } or an int32 DeviceTensor';
  const { data, shape } = tensorFields('labels', tensor, what);
  const facts = checkTypedArray('labels.data', data, ['Int32Array'], 'an Int32Array of token ids');
  return { labels: data as Int32Array, shape: checkShape('labels', shape), length: facts.length };
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
  // Checked wherever given, so a wrong device is an error on the CPU too.
  const requestedDevice = options.device === undefined ? undefined : checkInteger('device', options.device, 0, 1023);
  let device: number | null = null;
  if (backend === 'cuda') {
    device = onDevice.length > 0 ? onDevice[0].device : (requestedDevice ?? 0);
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

/** Checks the tokens of a snapshot (options as snapshotOptions returned them). */
export function checkTokens(options: Record<string, unknown>): CheckedTokens {
  const { data, dtype, shape } =
    options.logits instanceof DeviceTensor ? checkDeviceLogits(options.logits) : checkTensor('logits', options.logits);
  const ignoreIndex = options.ignoreIndex === undefined ? -100 : checkInteger('ignoreIndex', options.ignoreIndex, INT32_MIN, INT32_MAX);
  const head = {} as HeadTransforms;
  for (const key of HEAD_TRANSFORM_KEYS) {
    head[key] = options[key] === undefined ? 0 : checkFinite(key, options[key], 'a finite number > 0 (leave it out for none)', (v) => v > 0);
  }
  // More threads than the machine runs at once add no speed (and results are the same for any
  // count): at most availableParallelism() are used.
  const threads = Math.min(availableParallelism(), options.threads === undefined ? Infinity : checkInteger('threads', options.threads, 1, 4096));
  const { labels, shape: labelShape, length: labelCount } = checkLabels(options.labels);
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
    // Either may be wrong; the logits are the likelier (T and V swapped), and the message shows both.
    throw invalidArgument(
      'logits.shape',
      `labels.shape [${labelShape.join(', ')}] followed by V (logits ${packed ? '[N, V]' : '[numSeqs, T, V]'}, labels ${packed ? '[N]' : '[numSeqs, T]'})`,
      shape,
    );
  }
  if (!(labels instanceof DeviceTensor) && labelCount !== rows) throw invalidArgument('labels.data', `${rows} elements`, `${labelCount} elements`);

  if (rows > INT32_MAX) throw invalidArgument('logits', 'fewer than 2^31 rows', rows);
  // Checked before the offsets are built. Each sequence costs O(1) work and output: with T >= 1
  // the logits bound their number; an empty [S, 0, V] has no data, so its S is bounded small.
  const most = !packed && shape[1] === 0 ? MAX_EMPTY_SEQUENCES : MAX_SEQUENCES;
  if (!packed && shape[0]! > most) throw invalidArgument('logits.shape[0]', `at most ${most} sequences${shape[1] === 0 ? ' when T = 0' : ''}`, shape[0]);
  const { cuSeqlens, numSeqs } = packed
    ? checkCuSeqlens(options.cuSeqlens, rows)
    : { cuSeqlens: paddedCuSeqlens(shape[0]!, shape[1]!), numSeqs: shape[0]! };

  // (Device labels are checked on the device, before any kernel indexes with them.)
  for (let r = 0; !(labels instanceof DeviceTensor) && r < rows; r++) {
    const y = labels[r];
    if (y !== ignoreIndex && (y < 0 || y >= vocab)) {
      throw invalidArgument(`labels.data[${r}]`, `a token id in [0, ${vocab}) or ignoreIndex (${ignoreIndex})`, y);
    }
  }
  return { data, dtype, shape, rows, vocab, labels, cuSeqlens, numSeqs, ignoreIndex, head, threads, ...placement };
}

/**
 * LD-DPO's α (TRL's ld_alpha): null when left out; else a number in [0, 1]. Its weights pair the
 * sequences (B chosen then B rejected), so the call needs an even number of them.
 */
export function checkLdAlpha(value: unknown, tokens: CheckedTokens, packed: boolean): number | null {
  if (value === undefined || value === null) return null;
  const alpha = checkFinite('ldAlpha', value, 'a number in [0, 1] (the weight of the tokens past the shorter completion)', (v) => v >= 0 && v <= 1);
  if (tokens.numSeqs % 2 !== 0) {
    throw invalidArgument(packed ? 'cuSeqlens' : 'logits.shape[0]', 'an even number of sequences with ldAlpha (B chosen then B rejected: its weights pair them)', tokens.numSeqs);
  }
  return alpha;
}

/** The reference: sums per pair, or log-probs per token (each sequence's log-ratio then sums per-token differences). */
export type CheckedRef = { chosen: Float64Array; rejected: Float64Array } | { tokenLogps: Float64Array };

export interface LossSettings {
  lossTypes: LossType[];
  lossWeights: number[];
  fDivergenceType: FDivergenceType;
  /** Every hyperparameter, by name (the defaults where the options left one out). */
  hyperparameters: Record<HyperparameterName, number>;
  scale: number;
  ref: CheckedRef | null;
  /** WPO: each pair's loss times its detached weight (TRL's use_weighting). */
  useWeighting: boolean;
}

// A copy of the reference sums, each entry read once: a number array or a typed array of numbers
// (its length through the intrinsic getter: a detached one has none).
// (numPairs null: any length; per names what one entry is for.)
function checkRefSide(name: string, value: unknown, numPairs: number | null, per = 'pair'): Float64Array {
  const facts = typedArrayFacts(value);
  const isNumberArray = Array.isArray(value) || (facts !== null && facts.kind !== 'BigInt64Array' && facts.kind !== 'BigUint64Array');
  if (!isNumberArray) throw invalidArgument(name, `a Float64Array (or number array) of ${numPairs ?? 'the'} log-prob sums`, value, TypeError);
  const length = facts ? facts.length : (value as unknown[]).length;
  if (numPairs !== null && length !== numPairs) throw invalidArgument(name, `${numPairs} entries (one per ${per})`, `${length} entries`);
  const out = new Float64Array(length);
  for (let i = 0; i < length; i++) {
    const x = (value as ArrayLike<unknown>)[i];
    if (typeof x !== 'number' || !Number.isFinite(x)) throw invalidArgument(`${name}[${i}]`, 'a finite number', x);
    out[i] = x;
  }
  return out;
}

// Per-token values (one per row, the labels' layout) must be finite wherever the label is scored:
// ignored rows are never read; with device labels, which are not read back, every entry is checked.
function checkFiniteWhereScored(name: string, values: Float64Array, tokens: CheckedTokens): void {
  const labels = tokens.labels instanceof DeviceTensor ? null : tokens.labels;
  for (let r = 0; r < values.length; r++) {
    if (!Number.isFinite(values[r]!) && (labels === null || labels[r] !== tokens.ignoreIndex)) {
      const where = labels === null ? 'a finite number (device labels: every row is checked)' : `a finite number (row ${r} is scored: its label is ${labels[r]})`;
      throw invalidArgument(`${name}[${r}]`, where, values[r]);
    }
  }
}

// A float64 copy of per-token reference log-probs: a Float64Array or Float32Array of one entry per
// row (the labels' layout), finite wherever the label is scored.
function checkRefTokens(value: unknown, tokens: CheckedTokens): Float64Array {
  const facts = checkTypedArray('ref.tokenLogps', value, ['Float64Array', 'Float32Array'], `a Float64Array or Float32Array of ${tokens.rows} per-token reference log-probs (one per row, as labels.data)`);
  if (facts.length !== tokens.rows) throw invalidArgument('ref.tokenLogps', `${tokens.rows} entries (one per row, as labels.data)`, `${facts.length} entries`);
  const out = Float64Array.from(value as Float64Array | Float32Array);
  checkFiniteWhereScored('ref.tokenLogps', out, tokens);
  return out;
}

function checkRef(value: unknown, numPairs: number, tokens: CheckedTokens | undefined): CheckedRef {
  const sides = snapshotOptions('ref', value, ['chosen', 'rejected', 'tokenLogps'], 'ref');
  if (sides.tokenLogps !== undefined) {
    if (sides.chosen !== undefined || sides.rejected !== undefined) {
      throw invalidArgument('ref', '{ chosen, rejected } (sums per pair) or { tokenLogps } (per token), not both', Object.keys(sides), TypeError);
    }
    if (!tokens) throw invalidArgument('ref.tokenLogps', 'left out: this call takes reference sums { chosen, rejected }', sides.tokenLogps, TypeError);
    return { tokenLogps: checkRefTokens(sides.tokenLogps, tokens) };
  }
  return {
    chosen: checkRefSide('ref.chosen', sides.chosen, numPairs),
    rejected: checkRefSide('ref.rejected', sides.rejected, numPairs),
  };
}

function checkLossTypes(raw: unknown): LossType[] {
  const list: unknown[] = Array.isArray(raw) ? Array.from(raw as unknown[]) : [raw];
  if (list.length < 1 || list.length > 8) throw invalidArgument('lossType', 'a loss type or a list of 1 to 8', list);
  return list.map((t, i) => {
    if (typeof t !== 'string' || !Object.hasOwn(LOSS_KINDS, t)) {
      throw invalidArgument(Array.isArray(raw) ? `lossType[${i}]` : 'lossType', `one of ${LOSS_TYPES.join(', ')}`, t);
    }
    return t as LossType;
  });
}

const readersOf = (name: HyperparameterName) => LOSS_TYPES.filter((t) => (LOSS_KINDS[t].reads as readonly string[]).includes(name));

// Each hyperparameter by the table's rule (TRL's default where it is left out). The options that
// only shape the margin (fDivergenceType, fAlphaDivergenceCoef, lengthPenalty) are refused where
// nothing in the list would read them, so a setting never silently does nothing.
function checkHyperparameters(options: Record<string, unknown>, lossTypes: LossType[], divergence: FDivergenceType): Record<HyperparameterName, number> {
  const values = {} as Record<HyperparameterName, number>;
  for (const name of HYPERPARAMETER_NAMES) {
    const p = HYPERPARAMETERS[name];
    values[name] = options[name] === undefined ? p.default : checkFinite(name, options[name], p.rule, p.ok);
  }
  const unread = (name: HyperparameterName) => options[name] !== undefined && values[name] !== HYPERPARAMETERS[name].default;
  for (const name of ['lengthPenalty', 'fAlphaDivergenceCoef', 'alpha'] as const) {
    if (unread(name) && !lossTypes.some((t) => (LOSS_KINDS[t].reads as readonly string[]).includes(name))) {
      throw invalidArgument(name, `left out: no lossType in [${lossTypes.join(', ')}] reads it (${readersOf(name).join(', ')} do)`, values[name]);
    }
  }
  if (unread('fAlphaDivergenceCoef') && divergence !== 'alpha_divergence') {
    throw invalidArgument('fAlphaDivergenceCoef', "left out unless fDivergenceType is 'alpha_divergence'", values.fAlphaDivergenceCoef);
  }
  if (lossTypes.includes('robust') && values.labelSmoothing >= 0.5) {
    throw invalidArgument('labelSmoothing', "below 0.5 for lossType 'robust' (it divides by 1 - 2·labelSmoothing)", values.labelSmoothing);
  }
  return values;
}

export function checkLossSettings(options: Record<string, unknown>, numPairs: number, tokens?: CheckedTokens): LossSettings {
  const lossTypes = checkLossTypes(options.lossType === undefined ? 'sigmoid' : options.lossType);
  let lossWeights: number[];
  if (options.lossWeights === undefined) {
    lossWeights = lossTypes.map(() => 1);
  } else {
    const w = Array.isArray(options.lossWeights) ? Array.from(options.lossWeights as unknown[]) : options.lossWeights;
    if (!Array.isArray(w) || w.length !== lossTypes.length) {
      throw invalidArgument('lossWeights', `an array of ${lossTypes.length} numbers (one per lossType)`, w, TypeError);
    }
    lossWeights = w.map((x, i) => checkFinite(`lossWeights[${i}]`, x, 'a finite number'));
  }
  const fDivergenceType = options.fDivergenceType === undefined ? 'reverse_kl' : options.fDivergenceType;
  if (typeof fDivergenceType !== 'string' || !Object.hasOwn(F_DIVERGENCES, fDivergenceType)) {
    throw invalidArgument('fDivergenceType', `one of ${Object.keys(F_DIVERGENCES).join(', ')}`, fDivergenceType);
  }
  if (fDivergenceType !== 'reverse_kl' && !lossTypes.some((t) => LOSS_KINDS[t].margin)) {
    const readers = LOSS_TYPES.filter((t) => LOSS_KINDS[t].margin);
    throw invalidArgument('fDivergenceType', `left out: no lossType in [${lossTypes.join(', ')}] reads the margin it shapes (${readers.join(', ')} do)`, fDivergenceType);
  }
  const hyperparameters = checkHyperparameters(options, lossTypes, fDivergenceType as FDivergenceType);

  const reduction = options.reduction === undefined ? 'mean' : options.reduction;
  if (reduction !== 'mean' && reduction !== 'sum') throw invalidArgument('reduction', "'mean' or 'sum'", reduction);
  let scale = reduction === 'mean' ? 1 / numPairs : 1;
  if (options.normalizer !== undefined) {
    scale = 1 / checkFinite('normalizer', options.normalizer, 'a finite number > 0', (v) => v > 0);
  }

  const needing = lossTypes.find((t) => LOSS_KINDS[t].needsRef);
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
    ref = checkRef(options.ref, numPairs, tokens);
  }
  if (options.useWeighting !== undefined && typeof options.useWeighting !== 'boolean') {
    throw invalidArgument('useWeighting', 'a boolean', options.useWeighting, TypeError);
  }
  return {
    lossTypes,
    lossWeights,
    fDivergenceType: fDivergenceType as FDivergenceType,
    hyperparameters,
    scale,
    ref,
    useWeighting: options.useWeighting === true,
  };
}

/** sequenceLogps's own option: average. */
export function checkAverage(value: unknown): boolean {
  if (value !== undefined && typeof value !== 'boolean') throw invalidArgument('average', 'a boolean', value, TypeError);
  return value === true;
}

/** The loss call's 2B sequences: B pairs. */
export function checkPairs(tokens: CheckedTokens, packed: boolean): number {
  if (tokens.numSeqs < 2 || tokens.numSeqs % 2 !== 0) {
    throw invalidArgument(
      packed ? 'cuSeqlens' : 'logits.shape[0]',
      'an even number of sequences, 2B (B chosen then B rejected), B >= 1',
      tokens.numSeqs,
    );
  }
  return tokens.numSeqs / 2;
}

export function checkDeferScale(deferScale: unknown, grad: unknown): boolean {
  if (deferScale !== undefined && typeof deferScale !== 'boolean') {
    throw invalidArgument('deferScale', 'a boolean', deferScale, TypeError);
  }
  if (deferScale && grad === false) throw invalidArgument('deferScale', 'used with a gradient (grad not false)', grad);
  return deferScale === true;
}

/** What the gradient goes into: a new array (or DeviceTensor), the logits, none, or the caller's tensor. */
export type GradTarget =
  | { kind: 'new' }
  | { kind: 'inplace' }
  | { kind: 'none' }
  | { kind: 'given'; data: Float32Array | Uint16Array | DeviceTensor };

export function checkGradTarget(grad: unknown, tokens: CheckedTokens): GradTarget {
  const elements = tokens.rows * tokens.vocab;
  if (grad === undefined || grad === true) return { kind: 'new' };
  if (grad === false) return { kind: 'none' };
  if (grad === 'inplace') return { kind: 'inplace' };
  const onDevice = tokens.data instanceof DeviceTensor;
  if (grad instanceof DeviceTensor) {
    if (!onDevice) throw invalidArgument('grad', 'a host tensor for host logits (a DeviceTensor only for device logits)', grad.toString());
    if (grad.dtype !== tokens.dtype) throw invalidArgument('grad.dtype', `the logits dtype '${tokens.dtype}'`, grad.dtype);
    if (grad.byteLength !== elements * ELEMENT_BYTES[tokens.dtype]) {
      throw invalidArgument('grad.shape', `${elements} elements (as many as logits)`, grad.shape);
    }
    if (grad.device !== tokens.device) throw invalidArgument('grad.device', `the call's device ${tokens.device}`, grad.device);
    grad.pointer; // throws when freed
    return { kind: 'given', data: grad };
  }
  if (typeof grad !== 'object' || grad === null || onDevice) {
    const target = onDevice ? 'a DeviceTensor' : 'a tensor';
    throw invalidArgument('grad', `true, false, 'inplace' or ${target} to fill`, grad, TypeError);
  }
  const fields = tensorFields('grad', grad, 'a tensor { data, shape, dtype? }');
  const gradData = typedArrayFacts(fields.data);
  const wanted = tokens.dtype === 'float32' ? 'Float32Array' : 'Uint16Array';
  if (gradData && (gradData.kind === 'Float32Array' || gradData.kind === 'Uint16Array') && gradData.kind !== wanted) {
    throw invalidArgument('grad.data', `a ${wanted}: grad.dtype must match the logits' dtype (${tokens.dtype})`, fields.data);
  }
  const target = checkTensorFields('grad', fields);
  if (target.dtype !== tokens.dtype) throw invalidArgument('grad.dtype', `the logits dtype '${tokens.dtype}'`, target.dtype);
  if (target.shape.reduce((a, b) => a * b, 1) !== elements) {
    throw invalidArgument('grad.data', `${elements} elements (as many as logits)`, `${target.shape.reduce((a, b) => a * b, 1)} elements`);
  }
  return { kind: 'given', data: target.data };
}

/** ktoLoss's settings, checked against its S sequences. */
export interface CheckedKtoSettings {
  lossType: KtoLossType;
  beta: number;
  desirableWeight: number;
  undesirableWeight: number;
  scale: number;
  /** 1 desirable, 0 not, per sequence. */
  desirable: Uint8Array;
  ref: Float64Array;
  /** The KL batch: its policy sums, or its tensors for a forward pass (the raw options, checked by sequenceLogps); null for apo_zero_unpaired. */
  kl: { policy: Float64Array } | { logits: unknown; labels: unknown; cuSeqlens?: Int32Array; ignoreIndex?: number } | null;
  /** The KL batch's reference sums. */
  klRef: Float64Array | null;
}

// dpoLoss's per-token reference ({ tokenLogps }), named as such: ktoLoss reads sums per sequence.
function refusePerTokenRef(name: string, value: unknown) {
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && typedArrayFacts(value) === null && 'tokenLogps' in value) {
    throw invalidArgument(`${name}.tokenLogps`, `left out: ktoLoss takes ${name} as reference sums, one per sequence (per-token reference log-probs are dpoLoss's)`, 'per-token log-probs', TypeError);
  }
}

// One flag per sequence, each read once: booleans or 0/1.
function checkDesirable(value: unknown, numSeqs: number): Uint8Array {
  const facts = typedArrayFacts(value);
  if (!Array.isArray(value) && (facts === null || facts.kind === 'BigInt64Array' || facts.kind === 'BigUint64Array')) {
    throw invalidArgument('desirable', `an array of ${numSeqs} booleans (or 0/1), one per sequence (TRL's label)`, value, TypeError);
  }
  const length = facts ? facts.length : (value as unknown[]).length;
  if (length !== numSeqs) throw invalidArgument('desirable', `${numSeqs} entries (one per sequence)`, `${length} entries`);
  const out = new Uint8Array(numSeqs);
  for (let s = 0; s < numSeqs; s++) {
    const x = (value as ArrayLike<unknown>)[s];
    if (x !== true && x !== false && x !== 0 && x !== 1) throw invalidArgument(`desirable[${s}]`, 'true, false, 1 or 0', x);
    out[s] = x === true || x === 1 ? 1 : 0;
  }
  return out;
}

export function checkKtoSettings(options: Record<string, unknown>, numSeqs: number): CheckedKtoSettings {
  const lossType = options.lossType === undefined ? 'kto' : options.lossType;
  if (typeof lossType !== 'string' || !Object.hasOwn(KTO_LOSS_TYPES, lossType)) {
    throw invalidArgument('lossType', `one of ${Object.keys(KTO_LOSS_TYPES).join(', ')} (ktoLoss's; the paired ones are dpoLoss's)`, lossType);
  }
  const value = (name: keyof typeof KTO_HYPERPARAMETERS) => {
    const p = KTO_HYPERPARAMETERS[name];
    return options[name] === undefined ? p.default : checkFinite(name, options[name], p.rule, p.ok);
  };
  const reduction = options.reduction === undefined ? 'mean' : options.reduction;
  if (reduction !== 'mean' && reduction !== 'sum') throw invalidArgument('reduction', "'mean' or 'sum'", reduction);
  let scale = reduction === 'mean' ? 1 / numSeqs : 1;
  if (options.normalizer !== undefined) scale = 1 / checkFinite('normalizer', options.normalizer, 'a finite number > 0', (v) => v > 0);
  const desirable = checkDesirable(options.desirable, numSeqs);
  if (options.ref === undefined) {
    throw invalidArgument('ref', `${numSeqs} reference log-prob sums, one per sequence (sequenceLogps on the reference model)`, options.ref, TypeError);
  }
  refusePerTokenRef('ref', options.ref);
  const ref = checkRefSide('ref', options.ref, numSeqs, 'sequence');
  let kl: CheckedKtoSettings['kl'] = null;
  let klRef: Float64Array | null = null;
  if (lossType === 'apo_zero_unpaired') {
    if (options.kl !== undefined) throw invalidArgument('kl', "left out: lossType 'apo_zero_unpaired' has no KL term (TRL computes none)", 'a KL batch', TypeError);
  } else {
    if (options.kl === undefined) {
      throw invalidArgument('kl', "the KL batch for lossType 'kto': { policy, ref } log-prob sums, or { logits, labels, cuSeqlens?, ignoreIndex?, ref }", options.kl, TypeError);
    }
    const raw = options.kl as Record<string, unknown>;
    const byLogits = typeof raw === 'object' && raw !== null && 'logits' in raw;
    const k = snapshotOptions('kl', raw, byLogits ? ['logits', 'labels', 'cuSeqlens', 'ignoreIndex', 'ref'] : ['policy', 'ref'], 'kl');
    refusePerTokenRef('kl.ref', k.ref);
    if (byLogits) {
      kl = { logits: k.logits, labels: k.labels, ...(k.cuSeqlens === undefined ? {} : { cuSeqlens: k.cuSeqlens as Int32Array }), ...(k.ignoreIndex === undefined ? {} : { ignoreIndex: k.ignoreIndex as number }) };
      klRef = checkRefSide('kl.ref', k.ref, null, 'KL sequence');
    } else {
      const policy = checkRefSide('kl.policy', k.policy, null, 'KL sequence');
      klRef = checkRefSide('kl.ref', k.ref, policy.length, 'KL sequence');
      kl = { policy };
    }
    if (klRef.length < 1) throw invalidArgument('kl.ref', 'at least 1 entry (TRL takes the mean over the KL batch)', '0 entries');
  }
  return {
    lossType: lossType as KtoLossType,
    beta: value('beta'),
    desirableWeight: value('desirableWeight'),
    undesirableWeight: value('undesirableWeight'),
    scale,
    desirable,
    ref,
    kl,
    klRef,
  };
}

// ---------------------------------------------------------------------------------------------
// policyLoss (lib/policy.ts): the GRPO family's settings


export interface PolicySettings {
  advantages: Float64Array;
  advantagesPerToken: boolean;
  oldLogps: Float64Array | null;
  refLogps: Float64Array | null;
  lossType: PolicyLossType;
  beta: number;
  epsilon: number;
  epsilonHigh: number;
  entropyCoef: number;
  maxCompletionLength: number;
  numItemsInBatch: number;
}

// A Float64Array or Float32Array of `length` values, copied into a Float64Array (O(rows): the
// native side then reads memory no JavaScript can touch while it runs).
function checkValues(name: string, value: unknown, lengths: readonly number[], expected: string): Float64Array {
  const facts = checkTypedArray(name, value, ['Float64Array', 'Float32Array'], 'a Float64Array or Float32Array');
  if (!lengths.includes(facts.length)) throw invalidArgument(name, expected, `${facts.length} values`);
  return Float64Array.from(value as Float64Array | Float32Array);
}

function checkOptionalFinite(name: string, value: unknown, fallback: number, rule: string, ok: (v: number) => boolean): number {
  return value === undefined ? fallback : checkFinite(name, value, rule, ok);
}

/** Checks policyLoss's own options (a snapshot) against the checked tokens. */
export function checkPolicySettings(options: Record<string, unknown>, tokens: CheckedTokens): PolicySettings {
  const { rows, numSeqs } = tokens;
  const lossType = options.lossType === undefined ? 'dapo' : options.lossType;
  if (typeof lossType !== 'string' || !Object.hasOwn(POLICY_LOSS_TYPES, lossType)) {
    throw invalidArgument('lossType', `one of ${Object.keys(POLICY_LOSS_TYPES).map((t) => `'${t}'`).join(', ')}`, lossType, TypeError);
  }
  if (options.advantages === undefined) throw invalidArgument('advantages', 'a Float64Array or Float32Array (one per sequence or one per token)', undefined, TypeError);
  const advantages = checkValues('advantages', options.advantages, [numSeqs, rows], `${numSeqs} values (one per sequence) or ${rows} (one per token, the labels' size)`);
  let advantagesPerToken = advantages.length === rows;
  if (options.advantagesPer !== undefined) {
    if (options.advantagesPer !== 'sequence' && options.advantagesPer !== 'token') {
      throw invalidArgument('advantagesPer', "'sequence' or 'token'", options.advantagesPer, TypeError);
    }
    advantagesPerToken = options.advantagesPer === 'token';
    const wanted = advantagesPerToken ? rows : numSeqs;
    if (advantages.length !== wanted) throw invalidArgument('advantages', `${wanted} values (advantagesPer: '${options.advantagesPer}')`, `${advantages.length} values`);
  } else if (rows === numSeqs && !tokens.cuSeqlens.every((offset, s) => offset === s)) {
    // As many sequences as rows, not one row each: the length cannot tell the two readings apart.
    throw invalidArgument('advantagesPer', "'sequence' or 'token' (advantages has as many values as there are sequences and rows)", undefined, TypeError);
  }
  // Finite where read: per token on the scored rows, per sequence everywhere.
  if (advantagesPerToken) {
    checkFiniteWhereScored('advantages', advantages, tokens);
  } else {
    const bad = advantages.findIndex((a) => !Number.isFinite(a));
    if (bad >= 0) throw invalidArgument(`advantages[${bad}]`, 'a finite number (one per sequence)', advantages[bad]);
  }
  const perToken = (name: string) => {
    if (options[name] === undefined || options[name] === null) return null;
    const values = checkValues(name, options[name], [rows], `${rows} values (one per token, the labels' size)`);
    checkFiniteWhereScored(name, values, tokens);
    return values;
  };
  const oldLogps = perToken('oldLogps');
  const refLogps = perToken('refLogps');
  const beta = checkOptionalFinite('beta', options.beta, 0, 'a finite number >= 0', (v) => v >= 0);
  if (beta !== 0 && refLogps === null) throw invalidArgument('refLogps', `per-token reference log-probs (${rows} values) when beta is not 0`, undefined, TypeError);
  const epsilon = checkOptionalFinite('epsilon', options.epsilon, 0.2, 'a finite number in [0, 1]', (v) => v >= 0 && v <= 1);
  const epsilonHigh = checkOptionalFinite('epsilonHigh', options.epsilonHigh, epsilon, 'a finite number >= 0', (v) => v >= 0);
  const entropyCoef = checkOptionalFinite('entropyCoef', options.entropyCoef, 0, 'a finite number', () => true);
  let maxCompletionLength = 0;
  if (lossType === 'dr_grpo') {
    if (options.maxCompletionLength === undefined) throw invalidArgument('maxCompletionLength', "an integer >= 1 with lossType 'dr_grpo' (TRL's max_completion_length)", undefined, TypeError);
    maxCompletionLength = checkInteger('maxCompletionLength', options.maxCompletionLength, 1, INT32_MAX);
  } else if (options.maxCompletionLength !== undefined) {
    throw invalidArgument('maxCompletionLength', `left out: only lossType 'dr_grpo' reads it (lossType is '${lossType}')`, options.maxCompletionLength);
  }
  let numItemsInBatch = 0;
  if (options.numItemsInBatch !== undefined) {
    if (lossType !== 'dapo') throw invalidArgument('numItemsInBatch', `left out: only lossType 'dapo' reads it (lossType is '${lossType}')`, options.numItemsInBatch);
    numItemsInBatch = checkFinite('numItemsInBatch', options.numItemsInBatch, 'a finite number > 0', (v) => v > 0);
  }
  return { advantages, advantagesPerToken, oldLogps, refLogps, lossType: lossType as PolicyLossType, beta, epsilon, epsilonHigh, entropyCoef, maxCompletionLength, numItemsInBatch };
}
