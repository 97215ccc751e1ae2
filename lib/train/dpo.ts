// The DPO loop: the policy starts as a copy of the reference; each step lays out a batch of
// preference pairs, computes the policy's logits, asks fused-dpo for the loss and ∂loss/∂logits,
// back-propagates that through the model and takes an Adam step. Every few steps it evaluates
// the policy on held-out prompts: the gold reward of its samples and its KL to the reference.
import { dpoLoss, sequenceLogps } from '../loss.js';
import type { LossType } from '../loss-kinds.js';
import type { DpoMetrics } from '../types.js';
import { Adam, sampleContinuations, Workspace, WordLM, writeContext, zeroParams } from './model.js';
import { refuseUnknownKeys, TrainOptionError } from './options.js';
import { PairBatch, type PairSet } from './pairs.js';
import { sharedFloats } from './pool.js';
import type { GoldReward } from './reward.js';
import { deriveSeed, Rng } from './rng.js';

export interface DpoOptions {
  beta: number;
  /** Any fused-dpo loss type, or a list of them (default 'sigmoid'). */
  lossType?: LossType | LossType[];
  /** Optimizer steps. */
  steps: number;
  /** Preference pairs per step (B). */
  batchSize: number;
  /** Adam learning rate (constant after a short warm-up). */
  lr: number;
  /** Evaluate every this many steps (and at step 0 and the last step). */
  evalEvery: number;
  /** Seeds the batch order and the evaluation samples (which are the same for every β). */
  seed: number;
  /** α of the 'unlikelihood' loss type (default 1). */
  unlikelihoodAlpha?: number;
  /** Clip the gradient's global norm (default 10). */
  clipNorm?: number;
  /** fused-dpo worker threads (default: all cores). */
  threads?: number;
}

// (`satisfies`: the compiler checks that the list names every option and nothing else)
const DPO_OPTION_KEYS = Object.keys({ beta: 1, lossType: 1, steps: 1, batchSize: 1, lr: 1, evalEvery: 1, seed: 1, unlikelihoodAlpha: 1, clipNorm: 1, threads: 1 } satisfies Record<keyof DpoOptions, 1>);

/** Whether trainDpo evaluates after this step: every `evalEvery` steps, and after the last. */
export function isEvalStep(step: number, options: Pick<DpoOptions, 'steps' | 'evalEvery'>): boolean {
  return step % options.evalEvery === 0 || step === options.steps;
}

export interface DpoData {
  /** Training pairs, with the reference log-probs. */
  train: PairSet;
  /** Held-out pairs for the loss metrics at evaluation. */
  heldOut: PairSet;
  /** Held-out prompts the policy continues at evaluation. */
  evalPrompts: readonly Int32Array[];
  /** Prompt length P (BOS included) and continuation length K. */
  promptLength: number;
  completionLength: number;
  reward: GoldReward;
}

export interface DpoStepRecord {
  step: number;
  loss: number;
  metrics: DpoMetrics;
  gradNorm: number;
}

export interface PairMetrics {
  loss: number;
  accuracy: number;
  margin: number;
  chosenReward: number;
  rejectedReward: number;
}

export interface DpoEvalRecord {
  step: number;
  /** Mean gold reward of one sampled continuation per held-out prompt. */
  goldReward: number;
  /** Sequence-level KL(policy ‖ reference): the mean of log π(y) − log π_ref(y) over those samples. */
  kl: number;
  /** Mean loss and reward accuracy of the training batches since the previous evaluation (null at step 0). */
  train: { loss: number; accuracy: number } | null;
  /** DPO loss metrics of the held-out pairs (forward only). */
  heldOut: PairMetrics;
}

export interface DpoCallbacks {
  onStep?(record: DpoStepRecord): void;
  onEval?(record: DpoEvalRecord): void;
}

export interface DpoResult {
  policy: WordLM;
  evals: DpoEvalRecord[];
}

/** What the evaluation samples: prompts, continuations, their rewards and log-probs. */
export interface PolicySamples {
  sequences: Int32Array[];
  rewards: Float64Array;
  policyLogps: Float64Array;
  refLogps: Float64Array;
}

/**
 * One continuation per prompt from `policy` (seeded: the same seed gives the same random draws),
 * with its gold reward and the log-probs of policy and reference (fused-dpo's sequenceLogps).
 */
export function samplePolicy(policy: WordLM, ref: WordLM, prompts: readonly Int32Array[], K: number, reward: GoldReward, seed: number, threads?: number, chunk = 128): PolicySamples {
  const { vocab: V, context: C } = policy.config;
  const rng = new Rng(seed);
  const ws = new Workspace(policy.config, policy.precision, chunk * K);
  const kept = sharedFloats(chunk * K * V) as Float32Array;
  const refShared = sharedFloats(chunk * K * V) as Float32Array;
  const contexts = new Int32Array(chunk * K * C);
  const sequences: Int32Array[] = [];
  const rewards = new Float64Array(prompts.length);
  const policyLogps = new Float64Array(prompts.length);
  const refLogps = new Float64Array(prompts.length);
  for (let start = 0; start < prompts.length; start += chunk) {
    const group = prompts.slice(start, start + chunk);
    const M = group.length;
    const seqs = sampleContinuations(policy, ws, group, K, rng, { logits: kept });
    // row m·K + t: the prediction of continuation token t of prompt m
    const labels = new Int32Array(M * K);
    seqs.forEach((seq, m) => {
      const P = group[m]!.length;
      for (let t = 0; t < K; t++) {
        labels[m * K + t] = seq[P + t]!;
        writeContext(seq, P + t - 1, C, contexts, (m * K + t) * C);
      }
      rewards[start + m] = reward.score(seq, P);
    });
    ref.forward(ws, contexts, M * K, refShared, null);
    const logps = (logits: Float32Array) => {
      return sequenceLogps({
        logits: { data: logits.subarray(0, M * K * V), shape: [M, K, V] },
        labels: { data: labels, shape: [M, K] },
        threads,
      }).logps;
    };
    policyLogps.set(logps(kept), start);
    refLogps.set(logps(refShared), start);
    sequences.push(...seqs);
  }
  return { sequences, rewards, policyLogps, refLogps };
}

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return a.length ? s / a.length : 0;
}

/** The evaluation every method shares: mean gold reward of the held-out samples and their sequence-level KL to the reference. */
export function evaluatePolicy(policy: WordLM, ref: WordLM, data: DpoData, seed: number, threads?: number): { goldReward: number; kl: number } {
  const samples = samplePolicy(policy, ref, data.evalPrompts, data.completionLength, data.reward, seed, threads);
  const kl = new Float64Array(samples.policyLogps.length);
  for (let i = 0; i < kl.length; i++) kl[i] = samples.policyLogps[i]! - samples.refLogps[i]!;
  return { goldReward: mean(samples.rewards), kl: mean(kl) };
}

/** fused-dpo's loss metrics (forward only) on a whole pair set. */
export function pairMetrics(policy: WordLM, set: PairSet, options: DpoOptions, batch: PairBatch, ws: Workspace): PairMetrics {
  const sums = { loss: 0, accuracy: 0, margin: 0, chosenReward: 0, rejectedReward: 0 };
  const n = set.pairs.length;
  for (let start = 0; start < n; start += batch.maxPairs) {
    const count = Math.min(batch.maxPairs, n - start);
    const idx = Int32Array.from({ length: count }, (_, i) => start + i);
    batch.fill(set.pairs, idx);
    batch.forward(policy, ws);
    const { logits, labels } = batch.tensors();
    const out = dpoLoss({
      logits,
      labels,
      ref: { chosen: set.refChosen.subarray(start, start + count), rejected: set.refRejected.subarray(start, start + count) },
      beta: options.beta,
      lossType: options.lossType ?? 'sigmoid',
      unlikelihoodAlpha: options.unlikelihoodAlpha,
      grad: false,
      threads: options.threads,
    });
    const m = out.metrics;
    sums.loss += out.loss * count;
    sums.accuracy += m['rewards/accuracies'] * count;
    sums.margin += m['rewards/margins'] * count;
    sums.chosenReward += m['rewards/chosen'] * count;
    sums.rejectedReward += m['rewards/rejected'] * count;
  }
  const d = Math.max(n, 1);
  return {
    loss: sums.loss / d,
    accuracy: sums.accuracy / d,
    margin: sums.margin / d,
    chosenReward: sums.chosenReward / d,
    rejectedReward: sums.rejectedReward / d,
  };
}

/** Run DPO from `ref` on the data's training pairs. */
export function trainDpo(ref: WordLM, data: DpoData, options: DpoOptions, callbacks: DpoCallbacks = {}): DpoResult {
  refuseUnknownKeys('trainDpo options', options, DPO_OPTION_KEYS);
  const B = options.batchSize;
  const K = data.completionLength;
  const pairs = data.train.pairs;
  if (pairs.length < B) throw new TrainOptionError('batchSize', `at most ${pairs.length} (the training pairs)`, B);
  const lossType = options.lossType ?? 'sigmoid';
  const policy = ref.clone();
  const ws = new Workspace(policy.config, policy.precision, 2 * B * K);
  const grads = policy.zeros();
  const adam = new Adam(policy, { lr: options.lr, clipNorm: options.clipNorm ?? 10 });
  const batch = new PairBatch(B, data.promptLength, K, policy.config);
  const orderRng = new Rng(deriveSeed(options.seed, 'order'));
  const evalSeed = deriveSeed(options.seed, 'eval');
  const order = Int32Array.from({ length: pairs.length }, (_, i) => i);
  orderRng.shuffle(order);
  let cursor = 0;
  const warmup = Math.min(10, Math.floor(options.steps / 10));

  const evals: DpoEvalRecord[] = [];
  let windowLoss = 0, windowAccuracy = 0, windowSteps = 0;
  const evaluate = (step: number) => {
    const record: DpoEvalRecord = {
      step,
      ...evaluatePolicy(policy, ref, data, evalSeed, options.threads),
      train: windowSteps > 0 ? { loss: windowLoss / windowSteps, accuracy: windowAccuracy / windowSteps } : null,
      heldOut: pairMetrics(policy, data.heldOut, options, batch, ws),
    };
    windowLoss = windowAccuracy = windowSteps = 0;
    evals.push(record);
    callbacks.onEval?.(record);
  };

  evaluate(0);
  const indices = new Int32Array(B);
  for (let step = 1; step <= options.steps; step++) {
    for (let i = 0; i < B; i++) {
      if (cursor === order.length) {
        orderRng.shuffle(order);
        cursor = 0;
      }
      indices[i] = order[cursor++]!;
    }
    batch.fill(pairs, indices);
    batch.forward(policy, ws);
    const { logits, labels, grad } = batch.tensors();
    const out = dpoLoss({
      logits,
      labels,
      ref: {
        chosen: Float64Array.from(indices, (i) => data.train.refChosen[i]!),
        rejected: Float64Array.from(indices, (i) => data.train.refRejected[i]!),
      },
      beta: options.beta,
      lossType,
      unlikelihoodAlpha: options.unlikelihoodAlpha,
      grad,
      threads: options.threads,
    });
    zeroParams(grads);
    batch.backward(policy, ws, grads);
    const lr = step <= warmup ? (options.lr * step) / warmup : options.lr;
    const gradNorm = adam.update(grads, lr);
    windowLoss += out.loss;
    windowAccuracy += out.metrics['rewards/accuracies'];
    windowSteps++;
    callbacks.onStep?.({ step, loss: out.loss, metrics: out.metrics, gradNorm });
    if (isEvalStep(step, options)) evaluate(step);
  }
  return { policy, evals };
}
