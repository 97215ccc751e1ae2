import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeToFloat64, fromBfloat16, fromFloat16, toBfloat16, toFloat16 } from '../lib/dtype.js';
import {
  referenceDpo,
  referenceMargin,
  referencePairLoss,
  type FDivergence,
  referenceSequenceLogps,
  referenceTokenStats,
  type PairLossConfig,
  type ReferenceInput,
} from '../lib/reference.js';
import { F_DIVERGENCES, LOSS_DEFAULTS, LOSS_KINDS, LOSS_TYPES, type LossType } from '../lib/loss-kinds.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
const IGNORE = -100;

function near(actual: number, expected: number, tol: number, what: string): void {
  if (!(Math.abs(actual - expected) <= tol)) {
    assert.unreachable(`${what}: got ${actual}, expected ${expected} (tol ${tol}, seed=${SEED})`);
  }
}

function f32FromBits(u: number): number {
  return new Float32Array(new Uint32Array([u]).buffer)[0]!;
}

// ---------------------------------------------------------------------------------------------
// dtype

test('dtype: known bfloat16 bit patterns', () => {
  const cases: [number, number][] = [
    [1, 0x3f80],
    [-2, 0xc000],
    [0.1, 0x3dcd], // f32 0x3DCCCCCD, dropped half 0xCCCD > 0x8000: rounds up
    [0, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [f32FromBits(0x3f808000), 0x3f80], // exact tie, kept part even: stays
    [f32FromBits(0x3f818000), 0x3f82], // exact tie, kept part odd: rounds up to even
    [f32FromBits(0x3f808001), 0x3f81], // just above the tie
    [f32FromBits(0x3f807fff), 0x3f80], // just below the tie
    [f32FromBits(0x7f7fffff), 0x7f80], // largest float32 rounds to inf
    [f32FromBits(0x7f7f7fff), 0x7f7f],
    [f32FromBits(0x00000001), 0x0000], // smallest float32 subnormal
  ];
  const got = toBfloat16(cases.map((c) => c[0]));
  cases.forEach(([x, bits], i) => assert.is(got[i], bits, `toBfloat16(${x}) = 0x${got[i]!.toString(16)}`));
  assert.is(toBfloat16(new Float32Array([1]))[0], 0x3f80, 'Float32Array input');
  assert.equal(Array.from(fromBfloat16(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001]))), [1, -2, Infinity, 2 ** -133]);
});

test('dtype: bfloat16 NaN stays a quiet NaN', () => {
  // 0x7F800001 has payload only in the dropped bits: truncating would give inf.
  for (const u of [0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000]) {
    const b = toBfloat16([f32FromBits(u)])[0]!;
    assert.is(b & 0x7f80, 0x7f80, `exponent of NaN 0x${u.toString(16)}`);
    assert.ok((b & 0x0040) !== 0, `quiet bit of NaN 0x${u.toString(16)} -> 0x${b.toString(16)}`);
    assert.ok(Number.isNaN(fromBfloat16(new Uint16Array([b]))[0]));
  }
  assert.ok(Number.isNaN(fromBfloat16(toBfloat16([NaN]))[0]!));
});

test('dtype: known float16 bit patterns', () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2, 0xc000],
    [0.1, 0x2e66],
    [0, 0x0000],
    [-0, 0x8000],
    [65504, 0x7bff], // largest finite
    [65519, 0x7bff], // below the halfway point to 2^16
    [65520, 0x7c00], // halfway, 0x7BFF odd: rounds to inf
    [-65520, 0xfc00],
    [1e6, 0x7c00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [-(2 ** -24), 0x8001],
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [1023.5 * 2 ** -24, 0x0400], // tie, odd: rounds up into the normals
    [2 ** -25, 0x0000], // tie between 0 and 2^-24: to even (0)
    [2 ** -25 * (1 + 2 ** -20), 0x0001], // just above that tie
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 units: to even (2)
    [5 * 2 ** -25, 0x0002], // tie between 2 and 3 units: to even (2)
    [1 + 2 ** -11, 0x3c00], // tie, even: stays
    [1 + 3 * 2 ** -11, 0x3c02], // tie, odd: rounds up
    [1 + 2 ** -11 + 2 ** -20, 0x3c01],
    [1e-30, 0x0000],
    [-1e-40, 0x8000], // float32 subnormal
  ];
  const got = toFloat16(cases.map((c) => c[0]));
  cases.forEach(([x, bits], i) => assert.is(got[i], bits, `toFloat16(${x}) = 0x${got[i]!.toString(16)}`));
  assert.equal(
    Array.from(fromFloat16(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8001, 0x03ff, 0x7c00, 0xfc00]))),
    [1, -2, 65504, 2 ** -24, -(2 ** -24), 1023 * 2 ** -24, Infinity, -Infinity],
  );
  assert.ok(Object.is(fromFloat16(new Uint16Array([0x8000]))[0], -0));
});

test('dtype: float16 NaN is kept', () => {
  for (const u of [0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000]) {
    const h = toFloat16([f32FromBits(u)])[0]!;
    assert.is(h & 0x7c00, 0x7c00, `exponent of NaN 0x${u.toString(16)}`);
    assert.ok((h & 0x0200) !== 0, `quiet bit of NaN 0x${u.toString(16)} -> 0x${h.toString(16)}`);
    assert.is(h & 0x8000, (u >>> 16) & 0x8000, 'sign kept');
  }
  assert.ok(Number.isNaN(fromFloat16(new Uint16Array([0x7e00]))[0]));
  assert.ok(Number.isNaN(fromFloat16(new Uint16Array([0x7c01]))[0]));
});

test('dtype: every 16-bit pattern round-trips', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  for (const [name, to, from, isNaNBits, quiet] of [
    ['float16', toFloat16, fromFloat16, (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x03ff) !== 0, 0x0200],
    ['bfloat16', toBfloat16, fromBfloat16, (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x007f) !== 0, 0x0040],
  ] as const) {
    const back = to(from(all));
    for (let i = 0; i < 65536; i++) {
      if (isNaNBits(i)) {
        if (!isNaNBits(back[i]!) || (back[i]! & quiet) === 0) assert.unreachable(`${name} NaN 0x${i.toString(16)} -> 0x${back[i]!.toString(16)}`);
      } else if (back[i] !== i) {
        assert.unreachable(`${name} 0x${i.toString(16)} -> 0x${back[i]!.toString(16)}`);
      }
    }
  }
});

/** Check that `bits` is the nearest 16-bit value to x, ties to even (independent of the converter). */
function checkNearest(name: string, x: number, bits: number, decode: (b: number) => number, infBits: number, beyondMax: number): void {
  const mag = bits & 0x7fff;
  const sign = bits & 0x8000;
  if (x !== 0 && (sign !== 0) !== x < 0) assert.unreachable(`${name}(${x}): sign`);
  const ax = Math.abs(x);
  if (mag === infBits) {
    // inf only when |x| is at least halfway from the largest finite value to the next power
    const halfway = (decode(infBits - 1) + beyondMax) / 2;
    if (!(ax >= halfway)) assert.unreachable(`${name}(${x}) overflowed to inf`);
    return;
  }
  const v = decode(mag);
  const err = Math.abs(ax - v);
  const below = mag > 0 ? decode(mag - 1) : -decode(1);
  const above = mag + 1 < infBits ? decode(mag + 1) : beyondMax;
  for (const nb of [below, above]) {
    const e2 = Math.abs(ax - nb);
    if (e2 < err || (e2 === err && (mag & 1) === 1)) {
      assert.unreachable(`${name}(${x}) = 0x${bits.toString(16)} (${v}) but ${nb} is nearer or an even tie`);
    }
  }
}

test('dtype: random float32 values round to the nearest, ties to even', () => {
  const rng = makeRng(SEED ^ 0x1234);
  const dec16 = (b: number) => fromFloat16(new Uint16Array([b]))[0]!;
  const decB = (b: number) => fromBfloat16(new Uint16Array([b]))[0]!;
  const xs: number[] = [];
  for (let i = 0; i < 4000; i++) {
    // float16 range and a bit beyond: exponents -27..16 with random mantissas
    const e = -27 + rng.int(44);
    xs.push(Math.fround((rng.next() < 0.5 ? -1 : 1) * (1 + rng.int(1 << 23) / 2 ** 23) * 2 ** e));
    // exact midpoints between neighbouring float16 values
    const h = rng.int(0x7bff);
    xs.push((dec16(h) + dec16(h + 1)) / 2);
  }
  const h16 = toFloat16(xs);
  xs.forEach((x, i) => checkNearest('toFloat16', x, h16[i]!, dec16, 0x7c00, 65536));

  const ys: number[] = [];
  for (let i = 0; i < 4000; i++) {
    let u = (rng.int(0x10000) << 16) | rng.int(0x10000);
    if ((u & 0x7f800000) === 0x7f800000) u &= 0xbfffffff; // skip inf/NaN
    ys.push(f32FromBits(u >>> 0));
    const b = rng.int(0x7f7f);
    ys.push(f32FromBits(((b << 16) | 0x8000) >>> 0)); // exact midpoint
  }
  const hb = toBfloat16(ys);
  ys.forEach((y, i) => checkNearest('toBfloat16', y, hb[i]!, decB, 0x7f80, 2 ** 128));
});

test('dtype: decodeToFloat64 widens exactly', () => {
  const f = new Float32Array([1.5, -0.1, 3e38]);
  assert.equal(Array.from(decodeToFloat64(f, 'float32')), [1.5, Math.fround(-0.1), Math.fround(3e38)]);
  assert.equal(Array.from(decodeToFloat64(new Uint16Array([0x3f80, 0xc000, 0x3dcd]), 'bfloat16')), [1, -2, f32FromBits(0x3dcd0000)]);
  assert.equal(Array.from(decodeToFloat64(new Uint16Array([0x0001, 0x3555, 0xfbff]), 'float16')), [2 ** -24, 0.333251953125, -65504]);
  assert.throws(() => decodeToFloat64(new Uint16Array(1), 'float32'));
  assert.throws(() => decodeToFloat64(new Float32Array(1), 'bfloat16'));
});

// ---------------------------------------------------------------------------------------------
// Pair loss: analytic gradient vs central differences

interface Scores {
  pi: Float64Array;
  counts: Int32Array;
  ref: { chosen: Float64Array; rejected: Float64Array };
}

function randomScores(rng: Rng, B: number): Scores {
  const S = 2 * B;
  const counts = Int32Array.from({ length: S }, () => 1 + rng.int(30));
  // per-token mean log-prob in [-2, -0.2]
  const pi = Float64Array.from(counts, (n) => -n * (0.2 + 1.8 * rng.next()));
  const ref = {
    chosen: Float64Array.from({ length: B }, (_, i) => pi[i]! + 3 * rng.normal()),
    rejected: Float64Array.from({ length: B }, (_, i) => pi[B + i]! + 3 * rng.normal()),
  };
  return { pi, counts, ref };
}

function pairConfig(types: readonly LossType[], weights: readonly number[], ref: Scores['ref'] | null, over: Partial<PairLossConfig> = {}): PairLossConfig {
  return {
    ref,
    ...LOSS_DEFAULTS,
    lossTypes: types,
    lossWeights: weights,
    scale: 1,
    ...over,
  };
}

/** Central differences of f at x, coordinate by coordinate, against the analytic gradient g. */
function checkGradient(what: string, f: (x: Float64Array) => number, x: Float64Array, g: Float64Array, h: number, skip: (j: number) => boolean = () => false): void {
  const f0 = f(x);
  assert.ok(Number.isFinite(f0), `${what}: loss not finite (${f0})`);
  const atol = 1e-13 * (1 + Math.abs(f0)) / h;
  for (let j = 0; j < x.length; j++) {
    if (skip(j)) continue;
    const xp = Float64Array.from(x);
    const xm = Float64Array.from(x);
    xp[j] = xp[j]! + h;
    xm[j] = xm[j]! - h;
    const fd = (f(xp) - f(xm)) / (2 * h);
    const an = g[j]!;
    if (!(Math.abs(fd - an) <= 1e-6 * Math.max(Math.abs(an), Math.abs(fd)) + atol)) {
      assert.unreachable(`${what}: d/dx[${j}] analytic ${an} vs central difference ${fd} (seed=${SEED})`);
    }
  }
}

const SMOOTHED: ReadonlySet<LossType> = new Set<LossType>(['sigmoid', 'robust', 'exo_pair', 'aot', 'aot_unpaired', 'simpo']);

test('pair loss: seqGrad matches central differences for every loss type', () => {
  const rng = makeRng(SEED);
  for (const type of LOSS_TYPES) {
    for (let trial = 0; trial < 6; trial++) {
      const B = 1 + rng.int(6);
      const sc = randomScores(rng, B);
      const scale = [1 / B, 1, 1 / 37][trial % 3]!;
      const eps = SMOOTHED.has(type) && trial >= 2 ? 0.05 + 0.3 * rng.next() : 0;
      const cfg = pairConfig([type], [1], LOSS_KINDS[type].needsRef ? sc.ref : null, {
        beta: 0.05 + 0.95 * rng.next(),
        labelSmoothing: eps,
        simpoGamma: rng.next(),
        discopopTau: trial % 2 === 0 ? 0.05 : 0.5,
        unlikelihoodAlpha: [0.3, 1, 2.5][trial % 3]!,
        scale,
      });
      const out = referencePairLoss(sc.pi, sc.counts, cfg);
      assert.is(out.losses.length, B);
      near(out.loss, scale * out.losses.reduce((s, l) => s + l, 0), 1e-12 * (1 + Math.abs(out.loss)), `${type} loss = scale·Σℓ`);
      checkGradient(`${type} trial ${trial} (B=${B}, ε=${eps.toFixed(3)}, scale=${scale})`, (x) => referencePairLoss(x, sc.counts, cfg).loss, sc.pi, out.seqGrad, 1e-5);
    }
  }
});

test('pair loss: every f-divergence and the R-DPO length term, for every loss of the margin, check out against central differences', () => {
  const rng = makeRng(SEED + 7);
  const marginTypes = LOSS_TYPES.filter((t) => LOSS_KINDS[t].margin);
  for (const type of marginTypes) {
    for (const divergence of Object.keys(F_DIVERGENCES) as FDivergence[]) {
      const B = 1 + rng.int(5);
      const sc = randomScores(rng, B);
      const cfg = pairConfig([type], [1], sc.ref, {
        beta: 0.05 + 0.95 * rng.next(),
        fDivergenceType: divergence,
        fAlphaDivergenceCoef: 0.1 + rng.next(),
        lengthPenalty: LOSS_KINDS[type].reads.includes('lengthPenalty' as never) ? 0.2 * (rng.next() - 0.5) : 0,
        scale: 1 / B,
      });
      const out = referencePairLoss(sc.pi, sc.counts, cfg);
      assert.ok(out.losses.every(Number.isFinite), `${type} ${divergence}: finite losses`);
      checkGradient(`${type} ${divergence}`, (x) => referencePairLoss(x, sc.counts, cfg).loss, sc.pi, out.seqGrad, 1e-5);
    }
  }
});

test('unlikelihood: −π̄_c − α·log(1 − e^{π̄_r}) by hand; α = 0 is the chosen NLL alone; a near-certain rejected sequence stays finite', () => {
  // pair 0: π_c = −6 over 3 tokens, π_r = −1 over 2; pair 1: π_c = −2 over 1, π_r = −1e-17 over 1 (clamped)
  const pi = new Float64Array([-6, -2, -1, -1e-17]);
  const counts = new Int32Array([3, 1, 2, 1]);
  const out = referencePairLoss(pi, counts, pairConfig(['unlikelihood'], [1], null, { unlikelihoodAlpha: 0.5 }));
  near(out.losses[0]!, 2 - 0.5 * Math.log(1 - Math.exp(-0.5)), 1e-15, 'pair 0');
  near(out.losses[1]!, 2 - 0.5 * Math.log(1e-15), 1e-9, 'pair 1 at the clamp');
  near(out.seqGrad[0]!, -1 / 3, 1e-15, 'G_c = −1/N_c');
  near(out.seqGrad[2]!, (0.5 * Math.exp(-0.5)) / (1 - Math.exp(-0.5)) / 2, 1e-14, 'G_r = α·e^x/(1 − e^x)/N_r');
  assert.ok(Number.isFinite(out.seqGrad[3]!) && out.seqGrad[3]! > 1e14, `G_r at the clamp ${out.seqGrad[3]}`);
  const nll = referencePairLoss(pi, counts, pairConfig(['unlikelihood'], [1], null, { unlikelihoodAlpha: 0 }));
  assert.equal(Array.from(nll.losses), [2, 2]);
  assert.equal(Array.from(nll.seqGrad.subarray(2)), [0, 0], 'α = 0: no push on the rejected');
});

test("f-divergence margins are TRL's formulas; forward_kl is alpha_divergence at α = 1; the cap stops the exponent", () => {
  const x = 0.7, y = -1.3;
  const js = referenceMargin('js_divergence', 0.5, x, y).value;
  near(js, Math.log((2 * Math.exp(x)) / (1 + Math.exp(x))) - Math.log((2 * Math.exp(y)) / (1 + Math.exp(y))), 1e-14, 'js: log(2u/(1+u)) per side');
  const alpha = referenceMargin('alpha_divergence', 0.5, x, y).value;
  near(alpha, ((1 - Math.exp(x) ** -0.5) / 0.5) - ((1 - Math.exp(y) ** -0.5) / 0.5), 1e-14, 'alpha: (1 − u^−α)/α per side');
  assert.equal(referenceMargin('forward_kl', 0.5, x, y), referenceMargin('alpha_divergence', 1, x, y));
  const capped = referenceMargin('alpha_divergence', 1, 0, -100);
  assert.is(capped.value, Math.exp(88.7228) - 1);
  assert.is(capped.dY, -0);
});

test('R-DPO: with lengthPenalty > 0 a longer chosen completion lowers the loss against lengthPenalty 0', () => {
  const pi = Float64Array.from([-20, -18]);
  const ref = { chosen: Float64Array.from([-19]), rejected: Float64Array.from([-18.5]) };
  const counts = Int32Array.from([30, 10]); // chosen 20 tokens longer
  const plain = referencePairLoss(pi, counts, pairConfig(['sigmoid'], [1], ref, { beta: 0.1 }));
  const rdpo = referencePairLoss(pi, counts, pairConfig(['sigmoid'], [1], ref, { beta: 0.1, lengthPenalty: 0.01 }));
  assert.ok(rdpo.loss < plain.loss, `${rdpo.loss} < ${plain.loss}`);
  near(rdpo.loss, -Math.log(1 / (1 + Math.exp(-(0.1 * ((-20 + 19) - (-18 + 18.5)) + 0.01 * 20)))), 1e-14, '−log σ(βΔ + λ(N_c − N_r))');
});

test('pair loss: weighted combinations are the weighted sums, and their gradients check out', () => {
  // A list holding ipo, simpo or orpo averages every kind's log-probs (TRL's DPOTrainer with ipo
  // in its list): there each sum-scored kind's single loss is taken at π_s/max(N_s,1) and ρ/max(N,1),
  // and its gradient times 1/max(N_s,1); the NLL (sft) reads its own mean either way.
  const rng = makeRng(SEED + 1);
  const combos: [LossType[], number[], boolean][] = [
    [['sigmoid', 'sft'], [1, 0.25], true],
    [['apo_zero', 'ipo', 'discopop'], [0.7, 1.3, 0.2], true],
    [['aot', 'ipo', 'aot_unpaired'], [1, 0.5, 0.25], true],
    [['simpo', 'orpo'], [0.5, 2], false],
    [['aot', 'aot_unpaired', 'hinge'], [1, -0.5, 3], true],
  ];
  for (const [types, weights, withRef] of combos) {
    for (const scaleKind of ['mean', 'sum', 'normalizer'] as const) {
      const B = 2 + rng.int(5);
      const sc = randomScores(rng, B);
      const scale = scaleKind === 'mean' ? 1 / B : scaleKind === 'sum' ? 1 : 1 / 123;
      const cfg = pairConfig(types, weights, withRef ? sc.ref : null, { beta: 0.3, labelSmoothing: 0.1, scale });
      const out = referencePairLoss(sc.pi, sc.counts, cfg);
      // linearity against the single-type losses
      const expectLosses = new Float64Array(B);
      const expectGrad = new Float64Array(2 * B);
      let expectLoss = 0;
      const averagesAll = types.some((t) => LOSS_KINDS[t].reportsAveraged);
      const n = (s: number) => Math.max(sc.counts[s]!, 1);
      types.forEach((t, k) => {
        const avg = averagesAll && !LOSS_KINDS[t].averagedScores && !LOSS_KINDS[t].chosenNll;
        const pi = avg ? sc.pi.map((v, s) => v / n(s)) : sc.pi;
        const ref = avg && cfg.ref && 'chosen' in cfg.ref ? { chosen: cfg.ref.chosen.map((v, i) => v / n(i)), rejected: cfg.ref.rejected.map((v, i) => v / n(B + i)) } : cfg.ref;
        const single = referencePairLoss(pi, sc.counts, { ...cfg, ref, lossTypes: [t], lossWeights: [1] });
        expectLoss += weights[k]! * single.loss;
        single.losses.forEach((l, i) => (expectLosses[i] = expectLosses[i]! + weights[k]! * l));
        single.seqGrad.forEach((g, s) => (expectGrad[s] = expectGrad[s]! + (weights[k]! * g) / (avg ? n(s) : 1)));
      });
      const what = `${types.join('+')} ${scaleKind}`;
      near(out.loss, expectLoss, 1e-12 * (1 + Math.abs(expectLoss)), `${what} loss`);
      out.losses.forEach((l, i) => near(l, expectLosses[i]!, 1e-12 * (1 + Math.abs(l)), `${what} ℓ_${i}`));
      out.seqGrad.forEach((g, s) => near(g, expectGrad[s]!, 1e-12 * (1 + Math.abs(g)), `${what} G_${s}`));
      checkGradient(what, (x) => referencePairLoss(x, sc.counts, cfg).loss, sc.pi, out.seqGrad, 1e-5);
    }
  }
});

test('pair loss: reductions scale the loss and gradient', () => {
  const rng = makeRng(SEED + 2);
  const B = 4;
  const sc = randomScores(rng, B);
  const sum = referencePairLoss(sc.pi, sc.counts, pairConfig(['sigmoid', 'simpo'], [1, 1], sc.ref, { scale: 1 }));
  const mean = referencePairLoss(sc.pi, sc.counts, pairConfig(['sigmoid', 'simpo'], [1, 1], sc.ref, { scale: 1 / B }));
  near(mean.loss * B, sum.loss, 1e-12 * Math.abs(sum.loss), 'mean·B = sum');
  sum.seqGrad.forEach((g, s) => near(mean.seqGrad[s]! * B, g, 1e-14 + 1e-12 * Math.abs(g), `G_${s}`));
  // empty weights mean all ones
  const dflt = referencePairLoss(sc.pi, sc.counts, pairConfig(['sigmoid', 'simpo'], [], sc.ref, { scale: 1 }));
  assert.is(dflt.loss, sum.loss);
});

test('pair loss: hand-computed values', () => {
  const counts = new Int32Array([2, 4]);
  const pi = new Float64Array([-3, -5]);
  const refZero = { chosen: new Float64Array([-3]), rejected: new Float64Array([-5]) }; // Δ = 0
  for (const eps of [0, 0.2]) {
    const out = referencePairLoss(pi, counts, pairConfig(['sigmoid'], [1], refZero, { beta: 0.4, labelSmoothing: eps }));
    near(out.loss, Math.LN2, 1e-15, `sigmoid at Δ=0, ε=${eps}`);
    near(out.seqGrad[0]!, 0.4 * (-(1 - eps) / 2 + eps / 2), 1e-15, 'sigmoid G_c at Δ=0');
    near(out.seqGrad[1]!, -0.4 * (-(1 - eps) / 2 + eps / 2), 1e-15, 'sigmoid G_r at Δ=0');
  }

  // hinge: β = 0.5, Δ = 4 (beyond the margin) and Δ = 2 (at the kink): zero loss, zero gradient
  for (const delta of [4, 2]) {
    const ref = { chosen: new Float64Array([-3 - delta]), rejected: new Float64Array([-5]) };
    const out = referencePairLoss(pi, counts, pairConfig(['hinge'], [1], ref, { beta: 0.5 }));
    assert.is(out.loss, 0, `hinge loss at βΔ=${delta / 2}`);
    assert.ok(out.seqGrad[0] === 0 && out.seqGrad[1] === 0, `hinge gradient at βΔ=${delta / 2}: ${out.seqGrad}`);
  }
  {
    const ref = { chosen: new Float64Array([-4]), rejected: new Float64Array([-5]) }; // Δ = 1, βΔ = 0.5
    const out = referencePairLoss(pi, counts, pairConfig(['hinge'], [1], ref, { beta: 0.5 }));
    near(out.loss, 0.5, 1e-15, 'hinge inside margin');
    assert.equal(Array.from(out.seqGrad), [-0.5, 0.5]);
  }

  // ipo: (Δ̄ − 1/(2β))², Δ̄ = a/2 − b/4
  {
    const ref = { chosen: new Float64Array([-4]), rejected: new Float64Array([-3]) }; // a = 1, b = -2
    const out = referencePairLoss(pi, counts, pairConfig(['ipo'], [1], ref, { beta: 0.5 }));
    const t = 0.5 + 0.5 - 1; // Δ̄ = 1/2 + 2/4 = 1, 1/(2β) = 1
    near(out.loss, t * t, 1e-15, 'ipo');
  }

  // discopop far out in the tail stays finite
  for (const [u, tau] of [[-50, 0.05], [-800, 0.05], [50, 0.05], [-50, 1], [0, 0.05]] as const) {
    const ref = { chosen: new Float64Array([-3 - u]), rejected: new Float64Array([-5]) }; // β = 1: u = Δ
    const out = referencePairLoss(pi, counts, pairConfig(['discopop'], [1], ref, { beta: 1, discopopTau: tau }));
    assert.ok(Number.isFinite(out.loss) && out.seqGrad.every(Number.isFinite), `discopop u=${u} τ=${tau}: ${out.loss} ${out.seqGrad}`);
    const expected = Math.log1p(Math.exp(-u)) * (1 / (1 + Math.exp(u / tau))) + Math.exp(-u) / (1 + Math.exp(-u / tau));
    if (Number.isFinite(expected)) near(out.loss, expected, 1e-12 * (1 + Math.abs(expected)), `discopop u=${u} τ=${tau}`);
  }
  {
    const ref = { chosen: new Float64Array([-3 + 50]), rejected: new Float64Array([-5]) };
    const out = referencePairLoss(pi, counts, pairConfig(['discopop'], [1], ref, { beta: 1 }));
    near(out.loss, 50, 1e-12, 'discopop at u=-50 ≈ softplus(50)');
    near(out.seqGrad[0]!, -1, 1e-12, 'discopop slope at u=-50');
  }

  // sft: token-mean NLL of the chosen tokens, the same ℓ_i for every pair
  {
    const pi2 = new Float64Array([-3, -6, -1, -1]);
    const n2 = new Int32Array([2, 4, 1, 1]);
    const out = referencePairLoss(pi2, n2, pairConfig(['sft'], [1], null, { scale: 0.5 }));
    assert.equal(Array.from(out.losses), [1.5, 1.5]);
    near(out.loss, 1.5, 1e-15, 'sft mean');
    assert.equal(Array.from(out.seqGrad), [-1 / 6, -1 / 6, 0, 0]);
  }

  // simpo: v = β(π̄_c − π̄_r) − γ = 1·(−1.5 + 1.25) − 0.5 = −0.75
  {
    const out = referencePairLoss(pi, counts, pairConfig(['simpo'], [1], null, { beta: 1 }));
    near(out.loss, Math.log1p(Math.exp(0.75)), 1e-15, 'simpo');
  }

  // aot: L = π_c − π_r sorted (pair order p), Q = ρ_c − ρ_r sorted; pair p_k gets sigmoid(β(L_{p_k} − Q_(k)))
  {
    const sp = (x: number) => Math.log1p(Math.exp(x)); // −logσ(d) = softplus(−d)
    const sg = (x: number) => 1 / (1 + Math.exp(-x));
    const pi3 = new Float64Array([2, -1, 0.5, 0, 0, 0]); // L = [2, −1, 0.5]: p = [1, 2, 0]
    const ref = { chosen: new Float64Array([0.3, -0.7, 1.1]), rejected: new Float64Array(3) }; // Q sorted [−0.7, 0.3, 1.1]
    const out = referencePairLoss(pi3, new Int32Array(6).fill(3), pairConfig(['aot'], [1], ref, { beta: 1 }));
    const d = [2 - 1.1, -1 + 0.7, 0.5 - 0.3]; // d for pairs 0, 1, 2
    d.forEach((di, i) => near(out.losses[i]!, sp(-di), 1e-15, `aot ℓ_${i}`));
    d.forEach((di, i) => near(out.seqGrad[i]!, -sg(-di), 1e-15, `aot G_c${i}`));
    d.forEach((di, i) => near(out.seqGrad[3 + i]!, sg(-di), 1e-15, `aot G_r${i}`));

    // ties in L: the lower pair index comes first
    const tie = referencePairLoss(new Float64Array([1, 1, 0, 0]), new Int32Array(4).fill(1),
      pairConfig(['aot'], [1], { chosen: new Float64Array([2, 0]), rejected: new Float64Array(2) }, { beta: 1 }));
    near(tie.losses[0]!, sp(-(1 - 0)), 1e-15, 'aot tie ℓ_0');
    near(tie.losses[1]!, sp(-(1 - 2)), 1e-15, 'aot tie ℓ_1');

    // aot_unpaired: a = [1, −2, 0.5] (p = [1, 2, 0]), b = [0, 3, −1] (q = [2, 0, 1]); d = [−1, 0.5, −2]
    const piU = new Float64Array([1, -2, 0.5, 0, 3, -1]);
    const outU = referencePairLoss(piU, new Int32Array(6).fill(3),
      pairConfig(['aot_unpaired'], [1], { chosen: new Float64Array(3), rejected: new Float64Array(3) }, { beta: 1 }));
    const dk = [-1, 0.5, -2];
    const p = [1, 2, 0];
    const q = [2, 0, 1];
    dk.forEach((x, k) => {
      near(outU.losses[p[k]!]!, sp(-x), 1e-15, `aot_unpaired ℓ_${p[k]}`);
      near(outU.seqGrad[p[k]!]!, -sg(-x), 1e-15, `aot_unpaired G_c${p[k]}`);
      near(outU.seqGrad[3 + q[k]!]!, sg(-x), 1e-15, `aot_unpaired G_r${q[k]}`);
    });
  }

  // robust needs ε < 0.5; reference-needing losses need ref
  assert.throws(() => referencePairLoss(pi, counts, pairConfig(['robust'], [1], refZero, { labelSmoothing: 0.5 })));
  assert.throws(() => referencePairLoss(pi, counts, pairConfig(['sigmoid'], [1], null)));
  assert.throws(() => referencePairLoss(pi, counts, pairConfig(['sigmoid', 'sft'], [1], refZero)));
});

test('pair loss: sequences with no completion tokens never give NaN', () => {
  const pi = new Float64Array([-3, 0, 0, -2]); // pair 0 rejected and pair 1 chosen are empty
  const counts = new Int32Array([2, 0, 0, 1]);
  const ref = { chosen: new Float64Array([-2, 0]), rejected: new Float64Array([0, -1]) };
  for (const type of LOSS_TYPES) {
    const out = referencePairLoss(pi, counts, pairConfig([type], [1], LOSS_KINDS[type].needsRef ? ref : null, { beta: 0.5, scale: 0.5 }));
    assert.ok(Number.isFinite(out.loss), `${type}: loss ${out.loss}`);
    assert.ok(out.seqGrad.every(Number.isFinite), `${type}: seqGrad ${out.seqGrad}`);
  }
  // every chosen sequence empty: the sft / orpo NLL is 0 / max(0, 1)
  const allEmpty = referencePairLoss(new Float64Array([0, 0, -1, -2]), new Int32Array([0, 0, 1, 2]), pairConfig(['orpo'], [1], null));
  assert.ok(Number.isFinite(allEmpty.loss) && allEmpty.seqGrad.every(Number.isFinite));
  // nll part: −B / max(0, 1) per chosen sequence, plus the odds part's finite limit at π̄_c = 0,
  // which also pushes π_c up (negative)
  for (const g of allEmpty.seqGrad.subarray(0, 2)) assert.ok(g < -2 && g > -3, `orpo G_c at π̄ = 0: ${g}`);
});

// ---------------------------------------------------------------------------------------------
// Full reference: logits gradient vs central differences

interface Case {
  input: ReferenceInput;
}

/** B = 2, V = 5; seq 0 starts with an ignored prompt row, seq 2 has an ignored row, seq 3 has none scored. */
function tinyCase(rng: Rng, cuSeqlens: number[], types: LossType[], over: Partial<ReferenceInput> = {}): Case {
  const V = 5;
  const R = cuSeqlens[cuSeqlens.length - 1]!;
  const labels = Int32Array.from({ length: R }, () => rng.int(V));
  labels[cuSeqlens[0]!] = IGNORE;
  labels[cuSeqlens[2]! + 1] = IGNORE;
  for (let r = cuSeqlens[3]!; r < cuSeqlens[4]!; r++) labels[r] = IGNORE;
  const logits = Float64Array.from({ length: R * V }, () => 2 * rng.normal());
  const cu = Int32Array.from(cuSeqlens);
  const { logps } = referenceSequenceLogps({ logits, rows: R, vocab: V, labels, cuSeqlens: cu, ignoreIndex: IGNORE }, false);
  const ref = {
    chosen: Float64Array.from([logps[0]! + rng.normal(), logps[1]! + rng.normal()]),
    rejected: Float64Array.from([logps[2]! + rng.normal(), logps[3]! + rng.normal()]),
  };
  return {
    input: {
      logits,
      rows: R,
      vocab: V,
      labels,
      cuSeqlens: cu,
      ignoreIndex: IGNORE,
      ref,
      ...LOSS_DEFAULTS,
      beta: 0.3,
      lossTypes: types,
      lossWeights: types.map(() => 1),
      labelSmoothing: 0.1,
      scale: 0.5,
      ...over,
    },
  };
}

test('referenceDpo: logits gradient matches central differences', () => {
  const rng = makeRng(SEED + 3);
  const layouts = [
    [0, 3, 6, 9, 12], // padded [2B, T=3, V]
    [0, 2, 5, 7, 9], // varlen
  ];
  const typeSets: LossType[][] = [...LOSS_TYPES.map((t) => [t]), ['sigmoid', 'sft'], ['simpo', 'orpo']];
  for (const types of typeSets) {
    for (const layout of layouts) {
      const { input } = tinyCase(rng, layout, types);
      const out = referenceDpo(input);
      const what = `${types.join('+')} cu=[${layout}]`;
      checkGradient(what, (z) => referenceDpo({ ...input, logits: z }).loss, input.logits, out.grad, 1e-5);
      // consistency with the pieces
      const seq = referenceSequenceLogps(input, false);
      assert.equal(Array.from(out.seqLogps), Array.from(seq.logps), `${what} seqLogps`);
      assert.equal(Array.from(out.seqCounts), Array.from(seq.counts), `${what} seqCounts`);
      const pair = referencePairLoss(out.seqLogps, out.seqCounts, input);
      assert.is(out.loss, pair.loss);
      // every row's gradient sums to ~0; ignored rows are exactly 0
      for (let r = 0; r < input.rows; r++) {
        const row = out.grad.subarray(r * input.vocab, (r + 1) * input.vocab);
        if (input.labels[r] === IGNORE) {
          assert.ok(row.every((g) => g === 0), `${what}: ignored row ${r} has gradient ${row}`);
        } else {
          const sum = row.reduce((s, g) => s + g, 0);
          const mag = row.reduce((s, g) => s + Math.abs(g), 0);
          assert.ok(Math.abs(sum) <= 1e-14 + 1e-12 * mag, `${what}: row ${r} sums to ${sum}`);
        }
      }
    }
  }
});

test('referenceDpo: empty sequences, hinge beyond margin, non-finite logits', () => {
  const rng = makeRng(SEED + 4);
  const layout = [0, 3, 6, 9, 12];
  for (const type of LOSS_TYPES) {
    const { input } = tinyCase(rng, layout, [type]);
    const out = referenceDpo(input);
    assert.ok(Number.isFinite(out.loss), `${type}: loss with an empty sequence is ${out.loss}`);
    assert.ok(out.grad.every(Number.isFinite), `${type}: non-finite gradient`);
    assert.is(out.seqCounts[3], 0);
    assert.ok(Object.values(out.metrics).every(Number.isFinite), `${type}: metrics ${JSON.stringify(out.metrics)}`);

    // a non-finite logit in a scored row (of a rejected sequence) gives a NaN loss, whatever the type
    for (const bad of [NaN, Infinity, -Infinity]) {
      const logits = Float64Array.from(input.logits);
      logits[8 * input.vocab + 2] = bad; // row 8: seq 2, scored
      assert.ok(input.labels[8] !== IGNORE);
      assert.ok(Number.isNaN(referenceDpo({ ...input, logits }).loss), `${type}: logit ${bad} should give a NaN loss`);
    }
    // ... but in an ignored row it changes nothing
    const logits = Float64Array.from(input.logits);
    logits[10 * input.vocab + 1] = NaN;
    assert.is(referenceDpo({ ...input, logits }).loss, out.loss, `${type}: NaN in an ignored row`);
  }

  // orpo with every chosen sequence empty
  {
    const { input } = tinyCase(rng, layout, ['orpo'], { ref: null });
    const labels = Int32Array.from(input.labels);
    for (let r = 0; r < 6; r++) labels[r] = IGNORE;
    const out = referenceDpo({ ...input, labels });
    assert.ok(Number.isFinite(out.loss) && out.grad.every(Number.isFinite), `orpo all-chosen-empty: ${out.loss}`);
    assert.is(out.metrics.mean_token_accuracy, 0);
    assert.is(out.metrics['logits/chosen'], 0);
  }

  // hinge beyond the margin: loss 0 and every gradient entry exactly 0
  {
    const { input } = tinyCase(rng, layout, ['hinge']);
    const seq = referenceSequenceLogps(input, false).logps;
    const ref = { chosen: Float64Array.from([seq[0]! - 10, seq[1]! - 10]), rejected: Float64Array.from([seq[2]!, seq[3]!]) };
    const out = referenceDpo({ ...input, ref, beta: 0.5 });
    assert.is(out.loss, 0);
    assert.ok(out.grad.every((g) => g === 0), 'hinge beyond margin has a nonzero gradient');
  }
});

// ---------------------------------------------------------------------------------------------
// Token stats and metrics, by hand

/**
 * B = 2, V = 2, T = 2. Sequences: 0 = chosen 0 (rows 0,1), 1 = chosen 1 (rows 2,3),
 * 2 = rejected 0 (rows 4,5), 3 = rejected 1 (rows 6,7, all ignored).
 */
function handCase(types: LossType[], withRef: boolean): ReferenceInput {
  const l3 = Math.log(3);
  const rowsZ = [
    [0, 0], [l3, 0], // seq 0: y = 0, 1
    [0, 0], [0, 0], // seq 1: y = 1, 0
    [2, 2], [0, l3], // seq 2: ignored, y = 1
    [5, -1], [7, 7], // seq 3: ignored, ignored
  ];
  return {
    logits: Float64Array.from(rowsZ.flat()),
    rows: 8,
    vocab: 2,
    labels: Int32Array.from([0, 1, 1, 0, IGNORE, 1, IGNORE, IGNORE]),
    cuSeqlens: Int32Array.from([0, 2, 4, 6, 8]),
    ignoreIndex: IGNORE,
    ref: withRef ? { chosen: Float64Array.from([-2, -3]), rejected: Float64Array.from([-1, -0.5]) } : null,
    ...LOSS_DEFAULTS,
    lossTypes: types,
    lossWeights: types.map(() => 1),
    scale: 0.5,
  };
}

const L2 = Math.LN2;
const L3 = Math.log(3);
const H34 = -(0.75 * Math.log(0.75) + 0.25 * Math.log(0.25)); // entropy of (3/4, 1/4)

test('token stats by hand', () => {
  const c = handCase(['sigmoid'], true);
  const st = referenceTokenStats(c.logits, c.rows, c.vocab, c.labels, c.ignoreIndex);
  const expLogp = [-L2, -2 * L2, -L2, -L2, 0, Math.log(0.75), 0, 0];
  const expEnt = [L2, H34, L2, L2, 0, H34, 0, 0];
  const expMean = [0, L3 / 2, 0, 0, 0, L3 / 2, 0, 0]; // ignored rows left at 0
  const expCorrect = [1, 0, 0, 1, 0, 1, 0, 0]; // argmax of a tie is the first index
  for (let r = 0; r < 8; r++) {
    near(st.logp[r]!, expLogp[r]!, 1e-15, `logp[${r}]`);
    near(st.entropy[r]!, expEnt[r]!, 1e-15, `entropy[${r}]`);
    near(st.rowMeanLogit[r]!, expMean[r]!, 1e-15, `rowMeanLogit[${r}]`);
    assert.is(st.correct[r], expCorrect[r], `correct[${r}]`);
  }
  const p1 = st.probs(1);
  near(p1[0]!, 0.75, 1e-15, 'p[1,0]');
  near(p1[1]!, 0.25, 1e-15, 'p[1,1]');

  const sums = referenceSequenceLogps(c, false);
  const avg = referenceSequenceLogps(c, true);
  assert.equal(Array.from(sums.counts), [2, 2, 1, 0]);
  [-3 * L2, -2 * L2, Math.log(0.75), 0].forEach((v, s) => near(sums.logps[s]!, v, 1e-15, `π_${s}`));
  [-1.5 * L2, -L2, Math.log(0.75), 0].forEach((v, s) => near(avg.logps[s]!, v, 1e-15, `π̄_${s}`));
});

test('metrics by hand', () => {
  const beta = 0.1;
  const a = [-3 * L2 + 2, -2 * L2 + 3];
  const b = [Math.log(0.75) + 1, 0 + 0.5];
  const shared = {
    'logits/chosen': L3 / 8,
    'logits/rejected': L3 / 2,
    entropy: (3 * L2 + 2 * H34) / 5,
    mean_token_accuracy: 0.5,
    num_tokens: 5,
  };
  const check = (got: Record<string, number>, want: Record<string, number>, what: string) => {
    for (const k of Object.keys(want)) near(got[k]!, want[k]!, 1e-14, `${what} ${k}`);
    assert.equal(Object.keys(got).sort(), Object.keys(want).sort(), `${what} metric names`);
  };

  // sigmoid: sums
  {
    const out = referenceDpo(handCase(['sigmoid'], true));
    const cr = a.map((x) => beta * x);
    const rr = b.map((x) => beta * x);
    check(out.metrics as unknown as Record<string, number>, {
      'rewards/chosen': (cr[0]! + cr[1]!) / 2,
      'rewards/rejected': (rr[0]! + rr[1]!) / 2,
      'rewards/accuracies': 0.5, // pair 0: -0.0079 < 0.0712; pair 1: 0.161 > 0.05
      'rewards/margins': (cr[0]! - rr[0]! + cr[1]! - rr[1]!) / 2,
      'logps/chosen': -2.5 * L2,
      'logps/rejected': Math.log(0.75) / 2,
      ...shared,
    }, 'sigmoid');
    near(out.chosenRewards[1]!, cr[1]!, 1e-15, 'chosenRewards[1]');
    near(out.rejectedLogps[0]!, Math.log(0.75), 1e-15, 'rejectedLogps[0]');
    const lossOf = (d: number) => Math.log(1 + Math.exp(-beta * d));
    near(out.loss, (lossOf(a[0]! - b[0]!) + lossOf(a[1]! - b[1]!)) / 2, 1e-15, 'sigmoid loss');
  }

  // sigmoid + simpo: rewards and logps on averaged scores (N = 0 divides by 1)
  {
    const out = referenceDpo(handCase(['sigmoid', 'simpo'], true));
    const cr = [beta * a[0]! / 2, beta * a[1]! / 2];
    const rr = [beta * b[0]! / 1, beta * b[1]! / 1];
    check(out.metrics as unknown as Record<string, number>, {
      'rewards/chosen': (cr[0]! + cr[1]!) / 2,
      'rewards/rejected': (rr[0]! + rr[1]!) / 2,
      'rewards/accuracies': 0.5,
      'rewards/margins': (cr[0]! - rr[0]! + cr[1]! - rr[1]!) / 2,
      'logps/chosen': (-1.5 * L2 - L2) / 2,
      'logps/rejected': Math.log(0.75) / 2,
      ...shared,
    }, 'sigmoid+simpo');
  }

  // orpo without ref: rewards are β·π̄
  {
    const out = referenceDpo(handCase(['orpo'], false));
    const cr = [beta * -1.5 * L2, beta * -L2];
    const rr = [beta * Math.log(0.75), 0];
    check(out.metrics as unknown as Record<string, number>, {
      'rewards/chosen': (cr[0]! + cr[1]!) / 2,
      'rewards/rejected': (rr[0]! + rr[1]!) / 2,
      'rewards/accuracies': 0, // -0.104 < -0.029 and -0.069 < 0
      'rewards/margins': (cr[0]! - rr[0]! + cr[1]! - rr[1]!) / 2,
      'logps/chosen': -1.25 * L2,
      'logps/rejected': Math.log(0.75) / 2,
      ...shared,
    }, 'orpo');
    // ℓ_i = nll − β·logσ(D_i), nll = 5 ln2 / 4; pair 1's rejected π̄ = 0 is clamped to −1e-15
    const lo = (x: number) => x - Math.log(1 - Math.exp(x));
    const loClamped = -1e-15 - Math.log(-Math.expm1(-1e-15));
    const D0 = lo(-1.5 * L2) - lo(Math.log(0.75));
    const D1 = lo(-L2) - loClamped;
    const nll = (5 * L2) / 4;
    near(out.losses[0]!, nll + beta * Math.log1p(Math.exp(-D0)), 1e-13, 'orpo ℓ_0');
    near(out.losses[1]!, nll + beta * Math.log1p(Math.exp(-D1)), 1e-13, 'orpo ℓ_1');
  }
});

test.run();
