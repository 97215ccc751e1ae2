// Deferred scale: pass A writes the unscaled onehot − p and rowScale[r]·grad[r, :] is the
// gradient. Checked against the float64 reference and against the ordinary (two-pass) call.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { decodeToFloat64 } from '../lib/dtype.js';
import { dpoLoss } from '../lib/index.js';
import { dpoLossUnfused } from '../lib/loss.js';
import { DTYPES, IGNORE, makeCase, referenceFor, rowSequence, sameBytes, tokenOptions, type Layout } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();

test('rowScale × grad is the reference gradient; loss and metrics equal the two-pass call', () => {
  const rng = makeRng(SEED);
  for (const dtype of DTYPES) {
    for (const layout of ['padded', 'packed'] as Layout[]) {
      for (const lossType of ['sigmoid', 'ipo', 'orpo', 'hinge'] as const) {
        // V = 2100: two chunks and a tail, so the deferred write crosses a chunk boundary.
        const c = makeCase(rng, { B: 2, vocab: 2100, T: 4, dtype, layout, emptySeqs: [1] });
        const options = { ...tokenOptions(c), ref: c.ref, lossType, beta: 0.5 };
        const what = `${lossType} ${dtype} ${layout} (seed=${SEED})`;
        const twoPass = dpoLoss(options);
        const deferred = dpoLoss({ ...options, deferScale: true });
        assert.ok(Object.is(deferred.loss, twoPass.loss), `${what}: loss ${deferred.loss} vs ${twoPass.loss}`);
        assert.equal(deferred.metrics, twoPass.metrics, `${what}: metrics`);
        assert.ok(sameBytes(deferred.sequenceGrad, twoPass.sequenceGrad), `${what}: sequenceGrad`);

        const want = referenceFor(c, options);
        const seq = rowSequence(c.cuSeqlens);
        const unscaled = decodeToFloat64(deferred.grad!.data, dtype);
        const rowScale = deferred.rowScale!;
        let num = 0, den = 0;
        for (let r = 0; r < c.rows; r++) {
          const ignored = c.labels.data[r] === IGNORE;
          assert.is(rowScale[r], ignored ? 0 : Math.fround(twoPass.sequenceGrad[seq[r]!]!), `${what}: rowScale[${r}]`);
          for (let v = 0; v < c.vocab; v++) {
            const i = r * c.vocab + v;
            if (ignored) assert.is(unscaled[i], 0, `${what}: ignored row ${r} not zero`);
            num += (rowScale[r]! * unscaled[i]! - want.grad[i]!) ** 2;
            den += want.grad[i]! ** 2;
          }
        }
        const error = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
        const tolerance = dtype === 'float32' ? 1e-5 : dtype === 'bfloat16' ? 4e-3 : 5e-4;
        assert.ok(error <= tolerance, `${what}: gradient relative L2 error ${error}`);
      }
    }
  }
});

test('deferred results do not depend on the thread count, and the unfused port agrees', () => {
  const rng = makeRng(SEED + 1);
  const c = makeCase(rng, { B: 4, vocab: 4099, T: 16, dtype: 'bfloat16' });
  const options = { ...tokenOptions(c), ref: c.ref, deferScale: true };
  const one = dpoLoss({ ...options, threads: 1 });
  const two = dpoLoss({ ...options, threads: 2 });
  assert.ok(sameBytes(one.grad!.data, two.grad!.data) && sameBytes(one.rowScale!, two.rowScale!), `(seed=${SEED})`);
  // The unfused port sums a plain float32 log-softmax: close, not bit-identical.
  const unfused = dpoLossUnfused({ ...options, threads: 2 });
  one.rowScale!.forEach((g, r) => assert.ok(Math.abs(g - unfused.rowScale![r]!) <= 1e-4 * Math.abs(g), `unfused rowScale[${r}] (seed=${SEED})`));
});

test('deferScale needs a gradient and a boolean', () => {
  const c = makeCase(makeRng(SEED + 2), { B: 1, vocab: 5, T: 2 });
  const base = { ...tokenOptions(c), ref: c.ref };
  for (const bad of [{ deferScale: true, grad: false }, { deferScale: 'yes' }] as const) {
    try {
      dpoLoss({ ...base, ...(bad as object) });
      assert.unreachable(JSON.stringify(bad));
    } catch (error) {
      assert.is((error as { code?: string }).code, 'ERR_FDPO_INVALID_ARGUMENT');
      assert.match((error as Error).message, /deferScale/);
    }
  }
  assert.is(dpoLoss(base).rowScale, null);
});

test.run();
