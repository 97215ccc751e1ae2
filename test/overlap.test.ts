// Outputs that share memory with inputs are refused (only the exact in-place gradient may), and
// so is a call whose memory an unsettled async call is writing (or reading, for its outputs).
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync, type DpoLossOptions } from '../lib/index.js';
import { makeCase, tokenOptions } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();
const rng = makeRng(SEED + 80);
// B = 4 pairs, T = 16, V = 32: 8192 logits, enough for every shift below.
const base = makeCase(rng, { B: 4, vocab: 32, T: 16 });
const N = base.logits.data.length;

function refused(run: () => unknown, code: string, names: RegExp, what: string): void {
  try {
    run();
  } catch (error) {
    const e = error as { code?: string; message: string };
    assert.is(e.code, code, `${what}: ${e.message}`);
    assert.match(e.message, names, what);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

test('a grad overlapping the logits (shifted by 1, 16, 64 or 197 elements) is refused, with or without deferScale', () => {
  for (const shift of [1, 16, 64, 197]) {
    for (const deferScale of [false, true]) {
      const buffer = new Float32Array(N + shift);
      buffer.set(base.logits.data as Float32Array);
      const logits = { data: buffer.subarray(0, N), shape: base.logits.shape };
      const grad = { data: buffer.subarray(shift, shift + N), shape: base.logits.shape };
      refused(
        () => dpoLoss({ ...tokenOptions(base), logits, ref: base.ref, grad, deferScale }),
        'ERR_FDPO_INVALID_ARGUMENT',
        /logits and grad overlap/,
        `shift ${shift}, deferScale ${deferScale}`,
      );
    }
  }
});

test('labels inside the logits with an in-place gradient, and a grad over the labels, are refused', () => {
  const bytes = new ArrayBuffer(N * 4 + base.labels.data.byteLength);
  const logitsData = new Float32Array(bytes, 0, N);
  logitsData.set(base.logits.data as Float32Array);
  const inside = new Int32Array(bytes, 0, base.labels.data.length);
  const labels = { data: inside, shape: base.labels.shape };
  // The labels' bytes reinterpreted as logits: choose labels that are valid ids whatever the floats.
  inside.set(base.labels.data);
  refused(
    () => dpoLoss({ logits: { data: logitsData, shape: base.logits.shape }, labels, ref: base.ref, grad: 'inplace' }),
    'ERR_FDPO_INVALID_ARGUMENT',
    /logits and labels overlap/,
    "'inplace' with labels inside the logits",
  );
  const after = new ArrayBuffer(N * 4);
  const labelsAt = new Int32Array(after, 0, base.labels.data.length);
  labelsAt.set(base.labels.data);
  refused(
    () => dpoLoss({ ...tokenOptions(base), labels: { data: labelsAt, shape: base.labels.shape }, ref: base.ref, grad: { data: new Float32Array(after), shape: base.logits.shape } }),
    'ERR_FDPO_INVALID_ARGUMENT',
    /labels and grad overlap/,
    'a grad over the labels',
  );
});

test('the exact in-place gradient, as grad: "inplace" or as the logits tensor itself, is allowed', () => {
  const want = dpoLoss({ ...tokenOptions(base), ref: base.ref }).loss;
  const copy = { data: Float32Array.from(base.logits.data as Float32Array), shape: base.logits.shape };
  assert.is(dpoLoss({ ...tokenOptions(base), logits: copy, ref: base.ref, grad: 'inplace' }).loss, want);
  const again = { data: Float32Array.from(base.logits.data as Float32Array), shape: base.logits.shape };
  assert.is(dpoLoss({ ...tokenOptions(base), logits: again, ref: base.ref, grad: again }).loss, want);
});

test("two concurrent 'inplace' calls on the same logits: the second is refused until the first settles", async () => {
  const data = Float32Array.from(base.logits.data as Float32Array);
  const options = { ...tokenOptions(base), logits: { data, shape: base.logits.shape }, ref: base.ref, grad: 'inplace' } as DpoLossOptions;
  const first = dpoLossAsync(options);
  const second = dpoLossAsync(options).then(
    () => assert.unreachable('the second in-place call ran'),
    (e: { code?: string; message: string }) => {
      assert.is(e.code, 'ERR_FDPO_BUFFER_IN_USE', e.message);
      assert.match(e.message, /logits/);
    },
  );
  // A sync call reading the logits being written, and sequenceLogps, are refused too.
  refused(() => dpoLoss({ ...options, grad: false }), 'ERR_FDPO_BUFFER_IN_USE', /logits/, 'a sync reader');
  refused(() => sequenceLogps(tokenOptions({ ...base, logits: options.logits } as never)), 'ERR_FDPO_BUFFER_IN_USE', /logits/, 'sequenceLogps');
  const want = dpoLoss({ ...tokenOptions(base), ref: base.ref, grad: false }).loss;
  assert.is((await first).loss, want);
  await second;
  // Settled: the same buffer works again, and concurrent readers never conflict.
  await Promise.all([sequenceLogpsAsync(tokenOptions(base)), sequenceLogpsAsync(tokenOptions(base)), dpoLossAsync({ ...tokenOptions(base), ref: base.ref, grad: false })]);
});

test.run();
