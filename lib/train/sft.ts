// Ordinary next-token training (the "SFT" reference model of the DPO paper): random positions of
// the training stream, cross-entropy from fused-dpo's `sft` loss type, hand-written backward, Adam.
import { dpoLoss, sequenceLogps } from '../loss.js';
import type { Corpus } from './data.js';
import { Adam, Workspace, WordLM, writeContext, zeroParams } from './model.js';
import { refuseUnknownKeys } from './options.js';
import { sharedFloats } from './pool.js';
import { Rng } from './rng.js';

export interface SftOptions {
  steps: number;
  /** Token positions per step. */
  batchSize: number;
  /** Adam learning rate; cosine-decayed to a tenth over the run. */
  lr: number;
  seed: number;
  /** Held-out positions for the final loss (default 4096). */
  evalTokens?: number;
  /** fused-dpo worker threads (default: all cores). */
  threads?: number;
}

const SFT_OPTION_KEYS = Object.keys({ steps: 1, batchSize: 1, lr: 1, seed: 1, evalTokens: 1, threads: 1 } satisfies Record<keyof SftOptions, 1>);

export interface SftStep {
  step: number;
  /** Mean next-token NLL (nats) of this step's batch. */
  loss: number;
}

export interface SftResult {
  /** Mean NLL (nats) of the held-out tokens before and after training. */
  heldOutLossBefore: number;
  heldOutLoss: number;
  /** Mean batch loss over the last tenth of the steps. */
  trainLoss: number;
}

/** Mean next-token NLL of fixed held-out positions (forward only, log-probs by fused-dpo). */
export function heldOutLoss(model: WordLM, stream: Int32Array, positions: Int32Array, threads?: number): number {
  const { context: C, vocab: V } = model.config;
  const chunk = 512;
  const ws = new Workspace(model.config, model.precision, chunk);
  const logits = sharedFloats(chunk * V) as Float32Array; // the pool's threads write here, fused-dpo reads
  const contexts = new Int32Array(chunk * C);
  let sum = 0;
  for (let start = 0; start < positions.length; start += chunk) {
    const n = Math.min(chunk, positions.length - start);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const p = positions[start + i]!;
      writeContext(stream, p - 1, C, contexts, i * C);
      labels[i] = stream[p]!;
    }
    model.forward(ws, contexts, n, logits, null);
    const out = sequenceLogps({
      logits: { data: logits.subarray(0, n * V), shape: [n, V] },
      labels: { data: labels, shape: [n] },
      cuSeqlens: Int32Array.of(0, n),
      threads,
    });
    sum -= out.logps[0]!;
  }
  return sum / positions.length;
}

/** Train `model` in place on the corpus' training stream. */
export function pretrain(model: WordLM, corpus: Corpus, options: SftOptions, onStep?: (s: SftStep) => void): SftResult {
  refuseUnknownKeys('pretrain options', options, SFT_OPTION_KEYS);
  const { context: C, vocab: V } = model.config;
  const N = options.batchSize;
  const rng = new Rng(options.seed);
  const stream = corpus.trainStream;

  const evalRng = new Rng(options.seed ^ 0x5eed);
  const evalPositions = Int32Array.from({ length: options.evalTokens ?? 4096 }, () => 1 + evalRng.int(corpus.heldOutStream.length - 1));
  const before = heldOutLoss(model, corpus.heldOutStream, evalPositions, options.threads);

  const ws = new Workspace(model.config, model.precision, N);
  const grads = model.zeros();
  const adam = new Adam(model, { lr: options.lr });
  // shared memory: the kernel pool's threads and fused-dpo work on the same arrays
  const logits = sharedFloats(N * V) as Float32Array;
  const grad = sharedFloats(N * V) as Float32Array;
  const contexts = new Int32Array(N * C);
  const labels = new Int32Array(N);
  // one "pair" whose chosen sequence is the whole batch and whose rejected sequence is empty
  const cuSeqlens = Int32Array.of(0, N, N);
  let tail = 0, tailCount = 0;
  for (let step = 1; step <= options.steps; step++) {
    for (let i = 0; i < N; i++) {
      const p = 1 + rng.int(stream.length - 1); // predict stream[p] from the C tokens before it
      writeContext(stream, p - 1, C, contexts, i * C);
      labels[i] = stream[p]!;
    }
    model.forward(ws, contexts, N, logits, null);
    const out = dpoLoss({
      logits: { data: logits, shape: [N, V] },
      labels: { data: labels, shape: [N] },
      cuSeqlens,
      lossType: 'sft',
      grad: { data: grad, shape: [N, V] },
      threads: options.threads,
    });
    zeroParams(grads);
    model.backward(ws, contexts, N, grad, null, grads);
    const progress = (step - 1) / Math.max(options.steps - 1, 1);
    adam.update(grads, options.lr * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * progress))));
    if (step > options.steps - Math.max(1, Math.floor(options.steps / 10))) {
      tail += out.loss;
      tailCount++;
    }
    onStep?.({ step, loss: out.loss });
  }
  return {
    heldOutLossBefore: before,
    heldOutLoss: heldOutLoss(model, corpus.heldOutStream, evalPositions, options.threads),
    trainLoss: tailCount > 0 ? tail / tailCount : NaN,
  };
}
