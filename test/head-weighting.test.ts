// The model-head transforms (logitScale, softcap, temperature) and WPO (useWeighting) against the
// float64 reference on fresh random inputs: every dtype, both layouts, odd V (across the 2048-element
// chunks too), the deferred scale, every SIMD level on the CPU (and the emulated CUDA backend when
// run by test/cuda-emulation/run.sh); the order of the transforms; finite differences of the
// reference; the options' validation. Replay a run with FDPO_SEED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { decodeToFloat64 } from '../lib/dtype.js';
import { backendInfo, dpoLoss, sequenceLogps, setSimdLevel, type DpoLossOptions, type DpoLossResult } from '../lib/index.js';
import { referenceDpo, referencePairLoss, referenceSequenceLogps, referenceTokenStats, type HeadTransformInput, type ReferenceInput } from '../lib/reference.js';
import type { LossType } from '../lib/loss-kinds.js';
import { assertInvalid, DTYPES, encode, IGNORE, makeCase, referenceInput, refTokens, relL2, tokenOptions, U, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
const onCuda = backendInfo().backend === 'cuda';

const HEADS: readonly HeadTransformInput[] = [
  { logitScale: 2.5 },
  { softcap: 4 },
  { temperature: 0.7 },
  { logitScale: 1.5, softcap: 5, temperature: 0.8 },
];

/** One unit in the last place of a 16-bit gradient, relative. */
const GRAD_ULP: Record<string, number> = { bfloat16: 2 ** -7, float16: 2 ** -10 };

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

/** The gradient in float64, the deferred scale applied. */
function gradOf(got: DpoLossResult, c: TokenCase): Float64Array {
  const g = decodeToFloat64(got.grad!.data as Float32Array | Uint16Array, c.dtype);
  if (got.rowScale) for (let r = 0; r < c.rows; r++) for (let v = 0; v < c.vocab; v++) g[r * c.vocab + v]! *= got.rowScale[r]!;
  return g;
}

/** Largest |t(z)| of the case: the transforms' float32 rounding is a few u of it per logit. */
function maxTransformed(c: TokenCase, head: HeadTransformInput): number {
  const s = head.logitScale ?? 1;
  const T = head.temperature ?? 1;
  let m = 0;
  for (const z of c.decoded) m = Math.max(m, Math.abs(z));
  return head.softcap ? Math.min(m * s, head.softcap) / T : (m * s) / T;
}

/**
 * Runs dpoLoss and sequenceLogps with `options` and checks them against the float64 reference:
 * the loss to 1e-6 relative plus the float32 budget of the sequence sums (SPEC.md's per-token
 * error, with the transformed logits' rounding), the gradient to the dtype's GRAD_L2, the metrics.
 */
function check(c: TokenCase, options: Partial<DpoLossOptions> & HeadTransformInput & { useWeighting?: boolean }, what: string) {
  const input: ReferenceInput = { ...referenceInput(c, options), logitScale: options.logitScale, softcap: options.softcap, temperature: options.temperature, useWeighting: options.useWeighting };
  const want = referenceDpo(input);
  const head = { logitScale: options.logitScale, softcap: options.softcap, temperature: options.temperature };
  const seq = sequenceLogps({ ...tokenOptions(c), ...head });
  const got: DpoLossResult = dpoLoss({ ...tokenOptions(c), ...options } as DpoLossOptions);
  const ctx = `${what}; ${c.dtype} ${c.layout} rows=${c.rows} V=${c.vocab} backend=${backendInfo().backend} simd=${backendInfo().simd} seed=${SEED}`;
  // per token: ~(40 + adds per lane)·u of (|logp| + log V + max|t|); the sums add over the sequence's tokens
  const tokenBudget = U * (40 + c.vocab / 4) * (20 + Math.log(c.vocab) + maxTransformed(c, head));
  let propagated = 0;
  for (let s = 0; s < 2 * c.B; s++) {
    const budget = tokenBudget * Math.max(want.seqCounts[s]!, 1);
    assert.ok(Math.abs(seq.logps[s]! - want.seqLogps[s]!) <= budget, `π_${s}: ${seq.logps[s]} vs ${want.seqLogps[s]} (${ctx})`);
    propagated += 2 * Math.abs(want.seqGrad[s]!) * budget;
  }
  const tol = 1e-6 * Math.abs(want.loss) + propagated * 2 + 1e-12;
  assert.ok(Math.abs(got.loss - want.loss) <= tol, `loss ${got.loss} vs ${want.loss} (tol ${tol}; ${ctx})`);
  // The kernels' gradient against the float64 one at the kernels' own G_s (a hinge at its kink or
  // a tie in aot's sort makes G jump between nearby π; the loss check above covers G itself)
  const g = gradOf(got, c);
  const expected = gradientAt(c, head, got.sequenceGrad);
  if (c.dtype === 'float32') {
    const e = relL2(g, expected);
    assert.ok(e <= 1e-5, `gradient relative L2 ${e} (${ctx})`);
  } else {
    // 16-bit: each element within one unit of its last place (fp16's subnormal spacing 2^-24
    // where it is that small), plus float32's work relative to the largest element
    let largest = 0;
    for (const w of expected) largest = Math.max(largest, Math.abs(w));
    const scale = got.rowScale ? Math.max(...Array.from(got.rowScale, Math.abs)) : 1;
    for (let i = 0; i < g.length; i++) {
      const tol = GRAD_ULP[c.dtype]! * Math.abs(expected[i]!) + (c.dtype === 'float16' ? 2 ** -24 * scale : 0) + 1e-5 * largest;
      assert.ok(Math.abs(g[i]! - expected[i]!) <= tol, `gradient[${i}] ${g[i]} vs ${expected[i]} (${ctx})`);
    }
  }
  const metricTol = 1e-5 * (1 + maxTransformed(c, head));
  for (const key of ['entropy', 'logits/chosen', 'logits/rejected', 'mean_token_accuracy'] as const) {
    assert.ok(Math.abs(got.metrics[key] - want.metrics[key]) <= metricTol, `${key} ${got.metrics[key]} vs ${want.metrics[key]} (${ctx})`);
  }
  return { got, want };
}

/** G_s·t'(z)·(onehot − p) in float64, for the given G. */
function gradientAt(c: TokenCase, head: HeadTransformInput, seqGrad: Float64Array): Float64Array {
  const stats = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE, head);
  const out = new Float64Array(c.rows * c.vocab);
  for (let s = 0; s < 2 * c.B; s++) {
    for (let r = c.cuSeqlens[s]!; r < c.cuSeqlens[s + 1]!; r++) {
      const y = c.labels.data[r]!;
      if (y === IGNORE) continue;
      const p = stats.probs(r);
      const slope = stats.slopes(r);
      for (let v = 0; v < c.vocab; v++) out[r * c.vocab + v] = seqGrad[s]! * slope[v]! * ((v === y ? 1 : 0) - p[v]!);
    }
  }
  return out;
}

function levels(): string[] {
  if (onCuda) return [backendInfo().simd];
  const usable: string[] = [];
  for (const level of ['baseline', 'neon', 'avx2', 'avx512']) {
    try {
      setSimdLevel(level as never);
      usable.push(level);
    } catch {
      // this CPU cannot run it
    }
  }
  return usable;
}

const LEVELS = levels();
const INITIAL = LEVELS[LEVELS.length - 1]!;

function eachLevel(body: (level: string) => void): void {
  try {
    for (const level of LEVELS) {
      if (!onCuda) setSimdLevel(level as never);
      body(level);
    }
  } finally {
    if (!onCuda) setSimdLevel(INITIAL as never);
  }
}

test('transforms: dpoLoss and sequenceLogps match the float64 reference (dtypes, layouts, odd V, deferScale, SIMD levels)', () => {
  const rng = makeRng(SEED);
  let k = 0;
  eachLevel(() => {
    for (const head of HEADS) {
      for (const dtype of DTYPES) {
        for (const layout of ['padded', 'packed'] as const) {
          k++;
          const vocab = pick(rng, [5, 17, 131, 2049]);
          const c = makeCase(rng, { B: 1 + rng.int(3), vocab, dtype, layout });
          const lossType: LossType[] = pick(rng, [['sigmoid'], ['ipo'], ['sigmoid', 'sft'], ['simpo', 'orpo'], ['aot_unpaired', 'hinge']]);
          check(c, { ...head, ref: c.ref, lossType, beta: pick(rng, [0.1, 0.5]), deferScale: k % 2 === 0 }, `${JSON.stringify(head)} ${lossType.join('+')}`);
        }
      }
    }
  });
});

test('transforms: sequenceLogps (sums and averages) match the reference', () => {
  const rng = makeRng(SEED + 1);
  for (const head of HEADS) {
    for (const dtype of DTYPES) {
      const c = makeCase(rng, { B: 2, vocab: 4099, dtype, layout: 'packed' });
      for (const average of [false, true]) {
        const got = sequenceLogps({ ...tokenOptions(c), ...head, average });
        const want = referenceSequenceLogps({ ...refTokens(c), ...head }, average);
        for (let s = 0; s < 4; s++) {
          const budget = U * (40 + c.vocab / 4) * (20 + Math.log(c.vocab) + maxTransformed(c, head)) * Math.max(want.counts[s]!, 1);
          assert.ok(Math.abs(got.logps[s]! - want.logps[s]!) <= budget, `${JSON.stringify(head)} ${dtype} average=${average} π_${s}: ${got.logps[s]} vs ${want.logps[s]} (seed=${SEED})`);
        }
      }
    }
  }
});

test('transforms: applied in the order logitScale, softcap, temperature (against pre-transformed logits)', () => {
  const rng = makeRng(SEED + 2);
  const head = { logitScale: 3, softcap: 2, temperature: 0.5 };
  const c = makeCase(rng, { B: 2, vocab: 33, dtype: 'float32', layout: 'padded' });
  // the same logits transformed by hand, in float64, then rounded to float32
  const by = (order: 'trl' | 'other') =>
    Float32Array.from(c.decoded, (z) =>
      order === 'trl' ? (head.softcap * Math.tanh((z * head.logitScale) / head.softcap)) / head.temperature : head.softcap * Math.tanh((z * head.logitScale) / head.temperature / head.softcap),
    );
  const transformed = (order: 'trl' | 'other'): TokenCase => {
    const { data, decoded } = encode(by(order), 'float32');
    return { ...c, logits: { ...c.logits, data }, decoded };
  };
  const native = sequenceLogps({ ...tokenOptions(c), ...head }).logps;
  const trl = sequenceLogps(tokenOptions(transformed('trl'))).logps;
  const other = sequenceLogps(tokenOptions(transformed('other'))).logps;
  const refWith = referenceSequenceLogps({ ...refTokens(c), ...head }, false).logps;
  const refOnTransformed = referenceSequenceLogps(refTokens(transformed('trl')), false).logps;
  for (let s = 0; s < 4; s++) {
    assert.ok(Math.abs(native[s]! - trl[s]!) <= 1e-4 * (1 + Math.abs(trl[s]!)), `native ${native[s]} vs pre-transformed ${trl[s]}`);
    assert.ok(Math.abs(refWith[s]! - refOnTransformed[s]!) <= 1e-5 * (1 + Math.abs(refOnTransformed[s]!)), `reference ${refWith[s]} vs pre-transformed ${refOnTransformed[s]}`);
  }
  // the other order gives other numbers, so the comparison above could fail
  assert.ok(native.some((x, s) => Math.abs(x - other[s]!) > 1e-2 * (1 + Math.abs(x))), 'the order makes a difference on this case');
});

test('transforms: logitScale 1 and temperature 1 are the plain kernels, bit for bit', () => {
  const rng = makeRng(SEED + 3);
  for (const dtype of DTYPES) {
    const c = makeCase(rng, { B: 2, vocab: 130, dtype, layout: 'packed' });
    const plain = dpoLoss({ ...tokenOptions(c), ref: c.ref });
    const ones = dpoLoss({ ...tokenOptions(c), ref: c.ref, logitScale: 1, temperature: 1 });
    assert.ok(Object.is(plain.loss, ones.loss), `${dtype}: loss`);
    assert.equal(Array.from(ones.grad!.data), Array.from(plain.grad!.data), `${dtype}: gradient`);
  }
});

test('transforms: every SIMD level gives the same bits', () => {
  if (onCuda || LEVELS.length < 2) return;
  const rng = makeRng(SEED + 4);
  for (const head of HEADS) {
    for (const dtype of DTYPES) {
      const c = makeCase(rng, { B: 2, vocab: pick(rng, [37, 2053]), dtype, layout: 'packed' });
      const runs: { loss: number; grad: number[]; seq: number[] }[] = [];
      eachLevel(() => {
        const r = dpoLoss({ ...tokenOptions(c), ref: c.ref, ...head, useWeighting: true });
        const d = dpoLoss({ ...tokenOptions(c), ref: c.ref, ...head, useWeighting: true, deferScale: true });
        runs.push({ loss: r.loss, grad: [...Array.from(r.grad!.data), ...Array.from(d.grad!.data), ...Array.from(d.rowScale!)], seq: Array.from(sequenceLogps({ ...tokenOptions(c), ...head }).logps) });
      });
      for (let i = 1; i < runs.length; i++) {
        assert.ok(Object.is(runs[i]!.loss, runs[0]!.loss), `${JSON.stringify(head)} ${dtype}: loss of ${LEVELS[i]} vs ${LEVELS[0]}`);
        assert.equal(runs[i]!.grad, runs[0]!.grad, `${JSON.stringify(head)} ${dtype}: gradient of ${LEVELS[i]} vs ${LEVELS[0]}`);
        assert.equal(runs[i]!.seq, runs[0]!.seq, `${JSON.stringify(head)} ${dtype}: sequenceLogps of ${LEVELS[i]}`);
      }
    }
  }
});

/** Logits where the label is often confident (WPO's weights then spread over (0, 1], some clamped at 1). */
function confidentCase(rng: Rng, dtype: (typeof DTYPES)[number], layout: 'padded' | 'packed', vocab: number): TokenCase {
  const c = makeCase(rng, { B: 3, vocab, dtype, layout, logit: (g) => 0.5 * g.normal() });
  const f32 = new Float32Array(c.decoded);
  for (let r = 0; r < c.rows; r++) {
    const y = c.labels.data[r]!;
    if (y >= 0 && rng.next() < 0.7) f32[r * vocab + y] = 2 + 4 * rng.next();
  }
  const { data, decoded } = encode(f32, dtype);
  return { ...c, logits: { ...c.logits, data }, decoded };
}

test('useWeighting: the loss, gradient and weights match the reference (dtypes, layouts, odd V, deferScale, loss types, SIMD levels)', () => {
  const rng = makeRng(SEED + 5);
  let k = 0;
  let clamped = 0;
  let between = 0;
  eachLevel(() => {
    for (const dtype of DTYPES) {
      for (const layout of ['padded', 'packed'] as const) {
        for (const lossType of [['sigmoid'], ['ipo'], ['sigmoid', 'sft'], ['simpo', 'orpo'], ['aot'], ['aot_unpaired']] as LossType[][]) {
          k++;
          const c = confidentCase(rng, dtype, layout, pick(rng, [5, 17, 131, 2049]));
          const head = k % 3 === 0 ? pick(rng, HEADS) : {};
          const { want } = check(c, { ...head, ref: c.ref, lossType, lossWeights: lossType.map(() => 0.5 + rng.next()), useWeighting: true, deferScale: k % 2 === 0 }, `useWeighting ${lossType.join('+')} ${JSON.stringify(head)}`);
          for (const w of want.pairWeights) {
            if (w === 1) clamped++;
            else if (w > 1e-3) between++;
          }
        }
      }
    }
  });
  assert.ok(clamped > 0 && between > 0, `the cases exercise clamped (${clamped}) and fractional (${between}) weights`);
});

test('useWeighting: scales each pair-local loss by its pair weight, no gradient through the weight', () => {
  const rng = makeRng(SEED + 6);
  const c = confidentCase(rng, 'float32', 'packed', 40);
  const plain = dpoLoss({ ...tokenOptions(c), ref: c.ref, reduction: 'sum' });
  const weighted = dpoLoss({ ...tokenOptions(c), ref: c.ref, reduction: 'sum', useWeighting: true });
  const { pairWeights } = referenceDpo({ ...referenceInput(c, { ref: c.ref }), useWeighting: true });
  for (let i = 0; i < c.B; i++) {
    const w = pairWeights[i]!;
    assert.ok(Math.abs(weighted.losses[i]! - w * plain.losses[i]!) <= 1e-5 * Math.abs(plain.losses[i]!), `losses[${i}]`);
    // detached: G_s is the plain G_s times the weight, with no term from dw/dπ
    for (const s of [i, c.B + i]) assert.ok(Math.abs(weighted.sequenceGrad[s]! - w * plain.sequenceGrad[s]!) <= 1e-5 * Math.abs(plain.sequenceGrad[s]!) + 1e-12, `sequenceGrad[${s}]`);
  }
  // the rewards and metrics are not weighted (TRL's)
  assert.equal(Array.from(weighted.chosenRewards), Array.from(plain.chosenRewards));
  assert.is(weighted.metrics.entropy, plain.metrics.entropy);
});

// ---------------------------------------------------------------------------------------------
// The reference's analytic gradient against central differences of its own loss

test('reference: the logits gradient with transforms and WPO matches central differences', () => {
  const rng = makeRng(SEED + 7);
  for (const head of [...HEADS, {}]) {
    for (const useWeighting of [false, true]) {
      const c = confidentCase(rng, 'float32', 'packed', 7);
      const lossType: LossType[] = pick(rng, [['sigmoid'], ['sigmoid', 'sft'], ['aot'], ['ipo']]);
      const base: ReferenceInput = { ...referenceInput(c, { ref: c.ref, lossType, beta: 0.7 }), ...head, useWeighting };
      const analytic = referenceDpo(base).grad;
      // WPO's weight is detached: the finite difference holds the weights at the base point
      const weights = referenceDpo(base).pairWeights;
      const lossAt = (logits: Float64Array) => {
        const { logps, counts } = referenceSequenceLogps({ ...base, logits }, false);
        return referencePairLoss(logps, counts, base, weights).loss;
      };
      const h = 1e-6;
      for (let probe = 0; probe < 12; probe++) {
        const j = rng.int(c.rows * c.vocab);
        if (c.labels.data[Math.floor(j / c.vocab)] === -100) continue;
        const up = Float64Array.from(c.decoded);
        const down = Float64Array.from(c.decoded);
        up[j]! += h;
        down[j]! -= h;
        const fd = (lossAt(up) - lossAt(down)) / (2 * h);
        assert.ok(Math.abs(fd - analytic[j]!) <= 1e-6 + 1e-5 * Math.abs(analytic[j]!), `${JSON.stringify(head)} wpo=${useWeighting} ${lossType.join('+')}: d/dz[${j}] ${analytic[j]} vs ${fd} (seed=${SEED})`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Validation

test('bad transform values and useWeighting are refused, naming the option', () => {
  const rng = makeRng(SEED + 8);
  const c = makeCase(rng, { B: 1, vocab: 5 });
  for (const key of ['logitScale', 'softcap', 'temperature'] as const) {
    for (const bad of [0, -1, NaN, Infinity, '2']) {
      for (const call of [() => dpoLoss({ ...tokenOptions(c), ref: c.ref, [key]: bad } as never), () => sequenceLogps({ ...tokenOptions(c), [key]: bad } as never)]) {
        try {
          call();
          assert.unreachable(`${key}: ${String(bad)} was accepted`);
        } catch (error) {
          assertInvalid(error, new RegExp(key), `${key}: ${String(bad)}`);
        }
      }
    }
  }
  for (const bad of ['yes', 1, null]) {
    try {
      dpoLoss({ ...tokenOptions(c), ref: c.ref, useWeighting: bad } as never);
      assert.unreachable(`useWeighting: ${String(bad)} was accepted`);
    } catch (error) {
      assertInvalid(error, /useWeighting/, `useWeighting: ${String(bad)}`);
    }
  }
  // TRL's spelling maps to ours
  assert.throws(() => dpoLoss({ ...tokenOptions(c), ref: c.ref, use_weighting: true } as never), /did you mean 'useWeighting'/);
});

test.run();
