// Writes stay inside their target: a preallocated gradient or 'inplace' logits given as a
// subarray view of a larger, sentinel-filled buffer (at offsets that misalign the rows for the
// kernels' streaming stores); and hinge beyond its margin writes exact zeros.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { ELEMENT_BYTES } from '../lib/device.js';
import { dpoLoss, sequenceLogps, type LossType } from '../lib/index.js';
import { IGNORE, makeCase, sameBytes, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();
const F32_SENTINEL = -1.2345678e-5;
const U16_SENTINEL = 0xa5a5;

function allSentinel(a: Float32Array | Uint16Array, sentinel: number): number {
  const s = a instanceof Float32Array ? Math.fround(sentinel) : sentinel;
  return a.findIndex((x) => !Object.is(x, s));
}

/** A view of n elements at `offset` inside a buffer with `guard` sentinel elements after it. */
function guarded(dtype: TokenCase['dtype'], offset: number, n: number, guard: number) {
  const whole = dtype === 'float32' ? new Float32Array(offset + n + guard).fill(F32_SENTINEL) : new Uint16Array(offset + n + guard).fill(U16_SENTINEL);
  return { whole, view: whole.subarray(offset, offset + n), before: whole.subarray(0, offset), after: whole.subarray(offset + n) };
}

const SHAPES = [
  { V: 1, T: 3 },
  { V: 3, T: 5 },
  { V: 17, T: 4 },
  { V: 33, T: 3 },
  { V: 2067, T: 2 },
];

test('a preallocated grad that is a subarray view: guards untouched, the view holds the gradient', () => {
  const rng = makeRng(SEED + 40);
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    for (const { V, T } of SHAPES) {
      const c = makeCase(rng, { B: 2, vocab: V, T, dtype, ignoreProb: 0.3 });
      const options = { ...tokenOptions(c), ref: c.ref, lossType: ['sigmoid', 'sft'] as LossType[], threads: 2 };
      const expected = dpoLoss(options).grad!.data;
      for (const offset of [1, 3, 7, 16, 29]) {
        const g = guarded(dtype, offset, c.logits.data.length, 37);
        const out = dpoLoss({ ...options, grad: { data: g.view, shape: c.logits.shape, dtype } });
        const what = `${dtype} V=${V} offset ${offset} (seed=${SEED})`;
        assert.ok(out.grad!.data === g.view, `${what}: the result is the given view`);
        assert.is(allSentinel(g.before, dtype === 'float32' ? F32_SENTINEL : U16_SENTINEL), -1, `${what}: guard before the view was written`);
        assert.is(allSentinel(g.after, dtype === 'float32' ? F32_SENTINEL : U16_SENTINEL), -1, `${what}: guard after the view was written`);
        assert.ok(sameBytes(g.view, expected), `${what}: the view does not hold the gradient`);
      }
    }
  }
});

test("grad 'inplace' on subarray-view logits: guards untouched, the view holds the gradient", () => {
  const rng = makeRng(SEED + 41);
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    for (const { V, T } of SHAPES) {
      const c = makeCase(rng, { B: 2, vocab: V, T, dtype, ignoreProb: 0.3 });
      const options = { ...tokenOptions(c), ref: c.ref, lossType: 'discopop' as const, threads: 2 };
      const expected = dpoLoss(options);
      for (const offset of [1, 5, 16, 30]) {
        const g = guarded(dtype, offset, c.logits.data.length, 41);
        g.view.set(c.logits.data);
        const logits = { data: g.view, shape: c.logits.shape, dtype };
        const seqBefore = sequenceLogps({ ...tokenOptions(c), threads: 2, logits });
        const out = dpoLoss({ ...options, logits, grad: 'inplace' });
        const what = `${dtype} V=${V} offset ${offset} (seed=${SEED})`;
        assert.ok(out.grad!.data === g.view, `${what}: the result is the logits view`);
        assert.is(allSentinel(g.before, dtype === 'float32' ? F32_SENTINEL : U16_SENTINEL), -1, `${what}: guard before the view was written`);
        assert.is(allSentinel(g.after, dtype === 'float32' ? F32_SENTINEL : U16_SENTINEL), -1, `${what}: guard after the view was written`);
        assert.ok(sameBytes(g.view, expected.grad!.data), `${what}: the view does not hold the gradient`);
        assert.ok(Object.is(out.loss, expected.loss) && sameBytes(out.sequenceGrad, expected.sequenceGrad), `${what}: loss differs`);
        assert.ok(sameBytes(seqBefore.logps, sequenceLogps({ ...tokenOptions(c) }).logps), `${what}: a view reads as the array`);
      }
    }
  }
});

test('logits and labels as subarray views read the right elements', () => {
  const rng = makeRng(SEED + 42);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const c = makeCase(rng, { B: 2, vocab: 35, T: 3, dtype });
    const g = guarded(dtype, 13, c.logits.data.length, 9);
    g.view.set(c.logits.data);
    const labelsWhole = new Int32Array(c.labels.data.length + 6).fill(1e9);
    const labels = labelsWhole.subarray(3, 3 + c.labels.data.length);
    labels.set(c.labels.data);
    const a = dpoLoss({ ...tokenOptions(c), ref: c.ref });
    const b = dpoLoss({ logits: { data: g.view, shape: c.logits.shape, dtype }, labels: { data: labels, shape: c.labels.shape }, ref: c.ref });
    assert.ok(Object.is(a.loss, b.loss) && sameBytes(a.grad!.data, b.grad!.data), `${dtype}: views give another result (seed=${SEED})`);
  }
});

test('hinge beyond its margin: loss 0 and a gradient of exact zeros, no NaN', () => {
  const rng = makeRng(SEED + 43);
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    for (const layout of ['padded', 'packed'] as const) {
      const c = makeCase(rng, { B: 3, vocab: 50, T: 4, dtype, layout });
      const pi = sequenceLogps(tokenOptions(c)).logps;
      // a large positive margin: βΔ = 0.5·(40 + …) ≥ 1 for every pair
      const ref = { chosen: Array.from({ length: 3 }, (_, i) => pi[i]! - 40), rejected: Array.from({ length: 3 }, (_, i) => pi[3 + i]!) };
      for (const grad of [true, 'inplace'] as const) {
        const logits = { ...c.logits, data: c.logits.data.slice() };
        const out = dpoLoss({ ...tokenOptions(c), logits, ref, lossType: 'hinge', beta: 0.5, grad });
        const what = `${dtype} ${layout} grad=${grad} (seed=${SEED})`;
        assert.is(out.loss, 0, `${what}: loss`);
        assert.ok(out.losses.every((l) => l === 0), `${what}: losses ${out.losses}`);
        assert.ok(out.sequenceGrad.every((g) => g === 0), `${what}: sequenceGrad ${out.sequenceGrad}`);
        const data = out.grad!.data;
        const bad = data.findIndex((x) => (dtype === 'float32' ? x !== 0 : (x & 0x7fff) !== 0));
        assert.is(bad, -1, `${what}: grad[${bad}] = ${data[bad]}, expected exactly 0`);
        assert.ok(c.labels.data.some((y) => y !== IGNORE));
      }
    }
  }
});

test('SharedArrayBuffer views (multi-threaded JS models) give the same bits as plain arrays', () => {
  const rng = makeRng(SEED + 59);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const c = makeCase(rng, { B: 2, vocab: 37, T: 5, dtype, layout: 'padded' });
    const n = c.logits.data.length;
    const shared = (length: number) => {
      const buffer = new SharedArrayBuffer((length + 3) * ELEMENT_BYTES[dtype]);
      return dtype === 'float32' ? new Float32Array(buffer, 12, length) : new Uint16Array(buffer, 6, length);
    };
    const logits = shared(n);
    logits.set(c.logits.data);
    const grad = shared(n);
    const plain = dpoLoss({ ...tokenOptions(c), ref: c.ref });
    const viaShared = dpoLoss({ ...tokenOptions(c), logits: { ...c.logits, data: logits }, ref: c.ref, grad: { data: grad, shape: c.logits.shape, dtype } });
    assert.ok(Object.is(plain.loss, viaShared.loss), `${dtype}: loss ${plain.loss} vs ${viaShared.loss} (seed=${SEED})`);
    assert.ok(sameBytes(plain.grad!.data, grad), `${dtype}: gradient differs through shared memory (seed=${SEED})`);
  }
});

test.run();
