// policyLoss on the CPU: every SIMD level this CPU runs gives the same bits (pass B's entropy mode
// included, with and without a model-head transform, vocab sizes that hit the vector tails and
// the 2048-element chunks), each level (and the FMA-less baseline) stays on the float64
// reference, and the thread count changes no bit.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

import { backendInfo, policyLoss, setSimdLevel, type PolicyLossOptions, type PolicyLossType } from '../lib/index.js';
import { referencePolicyLoss, referenceTokenStats } from '../lib/reference.js';
import { DTYPES, IGNORE, makeCase, relL2, sameBytes, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
const LEVELS = ['baseline-mul-add', 'baseline', 'neon', 'avx2', 'avx512'] as const;
type Level = (typeof LEVELS)[number];
const levels = suite('policyLoss: SIMD levels and threads');
const initial = backendInfo().simd as Level;
const usable: Level[] = [];

levels.before(() => {
  for (const level of LEVELS) {
    try {
      setSimdLevel(level);
      usable.push(level);
    } catch {
      // this CPU cannot run it (test/simd-levels.test.ts reports which)
    }
  }
  setSimdLevel(initial);
});

levels.after(() => setSimdLevel(initial));

interface Run {
  c: TokenCase;
  options: PolicyLossOptions;
}

function policyRun(rng: Rng, c: TokenCase, lossType: PolicyLossType, head: { temperature?: number; softcap?: number }, entropyCoef: number): Run {
  const logp = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE, head).logp;
  const near = (spread: number) => Float64Array.from(logp, (x, r) => (c.labels.data[r] === IGNORE ? 0 : x + spread * rng.normal()));
  return {
    c,
    options: {
      ...tokenOptions(c),
      ...head,
      backend: 'cpu',
      advantages: Float64Array.from({ length: 2 * c.B }, () => rng.normal()),
      oldLogps: near(0.3),
      refLogps: near(0.5),
      beta: 0.05,
      entropyCoef,
      lossType,
      ...(lossType === 'dr_grpo' ? { maxCompletionLength: 9 } : {}),
    },
  };
}

function bytesOf(options: PolicyLossOptions): Uint8Array[] {
  const r = policyLoss(options);
  return [
    new Uint8Array(Float64Array.of(r.loss).buffer),
    new Uint8Array(r.logps.buffer),
    new Uint8Array(r.tokenGrad.buffer),
    new Uint8Array(Float64Array.from(Object.values(r.metrics), (v) => v ?? -1).buffer),
    new Uint8Array(r.grad!.data.buffer, r.grad!.data.byteOffset, r.grad!.data.byteLength),
  ];
}

const NAMES = ['loss', 'logps', 'tokenGrad', 'metrics', 'grad'];

function runs(rng: Rng): Run[] {
  const out: Run[] = [];
  const types: PolicyLossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo'];
  let k = 0;
  for (const dtype of DTYPES) {
    for (const V of [7, 33, 2067, 4099]) {
      const c = makeCase(rng, { B: 1, vocab: V, T: V > 1000 ? 2 : 4, dtype, layout: rng.next() < 0.5 ? 'padded' : 'packed', ignoreProb: 0.2 });
      const head = k % 3 === 0 ? {} : k % 3 === 1 ? { temperature: 0.7 } : { softcap: 5, temperature: 0.9 };
      out.push(policyRun(rng, c, types[k % types.length]!, head, k % 2 === 0 ? 0.1 : 0));
      k++;
    }
  }
  return out;
}

levels('every level gives the same bits (entropy mode and the default pass B; transforms; every dtype)', () => {
  const all = runs(makeRng(SEED ^ 0x61));
  const levelsToCompare = usable.filter((l) => l !== 'baseline-mul-add');
  if (levelsToCompare.length < 2) {
    console.log(`  (only ${levelsToCompare.join(', ')} runs here: nothing to compare)`);
    return;
  }
  const results = new Map<Level, Uint8Array[][]>();
  for (const level of levelsToCompare) {
    setSimdLevel(level);
    results.set(level, all.map((r) => bytesOf(r.options)));
  }
  setSimdLevel(initial);
  const [first, ...rest] = levelsToCompare;
  for (const level of rest) {
    results.get(level)!.forEach((outputs, i) => {
      outputs.forEach((bytes, j) => {
        const c = all[i]!.c;
        assert.ok(sameBytes(bytes, results.get(first!)![i]![j]!), `${NAMES[j]}: ${level} differs from ${first} (${c.dtype}, V = ${c.vocab}, seed=${SEED})`);
      });
    });
  }
});

levels('each level, the FMA-less baseline included, against the float64 reference', () => {
  const rng = makeRng(SEED ^ 0x62);
  for (const level of usable) {
    setSimdLevel(level);
    const c = makeCase(rng, { B: 1, vocab: 2067, T: 2, layout: 'packed' });
    const run = policyRun(rng, c, 'grpo', { temperature: 0.8 }, 0.2);
    const got = policyLoss(run.options);
    const want = referencePolicyLoss({
      logits: c.decoded, rows: c.rows, vocab: c.vocab, labels: c.labels.data, cuSeqlens: c.cuSeqlens, ignoreIndex: IGNORE,
      advantages: run.options.advantages as Float64Array, advantagesPerToken: false,
      oldLogps: run.options.oldLogps as Float64Array, refLogps: run.options.refLogps as Float64Array,
      beta: 0.05, epsilon: 0.2, epsilonHigh: 0.2, entropyCoef: 0.2, lossType: 'grpo', maxCompletionLength: 0, numItemsInBatch: 0, temperature: 0.8,
    });
    const err = relL2(Float64Array.from(got.grad!.data as Float32Array), want.grad);
    assert.ok(err <= 1e-5, `${level}: gradient relative L2 ${err} (seed=${SEED})`);
  }
  setSimdLevel(initial);
});

levels('threads 1, 2, 3 and the default give the same bits', () => {
  const rng = makeRng(SEED ^ 0x63);
  // 96 rows of V = 4099: enough elements for the pool to split the rows in several pieces.
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const c = makeCase(rng, { B: 4, vocab: 4099, T: 12, dtype });
    const run = policyRun(rng, c, 'dapo', {}, 0.05);
    const one = bytesOf({ ...run.options, threads: 1 });
    for (const threads of [2, 3, undefined]) {
      bytesOf({ ...run.options, threads }).forEach((bytes, j) => {
        assert.ok(sameBytes(bytes, one[j]!), `${dtype}: ${NAMES[j]} with threads ${threads ?? 'default'} differs from 1 (seed=${SEED})`);
      });
    }
  }
});

levels.run();
