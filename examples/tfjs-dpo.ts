// DPO on a tiny tfjs policy with fused-dpo/tfjs as the loss. The policy is a bigram model
// (embedding → dense → vocabulary logits) over 16 tokens; each prompt has a preferred completion
// of "low" tokens (0..7) and a rejected one of "high" tokens (8..15). tfjs's autograd and
// optimizer do the training; fused-dpo computes the loss and its logits gradient.
//
//   node --import tsx examples/tfjs-dpo.ts [--steps 100]
//
// It prints the loss and reward accuracy as it goes, and last a JSON line with the first and
// final loss, the chance the policy gives a low token, before and after, and tfjs's tensor count
// after the first and the last step.
import * as tf from '@tensorflow/tfjs';
import { dpoLoss, lastMetrics, sequenceLogps } from 'fused-dpo/tfjs';

const V = 16, H = 16, B = 8, PROMPT = 2, COMPLETION = 4, T = PROMPT + COMPLETION;
const stepsFlag = process.argv.indexOf('--steps');
const steps = stepsFlag > 0 ? Number(process.argv[stepsFlag + 1]) : 100;
if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${process.argv[stepsFlag + 1]}`);

tf.env().set('PROD', true); // no "install tfjs-node" banner
await tf.setBackend('cpu');

// Small seeded generator, so every run trains on the same pairs.
let state = 12345;
const random = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const token = (low: boolean) => Math.floor(random() * 8) + (low ? 0 : 8);

// 2B sequences of T + 1 tokens (chosen 0..B-1, rejected B..2B-1; pair i shares its prompt). The
// policy reads tokens 0..T-1 and predicts 1..T; the prompt's predictions are labelled -100.
const inputIds = new Int32Array(2 * B * T), labelIds = new Int32Array(2 * B * T);
for (let i = 0; i < B; i++) {
  const prompt = Array.from({ length: PROMPT + 1 }, () => token(random() < 0.5));
  for (const [s, low] of [[i, true], [B + i, false]] as const) {
    const tokens = [...prompt, ...Array.from({ length: COMPLETION }, () => token(low))];
    for (let t = 0; t < T; t++) {
      inputIds[s * T + t] = tokens[t]!;
      labelIds[s * T + t] = t < PROMPT ? -100 : tokens[t + 1]!;
    }
  }
}
const inputs = tf.tensor2d(inputIds, [2 * B, T], 'int32');
const labels = tf.tensor2d(labelIds, [2 * B, T], 'int32');

const embedding = tf.variable(tf.randomNormal([V, H], 0, 1, 'float32', 1));
const dense = tf.variable(tf.randomNormal([H, V], 0, 0.3, 'float32', 2));
const bias = tf.variable(tf.zeros([V]));
const policy = (ids: tf.Tensor) =>
  tf.tidy(() => tf.reshape(tf.add(tf.matMul(tf.reshape(tf.gather(embedding, tf.reshape(ids, [-1])), [-1, H]), dense), bias), [2 * B, T, V]));

// The chance of a low next token, averaged over the batch's positions: what DPO should raise.
const lowChance = () => tf.tidy(() => tf.mean(tf.sum(tf.slice(tf.softmax(policy(inputs)), [0, 0, 0], [-1, -1, 8]), -1)).dataSync()[0]!);

const losses: number[] = [];
const lowBefore = lowChance();
let tensorsBefore = 0; // after the first step, which makes Adam's moment estimates

// The reference pass, once: the initial policy's sequence log-prob sums (float64).
const refLogits = policy(inputs);
const { logps } = sequenceLogps(refLogits, labels);
refLogits.dispose();
const ref = { chosen: logps.subarray(0, B), rejected: logps.subarray(B) };

const optimizer = tf.train.adam(0.01);
for (let step = 1; step <= steps; step++) {
  const loss = optimizer.minimize(() => dpoLoss(policy(inputs), labels, ref, { beta: 0.1 }), true)!;
  losses.push(loss.dataSync()[0]!);
  loss.dispose();
  if (step === 1) tensorsBefore = tf.memory().numTensors;
  const metrics = lastMetrics()!; // this step's forward pass: no second pass over the logits
  if (step % 10 === 0 || step === steps) {
    console.log(`step ${step}: loss ${losses.at(-1)!.toFixed(4)}, reward accuracy ${metrics['rewards/accuracies'].toFixed(2)}, margin ${metrics['rewards/margins'].toFixed(3)}`);
  }
}
const tensorsAfter = tf.memory().numTensors;
console.log(JSON.stringify({ steps, firstLoss: losses[0], finalLoss: losses.at(-1), lowBefore, lowAfter: lowChance(), tensorsBefore, tensorsAfter }));
