// Regression test: confident tokens (1 − p_y below float32's resolution next to 1), where ORPO's
// log-odds term needs the averaged log-probs RELATIVELY accurate near 0.
//
// Found by this suite: with logp = (z_y − m) − log(s) in float32, a token whose 1 − p_y < ~6e-8 got
// logp = 0 exactly; with both the chosen and the rejected sequence made of such tokens, π̄ hit the
// −1e-15 clamp on both sides, D = 0 instead of log(x_r/x_c), and at a margin of 20 (V = 4, β = 0.1)
// the loss was 0.0693 instead of 0.1313, G_s ±5e13 instead of −1.2e7 / 3.2e7, and the gradient's
// non-label entries 1.03e5 instead of 0.0244. SPEC.md now has logp = −log1p(Σ_{v≠y} e^{z_v − m})
// when the label holds the max, and these cases must match the float64 reference.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss } from '../lib/index.js';
import { LOSS_DEFAULTS } from '../lib/loss-kinds.js';
import { decodeToFloat64 } from '../lib/dtype.js';
import { referenceDpo } from '../lib/reference.js';
import { checkDpo, DTYPES, encode, makeCase, relErr, relL2, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();

test('orpo: chosen and rejected both confident beyond float32 resolution (margins 20 and 21, V = 4)', () => {
  for (const dtype of DTYPES) {
    // B = 1, T = 1: chosen row [20, 0, 0, 0], rejected row [21, 0, 0, 0], both labels 0
    const { data, decoded } = encode(new Float32Array([20, 0, 0, 0, 21, 0, 0, 0]), dtype);
    const labels = new Int32Array([0, 0]);
    const got = dpoLoss({ logits: { data, shape: [2, 1, 4], dtype }, labels: { data: labels, shape: [2, 1] }, lossType: 'orpo', beta: 0.1 });
    const want = referenceDpo({
      logits: decoded, rows: 2, vocab: 4, labels, cuSeqlens: Int32Array.from([0, 1, 2]), ignoreIndex: -100, ref: null,
      ...LOSS_DEFAULTS, beta: 0.1, lossTypes: ['orpo'], lossWeights: [1], scale: 1,
    });
    const grad = decodeToFloat64(got.grad!.data, dtype);
    const details =
      `${dtype}: loss ${got.loss} vs reference ${want.loss}; sequenceGrad [${Array.from(got.sequenceGrad)}] vs [${Array.from(want.seqGrad)}]; ` +
      `grad row 0 [${Array.from(grad.subarray(0, 4))}] vs [${Array.from(want.grad.subarray(0, 4))}]`;
    assert.ok(relErr(got.loss, want.loss) <= 1e-6, `loss: ${details}`);
    assert.ok(relErr(got.sequenceGrad[0]!, want.seqGrad[0]!) <= 1e-5 && relErr(got.sequenceGrad[1]!, want.seqGrad[1]!) <= 1e-5, `sequenceGrad: ${details}`);
    assert.ok(relL2(grad, want.grad) <= (dtype === 'float32' ? 1e-5 : 2 ** -8), `grad: ${details}`);
  }
});

/** Every scored row's label gets the row max plus `margin` (the rest stays 3·normal). */
function confident(c: TokenCase, margin: number): TokenCase {
  const V = c.vocab;
  const f32 = new Float32Array(Array.from(c.decoded));
  for (let r = 0; r < c.rows; r++) {
    const y = c.labels.data[r]!;
    if (y < 0) continue;
    let m = -Infinity;
    for (let v = 0; v < V; v++) if (v !== y) m = Math.max(m, f32[r * V + v]!);
    f32[r * V + y] = m + margin;
  }
  const { data, decoded } = encode(f32, c.dtype);
  return { ...c, logits: { ...c.logits, data }, decoded };
}

test('confident sequences at margins 8..100, every dtype and a few loss types, against the reference', () => {
  // (the budgets in helpers/cases.ts hold such rows' logp to a relative error, as SPEC.md promises)
  const rng = makeRng(SEED + 70);
  for (const dtype of DTYPES) {
    for (const margin of [8, 12, 16, 20, 25, 30, 34, 40, 60, 100]) {
      for (const type of ['orpo', 'simpo', 'sigmoid'] as const) {
        const c = confident(makeCase(rng, { B: 2, vocab: 1 + rng.int(40), T: 1 + rng.int(3), dtype, ignoreProb: 0.2 }), margin);
        checkDpo(c, { lossType: type, ref: type === 'sigmoid' ? c.ref : undefined, beta: 0.1 }, rng.next() < 0.5 ? true : 'inplace', `${type} margin ${margin} (seed=${SEED})`);
      }
    }
  }
});

test.run();
