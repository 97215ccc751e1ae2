/**
 * Float64 reference implementation of SPEC.md. Written for reading, not for speed: every
 * backend is checked against this file, so each formula appears once, in the SPEC's terms.
 */
import { LOSS_KINDS, type HyperparameterName, type LossType, type PolicyLossType } from './loss-kinds.js';
import type { DpoMetrics } from './types.js';

/** The model-head transforms (SPEC.md "Model-head transforms"); 0 or absent: off. */
export interface HeadTransformInput {
  logitScale?: number;
  softcap?: number;
  temperature?: number;
}

/** The input; the hyperparameters (beta, labelSmoothing, …: lib/loss-kinds.ts) by name. */
export interface ReferenceInput extends Record<HyperparameterName, number>, HeadTransformInput {
  logits: Float64Array; // R*V, already decoded to float64
  rows: number;
  vocab: number;
  labels: Int32Array; // R
  cuSeqlens: Int32Array; // S+1, S = 2B
  ignoreIndex: number;
  // B each, sums; or per token (R entries, read where the label is scored): SPEC.md "Per-token reference log-probs"
  ref?: { chosen: Float64Array; rejected: Float64Array } | { tokenLogps: Float64Array } | null;
  lossTypes: readonly LossType[];
  lossWeights: readonly number[];
  /** How the log-ratios make the margin Δ (default 'reverse_kl': DPO's Δ = a − b). */
  fDivergenceType?: FDivergence;
  scale: number; // 1/B for mean, 1 for sum, 1/normalizer
  useWeighting?: boolean; // WPO (SPEC.md "WPO")
  ldAlpha?: number | null; // LD-DPO (SPEC.md "LD-DPO"); null or absent: off
}

export interface ReferenceOutput {
  loss: number;
  losses: Float64Array; // B, per-pair ℓ_i (weighted sum over loss types)
  seqLogps: Float64Array; // S, π_s (sums)
  seqCounts: Int32Array; // S, N_s
  chosenLogps: Float64Array; // B, as SPEC "Rewards and metrics"
  rejectedLogps: Float64Array;
  chosenRewards: Float64Array; // B
  rejectedRewards: Float64Array;
  metrics: DpoMetrics;
  seqGrad: Float64Array; // S, G_s = ∂loss/∂π_s
  plainSeqGrad: Float64Array; // S, H_s = ∂loss/∂(plain sum of s) (the NLL terms under LD-DPO; else 0)
  tokenWeights: Float64Array; // R, LD-DPO's w_t (1 without it, 0 for ignored rows)
  grad: Float64Array; // R*V
  pairWeights: Float64Array; // B, WPO's min(1, w_c·w_r) (all 1 without useWeighting)
}

// ref must be sums here (referencePairLoss refuses per-token ones: they arrive as PairExtras.ratios).
export type PairLossConfig = Omit<ReferenceInput, 'logits' | 'rows' | 'vocab' | 'labels' | 'cuSeqlens' | 'ignoreIndex' | keyof HeadTransformInput>;

/** What LD-DPO and per-token references add to the pair math (each absent: off). */
export interface PairExtras {
  /** S unweighted sums, which the NLL terms (sft, orpo) read as TRL's nll_loss does; absent: seqLogps. */
  plainLogps?: Float64Array;
  /** S log-ratios Σ_t w_t(logp_t − ref_t); absent: π_s − ρ_s. */
  ratios?: Float64Array;
}

/**
 * The transformed logit t(z) and its derivative t'(z), in TRL's order: a = z·s (logitScale), then
 * b = c·tanh(a/c) (softcap), then t = b/T (temperature); t' = (s/T)·(1 − tanh²(a/c)).
 */
export function headTransform(z: number, head: HeadTransformInput): { t: number; slope: number } {
  const s = head.logitScale || 1;
  const c = head.softcap || 0;
  const T = head.temperature || 1;
  const a = z * s;
  if (c === 0) return { t: a / T, slope: s / T };
  const th = Math.tanh(a / c);
  return { t: (c * th) / T, slope: (s * (1 / Math.cosh(a / c)) ** 2) / T };
}

function headIsOn(head: HeadTransformInput): boolean {
  return Boolean(head.logitScale || head.softcap || head.temperature);
}

// ---------------------------------------------------------------------------------------------
// Scalar helpers (stable in float64)

/** softplus(x) = log(1 + e^x) */
function softplus(x: number): number {
  return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
}

/** logσ(x) = −softplus(−x) */
function logSigmoid(x: number): number {
  return -softplus(-x);
}

/** σ(x) = 1/(1+e^{−x}) */
function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** σ'(x) = σ(x)·σ(−x) */
function sigmoidPrime(x: number): number {
  return sigmoid(x) * sigmoid(-x);
}

/** sigmoid's formula: −(1−ε)·logσ(u) − ε·logσ(−u) */
function smoothedLogistic(u: number, eps: number): number {
  return -(1 - eps) * logSigmoid(u) - eps * logSigmoid(-u);
}

/** d/du of smoothedLogistic: −(1−ε)·σ(−u) + ε·σ(u)  (uses d logσ(x)/dx = σ(−x)) */
function smoothedLogisticPrime(u: number, eps: number): number {
  return -(1 - eps) * sigmoid(-u) + eps * sigmoid(u);
}

/** log(1 − e^x) for x ≤ 0 */
/** AlphaPO's reward of an averaged log-prob x and its slope (SPEC.md, "AlphaPO"). */
export function alphaReward(alpha: number, x: number): { value: number; slope: number } {
  if (alpha === 0) return { value: x, slope: 1 };
  // −expm1: 1 − e^(−αx) cancels for small αx, and the reference must not lose the digits the kernels keep.
  return { value: -Math.expm1(-alpha * x) / alpha, slope: Math.exp(-alpha * x) };
}

function log1mexp(x: number): number {
  return x > -Math.LN2 ? Math.log(-Math.expm1(x)) : Math.log1p(-Math.exp(x));
}

/** ORPO's log-odds ℓo(x) = x − log(1 − e^x) */
function logOdds(x: number): number {
  return x - log1mexp(x);
}

/** ℓo'(x) = 1 + e^x/(1 − e^x) = 1/(1 − e^x) = −1/expm1(x) */
function logOddsPrime(x: number): number {
  return -1 / Math.expm1(x);
}

/** Pair order sorting `keys` ascending, ties by lower index first, NaN last. */
function argsortAscending(keys: Float64Array): number[] {
  const order = Array.from(keys, (_, i) => i);
  order.sort((i, j) => {
    const x = keys[i]!;
    const y = keys[j]!;
    const xn = Number.isNaN(x);
    const yn = Number.isNaN(y);
    if (xn !== yn) return xn ? 1 : -1;
    if (x < y) return -1;
    if (x > y) return 1;
    return i - j;
  });
  return order;
}

// ---------------------------------------------------------------------------------------------
// Per token

export function referenceTokenStats(
  rawLogits: Float64Array,
  rows: number,
  vocab: number,
  labels: Int32Array,
  ignoreIndex: number,
  head: HeadTransformInput = {},
): {
  logp: Float64Array;
  entropy: Float64Array;
  rowMeanLogit: Float64Array;
  correct: Uint8Array;
  /** log Σ_v p[r,v]² (WPO's adjustment) = LSE(2t) − 2·LSE(t); 0 for ignored rows. */
  logSumSq: Float64Array;
  probs(r: number): Float64Array;
  /** t'(z[r, v]) for one row (all 1 without a transform). */
  slopes(r: number): Float64Array;
} {
  if (rawLogits.length !== rows * vocab) throw new RangeError(`logits has ${rawLogits.length} elements, expected ${rows}*${vocab}`);
  if (labels.length !== rows) throw new RangeError(`labels has ${labels.length} elements, expected ${rows}`);

  // Everything below reads the transformed logits t(z), except the argmax (taken on the raw logits:
  // the transforms are increasing) and the finiteness check (a non-finite raw logit poisons its row).
  const transformed = headIsOn(head);
  const logits = transformed ? rawLogits.map((z) => headTransform(z, head).t) : rawLogits;
  const slopes = (r: number): Float64Array => {
    const raw = rawLogits.subarray(r * vocab, (r + 1) * vocab);
    return transformed ? raw.map((z) => headTransform(z, head).slope) : new Float64Array(vocab).fill(1);
  };

  // Ignored rows are left at 0 in every output: they contribute nothing anywhere.
  const logp = new Float64Array(rows);
  const entropy = new Float64Array(rows);
  const rowMeanLogit = new Float64Array(rows);
  const correct = new Uint8Array(rows);
  const logSumSq = new Float64Array(rows);

  /** m = max_v z, s = Σ_v exp(z − m), log(s), and whether the row is all finite. */
  const rowMaxLogSum = (r: number): { m: number; s: number; logS: number; finite: boolean } => {
    const z = logits.subarray(r * vocab, (r + 1) * vocab);
    const raw = rawLogits.subarray(r * vocab, (r + 1) * vocab);
    let m = -Infinity;
    let finite = true;
    for (let v = 0; v < vocab; v++) {
      if (!Number.isFinite(raw[v]!)) finite = false;
      if (z[v]! > m) m = z[v]!;
    }
    let s = 0;
    for (let v = 0; v < vocab; v++) s += Math.exp(z[v]! - m);
    return { m, s, logS: Math.log(s), finite };
  };

  for (let r = 0; r < rows; r++) {
    const y = labels[r]!;
    if (y === ignoreIndex) continue;
    if (!Number.isInteger(y) || y < 0 || y >= vocab) throw new RangeError(`label ${y} at row ${r} is outside [0, ${vocab})`);
    const z = logits.subarray(r * vocab, (r + 1) * vocab);
    const raw = rawLogits.subarray(r * vocab, (r + 1) * vocab);
    const { m, s, logS, finite } = rowMaxLogSum(r);

    let sumZ = 0;
    let sumExpTimesShifted = 0; // Σ_v exp(z−m)·(z−m)
    let sumExpSquared = 0; // Σ_v exp(2(z−m))
    let argmax = 0;
    for (let v = 0; v < vocab; v++) {
      const shifted = z[v]! - m;
      sumExpTimesShifted += Math.exp(shifted) * shifted;
      sumExpSquared += Math.exp(2 * shifted);
      sumZ += z[v]!;
      if (raw[v]! > raw[argmax]!) argmax = v; // strict: first index of the maximum
    }
    logSumSq[r] = Math.log(sumExpSquared) - 2 * logS;

    rowMeanLogit[r] = sumZ / vocab;
    if (finite) {
      // When the label holds the max, log p_y = −log1p(Σ_{v≠y} e^{z_v − m}) keeps a confident
      // token's digits (its 1 − p_y can be far below float64's resolution next to 1).
      if (z[y]! === m) {
        let others = 0;
        for (let v = 0; v < vocab; v++) if (v !== y) others += Math.exp(z[v]! - m);
        logp[r] = -Math.log1p(others);
      } else {
        logp[r] = (z[y]! - m) - logS;
      }
      entropy[r] = logS - sumExpTimesShifted / s;
      correct[r] = argmax === y ? 1 : 0;
    } else {
      // A non-finite logit (±inf or NaN) in a scored row poisons that row: NaN log-prob and
      // entropy, so the loss is NaN (a −inf alone would otherwise give a finite softmax).
      logp[r] = NaN;
      entropy[r] = NaN;
      correct[r] = 0;
    }
  }

  /** p[r, v] = exp((z[r,v] − m) − log(s)) for one row (any row, ignored or not). */
  const probs = (r: number): Float64Array => {
    const z = logits.subarray(r * vocab, (r + 1) * vocab);
    const { m, logS, finite } = rowMaxLogSum(r);
    const p = new Float64Array(vocab);
    for (let v = 0; v < vocab; v++) p[v] = finite ? Math.exp((z[v]! - m) - logS) : NaN;
    return p;
  };

  return { logp, entropy, rowMeanLogit, correct, logSumSq, probs, slopes };
}

// ---------------------------------------------------------------------------------------------
// Per sequence

function checkCuSeqlens(cuSeqlens: Int32Array, rows: number): number {
  const S = cuSeqlens.length - 1;
  if (S < 2 || S % 2 !== 0) throw new RangeError(`cuSeqlens must have 2B+1 entries with B >= 1, got ${cuSeqlens.length}`);
  if (cuSeqlens[0] !== 0) throw new RangeError('cuSeqlens[0] must be 0');
  if (cuSeqlens[S] !== rows) throw new RangeError(`cuSeqlens[S] must equal rows (${rows}), got ${cuSeqlens[S]}`);
  for (let s = 0; s < S; s++) {
    if (cuSeqlens[s + 1]! < cuSeqlens[s]!) throw new RangeError('cuSeqlens must be non-decreasing');
  }
  return S;
}

/** π_s = Σ logp over the non-ignored rows of s, in row order; N_s = their count. */
export function sumBySequence(
  logp: Float64Array,
  labels: Int32Array,
  cuSeqlens: Int32Array,
  ignoreIndex: number,
): { sums: Float64Array; counts: Int32Array } {
  const S = cuSeqlens.length - 1;
  const sums = new Float64Array(S);
  const counts = new Int32Array(S);
  for (let s = 0; s < S; s++) {
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) {
      if (labels[r] === ignoreIndex) continue;
      sums[s] = sums[s]! + logp[r]!;
      counts[s] = counts[s]! + 1;
    }
  }
  return { sums, counts };
}

/**
 * LD-DPO's token weights (SPEC.md "LD-DPO"): per pair (s, s ± B), the first L = min(N_c, N_r)
 * completion tokens of each sequence, counted in order, weigh 1 and the later ones α; 1 for every
 * scored row when α is null; 0 for ignored rows.
 */
export function ldTokenWeights(labels: Int32Array, cuSeqlens: Int32Array, ignoreIndex: number, alpha: number | null): Float64Array {
  const S = cuSeqlens.length - 1;
  const w = new Float64Array(labels.length);
  const counts = new Int32Array(S);
  for (let s = 0; s < S; s++) for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) if (labels[r] !== ignoreIndex) counts[s] = counts[s]! + 1;
  for (let s = 0; s < S; s++) {
    const partner = s < S / 2 ? s + S / 2 : s - S / 2;
    const L = alpha === null ? Infinity : Math.min(counts[s]!, counts[partner]!);
    let k = 0;
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) {
      if (labels[r] === ignoreIndex) continue;
      w[r] = k < L ? 1 : alpha!;
      k++;
    }
  }
  return w;
}

/** Σ_t w_t·x_t over each sequence's scored rows, in row order. */
function weightedBySequence(x: ArrayLike<number>, w: Float64Array, labels: Int32Array, cuSeqlens: Int32Array, ignoreIndex: number): Float64Array {
  const S = cuSeqlens.length - 1;
  const out = new Float64Array(S);
  for (let s = 0; s < S; s++) {
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) if (labels[r] !== ignoreIndex) out[s] = out[s]! + w[r]! * x[r]!;
  }
  return out;
}

export function referenceSequenceLogps(
  input: Pick<ReferenceInput, 'logits' | 'rows' | 'vocab' | 'labels' | 'cuSeqlens' | 'ignoreIndex' | keyof HeadTransformInput>,
  average: boolean,
  ldAlpha: number | null = null,
): { logps: Float64Array; counts: Int32Array } {
  const S = input.cuSeqlens.length - 1;
  if (ldAlpha !== null && S % 2 !== 0) throw new RangeError(`ldAlpha pairs the sequences: need 2B, got ${S}`);
  const { logp } = referenceTokenStats(input.logits, input.rows, input.vocab, input.labels, input.ignoreIndex, input);
  const { sums: plain, counts } = sumBySequence(logp, input.labels, input.cuSeqlens, input.ignoreIndex);
  const sums = ldAlpha === null ? plain : weightedBySequence(logp, ldTokenWeights(input.labels, input.cuSeqlens, input.ignoreIndex, ldAlpha), input.labels, input.cuSeqlens, input.ignoreIndex);
  if (average) for (let s = 0; s < sums.length; s++) sums[s] = sums[s]! / Math.max(counts[s]!, 1);
  return { logps: sums, counts };
}

// ---------------------------------------------------------------------------------------------
// Per pair: the loss as a function of the per-sequence sums π_s, with its analytic gradient

/**
 * One loss type over the batch, each pair's term times its WPO weight `w[i]` (1 without it; for
 * aot/aot_unpaired the term at sorted position k times w[k], as TRL multiplies its rank-ordered
 * losses). `l[i]` is ℓ_i; `gc[j]` and `gr[j]` are ∂(Σ_i ℓ_i)/∂π_{c_j} and ∂(Σ_i ℓ_i)/∂π_{r_j}
 * (for the paired losses only pair j's own ℓ_j depends on them).
 */
function lossTerm(
  type: LossType,
  pi: Float64Array,
  counts: Int32Array,
  refC: Float64Array,
  refR: Float64Array,
  cfg: PairLossConfig,
  w: Float64Array,
  extras: PairExtras = {},
): { l: Float64Array; gc: Float64Array; gr: Float64Array; gPlain: Float64Array } {
  const B = pi.length / 2;
  const beta = cfg.beta;
  const eps = cfg.labelSmoothing;
  const l = new Float64Array(B);
  const gc = new Float64Array(B);
  const gr = new Float64Array(B);
  const gPlain = new Float64Array(B); // ∂/∂(plain chosen sums): the NLL terms

  // Scores of pair i, as the SPEC names them.
  const piC = (i: number) => pi[i]!;
  const piR = (i: number) => pi[B + i]!;
  const nC = (i: number) => Math.max(counts[i]!, 1); // max(N_c, 1)
  const nR = (i: number) => Math.max(counts[B + i]!, 1);
  // a = π_c − ρ_c, b = π_r − ρ_r (with per-token references: Σ_t w_t(logp_t − ref_t))
  const a = (i: number) => (extras.ratios ? extras.ratios[i]! : piC(i) - refC[i]!);
  const b = (i: number) => (extras.ratios ? extras.ratios[B + i]! : piR(i) - refR[i]!);
  const plainC = (i: number) => (extras.plainLogps ? extras.plainLogps[i]! : piC(i));
  // The margin Δ under the f-divergence (Δ = a − b for DPO's reverse KL), its averaged form Δ̄ of
  // ā, b̄, and u = βΔ + λ·(N_c − N_r) (R-DPO's length term, λ = lengthPenalty).
  const divergence = cfg.fDivergenceType ?? 'reverse_kl';
  const margin = (i: number) => referenceMargin(divergence, cfg.fAlphaDivergenceCoef, a(i), b(i));
  const marginBar = (i: number) => referenceMargin(divergence, cfg.fAlphaDivergenceCoef, a(i) / nC(i), b(i) / nR(i));
  const uOf = (i: number) => beta * margin(i).value + cfg.lengthPenalty * (counts[i]! - counts[B + i]!);
  // dℓ/dπ_c, dℓ/dπ_r of a loss of u with dℓ/du = dU.
  const throughU = (i: number, dU: number) => {
    gc[i] = beta * dU * margin(i).dX;
    gr[i] = beta * dU * margin(i).dY;
  };

  switch (type) {
    case 'sigmoid':
      for (let i = 0; i < B; i++) {
        const u = uOf(i);
        l[i] = smoothedLogistic(u, eps);
        throughU(i, smoothedLogisticPrime(u, eps));
      }
      break;

    case 'hinge':
      for (let i = 0; i < B; i++) {
        const u = uOf(i);
        l[i] = Math.max(0, 1 - u);
        // dℓ/du = −1 inside the margin, 0 beyond it and at the kink (NaN stays NaN).
        throughU(i, u < 1 ? -1 : u >= 1 ? 0 : NaN);
      }
      break;

    case 'ipo':
      for (let i = 0; i < B; i++) {
        const m = marginBar(i); // Δ̄ = ā − b̄ for DPO's divergence
        const t = m.value - 1 / (2 * beta);
        l[i] = t * t;
        gc[i] = (2 * t * m.dX) / nC(i); // ∂ā/∂π_c = 1/max(N_c,1)
        gr[i] = (2 * t * m.dY) / nR(i);
      }
      break;

    case 'robust':
      if (!(eps < 0.5)) throw new RangeError(`robust needs labelSmoothing < 0.5, got ${eps}`);
      for (let i = 0; i < B; i++) {
        const u = uOf(i);
        l[i] = (-(1 - eps) * logSigmoid(u) + eps * logSigmoid(-u)) / (1 - 2 * eps);
        throughU(i, (-(1 - eps) * sigmoid(-u) - eps * sigmoid(u)) / (1 - 2 * eps));
      }
      break;

    case 'exo_pair': {
      const e = eps === 0 ? 1e-3 : eps; // ε'
      for (let i = 0; i < B; i++) {
        const u = uOf(i);
        l[i] = sigmoid(u) * (logSigmoid(u) - Math.log(1 - e)) + sigmoid(-u) * (logSigmoid(-u) - Math.log(e));
        // d/du: σ'(u)·(logσ(u) − log(1−ε')) + σ(u)σ(−u) − σ'(u)·(logσ(−u) − log ε') − σ(−u)σ(u)
        //     = σ'(u)·(logσ(u) − logσ(−u) − log(1−ε') + log ε'),  and logσ(u) − logσ(−u) = u.
        throughU(i, sigmoidPrime(u) * (u - Math.log(1 - e) + Math.log(e)));
      }
      break;
    }

    case 'nca_pair':
      for (let i = 0; i < B; i++) {
        const ua = beta * a(i);
        const ub = beta * b(i);
        l[i] = -logSigmoid(ua) - 0.5 * logSigmoid(-ua) - 0.5 * logSigmoid(-ub);
        gc[i] = beta * (-sigmoid(-ua) + 0.5 * sigmoid(ua));
        gr[i] = beta * 0.5 * sigmoid(ub);
      }
      break;

    case 'bco_pair':
      for (let i = 0; i < B; i++) {
        const ua = beta * a(i);
        const ub = beta * b(i);
        l[i] = -logSigmoid(ua) - logSigmoid(-ub);
        gc[i] = -beta * sigmoid(-ua);
        gr[i] = beta * sigmoid(ub);
      }
      break;

    case 'sppo_hard':
      for (let i = 0; i < B; i++) {
        const tc = a(i) - 1 / (2 * beta);
        const tr = b(i) + 1 / (2 * beta);
        l[i] = tc * tc + tr * tr;
        gc[i] = 2 * tc;
        gr[i] = 2 * tr;
      }
      break;

    case 'apo_zero':
      for (let i = 0; i < B; i++) {
        const ua = beta * a(i);
        const ub = beta * b(i);
        l[i] = 1 - sigmoid(ua) + sigmoid(ub);
        gc[i] = -beta * sigmoidPrime(ua);
        gr[i] = beta * sigmoidPrime(ub);
      }
      break;

    case 'apo_down':
      for (let i = 0; i < B; i++) {
        const ua = beta * a(i);
        const u = beta * (a(i) - b(i));
        l[i] = sigmoid(ua) + (1 - sigmoid(u));
        gc[i] = beta * sigmoidPrime(ua) - beta * sigmoidPrime(u);
        gr[i] = beta * sigmoidPrime(u);
      }
      break;

    case 'discopop': {
      const tau = cfg.discopopTau;
      for (let i = 0; i < B; i++) {
        const u = uOf(i);
        const g = sigmoid(u / tau); // σ(u/τ)
        const oneMinusG = sigmoid(-u / tau); // 1 − σ(u/τ)
        const expTerm = Math.exp(-u + logSigmoid(u / tau)); // e^{−u}·σ(u/τ)
        l[i] = -logSigmoid(u) * oneMinusG + expTerm;
        // d/du[−logσ(u)·(1−g)] = −σ(−u)·(1−g) + logσ(u)·g',  g' = g(1−g)/τ
        // d/du[e^{−u}·g]       = e^{−u}·g·((1−g)/τ − 1)
        const gPrime = (g * oneMinusG) / tau;
        throughU(i, -sigmoid(-u) * oneMinusG + logSigmoid(u) * gPrime + expTerm * (oneMinusG / tau - 1));
      }
      break;
    }

    case 'sigmoid_norm':
      for (let i = 0; i < B; i++) {
        const m = marginBar(i);
        const u = beta * m.value; // βΔ̄
        l[i] = -logSigmoid(u);
        const dDeltaBar = -beta * sigmoid(-u);
        gc[i] = (dDeltaBar * m.dX) / nC(i);
        gr[i] = (dDeltaBar * m.dY) / nR(i);
      }
      break;

    case 'aot': {
      // L_i = π_c,i − π_r,i sorted (pair order p_k); Q_i = ρ_c,i − ρ_r,i sorted (values).
      const L = Float64Array.from({ length: B }, (_, i) => piC(i) - piR(i));
      const Q = Float64Array.from({ length: B }, (_, i) => refC[i]! - refR[i]!);
      const p = argsortAscending(L);
      const qSorted = argsortAscending(Q).map((i) => Q[i]!);
      for (let k = 0; k < B; k++) {
        const pk = p[k]!;
        const u = beta * (L[pk]! - qSorted[k]!);
        l[pk] = w[k]! * smoothedLogistic(u, eps);
        const dD = w[k]! * beta * smoothedLogisticPrime(u, eps);
        gc[pk] = gc[pk]! + dD;
        gr[pk] = gr[pk]! - dD;
      }
      break;
    }

    case 'aot_unpaired': {
      // a sorted (pair order p_k) against b sorted (pair order q_k).
      const A = Float64Array.from({ length: B }, (_, i) => a(i));
      const Bv = Float64Array.from({ length: B }, (_, i) => b(i));
      const p = argsortAscending(A);
      const q = argsortAscending(Bv);
      for (let k = 0; k < B; k++) {
        const pk = p[k]!;
        const qk = q[k]!;
        const u = beta * (A[pk]! - Bv[qk]!);
        l[pk] = w[k]! * smoothedLogistic(u, eps);
        const dD = w[k]! * beta * smoothedLogisticPrime(u, eps);
        gc[pk] = gc[pk]! + dD;
        gr[qk] = gr[qk]! - dD;
      }
      break;
    }

    case 'sft':
    case 'orpo': {
      // Token-mean NLL of all chosen tokens, the same value for every pair:
      // nll = −(Σ_j π_{c_j}) / max(Σ_j N_{c_j}, 1), so ∂(Σ_i w_i·ℓ_i)/∂π_{c_j} = −(Σ_i w_i) / max(Σ_j N_{c_j}, 1).
      let sumPi = 0;
      let sumN = 0;
      let sumW = 0;
      for (let j = 0; j < B; j++) {
        sumPi += plainC(j);
        sumN += counts[j]!;
        sumW += w[j]!;
      }
      const denom = Math.max(sumN, 1);
      const nll = -sumPi / denom;
      for (let i = 0; i < B; i++) {
        l[i] = w[i]! * nll;
        gPlain[i] = -sumW / denom;
      }
      if (type === 'orpo') {
        const clampMax = -1e-15;
        for (let i = 0; i < B; i++) {
          const barC = piC(i) / nC(i);
          const barR = piR(i) / nR(i);
          const xc = Math.min(barC, clampMax);
          const xr = Math.min(barR, clampMax);
          const D = logOdds(xc) - logOdds(xr);
          l[i] = l[i]! - w[i]! * beta * logSigmoid(D);
          const dD = -w[i]! * beta * sigmoid(-D); // d(−w_i·β·logσ(D))/dD
          // At the clamp the derivative is the unclamped formula's at x = −1e-15: the continuous
          // extension (σ(−D) vanishes as fast as 1 − e^x, so the product stays finite).
          gc[i] = gc[i]! + (dD * logOddsPrime(xc)) / nC(i);
          gr[i] = gr[i]! + (-dD * logOddsPrime(xr)) / nR(i);
        }
      }
      break;
    }

    case 'unlikelihood':
      // ℓ = −π̄_c − α·log(1 − e^{π̄_r}), π̄_r clamped at −1e-15 as ORPO's scores are.
      for (let i = 0; i < B; i++) {
        const alpha = cfg.unlikelihoodAlpha;
        const xr = Math.min(piR(i) / nR(i), -1e-15);
        l[i] = -piC(i) / nC(i) - alpha * log1mexp(xr);
        gc[i] = -1 / nC(i);
        // d/dx[−α·log(1 − e^x)] = α·e^x / (1 − e^x)
        gr[i] = (alpha * Math.exp(xr)) / -Math.expm1(xr) / nR(i);
      }
      break;

    case 'simpo':
      // AlphaPO (TRL's CPO alpha): r(x̄) = (1 − p̄^(−α))/α, p̄ = e^x̄, r'(x̄) = p̄^(−α); α = 0: r(x̄) = x̄ (SimPO).
      for (let i = 0; i < B; i++) {
        const rc = alphaReward(cfg.alpha, piC(i) / nC(i));
        const rr = alphaReward(cfg.alpha, piR(i) / nR(i));
        const v = beta * (rc.value - rr.value) - cfg.simpoGamma;
        l[i] = smoothedLogistic(v, eps);
        const dV = smoothedLogisticPrime(v, eps);
        gc[i] = (beta * dV * rc.slope) / nC(i);
        gr[i] = (-beta * dV * rr.slope) / nR(i);
      }
      break;

    default:
      throw new TypeError(`unknown loss type '${String(type)}'`);
  }
  if (!['aot', 'aot_unpaired', 'sft', 'orpo'].includes(type)) {
    // pair-local: ℓ_i and its derivatives times w_i
    for (let i = 0; i < B; i++) {
      l[i] = w[i]! * l[i]!;
      gc[i] = w[i]! * gc[i]!;
      gr[i] = w[i]! * gr[i]!;
    }
  }
  return { l, gc, gr, gPlain };
}

/** The f-divergences fDivergenceType names (SPEC.md, "f-divergences"). */
export type FDivergence = 'reverse_kl' | 'forward_kl' | 'js_divergence' | 'alpha_divergence';

// TRL's cap on the alpha-divergence's exponents: log(FLT_MAX) floored to 4 decimals.
const EXP_CAP = 88.7228;

/** The margin Δ of log-ratios x (chosen), y (rejected) under an f-divergence, and ∂Δ/∂x, ∂Δ/∂y. */
export function referenceMargin(divergence: FDivergence, alpha: number, x: number, y: number): { value: number; dX: number; dY: number } {
  switch (divergence) {
    case 'reverse_kl':
      return { value: x - y, dX: 1, dY: -1 };
    case 'js_divergence': // log(2u/(1+u)) per side, u = e^x
      return { value: x - y - (softplus(x) - softplus(y)), dX: sigmoid(-x), dY: -sigmoid(-y) };
    case 'forward_kl':
    case 'alpha_divergence': {
      // (1 − u^−α)/α per side: Δ = (e^{−αy} − e^{−αx})/α; forward KL is α = 1. Past the cap the
      // exponent is clamped and its derivative is 0, as TRL's cap_exp.
      const k = divergence === 'forward_kl' ? 1 : alpha;
      const capped = (z: number) => (z < EXP_CAP ? { e: Math.exp(z), slope: Math.exp(z) } : { e: Math.exp(EXP_CAP), slope: 0 });
      const ex = capped(-k * x), ey = capped(-k * y);
      return { value: (ey.e - ex.e) / k, dX: ex.slope, dY: -ey.slope };
    }
  }
}

export function referencePairLoss(
  seqLogps: Float64Array,
  seqCounts: Int32Array,
  cfg: PairLossConfig,
  pairWeights?: Float64Array,
  extras: PairExtras = {},
): { loss: number; losses: Float64Array; seqGrad: Float64Array; plainSeqGrad: Float64Array } {
  const S = seqLogps.length;
  if (S < 2 || S % 2 !== 0) throw new RangeError(`need 2B sequence scores with B >= 1, got ${S}`);
  if (seqCounts.length !== S) throw new RangeError('seqCounts must have one entry per sequence');
  const B = S / 2;
  const wpo = pairWeights ?? new Float64Array(B).fill(1);
  const types = cfg.lossTypes;
  if (types.length === 0) throw new RangeError('lossTypes is empty');
  for (const t of types) if (!Object.hasOwn(LOSS_KINDS, t)) throw new TypeError(`unknown loss type '${t}'`);
  const weights = cfg.lossWeights.length === 0 ? types.map(() => 1) : cfg.lossWeights;
  if (weights.length !== types.length) throw new RangeError('lossWeights must match lossTypes in length');

  let refC: Float64Array = new Float64Array(B); // ρ = 0 when no ref is given
  let refR: Float64Array = new Float64Array(B);
  if (cfg.ref && 'tokenLogps' in cfg.ref) throw new TypeError('referencePairLoss takes reference sums (per-token references arrive as extras.ratios)');
  if (cfg.ref) {
    if (cfg.ref.chosen.length !== B || cfg.ref.rejected.length !== B) throw new RangeError(`ref.chosen and ref.rejected need ${B} entries`);
    refC = cfg.ref.chosen;
    refR = cfg.ref.rejected;
  } else {
    const needing = types.filter((t) => LOSS_KINDS[t].needsRef);
    if (needing.length > 0) throw new TypeError(`loss type(s) ${needing.join(', ')} need reference log-probs`);
  }

  // ℓ_i = Σ_k w_k·ℓ_{k,i} (each ℓ_{k,i} times its WPO weight);  loss = scale·Σ_i ℓ_i;
  // G_s = scale·Σ_k w_k·∂(Σ_i ℓ_{k,i})/∂π_s.
  const losses = new Float64Array(B);
  const seqGrad = new Float64Array(S);
  // H_s: the NLL terms' gradient, kept apart when they read plain sums (LD-DPO), else part of G_s.
  const plainSeqGrad = new Float64Array(S);
  const nllGrad = extras.plainLogps ? plainSeqGrad : seqGrad;
  // A list with a kind that reports averaged log-probs (ipo, simpo, orpo) averages them for every
  // kind, as TRL's DPOTrainer does with ipo in its list: a sum-scored kind then reads π̄_s, ρ̄_s and
  // the log-ratios divided by max(N_s, 1), and ∂π̄_s/∂π_s = 1/max(N_s, 1) takes its gradient back
  // to the sums. (The NLL terms read their own token mean either way: plainLogps is left as it is.)
  const averagesEveryKind = types.some((t) => LOSS_KINDS[t].reportsAveraged);
  const n = (s: number) => Math.max(seqCounts[s]!, 1);
  const byCount = (values: Float64Array, offset: number) => values.map((v, i) => v / n(offset + i));
  const averagedInputs = {
    pi: byCount(seqLogps, 0),
    refC: byCount(refC, 0),
    refR: byCount(refR, B),
    extras: { plainLogps: extras.plainLogps ?? seqLogps, ratios: extras.ratios ? byCount(extras.ratios, 0) : undefined },
  };
  types.forEach((type, k) => {
    const w = weights[k]!;
    const averaged = averagesEveryKind && !LOSS_KINDS[type].averagedScores;
    const { l, gc, gr, gPlain } = averaged
      ? lossTerm(type, averagedInputs.pi, seqCounts, averagedInputs.refC, averagedInputs.refR, cfg, wpo, averagedInputs.extras)
      : lossTerm(type, seqLogps, seqCounts, refC, refR, cfg, wpo, extras);
    for (let i = 0; i < B; i++) {
      losses[i] = losses[i]! + w * l[i]!;
      seqGrad[i] = seqGrad[i]! + (cfg.scale * w * gc[i]!) / (averaged ? n(i) : 1);
      seqGrad[B + i] = seqGrad[B + i]! + (cfg.scale * w * gr[i]!) / (averaged ? n(B + i) : 1);
      nllGrad[i] = nllGrad[i]! + cfg.scale * w * gPlain[i]!;
    }
  });
  let total = 0;
  for (let i = 0; i < B; i++) total += losses[i]!;
  return { loss: cfg.scale * total, losses, seqGrad, plainSeqGrad };
}

// ---------------------------------------------------------------------------------------------
// Everything: loss, logits gradient, rewards, metrics

export function referenceDpo(input: ReferenceInput): ReferenceOutput {
  const { logits, rows, vocab, labels, cuSeqlens, ignoreIndex, beta } = input;
  const S = checkCuSeqlens(cuSeqlens, rows);
  const B = S / 2;

  const stats = referenceTokenStats(logits, rows, vocab, labels, ignoreIndex, input);
  const { sums: plainLogps, counts: seqCounts } = sumBySequence(stats.logp, labels, cuSeqlens, ignoreIndex);
  // LD-DPO: π_s = Σ_t w_t·logp_t; the plain sums stay for the NLL terms. Per-token references:
  // ρ_s = Σ_t w_t·ref_t and the log-ratio Σ_t w_t·(logp_t − ref_t).
  const ldAlpha = input.ldAlpha ?? null;
  const tokenWeights = ldTokenWeights(labels, cuSeqlens, ignoreIndex, ldAlpha);
  const seqLogps = ldAlpha === null ? plainLogps : weightedBySequence(stats.logp, tokenWeights, labels, cuSeqlens, ignoreIndex);
  const refTokens = input.ref && 'tokenLogps' in input.ref ? input.ref.tokenLogps : null;
  let refSums = input.ref && 'chosen' in input.ref ? input.ref : null;
  const extras: PairExtras = ldAlpha === null ? {} : { plainLogps };
  if (refTokens) {
    if (refTokens.length !== rows) throw new RangeError(`ref.tokenLogps needs ${rows} entries`);
    const rho = weightedBySequence(refTokens, tokenWeights, labels, cuSeqlens, ignoreIndex);
    refSums = { chosen: rho.subarray(0, B), rejected: rho.subarray(B) };
    extras.ratios = weightedBySequence(Float64Array.from(stats.logp, (lp, r) => lp - refTokens[r]!), tokenWeights, labels, cuSeqlens, ignoreIndex);
  }

  // WPO: w_s = exp(mean over s's completion tokens of (logp − log Σ_v p_v²)), count clamped to ≥ 1;
  // pair i weighs min(1, w_c·w_r) (TRL's clamp), detached: no gradient flows through it.
  const pairWeights = new Float64Array(B).fill(1);
  if (input.useWeighting) {
    const adjusted = Float64Array.from(stats.logp, (lp, r) => lp - stats.logSumSq[r]!);
    const { sums: adjustedSums } = sumBySequence(adjusted, labels, cuSeqlens, ignoreIndex);
    const meanOf = (s: number) => adjustedSums[s]! / Math.max(seqCounts[s]!, 1);
    for (let i = 0; i < B; i++) pairWeights[i] = Math.min(1, Math.exp(meanOf(i) + meanOf(B + i)));
  }
  const pair = referencePairLoss(seqLogps, seqCounts, { ...input, ref: refSums }, pairWeights, extras);

  // A non-finite logit in any scored row makes the loss NaN, even for losses that do not read
  // that row's sequence (e.g. sft never reads the rejected sequences).
  let loss = pair.loss;
  for (let r = 0; r < rows; r++) if (labels[r] !== ignoreIndex && Number.isNaN(stats.logp[r]!)) loss = NaN;

  // grad[r, v] = G_r·t'(z[r, v])·(1[v = y_r] − p[r, v]) (t' = 1 without a transform), G_r =
  // G_{seq(r)}·w_r + H_{seq(r)} (LD-DPO's weight and the plain-sum terms; G_{seq(r)} without them);
  // the true-class term 1 − p_y = −expm1(logp).
  const grad = new Float64Array(rows * vocab); // ignored rows stay exactly 0
  for (let s = 0; s < S; s++) {
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) {
      const y = labels[r]!;
      if (y === ignoreIndex) continue;
      const G = pair.seqGrad[s]! * tokenWeights[r]! + pair.plainSeqGrad[s]!;
      const p = stats.probs(r);
      const slope = stats.slopes(r);
      for (let v = 0; v < vocab; v++) grad[r * vocab + v] = -G * slope[v]! * p[v]!;
      grad[r * vocab + y] = G * slope[y]! * -Math.expm1(stats.logp[r]!);
    }
  }

  // Rewards and logps as TRL reports them: averaged when ipo, simpo or orpo is in the list.
  const averaged = input.lossTypes.some((t) => LOSS_KINDS[t].reportsAveraged);
  const alphaRewards = input.alpha !== 0 && input.lossTypes.includes('simpo');
  const chosenLogps = new Float64Array(B);
  const rejectedLogps = new Float64Array(B);
  const chosenRewards = new Float64Array(B);
  const rejectedRewards = new Float64Array(B);
  for (let i = 0; i < B; i++) {
    const dc = averaged ? Math.max(seqCounts[i]!, 1) : 1;
    const dr = averaged ? Math.max(seqCounts[B + i]!, 1) : 1;
    const ratioC = extras.ratios ? extras.ratios[i]! : seqLogps[i]! - (refSums ? refSums.chosen[i]! : 0);
    const ratioR = extras.ratios ? extras.ratios[B + i]! : seqLogps[B + i]! - (refSums ? refSums.rejected[i]! : 0);
    chosenLogps[i] = seqLogps[i]! / dc;
    rejectedLogps[i] = seqLogps[B + i]! / dr;
    chosenRewards[i] = (beta * ratioC) / dc;
    rejectedRewards[i] = (beta * ratioR) / dr;
    if (alphaRewards) {
      // TRL's CPOTrainer logs β·r(x̄) when alpha ≠ 0
      chosenRewards[i] = beta * alphaReward(input.alpha, seqLogps[i]! / Math.max(seqCounts[i]!, 1)).value;
      rejectedRewards[i] = beta * alphaReward(input.alpha, seqLogps[B + i]! / Math.max(seqCounts[B + i]!, 1)).value;
    }
  }

  const mean = (xs: ArrayLike<number>) => {
    let t = 0;
    for (let i = 0; i < xs.length; i++) t += xs[i]!;
    return xs.length === 0 ? 0 : t / xs.length;
  };

  // Token-level metrics over non-ignored rows.
  const chosenEnd = cuSeqlens[B]!; // rows [0, chosenEnd) belong to chosen sequences
  let chosenLogitSum = 0, chosenRows = 0, rejectedLogitSum = 0, rejectedRows = 0;
  let entropySum = 0, correctChosen = 0, num_tokens = 0;
  for (let r = 0; r < rows; r++) {
    if (labels[r] === ignoreIndex) continue;
    num_tokens += 1;
    entropySum += stats.entropy[r]!;
    if (r < chosenEnd) {
      chosenLogitSum += stats.rowMeanLogit[r]!;
      chosenRows += 1;
      correctChosen += stats.correct[r]!;
    } else {
      rejectedLogitSum += stats.rowMeanLogit[r]!;
      rejectedRows += 1;
    }
  }

  const metrics: DpoMetrics = {
    'rewards/chosen': mean(chosenRewards),
    'rewards/rejected': mean(rejectedRewards),
    'rewards/accuracies': mean(Array.from(chosenRewards, (c, i) => (c > rejectedRewards[i]! ? 1 : 0))),
    'rewards/margins': mean(Array.from(chosenRewards, (c, i) => c - rejectedRewards[i]!)),
    'logps/chosen': mean(chosenLogps),
    'logps/rejected': mean(rejectedLogps),
    'logits/chosen': chosenRows === 0 ? 0 : chosenLogitSum / chosenRows,
    'logits/rejected': rejectedRows === 0 ? 0 : rejectedLogitSum / rejectedRows,
    entropy: num_tokens === 0 ? 0 : entropySum / num_tokens,
    mean_token_accuracy: chosenRows === 0 ? 0 : correctChosen / chosenRows,
    num_tokens,
  };

  return {
    loss,
    losses: pair.losses,
    seqLogps,
    seqCounts,
    chosenLogps,
    rejectedLogps,
    chosenRewards,
    rejectedRewards,
    metrics,
    seqGrad: pair.seqGrad,
    plainSeqGrad: pair.plainSeqGrad,
    tokenWeights,
    grad,
    pairWeights,
  };
}

// ---------------------------------------------------------------------------------------------
// Online RL: the GRPO family's per-token policy loss (SPEC.md "Policy loss")

/** TRL's GRPO loss_type values (lib/loss-kinds.ts): how the per-token terms are weighted into the loss. */
export type { PolicyLossType };

export interface PolicyReferenceInput extends HeadTransformInput {
  logits: Float64Array; // R*V, decoded to float64
  rows: number;
  vocab: number;
  labels: Int32Array; // R
  cuSeqlens: Int32Array; // S+1
  ignoreIndex: number;
  /** S (one per sequence) or R (one per token, with advantagesPerToken). */
  advantages: Float64Array;
  advantagesPerToken: boolean;
  /** R, or null: on-policy (the ratio is 1, its gradient kept). */
  oldLogps: Float64Array | null;
  /** R, or null (then beta must be 0 and kl is null). */
  refLogps: Float64Array | null;
  beta: number;
  epsilon: number;
  epsilonHigh: number;
  entropyCoef: number;
  lossType: PolicyLossType;
  /** dr_grpo's L (TRL's max_completion_length). */
  maxCompletionLength: number;
  /** dapo's divisor (TRL's num_items_in_batch); the call's completion tokens when 0. */
  numItemsInBatch: number;
}

export interface PolicyReferenceOutput {
  loss: number;
  logps: Float64Array; // R, 0 where ignored
  /** R: ∂loss/∂logp_t (the clipped surrogate and the KL term, aggregation weight included). */
  tokenGrad: Float64Array;
  grad: Float64Array; // R*V
  metrics: { 'clip_ratio/low_mean': number; 'clip_ratio/high_mean': number; 'clip_ratio/region_mean': number; kl: number | null; entropy: number };
}

/**
 * The clipped surrogate −min(r·A, clip(r, 1 − ε, 1 + ε_high)·A), r = exp(logp − old), and its
 * derivative in logp with torch's rules (TRL differentiates this expression): min splits the
 * gradient in half on a tie, clamp passes it on [lo, hi] inclusive.
 */
export function referenceSurrogate(logp: number, old: number, A: number, epsilon: number, epsilonHigh: number): { value: number; dLogp: number; r: number } {
  const r = Math.exp(logp - old);
  const lo = 1 - epsilon;
  const hi = 1 + epsilonHigh;
  const clipped = Math.min(Math.max(r, lo), hi);
  const l1 = r * A;
  const l2 = clipped * A;
  const inRange = r >= lo && r <= hi ? 1 : 0;
  // d l1/d logp = A·r; d l2/d logp = A·r on [lo, hi], else 0.
  const d1 = A * r;
  const d2 = A * r * inRange;
  const dMin = l1 < l2 ? d1 : l1 > l2 ? d2 : (d1 + d2) / 2;
  return { value: -Math.min(l1, l2), dLogp: -dMin, r };
}

/** k3, TRL's per-token KL: exp(ref − logp) − (ref − logp) − 1, and its derivative in logp. */
export function referenceK3(logp: number, ref: number): { value: number; dLogp: number } {
  const d = ref - logp;
  return { value: Math.exp(d) - d - 1, dLogp: 1 - Math.exp(d) };
}

/** The weight of each completion token of sequence s in the loss (TRL's loss_type). */
export function referencePolicyWeights(
  lossType: PolicyLossType,
  counts: Int32Array,
  maxCompletionLength: number,
  numItemsInBatch: number,
): (s: number) => number {
  const S = counts.length;
  const total = counts.reduce((a, b) => a + b, 0);
  switch (lossType) {
    case 'grpo':
      return (s) => 1 / (S * Math.max(counts[s]!, 1));
    case 'bnpo':
      return () => 1 / Math.max(total, 1);
    case 'dr_grpo':
      return () => 1 / (S * maxCompletionLength);
    case 'dapo':
      return () => 1 / (numItemsInBatch > 0 ? numItemsInBatch : Math.max(total, 1));
  }
}

export function referencePolicyLoss(input: PolicyReferenceInput): PolicyReferenceOutput {
  const { rows, vocab, labels, cuSeqlens, ignoreIndex } = input;
  const S = cuSeqlens.length - 1;
  const stats = referenceTokenStats(input.logits, rows, vocab, labels, ignoreIndex, input);
  const counts = new Int32Array(S);
  const sequenceOf = new Int32Array(rows);
  for (let s = 0; s < S; s++) {
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) {
      sequenceOf[r] = s;
      if (labels[r] !== ignoreIndex) counts[s] = counts[s]! + 1;
    }
  }
  const weight = referencePolicyWeights(input.lossType, counts, input.maxCompletionLength, input.numItemsInBatch);
  const perToken = input.advantagesPerToken;

  let loss = 0, low = 0, high = 0, region = 0, kl = 0, entropy = 0, tokens = 0;
  const tokenGrad = new Float64Array(rows);
  const grad = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    if (labels[r] === ignoreIndex) continue;
    const s = sequenceOf[r]!;
    const w = weight(s);
    const logp = stats.logp[r]!;
    const A = perToken ? input.advantages[r]! : input.advantages[s]!;
    const old = input.oldLogps ? input.oldLogps[r]! : logp;
    const surrogate = referenceSurrogate(logp, old, A, input.epsilon, input.epsilonHigh);
    let term = surrogate.value;
    let dLogp = surrogate.dLogp;
    if (input.refLogps) {
      const k3 = referenceK3(logp, input.refLogps[r]!);
      kl += k3.value;
      if (input.beta !== 0) {
        term += input.beta * k3.value;
        dLogp += input.beta * k3.dLogp;
      }
    }
    const H = stats.entropy[r]!;
    term -= input.entropyCoef * H;
    loss += w * term;
    tokenGrad[r] = w * dLogp;
    tokens++;
    entropy += H;
    if (surrogate.r < 1 - input.epsilon && A < 0) low++;
    if (surrogate.r > 1 + input.epsilonHigh && A > 0) high++;
    if ((surrogate.r < 1 - input.epsilon && A < 0) || (surrogate.r > 1 + input.epsilonHigh && A > 0)) region++;

    // ∂/∂t_v of w·(term): G·(onehot − p) from logp, and −c·w·∂H/∂t_v = c·w·p_v·(log p_v + H)
    // from the entropy; then times t'(z_v) (the chain rule to the raw logits).
    const p = stats.probs(r);
    const slope = stats.slopes(r);
    const c = input.entropyCoef * w;
    for (let v = 0; v < vocab; v++) {
      const onehot = v === labels[r] ? 1 : 0;
      const entropyPart = c !== 0 ? c * p[v]! * (Math.log(p[v]!) + H) : 0;
      grad[r * vocab + v] = (tokenGrad[r]! * (onehot - p[v]!) + (Number.isFinite(entropyPart) ? entropyPart : 0)) * slope[v]!;
    }
  }
  const count = Math.max(tokens, 1);
  return {
    loss,
    logps: stats.logp,
    tokenGrad,
    grad,
    metrics: {
      'clip_ratio/low_mean': low / count,
      'clip_ratio/high_mean': high / count,
      'clip_ratio/region_mean': region / count,
      kl: input.refLogps ? kl / count : null,
      entropy: entropy / count,
    },
  };
}
