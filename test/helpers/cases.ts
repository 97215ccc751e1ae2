/**
 * Shared builders for the native-kernel tests: random token cases in any dtype and layout, the
 * float64 reference run with the same options the public API gets, and error measures (relative
 * error, relative L2, ulp distances in float32 and the 16-bit formats).
 */
import * as assert from 'uvu/assert';

import { decodeToFloat64, fromBfloat16, fromFloat16, toBfloat16, toFloat16 } from '../../lib/dtype.js';
import { backendInfo, dpoLoss, sequenceLogps } from '../../lib/index.js';
import type { DpoLossOptions, DpoLossResult, SequenceLogpsResult } from '../../lib/loss.js';
import {
  alphaReward,
  referenceDpo,
  referencePairLoss,
  referenceSequenceLogps,
  referenceTokenStats,
  type ReferenceInput,
  type ReferenceOutput,
} from '../../lib/reference.js';
import { HYPERPARAMETER_NAMES, LOSS_DEFAULTS, LOSS_KINDS, type HyperparameterName, type LossType } from '../../lib/loss-kinds.js';
import type { DType, Tensor } from '../../lib/types.js';
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

/** Every hyperparameter of `options`, its default where it is left out. */
export function hyperparametersOf(options: Partial<Record<HyperparameterName, number>>): Record<HyperparameterName, number> {
  return Object.fromEntries(HYPERPARAMETER_NAMES.map((n) => [n, options[n] ?? LOSS_DEFAULTS[n]])) as Record<HyperparameterName, number>;
}

/** The reference's input for `options`, the API's defaults filled in as lib/ fills them. */
export function referenceInput(c: TokenCase, options: Partial<DpoLossOptions>): ReferenceInput {
  const types = (Array.isArray(options.lossType) ? options.lossType : [options.lossType ?? 'sigmoid']) as LossType[];
  const scale = options.normalizer !== undefined ? 1 / options.normalizer : options.reduction === 'sum' ? 1 : 1 / c.B;
  // checkDpo's cases pass reference sums (test/ld-dpo.test.ts covers per-token references)
  const sums = options.ref && 'chosen' in options.ref ? options.ref : null;
  const ref = sums ? { chosen: Float64Array.from(sums.chosen), rejected: Float64Array.from(sums.rejected) } : null;
  return {
    ...refTokens(c, options.ignoreIndex ?? IGNORE),
    ref,
    ...hyperparametersOf(options),
    lossTypes: types,
    lossWeights: options.lossWeights ?? types.map(() => 1),
    fDivergenceType: options.fDivergenceType,
    scale,
  };
}

/** The float64 reference for `options`. */
export function referenceFor(c: TokenCase, options: Partial<DpoLossOptions>): ReferenceOutput {
  return referenceDpo(referenceInput(c, options));
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
// Error budgets of the float32 kernels
//
// The kernels work in float32 (SPEC.md): per row, s = Σ exp(z − m) is a naive sum in each SIMD
// lane, so its relative error is bounded by about (adds per lane)·u, u = 2^-24; log(s), the exp
// calls and the subtraction add a few u of |logp| and log V. A row's log-prob may therefore be off
// by rowBudget; a sequence sum by the sum of its rows' budgets. Everything downstream of π is fp64
// and is checked tightly at the kernel's own π; the end-to-end loss gets 1e-6 relative plus the
// first-order effect of the π budget (Σ_s |G_s|·budget_s), which matters for losses that amplify
// small score errors (ipo, sppo_hard at large V).

export const U = 2 ** -24;
/** Relative tolerance of the end-to-end loss (plus the propagated π budget). */
export const LOSS_RTOL = 1e-6;
/** Relative L2 tolerance of a float32 gradient. */
export const GRAD_L2 = 1e-5;

/** float32 lanes of the kernels in use (CUDA: 1, the bound for any split of a row's sums). */
export function simdLanes(): number {
  if (backendInfo().backend === 'cuda') return 1;
  const simd = backendInfo().simd;
  return simd === 'avx512' ? 16 : simd === 'avx2' ? 8 : simd === 'neon' ? 4 : 1;
}

/** Adds into one lane's accumulator for a row of V, plus the horizontal reduce and the tail. */
export function addsPerLane(vocab: number, lanes = simdLanes()): number {
  return Math.ceil(vocab / lanes) + lanes + 8;
}

/**
 * How far a row's float32 log-prob may be from float64. When the label holds the row's max, SPEC.md
 * has logp = −log1p(Σ_{v≠y} e^{z_v − m}): accurate RELATIVE to |logp| however confident the token
 * (the naive sum of the others, the exps and log1p: (adds + 5)·u; the rounding of each argument
 * z_v − m: u·|x|, and the terms that dominate have |x| ≲ −log|logp| + log V; the exps below −87.3
 * that the kernels flush: V·2^-126). Otherwise logp = (z_y − m) − log(s): a few u of |logp| and
 * log V, plus the summation error of s.
 */
export function rowBudget(vocab: number, logp: number, labelIsMax = false, lanes = simdLanes()): number {
  if (labelIsMax) {
    const argument = (logp !== 0 ? Math.max(0, -Math.log(Math.abs(logp))) : 0) + Math.log(vocab) + 1;
    return U * (addsPerLane(vocab, lanes) + 5 + argument) * Math.abs(logp) + vocab * 2 ** -126;
  }
  return U * (4 * (Math.abs(logp) + Math.log(vocab) + 1) + addsPerLane(vocab, lanes));
}

/** Whether row r's label logit is the row's maximum (float64 values of the case). */
export function labelHoldsMax(c: TokenCase, r: number): boolean {
  const y = c.labels.data[r]!;
  const row = c.decoded.subarray(r * c.vocab, (r + 1) * c.vocab);
  for (let v = 0; v < c.vocab; v++) if (row[v]! > row[y]!) return false;
  return true;
}

type TokenStats = ReturnType<typeof referenceTokenStats>;

export interface GradCheck {
  /** relative L2 error against the expected gradient, and (16-bit) the worst ulp distance accepted */
  relL2: number;
  maxUlps: number;
  /** 16-bit: elements far enough from a rounding midpoint that they had to be exactly the nearest */
  strict: number;
}

function near(what: string, got: number, want: number, tol: number, context: string): void {
  if (Number.isNaN(want) && Number.isNaN(got)) return;
  if (!(Math.abs(got - want) <= tol)) {
    assert.unreachable(`${what}: got ${got}, expected ${want} (|diff| ${Math.abs(got - want)} > tol ${tol}; ${context})`);
  }
}

export type GradMode = boolean | 'inplace' | 'tensor';

export interface DpoRun {
  got: DpoLossResult;
  want: ReferenceOutput;
  seq: SequenceLogpsResult;
  /** |native loss − reference loss| / |reference loss| */
  lossRelErr: number;
  /** the largest |native loss − reference loss| accepted (1e-6 relative + the propagated π budget) */
  lossTolerance: number;
  /** the gradient comparison, when there was one */
  grad: GradCheck | null;
}

/**
 * Runs dpoLoss on the case with `options` and grad mode `mode`, and checks every output against
 * the float64 reference (see the budgets above). `context` goes into every failure message.
 */
export function checkDpo(c: TokenCase, options: Partial<DpoLossOptions>, mode: GradMode, context: string): DpoRun {
  const ignoreIndex = options.ignoreIndex ?? IGNORE;
  const input = referenceInput(c, options);
  const want = referenceDpo(input);
  const stats = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, ignoreIndex);
  const tokens = { ...tokenOptions(c), ignoreIndex, threads: options.threads };
  const seq = sequenceLogps(tokens); // first: 'inplace' overwrites the logits
  let target: Float32Array | Uint16Array | null = null;
  let grad: DpoLossOptions['grad'] = mode === 'tensor' ? undefined : mode;
  if (mode === 'tensor') {
    target = c.dtype === 'float32' ? new Float32Array(c.rows * c.vocab).fill(12345) : new Uint16Array(c.rows * c.vocab).fill(0x5555);
    grad = { data: target, shape: c.logits.shape, dtype: c.dtype };
  }
  const got = dpoLoss({ ...options, ...tokens, grad } as DpoLossOptions);
  const ctx = `${context}; ${c.dtype} ${c.layout} rows=${c.rows} V=${c.vocab} grad=${String(mode)} backend=${backendInfo().backend} simd=${backendInfo().simd}`;
  const { lossRelErr, lossTolerance } = checkForward(got, seq, want, input, stats, c, ctx);
  let gradCheck: GradCheck | null = null;
  if (mode === false) {
    assert.is(got.grad, null, `grad: false gives null (${ctx})`);
  } else {
    if (mode === 'inplace') assert.ok(got.grad?.data === c.logits.data, `grad 'inplace' returns the logits array (${ctx})`);
    if (mode === 'tensor') assert.ok(got.grad?.data === target, `grad tensor returns the given array (${ctx})`);
    if (!Number.isNaN(want.loss)) gradCheck = checkGrad(got, stats, c, ctx, ignoreIndex);
  }
  return { got, want, seq, lossRelErr, lossTolerance, grad: gradCheck };
}

/** Forward outputs; returns the end-to-end loss relative error and the error it accepted. */
function checkForward(
  got: DpoLossResult,
  seq: SequenceLogpsResult,
  want: ReferenceOutput,
  input: ReferenceInput,
  stats: TokenStats,
  c: TokenCase,
  ctx: string,
): { lossRelErr: number; lossTolerance: number } {
  const B = c.B;
  const S = 2 * B;
  assert.equal(Array.from(seq.counts), Array.from(want.seqCounts), `sequenceLogps counts (${ctx})`);
  assert.equal(Array.from(got.tokenCounts), Array.from(want.seqCounts), `tokenCounts (${ctx})`);
  assert.is(got.metrics.num_tokens, want.metrics.num_tokens, `num_tokens (${ctx})`);
  if (Number.isNaN(want.loss)) {
    assert.ok(Number.isNaN(got.loss), `loss: got ${got.loss}, the reference is NaN (${ctx})`);
    return { lossRelErr: 0, lossTolerance: 0 };
  }
  assert.ok(Number.isFinite(got.loss), `loss is ${got.loss} (${ctx})`);

  // π: the kernels' sums against float64, within the budget
  const budget = new Float64Array(S);
  for (let s = 0; s < S; s++) {
    for (let r = c.cuSeqlens[s]!; r < c.cuSeqlens[s + 1]!; r++) {
      if (c.labels.data[r] !== input.ignoreIndex) budget[s] = budget[s]! + rowBudget(c.vocab, stats.logp[r]!, labelHoldsMax(c, r));
    }
    near(`π_${s} (sequenceLogps)`, seq.logps[s]!, want.seqLogps[s]!, budget[s]!, ctx);
  }

  // dpoLoss reads the same π as sequenceLogps (same kernel, same order): bit for bit
  const averaged = input.lossTypes.some((t) => LOSS_KINDS[t].reportsAveraged);
  const div = (s: number) => (averaged ? Math.max(seq.counts[s]!, 1) : 1);
  for (let i = 0; i < B; i++) {
    assert.ok(Object.is(got.chosenLogps[i], seq.logps[i]! / div(i)), `chosenLogps[${i}] ${got.chosenLogps[i]} vs sequenceLogps ${seq.logps[i]} (${ctx})`);
    assert.ok(Object.is(got.rejectedLogps[i], seq.logps[B + i]! / div(B + i)), `rejectedLogps[${i}] vs sequenceLogps (${ctx})`);
  }

  // Everything after π is fp64: the reference pair math at the kernel's π, tightly
  const at = referencePairLoss(seq.logps, seq.counts, input);
  let mag = 0;
  for (let i = 0; i < B; i++) mag += Math.abs(at.losses[i]!);
  near('loss (pair math at the kernel π)', got.loss, at.loss, 1e-11 * input.scale * mag + 1e-300, ctx);
  for (let i = 0; i < B; i++) near(`losses[${i}] (at the kernel π)`, got.losses[i]!, at.losses[i]!, 1e-11 * (Math.abs(at.losses[i]!) + mag / B), ctx);
  let gMax = 0;
  for (let s = 0; s < S; s++) gMax = Math.max(gMax, Math.abs(at.seqGrad[s]!));
  for (let s = 0; s < S; s++) near(`sequenceGrad[${s}] (at the kernel π)`, got.sequenceGrad[s]!, at.seqGrad[s]!, 1e-11 * gMax, ctx);
  const beta = input.beta;
  for (let i = 0; i < B; i++) {
    const rc = input.ref && 'chosen' in input.ref ? input.ref.chosen[i]! : 0;
    const rr = input.ref && 'rejected' in input.ref ? input.ref.rejected[i]! : 0;
    // AlphaPO's rewards when simpo reads an alpha (TRL's CPOTrainer logs β·r(x̄))
    const alphaRewards = input.alpha !== 0 && input.lossTypes.includes('simpo');
    const count = (s: number) => Math.max(seq.counts[s]!, 1);
    const wc = alphaRewards ? beta * alphaReward(input.alpha, seq.logps[i]! / count(i)).value : (beta * (seq.logps[i]! - rc)) / div(i);
    const wr = alphaRewards ? beta * alphaReward(input.alpha, seq.logps[B + i]! / count(B + i)).value : (beta * (seq.logps[B + i]! - rr)) / div(B + i);
    near(`chosenRewards[${i}]`, got.chosenRewards[i]!, wc, 1e-14 * (Math.abs(wc) + beta * Math.abs(rc)), ctx);
    near(`rejectedRewards[${i}]`, got.rejectedRewards[i]!, wr, 1e-14 * (Math.abs(wr) + beta * Math.abs(rr)), ctx);
  }

  // End to end: the loss to 1e-6 relative plus the propagated π budget
  let propagated = 0;
  for (let s = 0; s < S; s++) propagated += 2 * Math.max(Math.abs(want.seqGrad[s]!), Math.abs(at.seqGrad[s]!)) * budget[s]!;
  const lossTolerance = LOSS_RTOL * Math.abs(want.loss) + propagated + 1e-12;
  near('loss (vs the float64 reference)', got.loss, want.loss, lossTolerance, ctx);

  // Metrics
  const m = got.metrics as unknown as Record<string, number>;
  const w = want.metrics as unknown as Record<string, number>;
  assert.equal(Object.keys(m).sort(), Object.keys(w).sort(), `metric names (${ctx})`);
  const mean = (f: (i: number) => number) => {
    let t = 0;
    for (let i = 0; i < B; i++) t += f(i);
    return t / B;
  };
  const tolC = (i: number) => budget[i]! / div(i);
  const tolR = (i: number) => budget[B + i]! / div(B + i);
  // AlphaPO's rewards β·r(x̄) move by r'(x̄) = e^{−αx̄} per unit of x̄ (1 without it)
  const withAlpha = input.alpha !== 0 && input.lossTypes.includes('simpo');
  const slope = (s: number) => (withAlpha ? alphaReward(input.alpha, want.seqLogps[s]! / Math.max(want.seqCounts[s]!, 1)).slope * 2 : 1);
  const rewardTolC = (i: number) => (withAlpha ? (budget[i]! / Math.max(want.seqCounts[i]!, 1)) * slope(i) : tolC(i));
  const rewardTolR = (i: number) => (withAlpha ? (budget[B + i]! / Math.max(want.seqCounts[B + i]!, 1)) * slope(B + i) : tolR(i));
  let maxAbs = 0;
  for (let r = 0; r < c.rows; r++) {
    if (c.labels.data[r] === input.ignoreIndex) continue;
    for (let v = 0; v < c.vocab; v++) maxAbs = Math.max(maxAbs, Math.abs(c.decoded[r * c.vocab + v]!));
  }
  const lanesAdds = addsPerLane(c.vocab);
  const tolerance: Record<string, number> = {
    'logps/chosen': mean(tolC),
    'logps/rejected': mean(tolR),
    'rewards/chosen': beta * mean(rewardTolC),
    'rewards/rejected': beta * mean(rewardTolR),
    'rewards/margins': beta * mean((i) => rewardTolC(i) + rewardTolR(i)),
    'logits/chosen': U * (lanesAdds + 2) * maxAbs,
    'logits/rejected': U * (lanesAdds + 2) * maxAbs,
    entropy: U * (lanesAdds + 8) * (2 * Math.log(c.vocab) + 2),
    mean_token_accuracy: 0,
    num_tokens: 0,
    'rewards/accuracies': 0,
  };
  // a pair whose reward margin is within the budget may flip: allow 1/B for each
  for (let i = 0; i < B; i++) {
    if (Math.abs(want.chosenRewards[i]! - want.rejectedRewards[i]!) <= beta * (rewardTolC(i) + rewardTolR(i))) tolerance['rewards/accuracies'] += 1 / B;
  }
  for (const name of Object.keys(w)) {
    near(`metrics['${name}']`, m[name]!, w[name]!, LOSS_RTOL * Math.abs(w[name]!) + tolerance[name]! + 1e-15, ctx);
  }
  return { lossRelErr: relErr(got.loss, want.loss, 1e-300), lossTolerance };
}

/**
 * The gradient against float64 (onehot − p) from the reference, times the kernel's own G_s (G_s
 * itself is checked above at the kernel's π; this keeps the comparison about the logits pass).
 * float32: relative L2 ≤ GRAD_L2 and every element within its float32 budget. 16-bit: every
 * element within one ulp of the float64 value rounded to the format, or within the row's float32
 * budget |G_s|·(2·rowBudget + 2^-22) (1 − p_y of a very confident token is below float32's
 * resolution), or (float16) within 2^-25 absolute. Ignored rows: exactly 0.
 */
function checkGrad(got: DpoLossResult, stats: TokenStats, c: TokenCase, ctx: string, ignoreIndex: number): GradCheck {
  const grad = got.grad!;
  assert.ok(grad !== null, `grad is null (${ctx})`);
  assert.is(grad.dtype, c.dtype, `grad dtype (${ctx})`);
  assert.equal(Array.from(grad.shape), Array.from(c.logits.shape), `grad shape (${ctx})`);
  const V = c.vocab;
  const seqOf = rowSequence(c.cuSeqlens);
  const expected = new Float64Array(c.rows * V);
  const elementTol = new Float64Array(c.rows * V); // float32 budget per element
  const floor = new Float64Array(c.rows);
  for (let r = 0; r < c.rows; r++) {
    const y = c.labels.data[r]!;
    if (y === ignoreIndex) continue;
    const G = got.sequenceGrad[seqOf[r]!]!;
    const p = stats.probs(r);
    floor[r] = Math.abs(G) * (2 * rowBudget(V, stats.logp[r]!, labelHoldsMax(c, r)) + 2 ** -22);
    for (let v = 0; v < V; v++) {
      const i = r * V + v;
      expected[i] = v === y ? G * -Math.expm1(stats.logp[r]!) : -G * p[v]!;
      // (+ 2^-126: float32 holds nothing finer than its smallest normal number reliably; a scale G
      // below it, as a saturated loss gives, rounds or flushes to 0 on its way to the kernels.)
      elementTol[i] = Math.abs(expected[i]!) * 8 * U * (Math.abs(Math.log(p[v]!)) + 1) + floor[r]! + 2 ** -126;
    }
  }
  const data = grad.data;
  for (let r = 0; r < c.rows; r++) {
    if (c.labels.data[r] !== ignoreIndex) continue;
    for (let v = 0; v < V; v++) {
      const x = data[r * V + v]!;
      const zero = c.dtype === 'float32' ? x === 0 : (x & 0x7fff) === 0;
      if (!zero) assert.unreachable(`ignored row ${r}: grad[${v}] = ${x}, expected exactly 0 (${ctx})`);
    }
  }
  const where = (i: number) => `element ${i} (row ${Math.floor(i / V)}, col ${i % V}, label ${c.labels.data[Math.floor(i / V)]})`;
  if (c.dtype === 'float32') {
    for (let i = 0; i < expected.length; i++) {
      if (!(Math.abs(data[i]! - expected[i]!) <= elementTol[i]!)) {
        assert.unreachable(`grad ${where(i)}: got ${data[i]}, expected ${expected[i]} (tol ${elementTol[i]}; ${ctx})`);
      }
    }
    // relative L2, with a float32 floor at the scale of G: u·‖G over the scored rows‖ (it matters only
    // when the whole exact gradient is below float32 resolution of G, e.g. p ≈ e^-100 everywhere)
    let diff = 0;
    let norm = 0;
    let gScale = 0;
    for (let i = 0; i < expected.length; i++) {
      diff += (data[i]! - expected[i]!) ** 2;
      norm += expected[i]! ** 2;
    }
    for (let r = 0; r < c.rows; r++) if (c.labels.data[r] !== ignoreIndex) gScale += got.sequenceGrad[seqOf[r]!]! ** 2;
    const e = relL2(data, expected);
    assert.ok(Math.sqrt(diff) <= GRAD_L2 * Math.sqrt(norm) + U * Math.sqrt(gScale), `grad relative L2 error ${e} > ${GRAD_L2} (${ctx})`);
    return { relL2: e, maxUlps: 0, strict: 0 };
  }
  const bits = c.dtype === 'bfloat16' ? toBfloat16(expected) : toFloat16(expected);
  const absFloor = c.dtype === 'float16' ? 2 ** -25 : 0;
  let maxUlps = 0;
  let strict = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = ulpDist16(data[i]!, bits[i]!);
    // Round to nearest even: where the float64 value is farther from the midpoint between its two
    // neighbouring 16-bit values than the float32 budget, the kernels' bits must be the nearest.
    const nearest = decode16(bits[i]!, c.dtype);
    const other = decode16(stepBits(bits[i]!, nearest <= expected[i]! ? 1 : -1), c.dtype);
    const margin = Math.abs(expected[i]! - (nearest + other) / 2);
    const mustRound = Number.isFinite(other) && margin > 1.5 * elementTol[i]! + absFloor;
    if (mustRound) strict++;
    if (d === 0 || (d === 1 && !mustRound)) {
      maxUlps = Math.max(maxUlps, d);
      continue;
    }
    const value = decode16(data[i]!, c.dtype);
    const err = Math.abs(value - expected[i]!);
    if (!mustRound && (err <= absFloor || err <= floor[Math.floor(i / V)]!)) continue;
    assert.unreachable(
      `grad ${where(i)}: got 0x${data[i]!.toString(16)} = ${value}, expected ${expected[i]}, nearest ${c.dtype} 0x${bits[i]!.toString(16)} = ` +
        `${nearest}; ${d} ulps apart${mustRound ? ` (${margin} from the rounding midpoint: must round to nearest)` : ''} (${ctx})`,
    );
  }
  return { relL2: relL2(Array.from(data, (b) => decode16(b, c.dtype)), expected), maxUlps, strict };
}

/** The 16-bit pattern `step` ulps away (sign-magnitude; ±0 are the same point). */
function stepBits(bits: number, step: number): number {
  const ord = (bits & 0x8000 ? -(bits & 0x7fff) : bits) + step;
  return ord >= 0 ? ord : 0x8000 | -ord;
}

/** Byte-for-byte equality of two typed arrays. */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
