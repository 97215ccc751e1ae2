// A small tfjs model (embedding → dense → logits) trained 20 SGD steps with fused-dpo/tfjs and,
// from the same weights, with a plain tfjs implementation of the same sigmoid DPO loss
// (log-softmax, gather at the label, masked sums, −logσ): tfjs's autograd through each ends with
// the same weights within float32 tolerance.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs'; // the CPU backend and the ops' gradients
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, sequenceLogps } from '../lib/tfjs.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
tf.env().set('PROD', true);

const B = 3, T = 6, V = 17, H = 8, PROMPT = 2, BETA = 0.5, LR = 0.5, STEPS = 20;
const IGNORE = -100;

interface Weights {
  embedding: tf.Variable;
  dense: tf.Variable;
  bias: tf.Variable;
}

function normalArray(rng: Rng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

function makeWeights(init: { embedding: Float32Array; dense: Float32Array; bias: Float32Array }): Weights {
  return {
    embedding: tf.variable(tf.tensor2d(init.embedding, [V, H])),
    dense: tf.variable(tf.tensor2d(init.dense, [H, V])),
    bias: tf.variable(tf.tensor1d(init.bias)),
  };
}

function model(w: Weights, inputs: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const hidden = tf.reshape(tf.gather(w.embedding, tf.reshape(inputs, [-1])), [2 * B * T, H]);
    return tf.reshape(tf.add(tf.matMul(hidden, w.dense), w.bias), [2 * B, T, V]);
  });
}

/** TRL's sigmoid DPO loss in plain tfjs ops: what a user would write without fused-dpo. */
function plainSequenceLogps(logits: tf.Tensor, labels: tf.Tensor): tf.Tensor {
  const mask = tf.notEqual(labels, IGNORE);
  const safeLabels = tf.where(mask, labels, tf.zerosLike(labels));
  const tokenLogps = tf.sum(tf.mul(tf.logSoftmax(logits), tf.oneHot(safeLabels, V)), -1);
  return tf.sum(tf.mul(tokenLogps, tf.cast(mask, 'float32')), -1);
}

function plainDpoLoss(logits: tf.Tensor, labels: tf.Tensor, refChosen: tf.Tensor, refRejected: tf.Tensor): tf.Scalar {
  const [chosen, rejected] = tf.split(plainSequenceLogps(logits, labels), 2);
  const margin = tf.sub(tf.sub(chosen!, refChosen), tf.sub(rejected!, refRejected));
  // −logσ(u) as softplus(−u): tfjs's logSigmoid gradient reads its input after tidy has freed it.
  return tf.mean(tf.softplus(tf.mul(margin, -BETA)));
}

function batch(rng: Rng) {
  // Sequences of T + 1 tokens; the model reads tokens 0..T-1 and predicts 1..T; the first PROMPT
  // predictions are the prompt's (ignored). A pair shares its prompt.
  const inputs = new Int32Array(2 * B * T), labels = new Int32Array(2 * B * T);
  for (let i = 0; i < B; i++) {
    const prompt = Array.from({ length: PROMPT + 1 }, () => rng.int(V));
    for (const s of [i, B + i]) {
      const tokens = [...prompt, ...Array.from({ length: T - PROMPT }, () => rng.int(V))];
      for (let t = 0; t < T; t++) {
        inputs[s * T + t] = tokens[t]!;
        labels[s * T + t] = t < PROMPT ? IGNORE : tokens[t + 1]!;
      }
    }
  }
  return { inputs: tf.tensor2d(inputs, [2 * B, T], 'int32'), labels: tf.tensor2d(labels, [2 * B, T], 'int32') };
}

test('20 SGD steps through fused-dpo/tfjs and through plain tfjs end with the same weights', async () => {
  await tf.setBackend('cpu');
  const rng = makeRng(SEED + 40);
  const init = { embedding: normalArray(rng, V * H, 1), dense: normalArray(rng, H * V, 0.5), bias: normalArray(rng, V, 0.1) };
  const { inputs, labels } = batch(rng);
  const fused = makeWeights(init), plain = makeWeights(init);

  // The reference is the initial model: its sequence log-probs by both routes.
  const refLogits = model(fused, inputs);
  const { logps } = sequenceLogps(refLogits, labels);
  const plainRef = plainSequenceLogps(refLogits, labels);
  const plainRefLogps = plainRef.dataSync();
  for (let s = 0; s < 2 * B; s++) assert.ok(Math.abs(plainRefLogps[s]! - logps[s]!) <= 1e-5 * Math.abs(logps[s]!), `reference logps[${s}]`);
  const ref = { chosen: logps.subarray(0, B), rejected: logps.subarray(B) };
  // The same reference for both routes, as float32 tensors for the plain one.
  const refChosen = tf.tensor1d(Float32Array.from(ref.chosen)), refRejected = tf.tensor1d(Float32Array.from(ref.rejected));
  tf.dispose([refLogits, plainRef]);

  const fusedOptimizer = tf.train.sgd(LR), plainOptimizer = tf.train.sgd(LR);
  const fusedVars = [fused.embedding, fused.dense, fused.bias], plainVars = [plain.embedding, plain.dense, plain.bias];
  const losses: number[][] = [];
  const before = tf.memory().numTensors;
  for (let step = 0; step < STEPS; step++) {
    const a = fusedOptimizer.minimize(() => dpoLoss(model(fused, inputs), labels, ref, { beta: BETA }), true, fusedVars)!;
    const b = plainOptimizer.minimize(() => plainDpoLoss(model(plain, inputs), labels, refChosen, refRejected), true, plainVars)!;
    losses.push([a.dataSync()[0]!, b.dataSync()[0]!]);
    tf.dispose([a, b]);
  }
  assert.is(tf.memory().numTensors, before, 'tensors after 20 steps (SGD keeps no state)');

  for (const [step, [a, b]] of losses.entries()) assert.ok(Math.abs(a! - b!) <= 1e-5, `step ${step} loss: ${a} vs ${b}`);
  const [first, last] = [losses[0]![0]!, losses.at(-1)![0]!];
  assert.ok(Math.abs(first - Math.log(2)) < 1e-6, `the first loss is log 2 (policy = reference), got ${first}`);
  assert.ok(last < 0.5 * first, `the loss falls: ${first} → ${last}`);

  for (const name of ['embedding', 'dense', 'bias'] as const) {
    const a = fused[name].dataSync(), b = plain[name].dataSync(), start = init[name];
    let moved = 0, differ = 0;
    for (let i = 0; i < a.length; i++) {
      moved = Math.max(moved, Math.abs(a[i]! - start[i]!));
      differ = Math.max(differ, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
    }
    assert.ok(moved > 0.05, `${name} moved by at most ${moved}: the test would not see a wrong gradient`);
    assert.ok(differ <= 5e-6, `${name}: fused and plain weights differ by ${differ} (relative)`);
  }
  tf.dispose([inputs, labels, refChosen, refRejected, ...fusedVars, ...plainVars]);
  fusedOptimizer.dispose();
  plainOptimizer.dispose();
});

test.run();
