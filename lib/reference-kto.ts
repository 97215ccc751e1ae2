/**
 * Float64 reference of ktoLoss (SPEC.md, "KTO"), in TRL's terms: every backend is checked against it.
 */
import { referenceTokenStats, sumBySequence, type HeadTransformInput } from './reference.js';

export interface ReferenceKtoInput extends HeadTransformInput {
  logits: Float64Array; // R*V, decoded to float64
  rows: number;
  vocab: number;
  labels: Int32Array;
  cuSeqlens: Int32Array; // S+1
  ignoreIndex: number;
  desirable: ArrayLike<boolean | number>; // S
  ref: Float64Array; // S reference sums
  lossType: 'kto' | 'apo_zero_unpaired';
  beta: number;
  desirableWeight: number;
  undesirableWeight: number;
  /** The KL batch's policy and reference sums (kto only). */
  kl: { policy: Float64Array; ref: Float64Array } | null;
  scale: number; // 1/S (TRL's mean), 1 (sum) or 1/normalizer
}

export interface ReferenceKtoOutput {
  loss: number;
  losses: Float64Array; // S, weighted
  seqLogps: Float64Array;
  seqCounts: Int32Array;
  rewards: Float64Array;
  seqGrad: Float64Array;
  z0: number;
  grad: Float64Array;
  /** Completion-token sums for the metrics, by side (chosen = desirable). */
  logitSum: { chosen: number; rejected: number };
  entropy: number;
  meanTokenAccuracy: number;
  numTokens: number;
}

const sigmoid = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

export function referenceKto(input: ReferenceKtoInput): ReferenceKtoOutput {
  const { logits, rows, vocab, labels, cuSeqlens, ignoreIndex, beta } = input;
  const S = cuSeqlens.length - 1;
  const stats = referenceTokenStats(logits, rows, vocab, labels, ignoreIndex, input);
  const { sums: seqLogps, counts: seqCounts } = sumBySequence(stats.logp, labels, cuSeqlens, ignoreIndex);

  // z0 = max(0, mean(KL policy − KL ref)), detached (TRL: .mean().detach() then clamp(min=0)).
  let z0 = 0;
  if (input.lossType === 'kto') {
    const { policy, ref } = input.kl!;
    let sum = 0;
    for (let j = 0; j < policy.length; j++) sum += policy[j]! - ref[j]!;
    const mean = sum / policy.length;
    z0 = Number.isNaN(mean) ? mean : Math.max(0, mean);
  }

  // TRL: desirable 1 − σ(β(x − z0)), undesirable 1 − σ(β(z0 − x)); apo_zero_unpaired: 1 − σ(βx) and σ(βx).
  const losses = new Float64Array(S);
  const rewards = new Float64Array(S);
  const seqGrad = new Float64Array(S);
  let total = 0;
  for (let s = 0; s < S; s++) {
    const desirable = input.desirable[s] === true || input.desirable[s] === 1;
    const x = seqLogps[s]! - input.ref[s]!;
    const w = desirable ? input.desirableWeight : input.undesirableWeight;
    let loss: number, dX: number;
    if (input.lossType === 'kto') {
      const v = desirable ? beta * (x - z0) : beta * (z0 - x);
      loss = 1 - sigmoid(v);
      dX = (desirable ? -beta : beta) * sigmoid(v) * (1 - sigmoid(v));
    } else {
      loss = desirable ? 1 - sigmoid(beta * x) : sigmoid(beta * x);
      dX = (desirable ? -beta : beta) * sigmoid(beta * x) * (1 - sigmoid(beta * x));
    }
    losses[s] = w * loss;
    seqGrad[s] = input.scale * w * dX;
    rewards[s] = beta * x;
    total += losses[s]!;
  }
  let loss = input.scale * total;
  for (let r = 0; r < rows; r++) if (labels[r] !== ignoreIndex && Number.isNaN(stats.logp[r]!)) loss = NaN;

  const grad = new Float64Array(rows * vocab);
  const logitSum = { chosen: 0, rejected: 0 };
  let entropySum = 0, numTokens = 0, correct = 0, chosenTokens = 0;
  for (let s = 0; s < S; s++) {
    const desirable = input.desirable[s] === true || input.desirable[s] === 1;
    for (let r = cuSeqlens[s]!; r < cuSeqlens[s + 1]!; r++) {
      const y = labels[r]!;
      if (y === ignoreIndex) continue;
      numTokens += 1;
      entropySum += stats.entropy[r]!;
      logitSum[desirable ? 'chosen' : 'rejected'] += stats.rowMeanLogit[r]! * vocab;
      if (desirable) {
        chosenTokens += 1;
        correct += stats.correct[r]!;
      }
      const p = stats.probs(r);
      const slope = stats.slopes(r);
      const G = seqGrad[s]!;
      for (let v = 0; v < vocab; v++) grad[r * vocab + v] = -G * slope[v]! * p[v]!;
      grad[r * vocab + y] = G * slope[y]! * -Math.expm1(stats.logp[r]!);
    }
  }
  return {
    loss,
    losses,
    seqLogps,
    seqCounts,
    rewards,
    seqGrad,
    z0,
    grad,
    logitSum,
    entropy: numTokens ? entropySum / numTokens : 0,
    meanTokenAccuracy: chosenTokens ? correct / chosenTokens : 0,
    numTokens,
  };
}
