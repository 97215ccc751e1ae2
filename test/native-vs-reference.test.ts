// The native kernels against the float64 reference (lib/reference.ts) on fresh random inputs:
// every loss type, dtype, layout, reduction and grad mode, odd shapes, extreme logits, non-finite
// logits, sequenceLogps, and finite differences of the native loss. Replay a run with FDPO_SEED.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, sequenceLogps, type DpoLossOptions } from '../lib/index.js';
import { referenceSequenceLogps, referenceTokenStats } from '../lib/reference.js';
import { LOSS_KINDS, LOSS_TYPES, type LossType } from '../lib/loss-kinds.js';
import {
  checkDpo,
  DTYPES,
  encode,
  IGNORE,
  labelHoldsMax,
  makeCase,
  refTokens,
  rowBudget,
  sameBytes,
  tokenOptions,
  type GradMode,
  type Layout,
  type TokenCase,
} from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
const LAYOUTS: readonly Layout[] = ['padded', 'packed'];
const MODES: readonly GradMode[] = [true, 'inplace', 'tensor', false];
/** Losses that read labelSmoothing (the others must ignore it). */
const SMOOTHED = new Set<LossType>(['sigmoid', 'robust', 'exo_pair', 'aot', 'aot_unpaired', 'simpo']);

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

function refOption(c: TokenCase, types: readonly LossType[], rng: Rng): DpoLossOptions['ref'] {
  // reference-free losses get a ref half the time (it then shifts the rewards)
  return types.some((t) => LOSS_KINDS[t].needsRef) || rng.next() < 0.5 ? c.ref : undefined;
}

const COMBOS: [LossType[], number[]][] = [
  [['sigmoid', 'sft'], [1, 0.3]],
  [['simpo', 'orpo'], [0.5, 2]],
  [['aot', 'aot_unpaired', 'hinge', 'ipo'], [1, -0.5, 3, 0.25]],
];

// A random f-divergence for a list with a margin loss, its α when alpha_divergence, and lengthPenalty where read.
function marginOptions(types: LossType[], rng: Rng): Partial<DpoLossOptions> {
  const fDivergenceType = pick(rng, ['forward_kl', 'js_divergence', 'alpha_divergence'] as const);
  const readsLength = types.some((t) => (LOSS_KINDS[t].reads as readonly string[]).includes('lengthPenalty'));
  return {
    fDivergenceType,
    ...(fDivergenceType === 'alpha_divergence' ? { fAlphaDivergenceCoef: pick(rng, [0.25, 0.5, 1.5]) } : {}),
    ...(readsLength ? { lengthPenalty: 0.05 * (rng.next() - 0.5) } : {}),
  };
}

test('every loss type × dtype × layout × reduction × grad mode', () => {
  const rng = makeRng(SEED);
  let k = 0;
  let worst = 0;
  let worstWhat = '';
  const lists: [LossType[], number[] | undefined][] = [...LOSS_TYPES.map((t): [LossType[], undefined] => [[t], undefined]), ...COMBOS];
  for (const [types, weights] of lists) {
    for (const dtype of DTYPES) {
      for (const layout of LAYOUTS) {
        k++;
        const c = makeCase(rng, { B: 1 + rng.int(3), vocab: pick(rng, [5, 17, 130]), dtype, layout });
        const reduction = (['mean', 'sum', 'normalizer'] as const)[k % 3]!;
        const options: Partial<DpoLossOptions> = {
          lossType: types.length === 1 ? types[0] : types,
          lossWeights: weights,
          ref: refOption(c, types, rng),
          beta: pick(rng, [0.1, 0.5, 2]),
          // every other run smooths, whether or not the loss reads it (those that don't must ignore it)
          labelSmoothing: k % 2 === 0 ? 0.05 + 0.35 * rng.next() : 0,
          simpoGamma: rng.next(),
          discopopTau: pick(rng, [0.05, 0.5]),
          unlikelihoodAlpha: [1, 0.3, 2.5][k % 3]!,
          ...(reduction === 'normalizer' ? { normalizer: 7.5 } : { reduction }),
          // every third run of a margin loss under another f-divergence, with the R-DPO term where read
          ...(types.some((t) => LOSS_KINDS[t].margin) && k % 3 === 1 ? marginOptions(types, rng) : {}),
        };
        const mode = MODES[(k + Math.floor(k / 4)) % 4]!;
        const what = `${types.join('+')} ε=${options.labelSmoothing!.toFixed(3)} β=${options.beta} ${reduction}${options.fDivergenceType ? ` ${options.fDivergenceType}` : ''} (seed=${SEED})`;
        const run = checkDpo(c, options, mode, what);
        // finite logits: a NaN loss (native or reference) would let checkDpo skip the gradient comparison
        assert.ok(Number.isFinite(run.want.loss) && Number.isFinite(run.got.loss), `${what}: loss ${run.got.loss}, reference ${run.want.loss}`);
        if (mode !== false) assert.ok(run.grad !== null, `${what}: no gradient was compared`);
        if (run.lossRelErr > worst) [worst, worstWhat] = [run.lossRelErr, what];
      }
    }
  }
  console.log(`  worst end-to-end loss relative error over ${k} runs: ${worst.toExponential(2)} (${worstWhat})`);
});

test('label smoothing changes the smoothed losses and no other', () => {
  const rng = makeRng(SEED + 1);
  const c = makeCase(rng, { B: 3, vocab: 9, T: 4 });
  for (const type of LOSS_TYPES) {
    const base = { ...tokenOptions(c), lossType: type, ref: c.ref, beta: 0.5, grad: false } as const;
    const plain = dpoLoss(base).loss;
    const smoothed = dpoLoss({ ...base, labelSmoothing: 0.2 }).loss;
    if (SMOOTHED.has(type)) assert.ok(plain !== smoothed, `${type}: labelSmoothing 0.2 left the loss at ${plain}`);
    else assert.is(smoothed, plain, `${type}: labelSmoothing changed a loss that does not read it`);
  }
});

test('odd shapes: V = 1, 3, 17, 1000, 32000; T = 1; packed lengths 0 and 1', () => {
  const rng = makeRng(SEED + 2);
  const shapes: { V: number; T: number; B: number }[] = [
    { V: 1, T: 3, B: 2 },
    { V: 3, T: 1, B: 3 },
    { V: 17, T: 1, B: 1 },
    { V: 1000, T: 3, B: 2 },
    { V: 32000, T: 2, B: 1 },
  ];
  let k = 0;
  for (const { V, T, B } of shapes) {
    for (const dtype of DTYPES) {
      for (const layout of LAYOUTS) {
        k++;
        const lengths = layout === 'packed' ? Array.from({ length: 2 * B }, (_, s) => (s === 1 ? 0 : s === 0 ? 1 : 1 + rng.int(T + 1))) : undefined;
        const c = makeCase(rng, { B, vocab: V, T, dtype, layout, lengths, ignoreProb: 0.2 });
        const type = pick(rng, LOSS_TYPES);
        const types: LossType[] = k % 2 === 0 ? ['sigmoid'] : [type];
        checkDpo(c, { lossType: types, ref: refOption(c, types, rng), beta: 0.3 }, MODES[k % 4]!, `${types} T=${T} (seed=${SEED})`);
      }
    }
  }
});

test('aot and aot_unpaired with tied scores sort ties by pair index', () => {
  // V = 1: every log-prob is exactly 0 in both float32 and float64, so every L_i and a_i − b_i tie
  const rng = makeRng(SEED + 8);
  for (const type of ['aot', 'aot_unpaired'] as const) {
    for (const dtype of DTYPES) {
      const c = makeCase(rng, { B: 4, vocab: 1, T: 2, dtype, ignoreProb: 0.3 });
      c.ref.chosen.set([0, 0, 1, 1]); // ties in Q as well
      c.ref.rejected.set([0, 0, 0, -1]);
      checkDpo(c, { lossType: type, ref: c.ref, beta: 0.7 }, true, `${type} ties (seed=${SEED})`);
    }
  }
});

test('sequences with no completion tokens, for every loss type', () => {
  const rng = makeRng(SEED + 3);
  for (const type of LOSS_TYPES) {
    for (const dtype of DTYPES) {
      // padded: chosen 1 and rejected 0 have every label ignored; packed: rejected 1 is empty (length 0)
      const padded = makeCase(rng, { B: 2, vocab: 19, T: 4, dtype, emptySeqs: [1, 2] });
      checkDpo(padded, { lossType: type, ref: refOption(padded, [type], rng) }, true, `${type} empty padded (seed=${SEED})`);
      const packed = makeCase(rng, { B: 2, vocab: 19, dtype, layout: 'packed', lengths: [3, 2, 4, 0] });
      checkDpo(packed, { lossType: type, ref: refOption(packed, [type], rng) }, 'tensor', `${type} empty packed (seed=${SEED})`);
    }
  }
  // every chosen sequence empty: sft / orpo's NLL is 0 / max(0, 1)
  for (const type of ['sft', 'orpo'] as const) {
    const c = makeCase(rng, { B: 2, vocab: 7, T: 3, emptySeqs: [0, 1] });
    const run = checkDpo(c, { lossType: type }, true, `${type}, all chosen empty (seed=${SEED})`);
    assert.is(run.got.metrics.mean_token_accuracy, 0);
    assert.is(run.got.metrics['logits/chosen'], 0);
  }
  // nothing scored at all
  const none = makeCase(rng, { B: 2, vocab: 7, T: 3, ignoreProb: 1 });
  const run = checkDpo(none, { lossType: ['sigmoid', 'sft'], ref: none.ref }, true, `nothing scored (seed=${SEED})`);
  assert.is(run.got.metrics.num_tokens, 0);
  assert.is(run.got.metrics.entropy, 0);
});

test('large logits (±1e4 offsets, a very confident token) and tiny logits (~1e-6 spread)', () => {
  const rng = makeRng(SEED + 4);
  for (const dtype of DTYPES) {
    for (const offset of [1e4, -1e4]) {
      for (const V of [17, 1000]) {
        const big = makeCase(rng, { B: 2, vocab: V, T: 3, dtype, ignoreProb: 0.1, logit: (g) => offset + 3 * g.normal() });
        // one scored row with a very confident label: z_y = offset + 40
        const r = big.labels.data.findIndex((y) => y !== IGNORE);
        if (r >= 0) {
          const f32 = new Float32Array(Array.from(big.decoded));
          f32[r * V + big.labels.data[r]!] = offset + 40;
          const { data, decoded } = encode(f32, dtype);
          big.logits = { ...big.logits, data };
          big.decoded = decoded;
          // keep a and b moderate around the new π
          const pi = referenceSequenceLogps(refTokens(big), false).logps;
          for (let i = 0; i < big.B; i++) {
            big.ref.chosen[i] = pi[i]! + rng.normal();
            big.ref.rejected[i] = pi[big.B + i]! + rng.normal();
          }
        }
        for (const type of ['sigmoid', 'ipo', 'simpo'] as const) {
          checkDpo(big, { lossType: type, ref: big.ref, beta: 0.5 }, 'tensor', `${type} offset ${offset} (seed=${SEED})`);
        }
      }
    }
    const tiny = makeCase(rng, { B: 2, vocab: 300, T: 3, dtype, logit: (g) => 1e-6 * g.normal() });
    for (const type of ['sigmoid', 'sft', 'bco_pair'] as const) {
      checkDpo(tiny, { lossType: type, ref: tiny.ref }, true, `${type} tiny logits (seed=${SEED})`);
    }
  }
});

/** Overwrites one logit (rounded to the dtype) of a case, in both the data and the decoded copy. */
function setLogit(c: TokenCase, index: number, value: number): void {
  const f32 = new Float32Array(Array.from(c.decoded));
  f32[index] = value;
  const { data, decoded } = encode(f32, c.dtype);
  c.logits = { ...c.logits, data };
  c.decoded = decoded;
}

test('non-finite logits: NaN/±Infinity in a scored row gives a NaN loss; NaN in an ignored row changes nothing', () => {
  const rng = makeRng(SEED + 5);
  for (const dtype of DTYPES) {
    for (const layout of LAYOUTS) {
      for (const type of ['sigmoid', 'sft', 'ipo', 'aot'] as LossType[]) {
        const make = () => {
          const c = makeCase(makeRng(SEED + 50), { B: 2, vocab: 37, T: 4, dtype, layout, ignoreProb: 0.3 });
          // (Some seeds draw no ignored row: the first row of the first sequence is made one.)
          if (!c.labels.data.includes(IGNORE)) c.labels.data[0] = IGNORE;
          return c;
        };
        const clean = make();
        const labels = clean.labels.data;
        const scored = labels.findLastIndex((y) => y !== IGNORE); // in a rejected sequence, most likely
        const ignored = labels.findIndex((y) => y === IGNORE);
        assert.ok(scored >= 0 && ignored >= 0, 'the case has scored and ignored rows');
        const options = { lossType: type, ref: LOSS_KINDS[type].needsRef ? clean.ref : undefined };
        for (const bad of [NaN, Infinity, -Infinity]) {
          const c = make();
          setLogit(c, scored * c.vocab + rng.int(c.vocab), bad);
          const run = checkDpo(c, options, true, `${type}: ${bad} in scored row ${scored} (seed=${SEED})`);
          assert.ok(Number.isNaN(run.got.loss), `${type} ${dtype} ${layout}: ${bad} in a scored row gave loss ${run.got.loss}`);
        }
        const base = dpoLoss({ ...tokenOptions(clean), ...options });
        const c = make();
        setLogit(c, ignored * c.vocab + rng.int(c.vocab), NaN);
        const poisoned = dpoLoss({ ...tokenOptions(c), ...options });
        const what = `${type} ${dtype} ${layout}: NaN in ignored row ${ignored} (seed=${SEED})`;
        assert.ok(Object.is(poisoned.loss, base.loss), `${what}: loss ${poisoned.loss} vs ${base.loss}`);
        for (const key of ['losses', 'chosenLogps', 'rejectedLogps', 'chosenRewards', 'rejectedRewards', 'sequenceGrad', 'tokenCounts'] as const) {
          assert.ok(sameBytes(poisoned[key], base[key]), `${what}: ${key} changed`);
        }
        assert.ok(sameBytes(poisoned.grad!.data, base.grad!.data), `${what}: grad changed`);
        assert.equal(poisoned.metrics, base.metrics, `${what}: metrics changed`);
        checkDpo(c, options, 'inplace', what);
      }
    }
  }
});

test('sequenceLogps (average true/false) vs referenceSequenceLogps', () => {
  const rng = makeRng(SEED + 6);
  for (const dtype of DTYPES) {
    for (const layout of LAYOUTS) {
      for (const V of [1, 6, 250, 2100]) {
        // sequenceLogps takes any number of sequences, odd included (packed)
        const c = makeCase(rng, { B: 2, vocab: V, T: 3, dtype, layout, emptySeqs: [2] });
        const cu = layout === 'packed' ? c.cuSeqlens.subarray(0, 4) : c.cuSeqlens;
        const rows = cu[cu.length - 1]!;
        const opts =
          layout === 'packed'
            ? { logits: { ...c.logits, data: c.logits.data.subarray(0, rows * V), shape: [rows, V] }, labels: { data: c.labels.data.subarray(0, rows), shape: [rows] }, cuSeqlens: cu }
            : tokenOptions(c);
        const stats = referenceTokenStats(c.decoded, c.rows, V, c.labels.data, IGNORE);
        for (const average of [false, true]) {
          const got = sequenceLogps({ ...opts, average });
          // (the reference wants 2B sequences: compare the first ones of the whole case)
          const want = referenceSequenceLogps(refTokens(c), average);
          assert.equal(Array.from(got.counts), Array.from(want.counts.subarray(0, cu.length - 1)), `counts ${dtype} ${layout} V=${V}`);
          for (let s = 0; s < cu.length - 1; s++) {
            let budget = 0;
            for (let r = cu[s]!; r < cu[s + 1]!; r++) if (c.labels.data[r] !== IGNORE) budget += rowBudget(V, stats.logp[r]!, labelHoldsMax(c, r));
            if (average) budget /= Math.max(want.counts[s]!, 1);
            const err = Math.abs(got.logps[s]! - want.logps[s]!);
            assert.ok(err <= budget, `π_${s} average=${average} ${dtype} ${layout} V=${V}: ${got.logps[s]} vs ${want.logps[s]} (seed=${SEED})`);
          }
          assert.is(got.logps[2], 0, 'an empty sequence sums to 0');
        }
      }
    }
  }
});

// Longer sequences than a GPU block has threads: the CUDA backend splits each sequence's sum
// across a block (strided rows, then a tree), the CPU adds rows in order; both must match.
test('sequence sums over long sequences (up to 700 rows) and ragged packed lengths', () => {
  const rng = makeRng(SEED + 8);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const c = makeCase(rng, { B: 3, vocab: 5, dtype, layout: 'packed', lengths: [700, 1, 0, 513, 257 + rng.int(40), 256], ignoreProb: 0.3 });
    const stats = referenceTokenStats(c.decoded, c.rows, c.vocab, c.labels.data, IGNORE);
    const want = referenceSequenceLogps(refTokens(c), false);
    const seq = sequenceLogps(tokenOptions(c));
    const loss = dpoLoss({ ...tokenOptions(c), ref: c.ref, grad: false });
    const lossLogps = [...loss.chosenLogps, ...loss.rejectedLogps];
    assert.equal(Array.from(seq.counts), Array.from(want.counts), `sequenceLogps counts ${dtype}`);
    assert.equal(Array.from(loss.tokenCounts), Array.from(want.counts), `dpoLoss counts ${dtype}`);
    for (let s = 0; s < 6; s++) {
      let budget = 0;
      for (let r = c.cuSeqlens[s]!; r < c.cuSeqlens[s + 1]!; r++) if (c.labels.data[r] !== IGNORE) budget += rowBudget(c.vocab, stats.logp[r]!, labelHoldsMax(c, r));
      for (const [what, got] of [['sequenceLogps', seq.logps[s]!], ['dpoLoss', lossLogps[s]!]] as const) {
        assert.ok(Math.abs(got - want.logps[s]!) <= budget, `${what} π_${s} ${dtype}: ${got} vs ${want.logps[s]} (seed=${SEED})`);
      }
    }
  }
});

test('finite differences of the native float32 loss match the native gradient', () => {
  const rng = makeRng(SEED + 7);
  const h = 2 ** -6; // ≈ 1.6e-2; z ± h is exact for logits on a 2^-8 grid
  for (const type of ['sigmoid', 'simpo', 'ipo', 'apo_zero'] as const) {
    const c = makeCase(rng, { B: 2, vocab: 11, T: 3, ignoreProb: 0.2, refSpread: 1, logit: (g) => Math.round(256 * 2 * g.normal()) / 256 });
    const options = { lossType: type, ref: c.ref, beta: 0.5, reduction: 'sum' } as const;
    const data = c.logits.data as Float32Array;
    const grad = dpoLoss({ ...tokenOptions(c), ...options }).grad!.data as Float32Array;
    // the largest gradient entries: mostly each row's label and argmax
    const order = Array.from(grad.keys()).sort((i, j) => Math.abs(grad[j]!) - Math.abs(grad[i]!));
    for (const i of order.slice(0, 8)) {
      const z0 = data[i]!;
      data[i] = z0 + h;
      const up = dpoLoss({ ...tokenOptions(c), ...options, grad: false }).loss;
      data[i] = z0 - h;
      const down = dpoLoss({ ...tokenOptions(c), ...options, grad: false }).loss;
      data[i] = z0;
      const fd = (up - down) / (2 * h);
      assert.ok(
        Math.abs(fd - grad[i]!) <= 1e-3 * Math.abs(grad[i]!) + 1e-5,
        `${type}: ∂loss/∂z[${i}] native ${grad[i]} vs central difference ${fd} (seed=${SEED})`,
      );
    }
  }
});

test("a list with ipo averages every kind's log-probs, as TRL's DPOTrainer (sft's NLL aside)", () => {
  // TRL divides every log-prob, policy and reference, by its token count when ipo is in the list,
  // before any of the list's losses reads it. The sigmoid term of ['sigmoid', 'ipo'] is therefore
  // −logσ(β(ā − b̄)) with ā = (π_c − ρ_c)/N_c, and the list's gradient the reference's (checkDpo).
  const rng = makeRng(SEED + 61);
  const c = makeCase(rng, { B: 3, vocab: 29, T: 5, ignoreProb: 0.2 });
  const beta = 0.3;
  const run = (lossType: LossType | LossType[]) => dpoLoss({ ...tokenOptions(c), ref: c.ref, beta, lossType });
  const { logps, counts } = sequenceLogps(tokenOptions(c));
  const both = run(['sigmoid', 'ipo']), ipo = run('ipo');
  const B = 3;
  for (let i = 0; i < B; i++) {
    const a = (logps[i]! - c.ref.chosen[i]!) / Math.max(counts[i]!, 1);
    const b = (logps[B + i]! - c.ref.rejected[i]!) / Math.max(counts[B + i]!, 1);
    const want = Math.log1p(Math.exp(-beta * (a - b)));
    const got = both.losses[i]! - ipo.losses[i]!;
    assert.ok(Math.abs(got - want) <= 1e-9 + 1e-6 * Math.abs(want), `pair ${i}: sigmoid term ${got}, want ${want} (seed=${SEED})`);
  }
  checkDpo(c, { lossType: ['sigmoid', 'ipo', 'aot'], ref: c.ref, beta }, true, `['sigmoid', 'ipo', 'aot'] (seed=${SEED})`);
  // sft reads its own token mean: the same term with or without ipo beside it.
  const sftWithIpo = run(['sft', 'ipo']).loss - ipo.loss, sft = run('sft').loss;
  assert.ok(Math.abs(sftWithIpo - sft) <= 1e-9 * Math.max(1, Math.abs(sft)), `sft beside ipo ${sftWithIpo}, alone ${sft} (seed=${SEED})`);
});

test.run();
