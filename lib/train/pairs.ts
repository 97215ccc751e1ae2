// Preference pairs, and the padded [2B, T, V] batch fused-dpo reads.
//
// A pair is a prompt (BOS + a sentence's first words) and two K-token continuations sampled from
// the reference model, the one with the higher gold reward chosen (ties dropped). A batch lays
// out 2B sequences of prompt + continuation, T = P + K tokens each: sequences 0..B-1 the chosen,
// B..2B-1 the rejected. The logits at position t predict token t+1, so the K rows t = P-1 …
// P+K-2 carry labels (the continuation) and the other rows are -100: the model computes only
// the labelled rows, and fused-dpo never reads the others.
import { sequenceLogps } from '../loss.js';
import { sampleContinuations, Workspace, WordLM, writeContext, type ModelConfig, type Params } from './model.js';
import { sharedFloats } from './pool.js';
import type { GoldReward } from './reward.js';
import type { Rng } from './rng.js';

export const IGNORE_INDEX = -100;

export interface PreferencePair {
  /** BOS and the prompt words (P tokens). */
  prompt: Int32Array;
  /** The preferred continuation (K tokens). */
  chosen: Int32Array;
  rejected: Int32Array;
  chosenReward: number;
  rejectedReward: number;
}

export interface PairSet {
  pairs: PreferencePair[];
  /** Prompts sampled, and how many gave equal rewards (dropped). */
  prompts: number;
  ties: number;
  /** The reference model's log-prob sums of each pair's chosen and rejected continuation. */
  refChosen: Float64Array;
  refRejected: Float64Array;
}

/** Sample two continuations per prompt from `ref` and keep the pairs the gold reward tells apart. */
export function samplePairs(
  ref: WordLM, prompts: readonly Int32Array[], K: number, reward: GoldReward, rng: Rng,
  onProgress?: (promptsDone: number) => void, chunk = 256,
): { pairs: PreferencePair[]; ties: number } {
  const ws = new Workspace(ref.config, ref.precision, chunk);
  const pairs: PreferencePair[] = [];
  let ties = 0;
  for (let start = 0; start < prompts.length; start += chunk) {
    const group = prompts.slice(start, start + chunk);
    const first = sampleContinuations(ref, ws, group, K, rng);
    const second = sampleContinuations(ref, ws, group, K, rng);
    group.forEach((prompt, i) => {
      const a = first[i]!.subarray(prompt.length), b = second[i]!.subarray(prompt.length);
      const ra = reward.score(a), rb = reward.score(b);
      if (ra === rb) {
        ties++;
        return;
      }
      const aWins = ra > rb;
      pairs.push({
        prompt,
        chosen: aWins ? a : b,
        rejected: aWins ? b : a,
        chosenReward: Math.max(ra, rb),
        rejectedReward: Math.min(ra, rb),
      });
    });
    onProgress?.(start + group.length);
  }
  return { pairs, ties };
}

/** Reusable buffers for batches of up to `maxPairs` pairs with prompts of P and continuations of K tokens. */
export class PairBatch {
  readonly T: number;
  readonly V: number;
  /** Pairs in the current batch (≤ maxPairs). */
  pairs = 0;
  /** [2B·T] labels: the next token on continuation rows, -100 elsewhere. */
  readonly labels: Int32Array;
  /** For each computed position n (2B·K of them): its row in the [2B·T] layout. */
  readonly rows: Int32Array;
  /** [2B·K·C] context tokens of each computed position. */
  readonly contexts: Int32Array;
  /** Logits as the model writes them and fused-dpo reads them (shared memory, for the kernel pool's threads). */
  readonly logits: Float32Array;
  /** The gradient fused-dpo writes and the model's backward reads. */
  readonly grad: Float32Array;

  constructor(readonly maxPairs: number, readonly P: number, readonly K: number, readonly config: ModelConfig) {
    this.T = P + K;
    this.V = config.vocab;
    const seqs = 2 * maxPairs;
    this.labels = new Int32Array(seqs * this.T);
    this.rows = new Int32Array(seqs * K);
    this.contexts = new Int32Array(seqs * K * config.context);
    const size = seqs * this.T * this.V;
    this.logits = sharedFloats(size) as Float32Array;
    this.grad = sharedFloats(size) as Float32Array;
  }

  /** Sequences in the current batch (2B). */
  get sequences(): number {
    return 2 * this.pairs;
  }

  /** Positions the model computes in the current batch (2B·K). */
  get positions(): number {
    return 2 * this.pairs * this.K;
  }

  /** Lay out pairs[indices[i]] for i < count as the batch. */
  fill(pairs: readonly PreferencePair[], indices: ArrayLike<number>, count = indices.length): void {
    if (count > this.maxPairs) throw new Error(`PairBatch: ${count} pairs, room for ${this.maxPairs}`);
    const { P, T } = this;
    const C = this.config.context;
    this.pairs = count;
    const seq = new Int32Array(T);
    let n = 0;
    for (let s = 0; s < 2 * count; s++) {
      const pair = pairs[indices[s % count]!]!;
      if (pair.prompt.length !== P) throw new Error(`PairBatch: prompt of ${pair.prompt.length} tokens, expected ${P}`);
      seq.set(pair.prompt);
      seq.set(s < count ? pair.chosen : pair.rejected, P);
      for (let t = 0; t < T; t++) {
        const labelled = t >= P - 1 && t <= T - 2;
        this.labels[s * T + t] = labelled ? seq[t + 1]! : IGNORE_INDEX;
        if (labelled) {
          this.rows[n] = s * T + t;
          writeContext(seq, t, C, this.contexts, n * C);
          n++;
        }
      }
    }
  }

  /** Compute `model`'s logits for the current batch into `logits` (the fused-dpo input). */
  forward(model: WordLM, ws: Workspace): void {
    model.forward(ws, this.contexts, this.positions, this.logits, this.rows);
  }

  /** Back-propagate `grad` (as fused-dpo wrote it) through the model's last forward pass. */
  backward(model: WordLM, ws: Workspace, grads: Params): void {
    model.backward(ws, this.contexts, this.positions, this.grad, this.rows, grads);
  }

  /** The fused-dpo tensors of the current batch. */
  tensors(): { logits: { data: Float32Array; shape: number[] }; labels: { data: Int32Array; shape: number[] }; grad: { data: Float32Array; shape: number[] } } {
    const S = this.sequences, T = this.T, V = this.V;
    return {
      logits: { data: this.logits.subarray(0, S * T * V), shape: [S, T, V] },
      labels: { data: this.labels.subarray(0, S * T), shape: [S, T] },
      grad: { data: this.grad.subarray(0, S * T * V), shape: [S, T, V] },
    };
  }
}

/** The reference model's log-prob sums of every pair's two continuations (fused-dpo's sequenceLogps), once. */
export function referenceLogps(ref: WordLM, pairs: readonly PreferencePair[], P: number, K: number, chunk = 32, threads?: number): { chosen: Float64Array; rejected: Float64Array } {
  const chosen = new Float64Array(pairs.length);
  const rejected = new Float64Array(pairs.length);
  const batch = new PairBatch(chunk, P, K, ref.config);
  const ws = new Workspace(ref.config, ref.precision, 2 * chunk * K);
  for (let start = 0; start < pairs.length; start += chunk) {
    const count = Math.min(chunk, pairs.length - start);
    batch.fill(pairs, Int32Array.from({ length: count }, (_, i) => start + i));
    batch.forward(ref, ws);
    const { logits, labels } = batch.tensors();
    const out = sequenceLogps({ logits, labels, threads });
    chosen.set(out.logps.subarray(0, count), start);
    rejected.set(out.logps.subarray(count, 2 * count), start);
  }
  return { chosen, rejected };
}

/** Sample pairs for `prompts` and attach the reference log-probs. */
export function buildPairSet(
  ref: WordLM, prompts: readonly Int32Array[], K: number, reward: GoldReward, rng: Rng,
  threads?: number, onProgress?: (promptsDone: number) => void,
): PairSet {
  const { pairs, ties } = samplePairs(ref, prompts, K, reward, rng, onProgress);
  const P = prompts[0]?.length ?? 1;
  const logps = referenceLogps(ref, pairs, P, K, 32, threads);
  return { pairs, prompts: prompts.length, ties, refChosen: logps.chosen, refRejected: logps.rejected };
}
