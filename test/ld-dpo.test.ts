// LD-DPO (ldAlpha) and per-token reference log-probs against the float64 reference: every loss
// type with ldAlpha, fp32/bf16/fp16, padded and packed, odd shapes, the pair-aware sequenceLogps,
// per-token ref against the equivalent sums, the deferred scale, every SIMD level (the CPU) or the
// emulated CUDA backend, finite differences of the reference's gradient, and hostile inputs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { DeviceTensor } from '../lib/device.js';
import { decodeToFloat64 } from '../lib/dtype.js';
import { backendInfo, dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync, setSimdLevel } from '../lib/index.js';
import type { DpoLossOptions, DpoLossResult } from '../lib/loss.js';
import { LOSS_KINDS, LOSS_TYPES, type LossType } from '../lib/loss-kinds.js';
import { ldTokenWeights, referenceDpo, referenceSequenceLogps, referenceTokenStats, type ReferenceInput } from '../lib/reference.js';
import { assertInvalid, DTYPES, hyperparametersOf, IGNORE, makeCase, refTokens, relL2, rowBudget, rowSequence, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';
import { skip } from './helpers/skip.js';

const SEED = testSeed();
const onCuda = backendInfo().backend === 'cuda';

/** Per-token reference log-probs near the policy's (a random model's), finite everywhere. */
function tokenRef(c: TokenCase, rng: Rng): Float64Array {
  const { logp } = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE);
  return Float64Array.from(logp, (lp) => lp + 0.5 * rng.normal());
}

/** The reference input for API options (ref as given: sums or per token). */
function referenceOf(c: TokenCase, o: Partial<DpoLossOptions>): ReferenceInput {
  const types = (Array.isArray(o.lossType) ? o.lossType : [o.lossType ?? 'sigmoid']) as LossType[];
  const ref = o.ref
    ? 'tokenLogps' in o.ref
      ? { tokenLogps: Float64Array.from(o.ref.tokenLogps) }
      : { chosen: Float64Array.from(o.ref.chosen), rejected: Float64Array.from(o.ref.rejected) }
    : null;
  return {
    ...refTokens(c),
    ref,
    ...hyperparametersOf(o),
    lossTypes: types,
    lossWeights: o.lossWeights ?? types.map(() => 1),
    fDivergenceType: o.fDivergenceType,
    useWeighting: o.useWeighting,
    ldAlpha: o.ldAlpha ?? null,
    scale: o.reduction === 'sum' ? 1 : 1 / c.B,
  };
}

/** The float32 budget of each sequence's score (weights ≤ 1, so the plain budget bounds it). */
function scoreBudgets(c: TokenCase): Float64Array {
  const { logp } = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE);
  const seqOf = rowSequence(c.cuSeqlens);
  const budget = new Float64Array(2 * c.B);
  for (let r = 0; r < c.rows; r++) if (c.labels.data[r] !== IGNORE) budget[seqOf[r]!] += rowBudget(c.vocab, logp[r]!) + 1e-15;
  return budget;
}

/** dpoLoss against the reference: scores, counts, loss, G_s and H_s, rewards, metrics and the gradient. */
function checkAgainstReference(c: TokenCase, o: Partial<DpoLossOptions>, what: string): DpoLossResult {
  const input = referenceOf(c, o);
  const want = referenceDpo(input);
  const got = dpoLoss({ ...tokenOptions(c), ...o } as DpoLossOptions);
  const ctx = `${what}; ${c.dtype} ${c.layout} B=${c.B} rows=${c.rows} V=${c.vocab} backend=${backendInfo().backend} simd=${backendInfo().simd} seed=${SEED}`;
  const B = c.B;
  const budget = scoreBudgets(c);
  assert.equal(Array.from(got.tokenCounts), Array.from(want.seqCounts), `tokenCounts (${ctx})`);
  const averaged = input.lossTypes.some((t) => LOSS_KINDS[t].reportsAveraged);
  for (let s = 0; s < 2 * B; s++) {
    const div = averaged ? Math.max(want.seqCounts[s]!, 1) : 1;
    const gotScore = s < B ? got.chosenLogps[s]! : got.rejectedLogps[s - B]!;
    const wantScore = s < B ? want.chosenLogps[s]! : want.rejectedLogps[s - B]!;
    assert.ok(Math.abs(gotScore - wantScore) <= budget[s]! / div, `score ${s}: ${gotScore} vs ${wantScore} (${ctx})`);
  }
  let gMax = 0;
  let propagated = 0;
  for (let s = 0; s < 2 * B; s++) {
    gMax = Math.max(gMax, Math.abs(want.seqGrad[s]!), Math.abs(want.plainSeqGrad[s]!));
    propagated += 2 * (Math.abs(want.seqGrad[s]!) + Math.abs(want.plainSeqGrad[s]!)) * budget[s]!;
  }
  const lossTol = 1e-6 * Math.abs(want.loss) + propagated + 1e-12;
  assert.ok(Math.abs(got.loss - want.loss) <= lossTol, `loss ${got.loss} vs ${want.loss} (tol ${lossTol}; ${ctx})`);
  // G_s and H_s: first-order error of the scores times the loss's curvature (2/N² at most here, β ≤ 1)
  const maxBudget = Math.max(...budget);
  const gTol = 1e-6 * gMax + 20 * maxBudget * (1 + gMax);
  const plain = o.ldAlpha === undefined ? null : got.plainSequenceGrad;
  assert.is(plain === null, o.ldAlpha === undefined, `plainSequenceGrad is null exactly without ldAlpha (${ctx})`);
  for (let s = 0; s < 2 * B; s++) {
    assert.ok(Math.abs(got.sequenceGrad[s]! - want.seqGrad[s]!) <= gTol, `sequenceGrad[${s}] ${got.sequenceGrad[s]} vs ${want.seqGrad[s]} (${ctx})`);
    if (plain) assert.ok(Math.abs(plain[s]! - want.plainSeqGrad[s]!) <= gTol, `plainSequenceGrad[${s}] ${plain[s]} vs ${want.plainSeqGrad[s]} (${ctx})`);
  }
  for (let i = 0; i < B; i++) {
    const tol = (o.beta ?? 0.1) * (budget[i]! + budget[B + i]!) + 1e-12 * (1 + Math.abs(want.chosenRewards[i]!));
    assert.ok(Math.abs(got.chosenRewards[i]! - want.chosenRewards[i]!) <= tol, `chosenRewards[${i}] (${ctx})`);
    assert.ok(Math.abs(got.rejectedRewards[i]! - want.rejectedRewards[i]!) <= tol, `rejectedRewards[${i}] (${ctx})`);
  }
  for (const key of ['logps/chosen', 'logps/rejected', 'rewards/margins', 'num_tokens', 'mean_token_accuracy'] as const) {
    const tol = 1e-6 * Math.abs(want.metrics[key]) + 2 * maxBudget * c.rows + 1e-12;
    assert.ok(Math.abs(got.metrics[key] - want.metrics[key]) <= tol, `metrics['${key}'] ${got.metrics[key]} vs ${want.metrics[key]} (${ctx})`);
  }
  // The gradient: the kernel's row scale G_s·w_t + H_s on the float64 (onehot − p), and against
  // the reference end to end.
  if (got.grad) {
    const { probs, logp } = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE);
    const seqOf = rowSequence(c.cuSeqlens);
    const expected = new Float64Array(c.rows * c.vocab);
    for (let r = 0; r < c.rows; r++) {
      const y = c.labels.data[r]!;
      if (y === IGNORE) continue;
      const s = seqOf[r]!;
      const G = got.sequenceGrad[s]! * want.tokenWeights[r]! + (plain ? plain[s]! : 0);
      const p = probs(r);
      for (let v = 0; v < c.vocab; v++) expected[r * c.vocab + v] = v === y ? G * -Math.expm1(logp[r]!) : -G * p[v]!;
    }
    const data = c.dtype === 'float32' ? (got.grad.data as Float32Array) : decodeToFloat64(got.grad.data, c.dtype);
    const tol = c.dtype === 'float32' ? 1e-5 : c.dtype === 'bfloat16' ? 2 ** -8 : 2 ** -11;
    // float16's subnormals are 2^-24 apart: an absolute floor of half that per element
    const floor = c.dtype === 'float16' ? 2 ** -25 * Math.sqrt(expected.length) : 0;
    let diff = 0, norm = 0;
    for (let i = 0; i < expected.length; i++) {
      diff += (data[i]! - expected[i]!) ** 2;
      norm += expected[i]! ** 2;
    }
    assert.ok(Math.sqrt(diff) <= tol * Math.sqrt(norm) + floor, `grad relative L2 ${relL2(data, expected)} > ${tol} (${ctx})`);
    assert.ok(relL2(expected, want.grad) <= Math.max(1e-6, gTol / (gMax || 1)), `row scales vs the reference's: ${relL2(expected, want.grad)} (${ctx})`);
  }
  return got;
}

const pick = <T>(rng: Rng, items: readonly T[]): T => items[rng.int(items.length)]!;

function randomCase(rng: Rng, k: number): TokenCase {
  const layout = k % 2 === 0 ? 'padded' : 'packed';
  const B = 1 + rng.int(3);
  const vocab = pick(rng, [5, 17, 33]);
  // Unequal lengths and prompt-like ignored prefixes, so the public length cuts inside sequences.
  return makeCase(rng, { B, vocab, dtype: DTYPES[k % 3]!, layout, T: 2 + rng.int(7), ignoreProb: 0.2, emptySeqs: k % 5 === 4 ? [0] : [] });
}

/** A reference of a random form: plain sums (TRL), pair-aware sums (the paper), or per token (f64 or f32). */
function randomRef(c: TokenCase, rng: Rng, ldAlpha: number): { o: DpoLossOptions['ref']; form: string } {
  const form = pick(rng, ['plain sums', 'pair-aware sums', 'per-token f64', 'per-token f32']);
  if (form.startsWith('per-token')) {
    const t = tokenRef(c, rng);
    return { o: { tokenLogps: form.endsWith('f32') ? Float32Array.from(t) : t }, form };
  }
  const sums = sequenceLogps({ ...tokenOptions(c), ...(form === 'pair-aware sums' ? { ldAlpha } : {}) }).logps;
  const shift = (x: number) => x + 0.7 * rng.normal();
  return { o: { chosen: Array.from(sums.subarray(0, c.B), shift), rejected: Array.from(sums.subarray(c.B), shift) }, form };
}

test('every loss type with ldAlpha matches the float64 reference (dtypes, layouts, ref forms, WPO, grad modes)', () => {
  const rng = makeRng(SEED);
  const trials = onCuda ? 1 : 2;
  let k = 0;
  // The emulated CUDA backend runs each GPU thread as an OS thread: a third of the types there, rotating with the seed.
  for (const type of LOSS_TYPES.filter((_, i) => !onCuda || (i + SEED) % 3 === 0)) {
    for (let trial = 0; trial < trials; trial++, k++) {
      const c = randomCase(rng, k);
      const ldAlpha = pick(rng, [0, 0.25, 0.5 + 0.5 * rng.next(), 1]);
      const { o: ref, form } = randomRef(c, rng, ldAlpha);
      const o: Partial<DpoLossOptions> = {
        lossType: type,
        ldAlpha,
        ref,
        beta: 0.05 + 0.5 * rng.next(),
        useWeighting: rng.next() < 0.3,
        deferScale: false,
        grad: rng.next() < 0.8,
      };
      checkAgainstReference(c, o, `${type} ldAlpha=${ldAlpha} ref=${form} wpo=${o.useWeighting}`);
    }
  }
});

test('ldAlpha with mixes that read plain sums (sft, orpo) and f-divergences, lengthPenalty and head transforms', () => {
  const rng = makeRng(SEED + 1);
  const mixes: Partial<DpoLossOptions>[] = [
    { lossType: ['sigmoid', 'sft'], lossWeights: [1, 0.7] },
    { lossType: ['orpo'] },
    { lossType: ['ipo', 'sft', 'aot'], lossWeights: [0.5, 1, 0.3] },
    { lossType: 'sigmoid', fDivergenceType: 'js_divergence', lengthPenalty: 0.2 },
    { lossType: 'hinge', fDivergenceType: 'alpha_divergence', fAlphaDivergenceCoef: 0.7, reduction: 'sum' },
  ];
  (onCuda ? mixes.slice(0, 3) : mixes).forEach((mix, k) => {
    const c = randomCase(rng, k);
    const ldAlpha = 0.3;
    const { o: ref, form } = randomRef(c, rng, ldAlpha);
    checkAgainstReference(c, { ...mix, ldAlpha, ref, beta: 0.2 }, `mix ${JSON.stringify(mix.lossType)} ref=${form}`);
  });
  // Head transforms: the reference composes them itself; compare the plain call with the transformed
  // logits fed untransformed (the weights are of the tokens, not of the logits).
  const c = randomCase(rng, 0);
  const head = { logitScale: 0.8, softcap: 4, temperature: 1.3 };
  const ref = { tokenLogps: tokenRef(c, rng) };
  const got = dpoLoss({ ...tokenOptions(c), ...head, ldAlpha: 0.4, ref, grad: false });
  const want = referenceDpo({ ...referenceOf(c, { ldAlpha: 0.4, ref }), ...head });
  assert.ok(Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss), `head transforms: ${got.loss} vs ${want.loss} (seed=${SEED})`);
});

test('ldAlpha = 1 is the plain loss, and per-token ref equals the equivalent summed ref', () => {
  const rng = makeRng(SEED + 2);
  for (let k = 0; k < (onCuda ? 1 : 3); k++) {
    const c = randomCase(rng, k);
    const t = tokenRef(c, rng);
    const plain = dpoLoss({ ...tokenOptions(c), ref: c.ref, lossType: 'sigmoid' });
    const one = dpoLoss({ ...tokenOptions(c), ref: c.ref, lossType: 'sigmoid', ldAlpha: 1 });
    assert.ok(Math.abs(one.loss - plain.loss) <= 1e-12 * Math.abs(plain.loss), `ldAlpha 1: ${one.loss} vs ${plain.loss} (seed=${SEED})`);
    assert.ok(relL2(one.grad!.data, plain.grad!.data) <= 1e-6, `ldAlpha 1: grad (seed=${SEED})`);
    for (const ldAlpha of [undefined, 0.35]) {
      // ρ_s = Σ_t w_t ref_t, in float64
      const w = ldTokenWeights(c.labels.data, c.cuSeqlens, IGNORE, ldAlpha ?? null);
      const rho = new Float64Array(2 * c.B);
      const seqOf = rowSequence(c.cuSeqlens);
      for (let r = 0; r < c.rows; r++) if (c.labels.data[r] !== IGNORE) rho[seqOf[r]!] += w[r]! * t[r]!;
      for (const lossType of onCuda ? (['ipo', 'aot'] as const) : (['sigmoid', 'ipo', 'aot', 'apo_down'] as const)) {
        const perToken = dpoLoss({ ...tokenOptions(c), ref: { tokenLogps: t }, lossType, ldAlpha });
        const summed = dpoLoss({ ...tokenOptions(c), ref: { chosen: rho.subarray(0, c.B), rejected: rho.subarray(c.B) }, lossType, ldAlpha });
        const what = `${lossType} ldAlpha=${ldAlpha} (seed=${SEED})`;
        assert.ok(Math.abs(perToken.loss - summed.loss) <= 1e-9 * Math.abs(summed.loss) + 1e-12, `${what}: per-token ${perToken.loss} vs summed ${summed.loss}`);
        for (let i = 0; i < c.B; i++) assert.ok(Math.abs(perToken.chosenRewards[i]! - summed.chosenRewards[i]!) <= 1e-9, `${what}: chosenRewards[${i}]`);
        assert.ok(relL2(perToken.grad!.data, summed.grad!.data) <= 1e-6, `${what}: grad`);
      }
    }
  }
});

test('the pair-aware sequenceLogps (sync, async, averaged) matches the reference, and dpoLoss reads the same scores', async () => {
  const rng = makeRng(SEED + 3);
  for (let k = 0; k < (onCuda ? 2 : 4); k++) {
    const c = randomCase(rng, k);
    const ldAlpha = pick(rng, [0, 0.5, 0.9]);
    const budget = scoreBudgets(c);
    for (const average of [false, true]) {
      const want = referenceSequenceLogps(refTokens(c), average, ldAlpha);
      const got = k % 2 ? await sequenceLogpsAsync({ ...tokenOptions(c), ldAlpha, average }) : sequenceLogps({ ...tokenOptions(c), ldAlpha, average });
      assert.equal(Array.from(got.counts), Array.from(want.counts));
      for (let s = 0; s < 2 * c.B; s++) {
        assert.ok(Math.abs(got.logps[s]! - want.logps[s]!) <= budget[s]!, `π_${s} ldAlpha=${ldAlpha} average=${average}: ${got.logps[s]} vs ${want.logps[s]} (${c.layout}, seed=${SEED})`);
      }
    }
    const seq = sequenceLogps({ ...tokenOptions(c), ldAlpha });
    const loss = await dpoLossAsync({ ...tokenOptions(c), ldAlpha, ref: c.ref, grad: false });
    for (let i = 0; i < c.B; i++) assert.ok(Object.is(loss.chosenLogps[i], seq.logps[i]), `dpoLoss's chosen score ${i} is sequenceLogps's, bit for bit`);
  }
});

test('ldAlpha with the deferred scale: rowScale is G_s·w_t + H_s, the gradient its product', () => {
  const rng = makeRng(SEED + 4);
  const c = randomCase(rng, 1);
  const o = { ...tokenOptions(c), ldAlpha: 0.4, ref: c.ref, lossType: ['sigmoid', 'sft'] as LossType[] };
  const twoPass = dpoLoss(o);
  const deferred = dpoLoss({ ...o, deferScale: true });
  const w = ldTokenWeights(c.labels.data, c.cuSeqlens, IGNORE, 0.4);
  const seqOf = rowSequence(c.cuSeqlens);
  for (let r = 0; r < c.rows; r++) {
    const s = seqOf[r]!;
    const want = c.labels.data[r] === IGNORE ? 0 : Math.fround(twoPass.sequenceGrad[s]! * w[r]! + twoPass.plainSequenceGrad![s]!);
    assert.is(deferred.rowScale![r], want, `rowScale[${r}] (seed=${SEED})`);
  }
  const scaled = Float64Array.from({ length: c.rows * c.vocab }, (_, i) => deferred.rowScale![Math.floor(i / c.vocab)]! * decodeToFloat64(deferred.grad!.data, c.dtype)[i]!);
  assert.ok(relL2(scaled, decodeToFloat64(twoPass.grad!.data, c.dtype)) <= (c.dtype === 'float32' ? 1e-6 : 2 ** -7), `deferred vs two-pass (seed=${SEED})`);
});

test('every SIMD level gives the same bits with ldAlpha and per-token ref', () => {
  if (onCuda) return;
  const rng = makeRng(SEED + 5);
  const c = makeCase(rng, { B: 2, vocab: 37, layout: 'packed', ignoreProb: 0.2 });
  const ref = { tokenLogps: tokenRef(c, rng) };
  const initial = backendInfo().simd;
  const runs: DpoLossResult[] = [];
  try {
    for (const level of ['baseline', 'neon', 'avx2', 'avx512'] as const) {
      try {
        setSimdLevel(level);
      } catch {
        continue; // this CPU cannot run it (test/simd-levels.test.ts says which)
      }
      runs.push(checkAgainstReference(c, { ldAlpha: 0.3, ref, lossType: ['sigmoid', 'sft'] }, `simd ${level}`));
    }
  } finally {
    setSimdLevel(initial as 'baseline');
  }
  for (const r of runs.slice(1)) {
    assert.is(r.loss, runs[0]!.loss, 'loss bits across SIMD levels');
    assert.equal(Array.from(r.grad!.data), Array.from(runs[0]!.grad!.data), 'grad bits across SIMD levels');
  }
});

test('the reference gradient with ldAlpha and per-token ref matches central differences (every loss type)', () => {
  if (onCuda) return; // reference only: the CPU run covers it
  const rng = makeRng(SEED + 6);
  for (const type of LOSS_TYPES) {
    const c = makeCase(rng, { B: 2, vocab: 4, layout: 'packed', lengths: [3, 2, 1, 4], ignoreProb: 0.15 });
    const ref = pick(rng, [{ tokenLogps: tokenRef(c, rng) }, { chosen: c.ref.chosen, rejected: c.ref.rejected }]);
    const input = referenceOf(c, { lossType: type === 'sft' ? ['sft', 'sigmoid'] : type, ldAlpha: 0.3, ref, beta: 0.3 });
    const want = referenceDpo(input);
    const h = 1e-5;
    let num = 0, den = 0;
    for (let i = 0; i < c.decoded.length; i++) {
      const at = (d: number) => {
        const logits = Float64Array.from(c.decoded);
        logits[i] = logits[i]! + d;
        return referenceDpo({ ...input, logits }).loss;
      };
      const fd = (at(h) - at(-h)) / (2 * h);
      num += (fd - want.grad[i]!) ** 2;
      den += want.grad[i]! ** 2;
    }
    // The sorted losses (aot) have kinks where an order flips: none lies within h here in practice.
    assert.ok(Math.sqrt(num) <= 1e-6 * Math.sqrt(den) + 1e-9, `${type}: gradient vs central differences, relative L2 ${Math.sqrt(num / den)} (seed=${SEED})`);
  }
});

test('with ldAlpha and per-token ref, a preallocated grad view writes inside itself only (sentinels around it)', () => {
  const rng = makeRng(SEED + 9);
  for (const dtype of DTYPES) {
    const c = makeCase(rng, { B: 2, vocab: 17, layout: 'packed', dtype, ignoreProb: 0.3 });
    const n = c.rows * c.vocab;
    const sentinel = dtype === 'float32' ? Math.fround(-1.2345678e-5) : 0xa5a5;
    const whole = dtype === 'float32' ? new Float32Array(n + 7).fill(sentinel) : new Uint16Array(n + 7).fill(sentinel);
    const view = whole.subarray(3, 3 + n);
    const o = { ...tokenOptions(c), ldAlpha: 0.6, ref: { tokenLogps: tokenRef(c, rng) }, lossType: ['sigmoid', 'sft'] as LossType[] };
    const plain = dpoLoss(o);
    dpoLoss({ ...o, grad: { data: view, shape: [...c.logits.shape], dtype } });
    for (const i of [0, 1, 2, n + 3, n + 4, n + 5, n + 6]) assert.ok(Object.is(whole[i], sentinel), `${dtype}: element ${i} outside the view was written (seed=${SEED})`);
    assert.equal(Array.from(view), Array.from(plain.grad!.data), `${dtype}: the view holds the gradient`);
  }
});

test('DeviceTensor logits and labels: the pair-aware sequenceLogps and ldAlpha with per-token ref match the CPU backend', () => {
  if (!onCuda) return skip('device', 'no CUDA device here');
  const rng = makeRng(SEED + 10);
  const c = makeCase(rng, { B: 2, vocab: 33, layout: 'packed', ignoreProb: 0.25 });
  const host = tokenOptions(c);
  const logits = DeviceTensor.from(host.logits);
  const labels = DeviceTensor.from(host.labels);
  try {
    const budget = scoreBudgets(c);
    const seqDevice = sequenceLogps({ logits, labels, cuSeqlens: c.cuSeqlens, ldAlpha: 0.3 });
    const seqCpu = sequenceLogps({ ...host, ldAlpha: 0.3, backend: 'cpu' });
    for (let s = 0; s < 2 * c.B; s++) assert.ok(Math.abs(seqDevice.logps[s]! - seqCpu.logps[s]!) <= 2 * budget[s]!, `π_${s}: device ${seqDevice.logps[s]} vs CPU ${seqCpu.logps[s]} (seed=${SEED})`);
    const ref = { tokenLogps: tokenRef(c, rng) };
    const o = { ldAlpha: 0.3, ref, lossType: ['sigmoid', 'sft'] as LossType[] };
    const onDevice = dpoLoss({ logits, labels, cuSeqlens: c.cuSeqlens, ...o });
    const onCpu = dpoLoss({ ...host, ...o, backend: 'cpu' });
    assert.ok(Math.abs(onDevice.loss - onCpu.loss) <= 1e-6 * Math.abs(onCpu.loss), `loss: device ${onDevice.loss} vs CPU ${onCpu.loss} (seed=${SEED})`);
    const grad = onDevice.grad!.download() as Float32Array;
    assert.ok(relL2(grad, onCpu.grad!.data) <= 1e-5, `grad: device vs CPU ${relL2(grad, onCpu.grad!.data)} (seed=${SEED})`);
    for (let s = 0; s < 2 * c.B; s++) assert.ok(Math.abs(onDevice.plainSequenceGrad![s]! - onCpu.plainSequenceGrad![s]!) <= 1e-6 * Math.abs(onCpu.plainSequenceGrad![s]!) + 1e-12, `plainSequenceGrad[${s}]`);
    onDevice.grad!.free();
  } finally {
    logits.free();
    labels.free();
  }
});

test('LD-DPO weights: the first min(N_c, N_r) completion tokens weigh 1, counted in order past ignored rows', () => {
  // chosen: ignored, a, b, ignored, c (N=3); rejected: d, ignored, e (N=2): L = 2
  const labels = Int32Array.of(IGNORE, 1, 1, IGNORE, 1, 1, IGNORE, 1);
  const cu = Int32Array.of(0, 5, 8);
  assert.equal(Array.from(ldTokenWeights(labels, cu, IGNORE, 0.25)), [0, 1, 1, 0, 0.25, 1, 0, 1]);
  assert.equal(Array.from(ldTokenWeights(labels, cu, IGNORE, null)), [0, 1, 1, 0, 1, 1, 0, 1]);
});

test('bad ldAlpha and per-token ref are refused with errors that name them', () => {
  const rng = makeRng(SEED + 7);
  const c = makeCase(rng, { B: 2, vocab: 5, T: 3, ignoreProb: 0.3 });
  const base = { ...tokenOptions(c), ref: c.ref };
  for (const bad of [-0.1, 1.5, NaN, Infinity, '0.5']) {
    assert.throws(() => dpoLoss({ ...base, ldAlpha: bad as number }), (e: Error) => (assertInvalid(e, /ldAlpha/, `ldAlpha ${String(bad)}`), true));
    assert.throws(() => sequenceLogps({ ...tokenOptions(c), ldAlpha: bad as number }), (e: Error) => (assertInvalid(e, /ldAlpha/, `sequenceLogps ldAlpha ${String(bad)}`), true));
  }
  // The pair-aware sequenceLogps needs pairs: 3 sequences is refused.
  const odd = makeCase(rng, { B: 2, vocab: 5, layout: 'packed', lengths: [1, 2, 3, 1] });
  const three = { logits: { ...odd.logits, shape: [6, 5], data: odd.logits.data.subarray(0, 30) }, labels: { data: odd.labels.data.subarray(0, 6), shape: [6] }, cuSeqlens: odd.cuSeqlens.subarray(0, 4) };
  assert.throws(() => sequenceLogps({ ...three, ldAlpha: 0.5 } as never), (e: Error) => (assertInvalid(e, /cuSeqlens/, 'odd sequences with ldAlpha'), /even/.test(e.message)));
  assert.not.throws(() => sequenceLogps(three as never), 'odd sequences without ldAlpha');

  const t = tokenRef(c, rng);
  const firstScored = c.labels.data.findIndex((y) => y !== IGNORE);
  const firstIgnored = c.labels.data.findIndex((y) => y === IGNORE);
  const cases: [unknown, RegExp, string][] = [
    [t.subarray(1), /ref\.tokenLogps/, 'one entry short'],
    [Array.from(t), /ref\.tokenLogps/, 'a plain array'],
    [new Int32Array(c.rows), /ref\.tokenLogps/, 'an Int32Array'],
    [Float64Array.from(t, (x, r) => (r === firstScored ? NaN : x)), new RegExp(`ref\\.tokenLogps\\[${firstScored}\\].*scored`), 'NaN at a scored row'],
    [Float32Array.from(t, (x, r) => (r === firstScored ? -Infinity : x)), new RegExp(`ref\\.tokenLogps\\[${firstScored}\\]`), '-inf at a scored row'],
  ];
  for (const [value, name, what] of cases) {
    assert.throws(() => dpoLoss({ ...base, ref: { tokenLogps: value as Float64Array } }), (e: Error) => (/ERR_FDPO_INVALID_ARGUMENT/.test((e as { code?: string }).code ?? '') && name.test(e.message)) || assert.unreachable(`${what}: ${e.message}`));
  }
  // Ignored rows are never read: anything there is fine.
  const junk = Float64Array.from(t, (x, r) => (r === firstIgnored ? NaN : x));
  assert.ok(Number.isFinite(dpoLoss({ ...base, ref: { tokenLogps: junk } }).loss), 'NaN at an ignored row is not read');
  assert.throws(() => dpoLoss({ ...base, ref: { ...c.ref, tokenLogps: t } }), (e: Error) => /not both/.test(e.message));
  // A per-token ref the caller changes after the call starts is not what the native side reads (a copy).
  const live = Float64Array.from(t);
  const p = dpoLossAsync({ ...base, ref: { tokenLogps: live }, grad: false });
  live.fill(NaN);
  return p.then((r) => assert.ok(Number.isFinite(r.loss), 'the async call reads its own copy of ref.tokenLogps'));
});

test('the binding re-checks the per-token ref length and the plain-gradient output (lib/ bypassed)', async () => {
  const { native } = await import('../lib/native.js');
  const rng = makeRng(SEED + 8);
  const c = makeCase(rng, { B: 1, vocab: 3, T: 2, ignoreProb: 0 });
  const args = {
    logits: c.logits.data, dtype: 0, rows: c.rows, vocab: c.vocab, labels: c.labels.data, cuSeqlens: c.cuSeqlens, ignoreIndex: IGNORE,
    threads: 1, device: onCuda ? 0 : null, stream: null, timings: null, ldAlpha: 0.5,
    kinds: Int32Array.of(0), weights: Float64Array.of(1), params: new Float64Array(0), fDivergence: 0, scale: 1,
    refChosen: null, refRejected: null, refTokenLogps: new Float64Array(c.rows - 1),
    seqLogps: new Float64Array(2), seqCounts: new Int32Array(2), seqGrad: new Float64Array(2), pairLosses: new Float64Array(1),
    chosenRewards: new Float64Array(1), rejectedRewards: new Float64Array(1), stats: new Float64Array(7), seqPlainGrad: new Float64Array(2), grad: null, rowScale: null,
  };
  assert.throws(() => native().dpoLoss(args as never), /refTokenLogps must have 4 elements/);
  assert.throws(() => native().dpoLoss({ ...args, refTokenLogps: new Float64Array(c.rows), seqPlainGrad: new Float64Array(3) } as never), /seqPlainGrad must have 2 elements/);
  assert.throws(() => native().dpoLoss({ ...args, refTokenLogps: new Float64Array(c.rows), ldAlpha: 2 } as never), /ld_alpha must be in \[0, 1\]/);
  const shared = new Float64Array(c.rows + 2);
  assert.throws(() => native().dpoLoss({ ...args, refTokenLogps: shared.subarray(0, c.rows), seqPlainGrad: shared.subarray(c.rows - 1, c.rows + 1) } as never), /overlap/);
  assert.throws(() => native().dpoLoss({ ...args, refTokenLogps: new Float64Array(c.rows), refChosen: new Float64Array(1), refRejected: new Float64Array(1) } as never), /one or the other/);
});

test.run();
