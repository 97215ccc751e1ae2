// fused-dpo/tfjs against the core on the same inputs: tf.grad through the adapter gives the core's
// gradient bit for bit (times dy), on tfjs's CPU and WASM backends; the metrics are the core's;
// no tensor outlives a step; bad inputs are ERR_FDPO_* errors that name them.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs'; // the CPU backend and the ops' gradients
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss as coreDpoLoss, sequenceLogps as coreSequenceLogps } from '../lib/index.js';
import { dpoLoss, lastDetails, lastMetrics, sequenceLogps, type TfjsDpoLossDetails } from '../lib/tfjs.js';
import { makeCase, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();
tf.env().set('PROD', true); // no "install tfjs-node" banner
setWasmPaths(join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm')), '/'));

function tensorsOf(c: TokenCase) {
  return { logits: tf.tensor(c.logits.data, [...c.logits.shape], 'float32'), labels: tf.tensor(c.labels.data, c.labels.shape, 'int32') };
}

function assertSameBits(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  assert.is(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) assert.unreachable(`${what}[${i}]: ${actual[i]} is not ${expected[i]}`);
  }
}

async function refusal(call: () => unknown): Promise<{ code?: string; message: string }> {
  try {
    call();
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected the call to throw');
}

for (const backend of ['cpu', 'wasm'] as const) {
  for (const layout of ['padded', 'packed'] as const) {
    test(`${backend}, ${layout}: tf.grad through the adapter is the core's gradient bit for bit, and dy scales it`, async () => {
      assert.ok(await tf.setBackend(backend), `tf.setBackend('${backend}')`);
      const c = makeCase(makeRng(SEED + (layout === 'packed' ? 1 : 0)), { B: 3, vocab: 37, T: 5, layout });
      const options = { beta: 0.3, labelSmoothing: 0.1, ...(layout === 'packed' ? { cuSeqlens: c.cuSeqlens } : {}) };
      const core = coreDpoLoss({ ...tokenOptions(c), ref: c.ref, beta: 0.3, labelSmoothing: 0.1 });
      const { logits, labels } = tensorsOf(c);
      const before = tf.memory().numTensors;

      const { value, grad } = tf.valueAndGrad((x: tf.Tensor) => dpoLoss(x, labels, c.ref, options))(logits);
      assert.equal(tf.getBackend(), backend);
      assert.is(value.dataSync()[0], Math.fround(core.loss));
      assert.equal(grad.shape, logits.shape);
      assertSameBits(grad.dataSync(), core.grad!.data, 'grad');
      value.dispose();
      grad.dispose();

      const scaled = tf.grad((x: tf.Tensor) => tf.mul(dpoLoss(x, labels, c.ref, options), tf.scalar(-2.5)))(logits);
      assertSameBits(scaled.dataSync(), Float32Array.from(core.grad!.data, (g) => Math.fround(g * -2.5)), 'grad · dy');
      scaled.dispose();
      assert.is(tf.memory().numTensors, before, 'tensors after the gradient calls');
      tf.dispose([logits, labels]);
      await tf.setBackend('cpu');
    });
  }

  test(`${backend}: sequenceLogps is the core's, and the reference as arrays or tensors gives the same loss`, async () => {
    assert.ok(await tf.setBackend(backend));
    const c = makeCase(makeRng(SEED + 2), { B: 2, vocab: 19, T: 4 });
    const { logits, labels } = tensorsOf(c);
    const ours = sequenceLogps(logits, labels, { average: true });
    const core = coreSequenceLogps({ ...tokenOptions(c), average: true });
    assertSameBits(ours.logps, core.logps, 'logps');
    assertSameBits(ours.counts, core.counts, 'counts');

    const asTensors = { chosen: tf.tensor1d(Float32Array.from(c.ref.chosen)), rejected: tf.tensor1d(Float32Array.from(c.ref.rejected)) };
    const fromTensors = dpoLoss(logits, labels, asTensors);
    const fromArrays = dpoLoss(logits, labels, { chosen: Float32Array.from(c.ref.chosen), rejected: Float32Array.from(c.ref.rejected) });
    assert.is(fromTensors.dataSync()[0], fromArrays.dataSync()[0]);
    tf.dispose([logits, labels, asTensors.chosen, asTensors.rejected, fromTensors, fromArrays]);
    await tf.setBackend('cpu');
  });
}

test("the last call's metrics without another pass: lastMetrics(), lastDetails() and onMetrics", async () => {
  await tf.setBackend('cpu');
  const c = makeCase(makeRng(SEED + 3), { B: 4, vocab: 11, T: 3 });
  const core = coreDpoLoss({ ...tokenOptions(c), ref: c.ref, lossType: ['sigmoid', 'sft'], lossWeights: [1, 0.5] });
  const { logits, labels } = tensorsOf(c);
  const seen: TfjsDpoLossDetails[] = [];
  const grad = tf.grad((x: tf.Tensor) =>
    dpoLoss(x, labels, c.ref, { lossType: ['sigmoid', 'sft'], lossWeights: [1, 0.5], onMetrics: (_, details) => seen.push(details) }),
  )(logits);
  assert.is(seen.length, 1, 'onMetrics once per forward pass');
  assert.equal(seen[0]!.metrics, core.metrics);
  assert.equal(lastMetrics(), core.metrics);
  const details = lastDetails()!;
  assert.is(details.loss, core.loss);
  assertSameBits(details.losses, core.losses, 'losses');
  assertSameBits(details.sequenceGrad, core.sequenceGrad, 'sequenceGrad');
  assert.not.ok('grad' in details, 'the gradient is tfjs\'s, not in the details');
  tf.dispose([logits, labels, grad]);
});

test('a reference-free loss takes ref null', async () => {
  await tf.setBackend('cpu');
  const c = makeCase(makeRng(SEED + 7), { B: 2, vocab: 23, T: 4 });
  const core = coreDpoLoss({ ...tokenOptions(c), lossType: 'simpo', beta: 2 });
  const { logits, labels } = tensorsOf(c);
  const grad = tf.grad((x: tf.Tensor) => dpoLoss(x, labels, null, { lossType: 'simpo', beta: 2 }))(logits);
  assertSameBits(grad.dataSync(), core.grad!.data, 'simpo grad');
  assert.is(lastDetails()!.loss, core.loss);
  tf.dispose([logits, labels, grad]);
});

test('outside a gradient tape the core computes no gradient, and the loss is the same', async () => {
  await tf.setBackend('cpu');
  const c = makeCase(makeRng(SEED + 4), { B: 2, vocab: 9, T: 4 });
  const { logits, labels } = tensorsOf(c);
  const before = tf.memory().numTensors;
  const loss = dpoLoss(logits, labels, c.ref);
  assert.is(loss.dataSync()[0], Math.fround(coreDpoLoss({ ...tokenOptions(c), ref: c.ref, grad: false }).loss));
  assert.equal(loss.shape, []);
  loss.dispose();
  assert.is(tf.memory().numTensors, before);
  tf.dispose([logits, labels]);
});

test('optimizer.minimize and tf.variableGrads leak no tensor, and neither does a refused call', async () => {
  await tf.setBackend('cpu');
  const c = makeCase(makeRng(SEED + 5), { B: 2, vocab: 13, T: 3 });
  const { logits, labels } = tensorsOf(c);
  const weights = tf.variable(tf.ones(logits.shape));
  const optimizer = tf.train.sgd(0.1);
  const step = () => dpoLoss(tf.mul(logits, weights), labels, c.ref, { beta: 0.5 });
  optimizer.minimize(step); // the optimizer's own state is made on the first step
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) optimizer.minimize(step);
  const { value, grads } = tf.variableGrads(step);
  tf.dispose([value, grads]);
  assert.is(tf.memory().numTensors, before, 'tensors after the steps');
  // (tfjs itself keeps the tensors its tape saved for ops recorded before a throw inside tf.grad:
  // here the adapter's is the only op.)
  const error = await refusal(() => tf.grad((x: tf.Tensor) => dpoLoss(x, labels, { chosen: [0], rejected: [0] }))(logits));
  assert.is(error.code, 'ERR_FDPO_INVALID_ARGUMENT', error.message);
  assert.is(tf.memory().numTensors, before, 'tensors after a refused call');
  tf.dispose([logits, labels, weights]);
  optimizer.dispose();
});

test('bad inputs are ERR_FDPO_* errors that name them', async () => {
  await tf.setBackend('cpu');
  const c = makeCase(makeRng(SEED + 6), { B: 1, vocab: 5, T: 2 });
  const { logits, labels } = tensorsOf(c);
  const cases: [string, () => unknown, string, RegExp][] = [
    ['logits a plain array', () => dpoLoss(c.logits.data as never, labels, c.ref), 'ERR_FDPO_INVALID_ARGUMENT', /logits must be a tf\.Tensor \(float32\)/],
    ['int32 logits', () => dpoLoss(tf.cast(logits, 'int32'), labels, c.ref), 'ERR_FDPO_INVALID_ARGUMENT', /logits\.dtype must be 'float32' \(tfjs has no bfloat16 or float16 tensors.*got "int32"/],
    ['bool logits', () => sequenceLogps(tf.cast(logits, 'bool'), labels), 'ERR_FDPO_INVALID_ARGUMENT', /logits\.dtype must be 'float32'.*got "bool"/],
    ['float32 labels', () => dpoLoss(logits, tf.cast(labels, 'float32'), c.ref), 'ERR_FDPO_INVALID_ARGUMENT', /labels\.dtype must be 'int32'.*got "float32"/],
    ['a disposed tensor', () => { const t = tf.clone(logits); t.dispose(); return dpoLoss(t, labels, c.ref); }, 'ERR_FDPO_INVALID_ARGUMENT', /logits must be a tf\.Tensor that is not disposed/],
    ['grad', () => dpoLoss(logits, labels, c.ref, { grad: 'inplace' } as never), 'ERR_FDPO_INVALID_ARGUMENT', /option 'grad' is set by fused-dpo\/tfjs: the gradient flows through tfjs/],
    ['deferScale', () => dpoLoss(logits, labels, c.ref, { deferScale: true } as never), 'ERR_FDPO_INVALID_ARGUMENT', /option 'deferScale' is set by fused-dpo\/tfjs/],
    ['logits as an option', () => dpoLoss(logits, labels, c.ref, { logits } as never), 'ERR_FDPO_INVALID_ARGUMENT', /option 'logits' is set by fused-dpo\/tfjs: logits is the first argument/],
    ['labels as an option', () => sequenceLogps(logits, labels, { labels } as never), 'ERR_FDPO_INVALID_ARGUMENT', /option 'labels' is set by fused-dpo\/tfjs/],
    ['ref as an option', () => dpoLoss(logits, labels, null, { ref: c.ref } as never), 'ERR_FDPO_INVALID_ARGUMENT', /option 'ref' is set by fused-dpo\/tfjs: ref is the third argument/],
    ['an unknown option', () => dpoLoss(logits, labels, c.ref, { betaa: 0.1 } as never), 'ERR_FDPO_UNKNOWN_OPTION', /unknown option 'betaa': did you mean 'beta'\?/],
    ['a TRL option', () => dpoLoss(logits, labels, c.ref, { rpo_alpha: 1 } as never), 'ERR_FDPO_UNSUPPORTED_OPTION', /rpo_alpha/],
    ['onMetrics not a function', () => dpoLoss(logits, labels, c.ref, { onMetrics: 1 } as never), 'ERR_FDPO_INVALID_ARGUMENT', /onMetrics must be a function/],
    ['no ref for sigmoid', () => dpoLoss(logits, labels, null), 'ERR_FDPO_INVALID_ARGUMENT', /ref must be \{ chosen, rejected \}/],
    ['a 2-D ref tensor', () => dpoLoss(logits, labels, { chosen: tf.zeros([1, 1]), rejected: tf.zeros([1]) }), 'ERR_FDPO_INVALID_ARGUMENT', /ref\.chosen\.shape must be a 1-D tensor/],
    ['swapped T and V', () => dpoLoss(tf.transpose(logits, [0, 2, 1]), labels, c.ref), 'ERR_FDPO_INVALID_ARGUMENT', /logits\.shape must be labels\.shape/],
    ['a label beyond V', () => dpoLoss(logits, tf.fill(labels.shape, 5, 'int32'), c.ref), 'ERR_FDPO_INVALID_ARGUMENT', /labels\.data\[0\] must be a token id in \[0, 5\)/],
    ['[N, V] without cuSeqlens', () => dpoLoss(tf.reshape(logits, [-1, 5]), tf.reshape(labels, [-1]), c.ref), 'ERR_FDPO_INVALID_ARGUMENT', /logits\.shape must be \[numSeqs, T, V\]/],
  ];
  for (const [name, call, code, message] of cases) {
    const error = await refusal(() => tf.tidy(() => { call(); }));
    assert.is(error.code, code, `${name}: ${error.message}`);
    assert.match(error.message, message, name);
    assert.match(error.message, /^fused-dpo: /, name);
  }
  tf.dispose([logits, labels]);
});

test.run();
