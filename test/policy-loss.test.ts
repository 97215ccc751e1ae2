// policyLoss (the GRPO family) against the float64 reference (lib/reference.ts referencePolicyLoss)
// on fresh random cases: every aggregation, fp32/bf16/fp16, padded and packed, on- and
// off-policy, per-token and per-sequence advantages, the KL and the entropy bonus, temperature;
// the reference's own gradient by finite differences (clipped and unclipped tokens, away from the
// kinks); the gradient modes; TRL's metrics; non-finite logits; bad input. Small shapes: this file
// also runs on the emulated CUDA backend (test/cuda-emulation/run.sh).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

import { fromBfloat16, fromFloat16, policyLoss, policyLossAsync, type PolicyLossOptions, type PolicyLossType } from '../lib/index.js';
import { referencePolicyLoss, referenceTokenStats, type PolicyReferenceInput, type PolicyReferenceOutput } from '../lib/reference.js';
import type { DType } from '../lib/types.js';
import { assertInvalid, DTYPES, encode, IGNORE, makeCase, relErr, relL2, tokenOptions, type Layout, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
const LOSS_TYPES: readonly PolicyLossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo'];
const test = suite('policyLoss');

interface PolicyCase {
  c: TokenCase;
  numSeqs: number;
  advantages: Float64Array;
  perToken: boolean;
  oldLogps: Float64Array | null;
  refLogps: Float64Array | null;
}

/** A random case: old and ref log-probs near the reference's own, so ratios fall inside and outside the clip range. */
function policyCase(rng: Rng, spec: { B: number; vocab: number; dtype?: DType; layout?: Layout; perToken?: boolean; onPolicy?: boolean; withRef?: boolean; T?: number; emptySeqs?: number[] }): PolicyCase {
  const c = makeCase(rng, { B: spec.B, vocab: spec.vocab, dtype: spec.dtype, layout: spec.layout, T: spec.T, emptySeqs: spec.emptySeqs });
  const numSeqs = 2 * spec.B;
  const logp = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE).logp;
  const perToken = spec.perToken ?? false;
  const advantages = Float64Array.from({ length: perToken ? c.rows : numSeqs }, () => rng.normal());
  const near = (spread: number) => Float64Array.from(logp, (x, r) => (c.labels.data[r] === IGNORE ? 0 : x + spread * rng.normal()));
  return { c, numSeqs, advantages, perToken, oldLogps: spec.onPolicy ? null : near(0.3), refLogps: spec.withRef === false ? null : near(0.5) };
}

interface Settings {
  lossType: PolicyLossType;
  beta?: number;
  epsilon?: number;
  epsilonHigh?: number;
  entropyCoef?: number;
  temperature?: number;
  maxCompletionLength?: number;
  numItemsInBatch?: number;
}

function optionsFor(p: PolicyCase, s: Settings): PolicyLossOptions {
  return {
    ...tokenOptions(p.c),
    advantages: p.advantages,
    advantagesPer: p.perToken ? 'token' : 'sequence',
    oldLogps: p.oldLogps,
    refLogps: p.refLogps,
    ...s,
    ...(s.lossType === 'dr_grpo' ? { maxCompletionLength: s.maxCompletionLength ?? 7 } : {}),
  };
}

function referenceFor(p: PolicyCase, s: Settings, logits = p.c.decoded): PolicyReferenceOutput {
  const epsilon = s.epsilon ?? 0.2;
  const input: PolicyReferenceInput = {
    logits,
    rows: p.c.rows,
    vocab: p.c.vocab,
    labels: p.c.labels.data,
    cuSeqlens: p.c.cuSeqlens,
    ignoreIndex: IGNORE,
    advantages: p.advantages,
    advantagesPerToken: p.perToken,
    oldLogps: p.oldLogps,
    refLogps: p.refLogps,
    beta: s.beta ?? 0,
    epsilon,
    epsilonHigh: s.epsilonHigh ?? epsilon,
    entropyCoef: s.entropyCoef ?? 0,
    lossType: s.lossType,
    maxCompletionLength: s.lossType === 'dr_grpo' ? s.maxCompletionLength ?? 7 : 0,
    numItemsInBatch: s.numItemsInBatch ?? 0,
    temperature: s.temperature,
  };
  return referencePolicyLoss(input);
}

function decodedGrad(data: Float32Array | Uint16Array, dtype: DType): Float64Array {
  if (dtype === 'float32') return Float64Array.from(data as Float32Array);
  return Float64Array.from(data as Uint16Array, (b) => (dtype === 'bfloat16' ? fromBfloat16(new Uint16Array([b]))[0]! : fromFloat16(new Uint16Array([b]))[0]!));
}

// The float32 kernels' log-probs are within a few ulp of |logp| and log V of the float64 ones.
const LOGP_ATOL = 2e-5;
const GRAD_L2: Record<DType, number> = { float32: 1e-5, bfloat16: 8e-3, float16: 1e-3 };

function checkAgainstReference(p: PolicyCase, s: Settings, context: string): void {
  const got = policyLoss(optionsFor(p, s));
  const want = referenceFor(p, s);
  const { c } = p;
  for (let r = 0; r < c.rows; r++) {
    if (c.labels.data[r] === IGNORE) {
      assert.is(got.logps[r], 0, `${context}: logps[${r}] of an ignored row`);
      assert.is(got.tokenGrad[r], 0, `${context}: tokenGrad[${r}] of an ignored row`);
    } else {
      assert.ok(Math.abs(got.logps[r]! - want.logps[r]!) <= LOGP_ATOL, `${context}: logps[${r}] ${got.logps[r]} vs ${want.logps[r]}`);
      assert.ok(relErr(got.tokenGrad[r]!, want.tokenGrad[r]!, 1e-3) <= 1e-3, `${context}: tokenGrad[${r}] ${got.tokenGrad[r]} vs ${want.tokenGrad[r]}`);
    }
  }
  // The loss moves by tokenGrad·(logp error) and entropyCoef·w·(entropy error) at most.
  const propagated = want.tokenGrad.reduce((a, g) => a + Math.abs(g), 0) * LOGP_ATOL + Math.abs(s.entropyCoef ?? 0) * LOGP_ATOL;
  assert.ok(Math.abs(got.loss - want.loss) <= 1e-6 * Math.max(1, Math.abs(want.loss)) + propagated, `${context}: loss ${got.loss} vs ${want.loss}`);
  const count = c.labels.data.reduce((n, y) => n + (y === IGNORE ? 0 : 1), 0);
  assert.is(got.metrics.num_tokens, count, `${context}: num_tokens`);
  // Clip flags and the KL may flip or move with the logp error only on a measure-zero set: compare loosely.
  for (const key of ['clip_ratio/low_mean', 'clip_ratio/high_mean', 'clip_ratio/region_mean'] as const) {
    assert.ok(Math.abs(got.metrics[key] - want.metrics[key]) <= 1.01 / Math.max(count, 1), `${context}: ${key} ${got.metrics[key]} vs ${want.metrics[key]}`);
  }
  assert.ok(Math.abs(got.metrics.entropy - want.metrics.entropy) <= 1e-5 * (1 + want.metrics.entropy), `${context}: entropy`);
  if (p.refLogps === null) assert.is(got.metrics.kl, null, `${context}: kl without refLogps`);
  else assert.ok(Math.abs(got.metrics.kl! - want.metrics.kl!) <= 1e-4 * (1 + want.metrics.kl!), `${context}: kl ${got.metrics.kl} vs ${want.metrics.kl}`);
  const grad = decodedGrad(got.grad!.data, c.dtype);
  const err = relL2(grad, want.grad);
  assert.ok(err <= GRAD_L2[c.dtype], `${context}: gradient relative L2 ${err}`);
  for (let r = 0; r < c.rows; r++) {
    if (c.labels.data[r] !== IGNORE) continue;
    for (let v = 0; v < c.vocab; v++) assert.is(grad[r * c.vocab + v], 0, `${context}: ignored row ${r} has an exact 0 gradient`);
  }
}

test('every aggregation with every dtype, padded and packed, against the float64 reference (off-policy, KL, entropy bonus, temperature)', () => {
  const rng = makeRng(SEED ^ 0x51);
  // Each aggregation with each dtype; the layouts alternate (both meet every aggregation and dtype).
  LOSS_TYPES.forEach((lossType, i) => {
    DTYPES.forEach((dtype, j) => {
      const layout = (i + j) % 2 === 0 ? 'padded' : 'packed';
      const p = policyCase(rng, { B: 2, vocab: 3 + rng.int(70), dtype, layout, perToken: rng.next() < 0.5 });
      const s: Settings = { lossType, beta: 0.1, entropyCoef: 0.05, temperature: 0.7, epsilonHigh: 0.28 };
      checkAgainstReference(p, s, `seed=${SEED} ${lossType} ${dtype} ${layout} perToken=${p.perToken}`);
    });
  });
});

test('on-policy (ratio 1, its gradient kept), per-token and per-sequence advantages, no reference', () => {
  const rng = makeRng(SEED ^ 0x52);
  for (const lossType of LOSS_TYPES) {
    for (const perToken of [false, true]) {
      const p = policyCase(rng, { B: 2, vocab: 5 + rng.int(40), layout: rng.next() < 0.5 ? 'padded' : 'packed', perToken, onPolicy: true, withRef: false });
      const context = `seed=${SEED} on-policy ${lossType} perToken=${perToken}`;
      checkAgainstReference(p, { lossType }, context);
      const got = policyLoss(optionsFor(p, { lossType }));
      assert.is(got.metrics['clip_ratio/region_mean'], 0, `${context}: nothing clips at ratio 1`);
    }
  }
});

test('numItemsInBatch, maxCompletionLength and an empty sequence', () => {
  const rng = makeRng(SEED ^ 0x53);
  const p = policyCase(rng, { B: 2, vocab: 17, emptySeqs: [1] });
  checkAgainstReference(p, { lossType: 'dapo', numItemsInBatch: 37.5 }, `seed=${SEED} dapo numItemsInBatch`);
  checkAgainstReference(p, { lossType: 'dr_grpo', maxCompletionLength: 13 }, `seed=${SEED} dr_grpo L=13`);
  checkAgainstReference(p, { lossType: 'grpo', entropyCoef: -0.2 }, `seed=${SEED} grpo empty sequence`);
});

test('the reference gradient matches finite differences: clipped and unclipped tokens of both signs, KL, entropy, temperature', () => {
  const rng = makeRng(SEED ^ 0x54);
  const p = policyCase(rng, { B: 1, vocab: 6, T: 4, perToken: true });
  const { c } = p;
  const logp = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE, { temperature: 0.8 }).logp;
  // Ratios well inside and well outside [1 − ε, 1 + ε_high] (no token within 0.05 of a kink), advantages of both signs.
  const ratios = [0.5, 0.95, 1.1, 1.6];
  p.oldLogps = Float64Array.from(logp, (x, r) => x - Math.log(ratios[r % ratios.length]!));
  p.advantages = Float64Array.from({ length: c.rows }, (_, r) => (r % 2 === 0 ? 1 : -1) * (0.5 + rng.next()));
  for (const lossType of LOSS_TYPES) {
    const s: Settings = { lossType, beta: 0.3, entropyCoef: 0.4, temperature: 0.8 };
    const want = referenceFor(p, s);
    const h = 1e-5;
    const fd = new Float64Array(c.decoded.length);
    for (let i = 0; i < c.decoded.length; i++) {
      const plus = c.decoded.slice();
      const minus = c.decoded.slice();
      plus[i] = plus[i]! + h;
      minus[i] = minus[i]! - h;
      fd[i] = (referenceFor(p, s, plus).loss - referenceFor(p, s, minus).loss) / (2 * h);
    }
    const err = relL2(want.grad, fd);
    assert.ok(err <= 1e-6, `seed=${SEED} ${lossType}: reference gradient vs finite differences, relative L2 ${err}`);
    const got = policyLoss(optionsFor(p, s));
    const native = relL2(Float64Array.from(got.grad!.data as Float32Array), fd);
    assert.ok(native <= 1e-5, `seed=${SEED} ${lossType}: native gradient vs finite differences, relative L2 ${native}`);
  }
});

test('gradient modes: new, preallocated, in place and none give the same bits; async the same as sync', async () => {
  const rng = makeRng(SEED ^ 0x55);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const p = policyCase(rng, { B: 2, vocab: 33, dtype });
    const s: Settings = { lossType: 'grpo', beta: 0.05, entropyCoef: 0.1 };
    const base = policyLoss(optionsFor(p, s));
    const into = { data: p.c.logits.data.slice(), shape: p.c.logits.shape, dtype };
    const given = policyLoss({ ...optionsFor(p, s), grad: into });
    assert.is(given.grad!.data, into.data, `${dtype}: the given tensor is filled`);
    assert.equal(Array.from(into.data), Array.from(base.grad!.data), `${dtype}: preallocated`);
    const none = policyLoss({ ...optionsFor(p, s), grad: false });
    assert.is(none.grad, null);
    assert.is(none.loss, base.loss, `${dtype}: loss without the gradient`);
    const async = await policyLossAsync(optionsFor(p, s));
    assert.is(async.loss, base.loss, `${dtype}: async loss`);
    assert.equal(Array.from(async.grad!.data), Array.from(base.grad!.data), `${dtype}: async gradient`);
    assert.equal(Array.from(async.logps), Array.from(base.logps), `${dtype}: async logps`);
    const logits = { ...p.c.logits, data: p.c.logits.data.slice() };
    const inplace = policyLoss({ ...optionsFor(p, s), logits, grad: 'inplace' });
    assert.is(inplace.grad!.data, logits.data, `${dtype}: in place writes over the logits`);
    assert.equal(Array.from(logits.data), Array.from(base.grad!.data), `${dtype}: in place`);
  }
});

test('Float32Array inputs equal their float64 values; logps feed the next step as oldLogps (ratio 1)', () => {
  const rng = makeRng(SEED ^ 0x56);
  const p = policyCase(rng, { B: 2, vocab: 21 });
  const s: Settings = { lossType: 'bnpo', beta: 0.1 };
  const f32 = { advantages: Float32Array.from(p.advantages), oldLogps: Float32Array.from(p.oldLogps!), refLogps: Float32Array.from(p.refLogps!) };
  const as64 = policyLoss({ ...optionsFor(p, s), advantages: Float64Array.from(f32.advantages), oldLogps: Float64Array.from(f32.oldLogps), refLogps: Float64Array.from(f32.refLogps) });
  const as32 = policyLoss({ ...optionsFor(p, s), ...f32 });
  assert.is(as32.loss, as64.loss);
  const first = policyLoss(optionsFor(p, s));
  const next = policyLoss({ ...optionsFor(p, s), oldLogps: first.logps });
  const onPolicy = policyLoss({ ...optionsFor(p, s), oldLogps: null });
  assert.is(next.loss, onPolicy.loss, 'oldLogps = this step\'s logps is on-policy');
  assert.is(next.metrics['clip_ratio/region_mean'], 0);
});

test('a non-finite logit makes the loss NaN and is reported', () => {
  const rng = makeRng(SEED ^ 0x57);
  const p = policyCase(rng, { B: 1, vocab: 9 });
  const r = p.c.labels.data.findIndex((y) => y !== IGNORE);
  if (r < 0) return;
  const data = (p.c.logits.data as Float32Array).slice();
  data[r * p.c.vocab + 2] = NaN;
  const out = policyLoss({ ...optionsFor(p, { lossType: 'grpo' }), logits: { ...p.c.logits, data } });
  assert.ok(Number.isNaN(out.loss), 'NaN loss');
  assert.ok(out.nonFinite !== null && out.nonFinite.row === r, `nonFinite names row ${r}: ${JSON.stringify(out.nonFinite)}`);
});

test('bad input: errors name the argument, the expectation and the value', () => {
  const rng = makeRng(SEED ^ 0x58);
  const p = policyCase(rng, { B: 1, vocab: 8, T: 3 });
  const ok = optionsFor(p, { lossType: 'dapo', beta: 0.1 });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ advantages: new Float64Array(5) }, /advantages.*2 values.*6.*got "5 values"/],
    [{ advantages: [1, 2] }, /advantages.*Float64Array or Float32Array/],
    [{ advantages: undefined }, /advantages/],
    [{ refLogps: null }, /refLogps.*beta is not 0/],
    [{ oldLogps: new Float64Array(2) }, /oldLogps.*6 values.*got "2 values"/],
    [{ lossType: 'ppo' }, /lossType.*'grpo'.*got "ppo"/],
    [{ lossType: 'dr_grpo' }, /maxCompletionLength.*dr_grpo/],
    [{ maxCompletionLength: 4 }, /maxCompletionLength.*only lossType 'dr_grpo'/],
    [{ epsilon: 1.5 }, /epsilon.*\[0, 1\].*1\.5/],
    [{ epsilonHigh: -1 }, /epsilonHigh/],
    [{ beta: -1 }, /beta.*>= 0/],
    [{ entropyCoef: NaN }, /entropyCoef/],
    [{ numItemsInBatch: 0 }, /numItemsInBatch.*> 0/],
    [{ advantagesPer: 'token' }, /advantages.*6 values.*advantagesPer/],
    [{ advantagesPer: 'row' }, /advantagesPer/],
  ];
  for (const [patch, pattern] of cases) {
    let thrown: unknown;
    try {
      policyLoss({ ...ok, ...patch } as PolicyLossOptions);
    } catch (error) {
      thrown = error;
    }
    assertInvalid(thrown, pattern, JSON.stringify(Object.keys(patch)));
  }
  assert.throws(() => policyLoss({ ...ok, epsilonLow: 0.2 } as never), (e: Error & { code?: string }) => e.code === 'ERR_FDPO_UNSUPPORTED_OPTION' && /epsilonLow/.test(e.message) && /epsilonHigh/.test(e.message));
  assert.throws(() => policyLoss({ ...ok, delta: 2 } as never), (e: Error & { code?: string }) => e.code === 'ERR_FDPO_UNSUPPORTED_OPTION' && /delta/.test(e.message));
  assert.throws(() => policyLoss({ ...ok, loss_type: 'grpo' } as never), (e: Error & { code?: string }) => e.code === 'ERR_FDPO_UNKNOWN_OPTION' && /lossType/.test(e.message));
});

test('non-finite advantages, oldLogps and refLogps are refused where read, and only there', () => {
  const rng = makeRng(SEED ^ 0x5f);
  const p = policyCase(rng, { B: 2, vocab: 9, T: 5, perToken: true });
  const labels = p.c.labels.data;
  const scored = labels.findIndex((l) => l !== IGNORE);
  const ignored = labels.findIndex((l) => l === IGNORE);
  assert.ok(scored >= 0 && ignored >= 0, 'the case has scored and ignored rows');
  const ok = optionsFor(p, { lossType: 'grpo', beta: 0.1 });
  const withValue = (values: Float64Array, r: number, x: number) => Float64Array.from(values, (v, i) => (i === r ? x : v));
  for (const name of ['advantages', 'oldLogps', 'refLogps'] as const) {
    const values = p[name]!;
    for (const bad of [NaN, Infinity, -Infinity]) {
      let thrown: unknown;
      try {
        policyLoss({ ...ok, [name]: withValue(values, scored, bad) });
      } catch (error) {
        thrown = error;
      }
      assertInvalid(thrown, new RegExp(`${name}\\[${scored}\\].*finite number \\(row ${scored} is scored`), `${name} ${bad}`);
    }
    // An ignored row is never read: a NaN there changes nothing.
    const out = policyLoss({ ...ok, [name]: withValue(values, ignored, NaN) });
    assert.is(out.loss, policyLoss(ok).loss, `${name}: NaN in ignored row ${ignored}`);
  }
  // One advantage per sequence: every one is read.
  let thrown: unknown;
  try {
    policyLoss({ ...ok, advantagesPer: 'sequence', advantages: Float64Array.of(0.5, NaN, 1, 2) });
  } catch (error) {
    thrown = error;
  }
  assertInvalid(thrown, /advantages\[1\].*a finite number \(one per sequence\)/, 'per-sequence NaN');
});

test('packed: as many sequences as rows but not one row each needs advantagesPer', () => {
  const cuSeqlens = Int32Array.from([0, 2, 2, 3]);
  const { data } = encode(new Float32Array(3 * 4).fill(0.5), 'float32');
  const base = { logits: { data, shape: [3, 4] }, labels: { data: Int32Array.from([1, 2, 3]), shape: [3] }, cuSeqlens, advantages: new Float64Array(3) };
  let thrown: unknown;
  try {
    policyLoss(base);
  } catch (error) {
    thrown = error;
  }
  assertInvalid(thrown, /advantagesPer/, 'ambiguous advantages');
  assert.ok(Number.isFinite(policyLoss({ ...base, advantagesPer: 'sequence' }).loss));
});

test.run();
