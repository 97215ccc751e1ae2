// AlphaPO (simpo's alpha, TRL CPOTrainer's alpha) against the float64 reference on fresh random
// inputs: dtypes, layouts, alone and mixed with sft/orpo, the rewards TRL logs; alpha = 0 is SimPO
// bit for bit; finite differences of the reference; the option refused where no loss reads it.
// Replay a run with FDPO_SEED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss } from '../lib/index.js';
import { referencePairLoss } from '../lib/reference.js';
import type { LossType } from '../lib/loss-kinds.js';
import { assertInvalid, checkDpo, DTYPES, hyperparametersOf, makeCase, tokenOptions } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();

test('alpha: simpo with AlphaPO rewards matches the reference (dtypes, layouts, mixes, grad modes)', () => {
  const rng = makeRng(SEED);
  let k = 0;
  for (const dtype of DTYPES) {
    for (const layout of ['padded', 'packed'] as const) {
      for (const [lossType, lossWeights] of [[['simpo'], [1]], [['simpo', 'sft'], [1, 0.4]], [['orpo', 'simpo'], [0.5, 1]]] as [LossType[], number[]][]) {
        k++;
        const c = makeCase(rng, { B: 1 + rng.int(3), vocab: [7, 33, 257][k % 3]!, dtype, layout });
        // |α·x̄| stays moderate: e^{−αx̄} amplifies the float32 error of π by as much
        const alpha = [-0.5, 0.25, 1, 0.5][k % 4]!;
        const run = checkDpo(c, { lossType, lossWeights, alpha, beta: [2, 0.5][k % 2]!, simpoGamma: 0.3 }, (['tensor', true, 'inplace'] as const)[k % 3]!, `alpha=${alpha} ${lossType.join('+')} seed=${SEED}`);
        assert.ok(run.got.chosenRewards.every((r, i) => Math.abs(r - run.want.chosenRewards[i]!) <= 1e-5 * (1 + Math.abs(r))), 'chosen rewards are β·r(x̄)');
      }
    }
  }
});

test('alpha: 0 is SimPO exactly (same bits), and alpha changes the loss', () => {
  const rng = makeRng(SEED + 1);
  const c = makeCase(rng, { B: 3, vocab: 41, layout: 'packed' });
  const plain = dpoLoss({ ...tokenOptions(c), lossType: 'simpo' });
  const zero = dpoLoss({ ...tokenOptions(c), lossType: 'simpo', alpha: 0 });
  assert.is(zero.loss, plain.loss);
  assert.equal(Array.from(zero.grad!.data), Array.from(plain.grad!.data));
  const other = dpoLoss({ ...tokenOptions(c), lossType: 'simpo', alpha: 0.5 });
  assert.ok(Math.abs(other.loss - plain.loss) > 1e-6, `alpha 0.5 changes the loss (${other.loss} vs ${plain.loss})`);
});

test("alpha: the reference's derivatives match finite differences of its loss", () => {
  const rng = makeRng(SEED + 2);
  const B = 3;
  const counts = Int32Array.from({ length: 2 * B }, () => 1 + rng.int(9));
  const pi = Float64Array.from(counts, (n) => -n * (0.5 + 2.5 * rng.next())); // x̄ in [−3, −0.5]
  for (const alpha of [-1, 0.3, 1.5]) {
    const cfg = { ...hyperparametersOf({ alpha, beta: 1.5, simpoGamma: 0.2, labelSmoothing: 0.1 }), ref: null, lossTypes: ['simpo'] as LossType[], lossWeights: [1], scale: 1 / B };
    const at = (p: Float64Array) => referencePairLoss(p, counts, cfg).loss;
    const want = referencePairLoss(pi, counts, cfg).seqGrad;
    for (let s = 0; s < 2 * B; s++) {
      const h = 1e-6;
      const up = pi.slice(), down = pi.slice();
      up[s]! += h;
      down[s]! -= h;
      const fd = (at(up) - at(down)) / (2 * h);
      assert.ok(Math.abs(fd - want[s]!) <= 1e-7 + 1e-6 * Math.abs(fd), `alpha=${alpha} ∂/∂π_${s}: fd ${fd} vs ${want[s]} (seed=${SEED})`);
    }
  }
});

test('alpha: refused where no lossType reads it, and non-finite', () => {
  const rng = makeRng(SEED + 3);
  const c = makeCase(rng, { B: 1, vocab: 5 });
  for (const [options, what] of [[{ lossType: 'sigmoid', ref: c.ref, alpha: 0.5 }, 'sigmoid'], [{ lossType: 'simpo', alpha: Infinity }, 'inf']] as const) {
    let error: unknown = null;
    try {
      dpoLoss({ ...tokenOptions(c), ...options } as never);
    } catch (e) {
      error = e;
    }
    assertInvalid(error, /alpha/, what);
  }
});

test.run();
