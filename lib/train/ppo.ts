// PPO-GT, the DPO paper's strongest baseline: PPO given the true (gold) reward. Each step samples
// several continuations per training prompt from the current policy and scores each with the gold
// reward less β times its log-ratio to the reference, log π(y) − log π_ref(y) (the KL-penalised
// reward of the DPO paper's PPO and of InstructGPT); its advantage is that reward less the mean of
// its own group (the baseline of GRPO and RLOO, so no value network is trained). The loss is
// fused-dpo's clipped policyLoss; a batch is used for `updatesPerBatch` Adam steps, the first
// on-policy (ratio 1) and the next ones against the first's log-probs, where the clip range acts.
// (The penalty is in the reward, not policyLoss's k3 term: k3's gradient in log π is at most β
// per token, which cannot hold back a policy that finds +3 per token in repeating a word.)
import { sequenceLogps } from '../loss.js';
import { policyLoss } from '../policy.js';
import { evaluatePolicy, type DpoData } from './dpo.js';
import { Adam, sampleContinuations, Workspace, WordLM, writeContext, zeroParams } from './model.js';
import { refuseUnknownKeys, TrainOptionError } from './options.js';
import { sharedFloats } from './pool.js';
import { deriveSeed, Rng } from './rng.js';

export interface PpoOptions {
  /** The KL coefficient: the reward is gold − beta·(log π(y) − log π_ref(y)). */
  beta: number;
  steps: number;
  /** Prompts per step, and continuations sampled per prompt (the group of the baseline). */
  promptsPerStep: number;
  samplesPerPrompt: number;
  lr: number;
  evalEvery: number;
  seed: number;
  /** Clip range of the ratio (default 0.2). */
  epsilon?: number;
  /** Adam steps per sampled batch (default 2). */
  updatesPerBatch?: number;
  /** Clip the gradient's global norm (default 10). */
  clipNorm?: number;
  threads?: number;
}

const PPO_OPTION_KEYS = Object.keys({
  beta: 1, steps: 1, promptsPerStep: 1, samplesPerPrompt: 1, lr: 1, evalEvery: 1, seed: 1, epsilon: 1, updatesPerBatch: 1, clipNorm: 1, threads: 1,
} satisfies Record<keyof PpoOptions, 1>);

export interface PpoStepRecord {
  step: number;
  /** policyLoss's loss of the step's first update. */
  loss: number;
  /** Mean gold reward of the step's samples, and their mean log-ratio to the reference (the penalised sequence KL). */
  sampleReward: number;
  sampleKl: number;
  /** policyLoss's kl metric (mean k3 per token) and the clipped fraction of the last update. */
  kl: number;
  clipRatio: number;
  gradNorm: number;
}

export interface PpoEvalRecord {
  step: number;
  /** As DpoEvalRecord's: one continuation per held-out prompt, the same draws for every method. */
  goldReward: number;
  kl: number;
  /** Mean loss and sample reward of the steps since the previous evaluation (null at step 0). */
  train: { loss: number; sampleReward: number } | null;
}

export interface PpoCallbacks {
  onStep?(record: PpoStepRecord): void;
  onEval?(record: PpoEvalRecord): void;
}

/** Each reward less the mean reward of its group (groups of `size` consecutive entries). */
export function groupAdvantages(rewards: ArrayLike<number>, size: number): Float64Array {
  const out = new Float64Array(rewards.length);
  for (let g = 0; g < rewards.length; g += size) {
    let sum = 0;
    for (let i = g; i < g + size; i++) sum += rewards[i]!;
    const mean = sum / size;
    for (let i = g; i < g + size; i++) out[i] = rewards[i]! - mean;
  }
  return out;
}

/** Run PPO-GT from `ref` on the prompts of the data's training pairs. */
export function trainPpo(ref: WordLM, data: DpoData, options: PpoOptions, callbacks: PpoCallbacks = {}): { policy: WordLM; evals: PpoEvalRecord[] } {
  refuseUnknownKeys('trainPpo options', options, PPO_OPTION_KEYS);
  const { promptsPerStep: M, samplesPerPrompt: G } = options;
  if (!(G >= 2)) throw new TrainOptionError('samplesPerPrompt', 'at least 2 (the group baseline needs two samples)', G);
  const prompts = data.train.pairs.map((p) => p.prompt);
  if (prompts.length < M) throw new TrainOptionError('promptsPerStep', `at most ${prompts.length} (the training prompts)`, M);
  const K = data.completionLength;
  const P = data.promptLength;
  const { context: C, vocab: V } = ref.config;
  const S = M * G;
  const rows = S * K;
  const policy = ref.clone();
  const ws = new Workspace(policy.config, policy.precision, rows);
  const grads = policy.zeros();
  const adam = new Adam(policy, { lr: options.lr, clipNorm: options.clipNorm ?? 10 });
  const logits = sharedFloats(rows * V) as Float32Array;
  const grad = sharedFloats(rows * V) as Float32Array;
  const contexts = new Int32Array(rows * C);
  const labels = new Int32Array(rows);
  // every row its own sequence: sequenceLogps gives per-token log-probs
  const perRow = Int32Array.from({ length: rows + 1 }, (_, i) => i);
  const orderRng = new Rng(deriveSeed(options.seed, 'order'));
  const sampleRng = new Rng(deriveSeed(options.seed, 'ppo-samples'));
  const evalSeed = deriveSeed(options.seed, 'eval');
  const order = Int32Array.from({ length: prompts.length }, (_, i) => i);
  orderRng.shuffle(order);
  let cursor = 0;
  const warmup = Math.min(10, Math.floor(options.steps / 10));
  const updates = options.updatesPerBatch ?? 2;
  const tensors = {
    logits: { data: logits, shape: [S, K, V] },
    labels: { data: labels, shape: [S, K] },
  };

  const evals: PpoEvalRecord[] = [];
  let windowLoss = 0, windowReward = 0, windowSteps = 0;
  const evaluate = (step: number) => {
    const record: PpoEvalRecord = {
      step,
      ...evaluatePolicy(policy, ref, data, evalSeed, options.threads),
      train: windowSteps > 0 ? { loss: windowLoss / windowSteps, sampleReward: windowReward / windowSteps } : null,
    };
    windowLoss = windowReward = windowSteps = 0;
    evals.push(record);
    callbacks.onEval?.(record);
  };

  evaluate(0);
  const group: Int32Array[] = new Array(S);
  const rewards = new Float64Array(S);
  const penalised = new Float64Array(S);
  for (let step = 1; step <= options.steps; step++) {
    for (let m = 0; m < M; m++) {
      if (cursor === order.length) {
        orderRng.shuffle(order);
        cursor = 0;
      }
      const prompt = prompts[order[cursor++]!]!;
      for (let g = 0; g < G; g++) group[m * G + g] = prompt;
    }
    const seqs = sampleContinuations(policy, ws, group, K, sampleRng);
    seqs.forEach((seq, s) => {
      rewards[s] = data.reward.score(seq, P);
      for (let t = 0; t < K; t++) {
        labels[s * K + t] = seq[P + t]!;
        writeContext(seq, P + t - 1, C, contexts, (s * K + t) * C);
      }
    });
    const tokenLogps = () => sequenceLogps({ logits: { data: logits, shape: [rows, V] }, labels: { data: labels, shape: [rows] }, cuSeqlens: perRow, threads: options.threads }).logps;
    ref.forward(ws, contexts, rows, logits, null);
    const refLogps = tokenLogps();
    policy.forward(ws, contexts, rows, logits, null);
    const samplerLogps = tokenLogps();
    let sampleKl = 0;
    for (let s = 0; s < S; s++) {
      let logRatio = 0;
      for (let t = s * K; t < (s + 1) * K; t++) logRatio += samplerLogps[t]! - refLogps[t]!;
      penalised[s] = rewards[s]! - options.beta * logRatio;
      sampleKl += logRatio / S;
    }
    const advantages = groupAdvantages(penalised, G);

    const lr = step <= warmup ? (options.lr * step) / warmup : options.lr;
    let firstLoss = NaN, kl = NaN, clipRatio = NaN, gradNorm = NaN;
    for (let u = 0; u < updates; u++) {
      if (u > 0) policy.forward(ws, contexts, rows, logits, null);
      const out = policyLoss({
        ...tensors,
        advantages,
        // the first update is on-policy: the sampler is the current policy (ratio 1, its gradient kept)
        oldLogps: u === 0 ? undefined : samplerLogps,
        // beta 0: refLogps only for policyLoss's kl metric (the penalty is in the reward)
        refLogps,
        beta: 0,
        epsilon: options.epsilon ?? 0.2,
        lossType: 'grpo',
        grad: { data: grad, shape: [S, K, V] },
        threads: options.threads,
      });
      if (u === 0) firstLoss = out.loss;
      kl = out.metrics.kl ?? NaN;
      clipRatio = out.metrics['clip_ratio/region_mean'];
      zeroParams(grads);
      policy.backward(ws, contexts, rows, grad, null, grads);
      gradNorm = adam.update(grads, lr);
    }
    let meanReward = 0;
    for (const r of rewards) meanReward += r / S;
    windowLoss += firstLoss;
    windowReward += meanReward;
    windowSteps++;
    callbacks.onStep?.({ step, loss: firstLoss, sampleReward: meanReward, sampleKl, kl, clipRatio, gradNorm });
    if (step % options.evalEvery === 0 || step === options.steps) evaluate(step);
  }
  return { policy, evals };
}
