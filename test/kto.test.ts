// ktoLoss (TRL's KTOTrainer) against the float64 reference (lib/reference-kto.ts) on fresh random
// inputs: both loss types, weights, the KL batch as log-probs or as logits, fp32/bf16/fp16, padded
// and packed, odd S and V, every grad mode and the deferred scale, every SIMD level on the CPU (and
// the emulated CUDA backend when run by test/cuda-emulation/run.sh); finite differences of the
// reference; TRL's metrics; bad input. Replay a run with FDPO_SEED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { decodeToFloat64 } from '../lib/dtype.js';
import { backendInfo, ktoLoss, ktoLossAsync, sequenceLogps, setSimdLevel, type KtoLossOptions, type KtoLossResult } from '../lib/index.js';
import { referenceKto, type ReferenceKtoInput } from '../lib/reference-kto.js';
import { referenceTokenStats, sumBySequence } from '../lib/reference.js';
import type { DType, Tensor } from '../lib/types.js';
import { assertInvalid, DTYPES, encode, IGNORE, makeCase, refTokens, relL2, U, type Layout, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
const onCuda = backendInfo().backend === 'cuda';
const GRAD_ULP: Record<string, number> = { bfloat16: 2 ** -7, float16: 2 ** -10 };
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

interface KtoCase {
  c: TokenCase; // its first S sequences
  S: number;
  desirable: boolean[];
  ref: Float64Array;
  kl: { policy: Float64Array; ref: Float64Array };
}

// S sequences (any S >= 1): a paired case of ceil(S/2) pairs, cut to S.
function ktoCase(rng: Rng, S: number, vocab: number, dtype: DType, layout: Layout, desirable?: boolean[]): KtoCase {
  const B = Math.ceil(S / 2);
  const full = makeCase(rng, { B, vocab, dtype, layout, emptySeqs: S > 2 && rng.next() < 0.3 ? [1] : [] });
  const rows = full.cuSeqlens[S]!;
  const cuSeqlens = full.cuSeqlens.slice(0, S + 1);
  const T = layout === 'padded' ? full.logits.shape[1]! : 0;
  const shape = layout === 'padded' ? [S, T, vocab] : [rows, vocab];
  const c: TokenCase = {
    ...full,
    rows,
    cuSeqlens,
    logits: { data: full.logits.data.slice(0, rows * vocab), shape, dtype },
    decoded: full.decoded.slice(0, rows * vocab),
    labels: { data: full.labels.data.slice(0, rows), shape: layout === 'padded' ? [S, T] : [rows] },
  };
  const pi = sumBySequence(referenceTokenStats(c.decoded, rows, vocab, c.labels.data, IGNORE).logp, c.labels.data, cuSeqlens, IGNORE).sums;
  const ref = Float64Array.from(pi, (p) => p + 2 * rng.normal());
  const klN = 1 + rng.int(5);
  const klPolicy = Float64Array.from({ length: klN }, () => -20 + 5 * rng.normal());
  // a KL estimate around 0, positive or not (so both sides of max(0, ·) are taken)
  const klRef = Float64Array.from(klPolicy, (p) => p - 1.5 * rng.normal());
  return { c, S, desirable: desirable ?? Array.from({ length: S }, () => rng.next() < 0.5), ref, kl: { policy: klPolicy, ref: klRef } };
}

function tokens(k: KtoCase): { logits: Tensor; labels: { data: Int32Array; shape: number[] }; cuSeqlens?: Int32Array } {
  const { c } = k;
  return c.layout === 'packed' ? { logits: c.logits, labels: c.labels, cuSeqlens: c.cuSeqlens } : { logits: c.logits, labels: c.labels };
}

type Settings = Partial<Omit<KtoLossOptions, 'logits' | 'labels'>>;

function referenceFor(k: KtoCase, o: Settings): ReturnType<typeof referenceKto> {
  const lossType = o.lossType ?? 'kto';
  const input: ReferenceKtoInput = {
    ...refTokens(k.c),
    logitScale: o.logitScale,
    softcap: o.softcap,
    temperature: o.temperature,
    desirable: k.desirable,
    ref: k.ref,
    lossType,
    beta: o.beta ?? 0.1,
    desirableWeight: o.desirableWeight ?? 1,
    undesirableWeight: o.undesirableWeight ?? 1,
    kl: lossType === 'kto' ? k.kl : null,
    scale: o.normalizer !== undefined ? 1 / o.normalizer : o.reduction === 'sum' ? 1 : 1 / k.S,
  };
  return referenceKto(input);
}

function options(k: KtoCase, o: Settings): KtoLossOptions {
  const lossType = o.lossType ?? 'kto';
  return { ...tokens(k), desirable: k.desirable, ref: k.ref, ...(lossType === 'kto' ? { kl: k.kl } : {}), ...o } as KtoLossOptions;
}

function gradOf(got: KtoLossResult, c: TokenCase): Float64Array {
  const g = decodeToFloat64(got.grad!.data as Float32Array | Uint16Array, c.dtype);
  if (got.rowScale) for (let r = 0; r < c.rows; r++) for (let v = 0; v < c.vocab; v++) g[r * c.vocab + v]! *= got.rowScale[r]!;
  return g;
}

// G_s·t'(z)·(onehot − p) in float64 at the kernels' own G.
function gradientAt(k: KtoCase, o: Settings, seqGrad: Float64Array): Float64Array {
  const { c } = k;
  const stats = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE, o);
  const out = new Float64Array(c.rows * c.vocab);
  for (let s = 0; s < k.S; s++) {
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

function check(k: KtoCase, o: Settings, what: string, got: KtoLossResult = ktoLoss(options(k, o))) {
  const { c } = k;
  const want = referenceFor(k, o);
  const ctx = `${what}; ${c.dtype} ${c.layout} S=${k.S} V=${c.vocab} backend=${backendInfo().backend} simd=${backendInfo().simd} seed=${SEED}`;
  // the sums' float32 budget per token (as head-weighting.test.ts), propagated through G
  const tokenBudget = U * (40 + c.vocab / 4) * (20 + Math.log(c.vocab) + 30);
  let propagated = 0;
  for (let s = 0; s < k.S; s++) {
    const budget = tokenBudget * Math.max(want.seqCounts[s]!, 1);
    assert.ok(Math.abs(got.logps[s]! - want.seqLogps[s]!) <= budget, `π_${s}: ${got.logps[s]} vs ${want.seqLogps[s]} (${ctx})`);
    assert.is(got.tokenCounts[s], want.seqCounts[s], `N_${s} (${ctx})`);
    propagated += 2 * Math.abs(want.seqGrad[s]!) * budget;
    const sBudget = Math.abs(want.seqGrad[s]!) * 1e-6 + (o.beta ?? 0.1) ** 2 * budget + 1e-15;
    assert.ok(Math.abs(got.sequenceGrad[s]! - want.seqGrad[s]!) <= sBudget, `G_${s}: ${got.sequenceGrad[s]} vs ${want.seqGrad[s]} (${ctx})`);
  }
  const tol = 1e-6 * Math.abs(want.loss) + propagated + 1e-12;
  assert.ok(Math.abs(got.loss - want.loss) <= tol, `loss ${got.loss} vs ${want.loss} (tol ${tol}; ${ctx})`);
  assert.ok(Math.abs(got.kl - want.z0) <= 1e-12 * (1 + Math.abs(want.z0)), `z0 ${got.kl} vs ${want.z0} (${ctx})`);
  if (got.grad) {
    const g = gradOf(got, c);
    const expected = gradientAt(k, o, got.sequenceGrad);
    if (c.dtype === 'float32') {
      const e = relL2(g, expected);
      assert.ok(e <= 1e-5, `gradient relative L2 ${e} (${ctx})`);
    } else {
      let largest = 0;
      for (const w of expected) largest = Math.max(largest, Math.abs(w));
      const scale = got.rowScale ? Math.max(...Array.from(got.rowScale, Math.abs)) : 1;
      for (let i = 0; i < g.length; i++) {
        const t = GRAD_ULP[c.dtype]! * Math.abs(expected[i]!) + (c.dtype === 'float16' ? 2 ** -24 * scale : 0) + 1e-5 * largest;
        assert.ok(Math.abs(g[i]! - expected[i]!) <= t, `gradient[${i}] ${g[i]} vs ${expected[i]} (${ctx})`);
      }
    }
  }
  // TRL's metrics (chosen = desirable), the sums to the logps' budget
  const m = got.metrics;
  assert.is(m.kl, got.kl);
  for (const [side, flag] of [['chosen', true], ['rejected', false]] as const) {
    const idx = k.desirable.flatMap((d, s) => (d === flag ? [s] : []));
    if (idx.length === 0) {
      assert.is(m[`count/${side}`], undefined, `no ${side} sequences: TRL logs no ${side} keys (${ctx})`);
      continue;
    }
    assert.is(m[`count/${side}`], idx.length, `count/${side} (${ctx})`);
    const sum = (f: (s: number) => number) => idx.reduce((a, s) => a + f(s), 0);
    const budget = tokenBudget * sum((s) => Math.max(want.seqCounts[s]!, 1)) + 1e-9;
    assert.ok(Math.abs(m[`logps/${side}_sum`]! - sum((s) => want.seqLogps[s]!)) <= budget, `logps/${side}_sum (${ctx})`);
    assert.ok(Math.abs(m[`rewards/${side}_sum`]! - sum((s) => want.rewards[s]!)) <= (o.beta ?? 0.1) * budget, `rewards/${side}_sum (${ctx})`);
    const logits = want.logitSum[side];
    assert.ok(Math.abs(m[`logits/${side}_sum`]! - logits) <= 1e-5 * (1 + Math.abs(logits)) * c.vocab, `logits/${side}_sum ${m[`logits/${side}_sum`]} vs ${logits} (${ctx})`);
  }
  assert.ok(Math.abs(m.entropy - want.entropy) <= 1e-4, `entropy (${ctx})`);
  assert.ok(Math.abs(m.mean_token_accuracy - want.meanTokenAccuracy) <= 1e-12, `mean_token_accuracy (${ctx})`);
  assert.is(m.num_tokens, want.numTokens);
  return { got, want };
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

test('ktoLoss matches the float64 reference: both loss types, weights, dtypes, layouts, odd S and V, grad modes, SIMD levels', () => {
  const rng = makeRng(SEED);
  let k = 0;
  try {
    for (const level of LEVELS) {
      if (!onCuda) setSimdLevel(level as never);
      for (const dtype of DTYPES) {
        for (const layout of ['padded', 'packed'] as const) {
          for (const lossType of ['kto', 'apo_zero_unpaired'] as const) {
            k++;
            const kc = ktoCase(rng, 1 + rng.int(5), pick(rng, [5, 17, 131, 2049]), dtype, layout);
            const o: Settings = {
              lossType,
              beta: pick(rng, [0.1, 0.5, 2]),
              desirableWeight: pick(rng, [1, 1.33]),
              undesirableWeight: pick(rng, [1, 0.7]),
              ...(k % 3 === 0 ? { reduction: 'sum' as const } : k % 3 === 1 ? { normalizer: 7 } : {}),
              ...(k % 4 === 0 ? { logitScale: 1.5, softcap: 5, temperature: 0.8 } : {}),
              deferScale: k % 2 === 0,
            };
            check(kc, o, `${level} ${JSON.stringify(o)}`);
          }
        }
      }
    }
  } finally {
    if (!onCuda) setSimdLevel(LEVELS[LEVELS.length - 1] as never);
  }
});

test('ktoLoss: grad modes (new, a tensor to fill, in place, none) give the same numbers; async gives the same bits', async () => {
  const rng = makeRng(SEED + 1);
  const kc = ktoCase(rng, 5, 33, 'float32', 'packed');
  const o = options(kc, { beta: 0.3 });
  const fresh = ktoLoss(o);
  const target = { data: new Float32Array(kc.c.rows * kc.c.vocab), shape: [kc.c.rows, kc.c.vocab] };
  const filled = ktoLoss({ ...o, grad: target });
  assert.equal(Array.from(target.data), Array.from(fresh.grad!.data), 'a tensor to fill');
  const copy = { ...kc.c.logits, data: (kc.c.logits.data as Float32Array).slice() };
  const inplace = ktoLoss({ ...o, logits: copy, grad: 'inplace' });
  assert.equal(Array.from(copy.data), Array.from(fresh.grad!.data), 'in place');
  assert.is(inplace.loss, fresh.loss);
  const none = ktoLoss({ ...o, grad: false });
  assert.is(none.grad, null);
  assert.is(none.loss, fresh.loss);
  assert.is(filled.loss, fresh.loss);
  const later = await ktoLossAsync(o);
  assert.is(later.loss, fresh.loss);
  assert.equal(Array.from(later.grad!.data), Array.from(fresh.grad!.data));
  assert.equal(Array.from(later.sequenceGrad), Array.from(fresh.sequenceGrad));
});

test('ktoLoss: the KL batch as logits (one forward pass, transforms applied) equals it as log-probs', async () => {
  const rng = makeRng(SEED + 2);
  const kc = ktoCase(rng, 4, 19, 'bfloat16', 'padded');
  const klCase = makeCase(rng, { B: 2, vocab: 19, dtype: 'bfloat16', layout: 'packed' });
  const head = { logitScale: 1.2, temperature: 0.9 };
  const klTokens = { logits: klCase.logits, labels: klCase.labels, cuSeqlens: klCase.cuSeqlens };
  const policy = sequenceLogps({ ...klTokens, ...head }).logps;
  const klRef = Float64Array.from(policy, (p) => p - 3); // z0 = 3 > 0
  const base = { ...tokens(kc), desirable: kc.desirable, ref: kc.ref, ...head };
  const byLogps = ktoLoss({ ...base, kl: { policy, ref: klRef } });
  const byLogits = ktoLoss({ ...base, kl: { ...klTokens, ref: klRef } });
  assert.ok(Math.abs(byLogps.kl - 3) < 1e-9, `z0 ${byLogps.kl}`);
  assert.is(byLogits.kl, byLogps.kl);
  assert.is(byLogits.loss, byLogps.loss);
  const later = await ktoLossAsync({ ...base, kl: { ...klTokens, ref: klRef } });
  assert.is(later.loss, byLogps.loss);
  // and the reference point is detached: the gradient is that of a constant z0
  const want = referenceKto({ ...refTokens(kc.c), ...head, desirable: kc.desirable, ref: kc.ref, lossType: 'kto', beta: 0.1, desirableWeight: 1, undesirableWeight: 1, kl: { policy, ref: klRef }, scale: 1 / kc.S });
  assert.ok(Math.abs(byLogps.loss - want.loss) <= 1e-5 * Math.abs(want.loss), `loss ${byLogps.loss} vs ${want.loss}`);
});

test('ktoLoss: all-desirable and all-undesirable batches (TRL logs only the side it has); z0 clamps at 0', () => {
  const rng = makeRng(SEED + 3);
  for (const flag of [true, false]) {
    const kc = ktoCase(rng, 3, 11, 'float16', 'packed', [flag, flag, flag]);
    const { got } = check(kc, {}, `all ${flag ? 'desirable' : 'undesirable'}`);
    assert.ok(Number.isFinite(got.loss));
    assert.is(got.metrics[flag ? 'count/rejected' : 'count/chosen'], undefined);
  }
  const kc = ktoCase(rng, 3, 11, 'float32', 'padded');
  kc.kl.ref = Float64Array.from(kc.kl.policy, (p) => p + 1); // mean KL −1: z0 = 0
  const { got } = check(kc, {}, 'negative KL estimate');
  assert.is(got.kl, 0);
});

test('ktoLoss: the reference gradient matches finite differences of the reference loss (both loss types)', () => {
  const rng = makeRng(SEED + 4);
  for (const lossType of ['kto', 'apo_zero_unpaired'] as const) {
    const kc = ktoCase(rng, 3, 6, 'float32', 'padded');
    const base: ReferenceKtoInput = {
      ...refTokens(kc.c), logitScale: 1.3, softcap: 4, desirable: kc.desirable, ref: kc.ref, lossType,
      beta: 0.7, desirableWeight: 1.2, undesirableWeight: 0.8, kl: lossType === 'kto' ? kc.kl : null, scale: 1 / 3,
    };
    const want = referenceKto(base);
    const h = 1e-5;
    for (let i = 0; i < kc.c.rows * kc.c.vocab; i += 3) {
      const at = (d: number) => {
        const logits = kc.c.decoded.slice();
        logits[i]! += d;
        return referenceKto({ ...base, logits }).loss;
      };
      const fd = (at(h) - at(-h)) / (2 * h);
      assert.ok(Math.abs(fd - want.grad[i]!) <= 1e-6 + 1e-5 * Math.abs(fd), `${lossType} ∂/∂z[${i}]: fd ${fd} vs ${want.grad[i]} (seed=${SEED})`);
    }
  }
});

test('ktoLoss: bad input is an error naming the argument', () => {
  const rng = makeRng(SEED + 5);
  const kc = ktoCase(rng, 4, 7, 'float32', 'padded');
  const o = options(kc, {});
  const cases: [string, () => unknown, RegExp][] = [
    ['desirable length', () => ktoLoss({ ...o, desirable: [true, false] }), /desirable/],
    ['desirable entry', () => ktoLoss({ ...o, desirable: [true, false, 2, true] }), /desirable\[2\]/],
    ['ref length', () => ktoLoss({ ...o, ref: new Float64Array(3) }), /ref/],
    ['ref missing', () => ktoLoss({ ...o, ref: undefined as never }), /ref/],
    ['kl missing for kto', () => ktoLoss({ ...o, kl: undefined }), /kl/],
    ['kl for apo_zero_unpaired', () => ktoLoss({ ...o, lossType: 'apo_zero_unpaired' }), /kl/],
    ['kl.ref length', () => ktoLoss({ ...o, kl: { policy: kc.kl.policy, ref: new Float64Array(kc.kl.policy.length + 1) } }), /kl\.ref/],
    ['kl empty', () => ktoLoss({ ...o, kl: { policy: [], ref: [] } }), /kl\.ref/],
    ['kl logits ref length', () => ktoLoss({ ...o, kl: { logits: kc.c.logits, labels: kc.c.labels, ref: [1] } }), /kl\.ref/],
    ['lossType', () => ktoLoss({ ...o, lossType: 'sigmoid' as never }), /lossType/],
    ['beta', () => ktoLoss({ ...o, beta: 0 }), /beta/],
    ['desirableWeight', () => ktoLoss({ ...o, desirableWeight: -1 }), /desirableWeight/],
    ['undesirableWeight', () => ktoLoss({ ...o, undesirableWeight: NaN }), /undesirableWeight/],
    ['reduction', () => ktoLoss({ ...o, reduction: 'none' as never }), /reduction/],
    ['deferScale without grad', () => ktoLoss({ ...o, deferScale: true, grad: false }), /deferScale/],
    // dpoLoss's per-token reference, refused by name
    ['ref.tokenLogps', () => ktoLoss({ ...o, ref: { tokenLogps: new Float64Array(kc.c.labels.data.length) } as never }), /ref\.tokenLogps/],
    ['kl.ref.tokenLogps', () => ktoLoss({ ...o, kl: { policy: kc.kl.policy, ref: { tokenLogps: new Float64Array(4) } as never } }), /kl\.ref\.tokenLogps/],
  ];
  for (const [what, run, name] of cases) {
    let error: unknown = null;
    try {
      run();
    } catch (e) {
      error = e;
    }
    assertInvalid(error, name, what);
  }
  // ldAlpha: dpoLoss's and sequenceLogps' (LD-DPO pairs sequences), named as theirs
  for (const [key, code] of [['desirable_weight', 'ERR_FDPO_UNKNOWN_OPTION'], ['labelSmoothing', 'ERR_FDPO_UNKNOWN_OPTION'], ['ldAlpha', 'ERR_FDPO_UNKNOWN_OPTION']] as const) {
    try {
      ktoLoss({ ...o, [key]: 1 } as never);
      assert.unreachable(`${key} accepted`);
    } catch (e) {
      assert.is((e as { code?: string }).code, code, `${key}: ${(e as Error).message}`);
      assert.match((e as Error).message, key);
      if (key === 'ldAlpha') assert.match((e as Error).message, /dpoLoss/);
    }
  }
  try {
    ktoLoss({ ...o, kl: { policy: kc.kl.policy, ref: kc.kl.ref, logps: [] } as never });
    assert.unreachable('kl.logps accepted');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'ERR_FDPO_UNKNOWN_OPTION');
  }
});

test.run();
