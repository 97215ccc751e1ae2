// Every bad argument is refused with code ERR_FDPO_INVALID_ARGUMENT and a message naming it; the
// async forms reject the same way; a valid call still works afterwards.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync, toBfloat16, type DpoLossOptions } from '../lib/index.js';
import { assertInvalid, makeCase, tokenOptions } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();
const rng = makeRng(SEED + 60);
// B = 2, T = 3, V = 5, padded; and the same rows packed
const base = makeCase(rng, { B: 2, vocab: 5, T: 3 });
const packed = { logits: { data: base.logits.data, shape: [12, 5] }, labels: { data: base.labels.data, shape: [12] }, cuSeqlens: Int32Array.from([0, 3, 6, 9, 12]) };
const valid = { ...tokenOptions(base), ref: base.ref } as DpoLossOptions;

type Bad = [what: string, options: Record<string, unknown>, names: RegExp];

const f32 = (n: number) => new Float32Array(n);
const logits3 = (over: Record<string, unknown>) => ({ logits: { ...valid.logits, ...over } });

/** Bad inputs for both calls (the token arguments). */
const TOKEN_CASES: Bad[] = [
  ['logits not an object', { logits: 3 }, /\blogits\b/],
  ['logits null', { logits: null }, /\blogits\b/],
  ['logits data a Float64Array', logits3({ data: new Float64Array(60) }), /logits\.data/],
  ['logits data a plain array', logits3({ data: Array.from({ length: 60 }, () => 0) }), /logits\.data/],
  ['Uint16Array without dtype', logits3({ data: new Uint16Array(60), dtype: undefined }), /logits\.dtype/],
  ["dtype 'float32' with a Uint16Array", logits3({ data: new Uint16Array(60), dtype: 'float32' }), /logits\.dtype/],
  ["dtype 'bfloat16' with a Float32Array", logits3({ dtype: 'bfloat16' }), /logits\.dtype/],
  ["dtype 'float64'", logits3({ data: new Uint16Array(60), dtype: 'float64' }), /logits\.dtype/],
  ['shape product ≠ data length', logits3({ data: f32(59) }), /logits\.data/],
  ['shape with a negative dimension', logits3({ shape: [4, -3, -5] }), /logits\.shape/],
  ['shape with a fraction', logits3({ shape: [4, 1.5, 10] }), /logits\.shape/],
  ['shape not an array', logits3({ shape: '4,3,5' }), /logits\.shape/],
  ['2-D logits without cuSeqlens', { logits: packed.logits, labels: packed.labels }, /logits\.shape/],
  ['3-D logits with cuSeqlens', { cuSeqlens: packed.cuSeqlens, labels: packed.labels }, /logits\.shape/],
  ['V = 0', { logits: { data: f32(0), shape: [4, 3, 0] } }, /logits\.shape\[-1\]|\bV\b/],
  ['labels a plain array', { labels: { data: Array.from(base.labels.data), shape: [4, 3] } }, /\blabels\b/],
  ['labels a Float32Array', { labels: { data: Float32Array.from(base.labels.data), shape: [4, 3] } }, /\blabels\b/],
  ['labels missing', { labels: undefined }, /\blabels\b/],
  ['labels of the wrong shape', { labels: { data: base.labels.data, shape: [3, 4] } }, /labels\.shape/],
  ['labels of the wrong rank', { labels: { data: base.labels.data, shape: [12] } }, /labels\.shape/],
  ['labels data shorter than its shape', { labels: { data: base.labels.data.subarray(0, 11), shape: [4, 3] } }, /labels\.data/],
  ['a label = V', { labels: { data: Int32Array.from(base.labels.data, (y, r) => (r === 4 ? 5 : y)), shape: [4, 3] } }, /labels\.data\[4\]/],
  ['a label < 0 (not ignoreIndex)', { labels: { data: Int32Array.from(base.labels.data, (y, r) => (r === 7 ? -1 : y)), shape: [4, 3] } }, /labels\.data\[7\]/],
  ['-100 labels with ignoreIndex -1', { ignoreIndex: -1, labels: { data: Int32Array.from(base.labels.data, (y, r) => (r === 0 ? -100 : y)), shape: [4, 3] } }, /labels\.data\[0\]/],
  ['ignoreIndex 1.5', { ignoreIndex: 1.5 }, /ignoreIndex/],
  ["ignoreIndex '-100'", { ignoreIndex: '-100' }, /ignoreIndex/],
  ['ignoreIndex 2^31', { ignoreIndex: 2 ** 31 }, /ignoreIndex/],
  ['threads 0', { threads: 0 }, /threads/],
  ['threads 1.5', { threads: 1.5 }, /threads/],
  ['threads -2', { threads: -2 }, /threads/],
  ['threads NaN', { threads: NaN }, /threads/],
  ["threads '2'", { threads: '2' }, /threads/],
  ['cuSeqlens not starting at 0', { ...packed, cuSeqlens: Int32Array.from([1, 3, 6, 9, 12]) }, /cuSeqlens\[0\]/],
  ['cuSeqlens decreasing', { ...packed, cuSeqlens: Int32Array.from([0, 5, 4, 9, 12]) }, /cuSeqlens\[2\]/],
  ['cuSeqlens not ending at N', { ...packed, cuSeqlens: Int32Array.from([0, 3, 6, 9, 11]) }, /cuSeqlens\[4\]/],
  ['cuSeqlens past N', { ...packed, cuSeqlens: Int32Array.from([0, 3, 6, 9, 13]) }, /cuSeqlens\[4\]/],
  ['cuSeqlens a plain array', { ...packed, cuSeqlens: [0, 3, 6, 9, 12] }, /cuSeqlens/],
  ['cuSeqlens with one entry', { ...packed, cuSeqlens: Int32Array.from([0]) }, /cuSeqlens/],
];

/** Bad inputs for dpoLoss only (loss settings, the pairing, grad). */
const LOSS_CASES: Bad[] = [
  ['padded shape[0] odd', { logits: { data: f32(45), shape: [3, 3, 5] }, labels: { data: new Int32Array(9), shape: [3, 3] } }, /logits\.shape\[0\]/],
  ['an odd number of packed sequences', { ...packed, cuSeqlens: Int32Array.from([0, 3, 6, 12]) }, /cuSeqlens/],
  ['one packed sequence', { ...packed, cuSeqlens: Int32Array.from([0, 12]) }, /cuSeqlens/],
  ['beta 0', { beta: 0 }, /beta/],
  ['beta NaN', { beta: NaN }, /beta/],
  ['beta -1', { beta: -1 }, /beta/],
  ['beta Infinity', { beta: Infinity }, /beta/],
  ["beta '0.1'", { beta: '0.1' }, /beta/],
  ['unknown lossType', { lossType: 'dpo' }, /lossType/],
  ['unknown lossType in a list', { lossType: ['sigmoid', 'kto'] }, /lossType\[1\]/],
  ['empty lossType list', { lossType: [] }, /lossType/],
  ['nine loss types', { lossType: Array(9).fill('sigmoid') }, /lossType/],
  ['lossWeights too short', { lossType: ['sigmoid', 'sft'], lossWeights: [1] }, /lossWeights/],
  ['lossWeights too long', { lossType: 'sigmoid', lossWeights: [1, 2] }, /lossWeights/],
  ['lossWeights with NaN', { lossType: ['sigmoid', 'sft'], lossWeights: [1, NaN] }, /lossWeights\[1\]/],
  ['lossWeights not an array', { lossWeights: 1 }, /lossWeights/],
  ['labelSmoothing 0.7', { labelSmoothing: 0.7 }, /labelSmoothing/],
  ['labelSmoothing -0.1', { labelSmoothing: -0.1 }, /labelSmoothing/],
  ['labelSmoothing NaN', { labelSmoothing: NaN }, /labelSmoothing/],
  ["labelSmoothing 0.5 with 'robust'", { lossType: 'robust', labelSmoothing: 0.5 }, /labelSmoothing/],
  ["labelSmoothing 0.5 with 'robust' in a list", { lossType: ['sigmoid', 'robust'], labelSmoothing: 0.5 }, /labelSmoothing/],
  ['simpoGamma NaN', { lossType: 'simpo', simpoGamma: NaN }, /simpoGamma/],
  ['discopopTau 0', { lossType: 'discopop', discopopTau: 0 }, /discopopTau/],
  ["missing ref for 'sigmoid'", { ref: undefined }, /\bref\b/],
  ["null ref for 'sigmoid'", { ref: null }, /\bref\b/],
  ["missing ref for 'sft' + 'hinge'", { ref: undefined, lossType: ['sft', 'hinge'] }, /\bref\b/],
  ['ref not an object', { ref: 5 }, /\bref\b/],
  ['ref.chosen missing', { ref: { rejected: base.ref.rejected } }, /ref\.chosen/],
  ['ref.chosen of the wrong length', { ref: { chosen: [1, 2, 3], rejected: base.ref.rejected } }, /ref\.chosen/],
  ['ref.rejected of the wrong length', { ref: { chosen: base.ref.chosen, rejected: new Float64Array(1) } }, /ref\.rejected/],
  ['ref.chosen containing NaN', { ref: { chosen: [base.ref.chosen[0], NaN], rejected: base.ref.rejected } }, /ref\.chosen\[1\]/],
  ['ref.rejected containing Infinity', { ref: { chosen: base.ref.chosen, rejected: [Infinity, 0] } }, /ref\.rejected\[0\]/],
  ['ref.chosen a string', { ref: { chosen: '12', rejected: base.ref.rejected } }, /ref\.chosen/],
  ["reduction 'avg'", { reduction: 'avg' }, /reduction/],
  ['normalizer 0', { normalizer: 0 }, /normalizer/],
  ['normalizer -4', { normalizer: -4 }, /normalizer/],
  ['normalizer NaN', { normalizer: NaN }, /normalizer/],
  ['grad tensor of the wrong size', { grad: { data: f32(59), shape: [59] } }, /grad\.data/],
  ['grad tensor shape ≠ its data', { grad: { data: f32(60), shape: [4, 3, 4] } }, /grad\.data/],
  ['grad tensor of the wrong dtype', { grad: { data: new Uint16Array(60), shape: [4, 3, 5], dtype: 'bfloat16' } }, /grad\.dtype/],
  ['grad bf16 tensor for fp16 logits', { logits: { data: toBfloat16(base.logits.data as Float32Array), shape: [4, 3, 5], dtype: 'float16' }, grad: { data: new Uint16Array(60), shape: [4, 3, 5], dtype: 'bfloat16' } }, /grad\.dtype/],
  ["grad: 'yes'", { grad: 'yes' }, /\bgrad\b/],
  ['grad: 1', { grad: 1 }, /\bgrad\b/],
  ['grad: null', { grad: null }, /\bgrad\b/],
];

/** sync: throws; async: rejects (or throws synchronously) — either way with the code and the name. */
async function expectInvalid(call: (o: never) => unknown, options: Record<string, unknown>, names: RegExp, what: string): Promise<void> {
  let caught: unknown = undefined;
  let threw = false;
  try {
    const out = call(options as never);
    if (out instanceof Promise) await out;
  } catch (error) {
    threw = true;
    caught = error;
  }
  assert.ok(threw, `${what}: no error`);
  assertInvalid(caught, names, what);
}

test('dpoLoss and dpoLossAsync refuse every bad argument, naming it', async () => {
  for (const [what, over, names] of [...TOKEN_CASES, ...LOSS_CASES]) {
    const options = { ...valid, ...over };
    await expectInvalid(dpoLoss, options, names, `dpoLoss: ${what}`);
    await expectInvalid(dpoLossAsync, options, names, `dpoLossAsync: ${what}`);
  }
});

test('the async forms reject; they do not throw synchronously', async () => {
  let result: unknown;
  assert.not.throws(() => (result = dpoLossAsync({ ...valid, beta: -1 })), 'dpoLossAsync threw synchronously');
  assert.ok(result instanceof Promise);
  await (result as Promise<unknown>).then(
    () => assert.unreachable('resolved'),
    (e: unknown) => assertInvalid(e, /beta/, 'dpoLossAsync rejection'),
  );
  assert.not.throws(() => (result = sequenceLogpsAsync({ ...tokenOptions(base), threads: 0 })), 'sequenceLogpsAsync threw synchronously');
  await (result as Promise<unknown>).then(
    () => assert.unreachable('resolved'),
    (e: unknown) => assertInvalid(e, /threads/, 'sequenceLogpsAsync rejection'),
  );
});

test('sequenceLogps and sequenceLogpsAsync refuse every bad token argument', async () => {
  for (const [what, over, names] of TOKEN_CASES) {
    const options = { ...tokenOptions(base), ...over };
    await expectInvalid(sequenceLogps, options, names, `sequenceLogps: ${what}`);
    await expectInvalid(sequenceLogpsAsync, options, names, `sequenceLogpsAsync: ${what}`);
  }
  await expectInvalid(sequenceLogps, 'not options' as never, /options/, 'sequenceLogps: options a string');
  await expectInvalid(sequenceLogps, { ...tokenOptions(base), average: 'yes' as never }, /average/, 'sequenceLogps: average a string');
});

test("reference-free losses need no ref: 'simpo', 'orpo', 'sft' and their combinations", () => {
  for (const lossType of ['simpo', 'orpo', 'sft', ['simpo', 'orpo', 'sft']] as const) {
    for (const ref of [undefined, null]) {
      const out = dpoLoss({ ...valid, ref, lossType: lossType as never });
      assert.ok(Number.isFinite(out.loss), `${JSON.stringify(lossType)} without ref: loss ${out.loss}`);
    }
  }
  // labelSmoothing 0.5 is fine where 'robust' is not in the list
  assert.ok(Number.isFinite(dpoLoss({ ...valid, labelSmoothing: 0.5 }).loss));
});

test('after all that, valid calls still work (sync and async)', async () => {
  const sync = dpoLoss(valid);
  assert.ok(Number.isFinite(sync.loss) && sync.grad !== null);
  const async = await dpoLossAsync(valid);
  assert.is(async.loss, sync.loss);
  const seq = sequenceLogps({ ...packed, average: true });
  assert.is(seq.logps.length, 4);
  assert.ok(seq.logps.every(Number.isFinite));
  assert.equal(Array.from((await sequenceLogpsAsync({ ...packed, average: true })).logps), Array.from(seq.logps));
});

test.run();
