/**
 * Shared builders for the native-kernel tests: random token cases in any dtype and layout, the
 * float64 reference run with the same options the public API gets, and error measures (relative
 * error, relative L2, ulp distances in float32 and the 16-bit formats).
 */
import * as assert from 'uvu/assert';

import { decodeToFloat64, fromBfloat16, fromFloat16, toBfloat16, toFloat16 } from '../../lib/dtype.js';
import type { DpoLossOptions, DpoLossResult } from '../../lib/loss.js';
import { referenceDpo, referenceSequenceLogps, type ReferenceOutput } from '../../lib/reference.js';
import type { DType, LossType, Tensor } from '../../lib/types.js';
import type { Rng } from './random.js';

export const IGNORE = -100;
export const DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16'];

// ---------------------------------------------------------------------------------------------
// Token cases

export type Layout = 'padded' | 'packed';

export interface CaseSpec {
  B: number;
  vocab: number;
  dtype?: DType;
  layout?: Layout;
  /** padded: rows per sequence (default 1 + rng.int(6)) */
  T?: number;
  /** packed: the 2B sequence lengths (default: random, unequal, 0..7) */
  lengths?: number[];
  /** logit value at row r, column v (default 3·normal); rounded to float32, then to the dtype */
  logit?: (rng: Rng, r: number, v: number) => number;
  /** chance that a row is ignored (a prompt or padding token); default 0.25 */
  ignoreProb?: number;
  /** sequences whose rows are all ignored (no completion tokens) */
  emptySeqs?: number[];
  /** spread of the reference sums around the policy sums (default 2) */
  refSpread?: number;
}

export interface TokenCase {
  dtype: DType;
  layout: Layout;
  B: number;
  rows: number;
  vocab: number;
  /** the logits tensor the API receives */
  logits: Tensor;
  /** the same logits widened to float64: what the reference reads */
  decoded: Float64Array;
  labels: { data: Int32Array; shape: number[] };
  /** always set; passed to the API only for the packed layout */
  cuSeqlens: Int32Array;
  ref: { chosen: Float64Array; rejected: Float64Array };
}

/** Rounds float32 values to the dtype: the raw data for the API and its exact float64 value. */
export function encode(values: Float32Array, dtype: DType): { data: Float32Array | Uint16Array; decoded: Float64Array } {
  const data = dtype === 'float32' ? values : dtype === 'bfloat16' ? toBfloat16(values) : toFloat16(values);
  return { data, decoded: decodeToFloat64(data, dtype) };
}

function randomLengths(rng: Rng, numSeqs: number): number[] {
  const lengths = Array.from({ length: numSeqs }, () => 1 + rng.int(7));
  if (numSeqs > 1 && lengths.every((n) => n === lengths[0])) lengths[0] = lengths[0]! + 1; // unequal
  return lengths;
}

export function makeCase(rng: Rng, spec: CaseSpec): TokenCase {
  const dtype = spec.dtype ?? 'float32';
  const layout = spec.layout ?? 'padded';
  const S = 2 * spec.B;
  const V = spec.vocab;
  const T = spec.T ?? 1 + rng.int(6);
  const lengths = layout === 'padded' ? Array.from({ length: S }, () => T) : spec.lengths ?? randomLengths(rng, S);
  if (lengths.length !== S) throw new RangeError(`need ${S} lengths`);
  const cuSeqlens = new Int32Array(S + 1);
  lengths.forEach((n, s) => (cuSeqlens[s + 1] = cuSeqlens[s]! + n));
  const rows = cuSeqlens[S]!;

  const gen = spec.logit ?? ((g: Rng) => 3 * g.normal());
  const f32 = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) for (let v = 0; v < V; v++) f32[r * V + v] = gen(rng, r, v);
  const { data, decoded } = encode(f32, dtype);

  const ignoreProb = spec.ignoreProb ?? 0.25;
  const labels = new Int32Array(rows);
  for (let s = 0; s < S; s++) {
    const empty = spec.emptySeqs?.includes(s) ?? false;
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) {
      labels[r] = empty || rng.next() < ignoreProb ? IGNORE : rng.int(V);
    }
  }

  const shape = layout === 'padded' ? [S, T, V] : [rows, V];
  const labelShape = layout === 'padded' ? [S, T] : [rows];
  const c: TokenCase = {
    dtype,
    layout,
    B: spec.B,
    rows,
    vocab: V,
    logits: { data, shape, dtype },
    decoded,
    labels: { data: labels, shape: labelShape },
    cuSeqlens,
    ref: { chosen: new Float64Array(spec.B), rejected: new Float64Array(spec.B) },
  };
  const pi = referenceSequenceLogps(refTokens(c), false).logps;
  const spread = spec.refSpread ?? 2;
  for (let i = 0; i < spec.B; i++) {
    c.ref.chosen[i] = pi[i]! + spread * rng.normal();
    c.ref.rejected[i] = pi[spec.B + i]! + spread * rng.normal();
  }
  return c;
}

/** The token part of the API options for a case (cuSeqlens only in the packed layout). */
export function tokenOptions(c: TokenCase): { logits: Tensor; labels: { data: Int32Array; shape: number[] }; cuSeqlens?: Int32Array } {
  return c.layout === 'packed' ? { logits: c.logits, labels: c.labels, cuSeqlens: c.cuSeqlens } : { logits: c.logits, labels: c.labels };
}

export function refTokens(c: TokenCase, ignoreIndex = IGNORE) {
  return { logits: c.decoded, rows: c.rows, vocab: c.vocab, labels: c.labels.data, cuSeqlens: c.cuSeqlens, ignoreIndex };
}

/** The float64 reference for `options` (the API's defaults filled in as lib/ fills them). */
export function referenceFor(c: TokenCase, options: Partial<DpoLossOptions>): ReferenceOutput {
  const types = (Array.isArray(options.lossType) ? options.lossType : [options.lossType ?? 'sigmoid']) as LossType[];
  const scale = options.normalizer !== undefined ? 1 / options.normalizer : options.reduction === 'sum' ? 1 : 1 / c.B;
  const ref = options.ref ? { chosen: Float64Array.from(options.ref.chosen), rejected: Float64Array.from(options.ref.rejected) } : null;
  return referenceDpo({
    ...refTokens(c, options.ignoreIndex ?? IGNORE),
    ref,
    beta: options.beta ?? 0.1,
    lossTypes: types,
    lossWeights: options.lossWeights ?? types.map(() => 1),
    labelSmoothing: options.labelSmoothing ?? 0,
    simpoGamma: options.simpoGamma ?? 0.5,
    discopopTau: options.discopopTau ?? 0.05,
    scale,
  });
}

/** Index of the sequence each row belongs to. */
export function rowSequence(cuSeqlens: Int32Array): Int32Array {
  const rows = cuSeqlens[cuSeqlens.length - 1]!;
  const out = new Int32Array(rows);
  for (let s = 0; s + 1 < cuSeqlens.length; s++) out.fill(s, cuSeqlens[s]!, cuSeqlens[s + 1]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Error measures

export function relErr(actual: number, expected: number, floor = 0): number {
  if (Object.is(actual, expected)) return 0;
  return Math.abs(actual - expected) / Math.max(Math.abs(expected), floor);
}

/** ‖a − b‖₂ / ‖b‖₂ (0 when both are 0). */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return num === 0 ? 0 : Math.sqrt(num / den);
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

export function f32Bits(x: number): number {
  F32[0] = x;
  return U32[0]!;
}

/** Position of a float32 on the number line of float32 values (−0 and +0 share 0). */
function f32Ordinal(x: number): number {
  const u = f32Bits(x);
  return u & 0x80000000 ? -(u & 0x7fffffff) : u;
}

/** ulps between two float32 values (both rounded to float32 first); Infinity when either is NaN. */
export function ulpDist32(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Infinity;
  return Math.abs(f32Ordinal(a) - f32Ordinal(b));
}

/** ulps between two 16-bit patterns of the same format (sign-magnitude, so ±0 are 0 apart). */
export function ulpDist16(a: number, b: number): number {
  const ord = (h: number) => (h & 0x8000 ? -(h & 0x7fff) : h);
  return Math.abs(ord(a) - ord(b));
}

export function decode16(bits: number, dtype: DType): number {
  const one = new Uint16Array([bits]);
  return (dtype === 'bfloat16' ? fromBfloat16(one) : fromFloat16(one))[0]!;
}

/** Everything an Error from fused-dpo should be for a bad argument. */
export function assertInvalid(error: unknown, name: RegExp, what: string): void {
  assert.ok(error instanceof Error, `${what}: threw a non-Error ${String(error)}`);
  const e = error as Error & { code?: string };
  assert.is(e.code, 'ERR_FDPO_INVALID_ARGUMENT', `${what}: code (message: ${e.message})`);
  assert.match(e.message, name, `${what}: the message should name the argument: ${e.message}`);
}

// ---------------------------------------------------------------------------------------------
// Native result vs the reference

export interface Tolerances {
  /** loss, per-pair arrays, sequence gradients: relative, with an absolute floor */
  rtol: number;
  atol: number;
  /** float32 gradient: relative L2 */
  gradL2: number;
}

export const FP32_TOL: Tolerances = { rtol: 1e-6, atol: 1e-7, gradL2: 1e-5 };

function closeArrays(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerances, context: string): void {
  assert.is(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    if (!(Math.abs(g - w) <= tol.rtol * Math.abs(w) + tol.atol)) {
      assert.unreachable(`${what}[${i}]: got ${g}, reference ${w} (rel ${relErr(g, w)}; ${context})`);
    }
  }
}

/** Tolerance for a metric: `logits/*` are float32 sums of V logits per row, so scale with |logits|. */
function metricTol(name: string, c: TokenCase, tol: Tolerances): { r: number; a: number } {
  if (name.startsWith('logits/')) {
    let maxAbs = 0;
    for (let i = 0; i < c.decoded.length; i++) if (Math.abs(c.decoded[i]!) > maxAbs) maxAbs = Math.abs(c.decoded[i]!);
    return { r: tol.rtol, a: tol.atol + 2 ** -24 * (16 + c.vocab / 4) * maxAbs };
  }
  if (name === 'entropy') return { r: tol.rtol, a: tol.atol + 2 ** -24 * 64 * Math.log(c.vocab + 1) };
  return { r: tol.rtol, a: tol.atol };
}

/**
 * Checks a native DpoLossResult against the reference, everything but the gradient: loss,
 * per-pair arrays, counts, sequence gradients, rewards, metrics.
 */
export function checkForward(got: DpoLossResult, want: ReferenceOutput, c: TokenCase, tol: Tolerances, context: string): void {
  if (Number.isNaN(want.loss)) {
    assert.ok(Number.isNaN(got.loss), `loss: got ${got.loss}, reference NaN (${context})`);
    return;
  }
  closeArrays('loss', [got.loss], [want.loss], tol, context);
  assert.equal(Array.from(got.tokenCounts), Array.from(want.seqCounts), `tokenCounts (${context})`);
  closeArrays('losses', got.losses, want.losses, tol, context);
  closeArrays('chosenLogps', got.chosenLogps, want.chosenLogps, tol, context);
  closeArrays('rejectedLogps', got.rejectedLogps, want.rejectedLogps, tol, context);
  closeArrays('chosenRewards', got.chosenRewards, want.chosenRewards, tol, context);
  closeArrays('rejectedRewards', got.rejectedRewards, want.rejectedRewards, tol, context);
  closeArrays('sequenceGrad', got.sequenceGrad, want.seqGrad, tol, context);
  const names = Object.keys(want.metrics).sort();
  assert.equal(Object.keys(got.metrics).sort(), names, `metric names (${context})`);
  for (const name of names) {
    const g = (got.metrics as unknown as Record<string, number>)[name]!;
    const w = (want.metrics as unknown as Record<string, number>)[name]!;
    const { r, a } = metricTol(name, c, tol);
    if (!(Math.abs(g - w) <= r * Math.abs(w) + a)) {
      assert.unreachable(`metrics['${name}']: got ${g}, reference ${w} (tol ${r}·|ref| + ${a}; ${context})`);
    }
  }
}

/**
 * Checks a native gradient against the reference's float64 gradient.
 * float32: relative L2 over the whole tensor. bfloat16 / float16: every element within one ulp of
 * the float64 value rounded to the format, or within float32 working precision of its row's scale
 * |G_s|·2^-22 (the kernels form 1 − p_y in float32), or (float16) within 2^-25 absolute.
 * Ignored rows must be exactly 0 in every dtype.
 */
export function checkGrad(grad: Tensor | null, want: ReferenceOutput, c: TokenCase, tol: Tolerances, context: string, ignoreIndex = IGNORE): void {
  assert.ok(grad !== null, `grad is null (${context})`);
  const g = grad!;
  assert.is(g.dtype, c.dtype, `grad dtype (${context})`);
  assert.equal(Array.from(g.shape), Array.from(c.logits.shape), `grad shape (${context})`);
  const V = c.vocab;
  const labels = c.labels.data;
  for (let r = 0; r < c.rows; r++) {
    if (labels[r] !== ignoreIndex) continue;
    for (let v = 0; v < V; v++) {
      const x = g.data[r * V + v]!;
      const zero = c.dtype === 'float32' ? x === 0 : (x & 0x7fff) === 0;
      if (!zero) assert.unreachable(`ignored row ${r}: grad[${v}] = ${x}, expected exactly 0 (${context})`);
    }
  }
  if (c.dtype === 'float32') {
    const e = relL2(g.data, want.grad);
    if (!(e <= tol.gradL2)) {
      let worst = 0;
      for (let i = 0; i < want.grad.length; i++) if (Math.abs(g.data[i]! - want.grad[i]!) > Math.abs(g.data[worst]! - want.grad[worst]!)) worst = i;
      assert.unreachable(
        `grad relative L2 error ${e} > ${tol.gradL2}; worst element ${worst} (row ${Math.floor(worst / V)}, col ${worst % V}): ` +
          `got ${g.data[worst]}, reference ${want.grad[worst]} (${context})`,
      );
    }
    return;
  }
  const seqOf = rowSequence(c.cuSeqlens);
  const expected = c.dtype === 'bfloat16' ? toBfloat16(want.grad) : toFloat16(want.grad);
  const absFloor = c.dtype === 'float16' ? 2 ** -25 : 0;
  for (let i = 0; i < want.grad.length; i++) {
    const bits = g.data[i]!;
    if (ulpDist16(bits, expected[i]!) <= 1) continue;
    const got = decode16(bits, c.dtype);
    const err = Math.abs(got - want.grad[i]!);
    const rowScale = Math.abs(want.seqGrad[seqOf[Math.floor(i / V)]!]!);
    if (err <= absFloor || err <= rowScale * 2 ** -22) continue;
    assert.unreachable(
      `grad[${i}] (row ${Math.floor(i / V)}, col ${i % V}): got 0x${bits.toString(16)} = ${got}, reference ${want.grad[i]} ` +
        `(0x${expected[i]!.toString(16)}), ${ulpDist16(bits, expected[i]!)} ulps apart (${context})`,
    );
  }
}

/** Byte-for-byte view of a typed array, for bit-identity checks. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  const x = bytesOf(a);
  const y = bytesOf(b);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
