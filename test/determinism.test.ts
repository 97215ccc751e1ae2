// Bit-identical results across thread counts, repeated runs and the sync/async entry points; an
// async call leaves the event loop free.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync, type DpoLossOptions, type DpoLossResult } from '../lib/index.js';
import { makeCase, sameBytes, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();

const ARRAYS = ['losses', 'chosenLogps', 'rejectedLogps', 'chosenRewards', 'rejectedRewards', 'tokenCounts', 'sequenceGrad'] as const;

function assertSameResult(a: DpoLossResult, b: DpoLossResult, what: string): void {
  assert.ok(Object.is(a.loss, b.loss), `${what}: loss ${a.loss} vs ${b.loss} (seed=${SEED})`);
  for (const key of ARRAYS) assert.ok(sameBytes(a[key], b[key]), `${what}: ${key} differs (seed=${SEED})`);
  for (const [name, value] of Object.entries(a.metrics)) {
    assert.ok(Object.is(value, (b.metrics as unknown as Record<string, number>)[name]), `${what}: metrics['${name}'] differs (seed=${SEED})`);
  }
  assert.ok((a.grad === null) === (b.grad === null), `${what}: grad presence`);
  if (a.grad && b.grad) assert.ok(sameBytes(a.grad.data, b.grad.data), `${what}: grad bytes differ (seed=${SEED})`);
}

// 2B = 8, T = 64, V = 4099: 512 rows of three 2048-element chunks (and a tail), enough to split
// across threads in many pieces.
const cases = new Map<string, TokenCase>();
function bigCase(dtype: 'float32' | 'bfloat16', layout: 'padded' | 'packed'): TokenCase {
  const key = `${dtype} ${layout}`;
  if (!cases.has(key)) {
    const rng = makeRng(SEED + (dtype === 'float32' ? 10 : 20) + (layout === 'packed' ? 1 : 0));
    const lengths = layout === 'packed' ? Array.from({ length: 8 }, () => 20 + rng.int(90)) : undefined;
    cases.set(key, makeCase(rng, { B: 4, vocab: 4099, T: 64, dtype, layout, lengths }));
  }
  return cases.get(key)!;
}

const LOSS: Partial<DpoLossOptions> = { lossType: ['sigmoid', 'sft', 'aot'], lossWeights: [1, 0.1, 0.5], beta: 0.2 };

test('threads 1, 2 and 3 give the same bits (fp32 and bf16, padded and packed)', () => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const layout of ['padded', 'packed'] as const) {
      const c = bigCase(dtype, layout);
      const options = { ...tokenOptions(c), ...LOSS, ref: c.ref };
      const one = dpoLoss({ ...options, threads: 1 });
      assert.ok(Number.isFinite(one.loss));
      for (const threads of [2, 3, 7]) assertSameResult(dpoLoss({ ...options, threads }), one, `${dtype} ${layout} threads ${threads} vs 1`);
      assertSameResult(dpoLoss(options), one, `${dtype} ${layout} default threads vs 1`);
      const seq1 = sequenceLogps({ ...tokenOptions(c), threads: 1 });
      for (const threads of [2, 3]) {
        const seq = sequenceLogps({ ...tokenOptions(c), threads });
        assert.ok(sameBytes(seq.logps, seq1.logps) && sameBytes(seq.counts, seq1.counts), `${dtype} ${layout}: sequenceLogps threads ${threads} vs 1`);
      }
    }
  }
});

test('repeated runs give the same bits', () => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const c = bigCase(dtype, 'padded');
    const options = { ...tokenOptions(c), ...LOSS, ref: c.ref, threads: 2 };
    const first = dpoLoss(options);
    for (let i = 0; i < 3; i++) assertSameResult(dpoLoss(options), first, `${dtype} run ${i + 2}`);
    // a preallocated target and 'inplace' write the same bits as a new array
    const target = { data: dtype === 'float32' ? new Float32Array(c.logits.data.length) : new Uint16Array(c.logits.data.length), shape: c.logits.shape, dtype };
    assertSameResult(dpoLoss({ ...options, grad: target }), first, `${dtype} grad tensor`);
    const copy = { ...c.logits, data: c.logits.data.slice() };
    assertSameResult(dpoLoss({ ...options, logits: copy, grad: 'inplace' }), first, `${dtype} grad 'inplace'`);
  }
});

test("the gradient's bits do not depend on the output buffer's alignment", () => {
  // Rows are written with a scalar head up to the streaming-store alignment, then vectors, then a
  // scalar tail, so which elements take the scalar path depends on the address: the two paths must
  // agree bit for bit. Element offsets 0..31 cover every 64-byte alignment class.
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const c = bigCase(dtype, 'packed');
    const options = { ...tokenOptions(c), ...LOSS, ref: c.ref, threads: 2 };
    const n = c.logits.data.length;
    const expected = dpoLoss(options).grad!.data;
    for (let offset = 0; offset < 32; offset++) {
      const whole = dtype === 'float32' ? new Float32Array(n + 32) : new Uint16Array(n + 32);
      const view = whole.subarray(offset, offset + n);
      dpoLoss({ ...options, grad: { data: view, shape: c.logits.shape, dtype } });
      assert.ok(sameBytes(view, expected), `${dtype}: grad written at element offset ${offset} differs (seed=${SEED})`);
    }
  }
});

test('dpoLossAsync and sequenceLogpsAsync return the same bits as the sync calls', async () => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const layout of ['padded', 'packed'] as const) {
      const c = bigCase(dtype, layout);
      const options = { ...tokenOptions(c), ...LOSS, ref: c.ref, threads: 2 };
      const sync = dpoLoss(options);
      assertSameResult(await dpoLossAsync(options), sync, `${dtype} ${layout} async vs sync`);
      assertSameResult(await dpoLossAsync({ ...options, threads: 1 }), sync, `${dtype} ${layout} async threads 1 vs sync threads 2`);
      for (const average of [false, true]) {
        const s = sequenceLogps({ ...tokenOptions(c), average });
        const a = await sequenceLogpsAsync({ ...tokenOptions(c), average });
        assert.ok(sameBytes(a.logps, s.logps) && sameBytes(a.counts, s.counts), `${dtype} ${layout} sequenceLogpsAsync average=${average}`);
      }
      // several async calls at once (they share the kernels' thread pool)
      const all = await Promise.all([1, 2, 3].map((threads) => dpoLossAsync({ ...options, threads })));
      all.forEach((r, i) => assertSameResult(r, sync, `${dtype} ${layout} concurrent async #${i}`));
    }
  }
});

test('a large dpoLossAsync call leaves the event loop free', async () => {
  // 2B = 4, T = 512, V = 32000 in fp32: 65.5M logits (262 MB) plus as much for the gradient
  const S = 4, T = 512, V = 32000;
  const data = new Float32Array(S * T * V);
  let x = (SEED | 1) >>> 0;
  for (let i = 0; i < data.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0; // LCG: fast enough for 65M values
    data[i] = (x >>> 8) * (6 / 16777216) - 3;
  }
  const labels = new Int32Array(S * T);
  for (let r = 0; r < labels.length; r++) labels[r] = r % T < 100 ? -100 : (r * 7919) % V;
  const options = {
    logits: { data, shape: [S, T, V] },
    labels: { data: labels, shape: [S, T] },
    ref: { chosen: [-4000, -4100], rejected: [-4050, -4000] },
    threads: 2,
  };
  let immediates = 0;
  let intervals = 0;
  let pending = true;
  const spin = () => {
    immediates++;
    if (pending) setImmediate(spin);
  };
  setImmediate(spin);
  const timer = setInterval(() => intervals++, 1);
  const started = performance.now();
  const result = await dpoLossAsync(options).finally(() => (pending = false));
  const elapsed = performance.now() - started;
  clearInterval(timer);
  assert.ok(Number.isFinite(result.loss), `loss ${result.loss}`);
  assert.is(result.grad!.data.length, data.length);
  assert.ok(immediates >= 10, `setImmediate ticked ${immediates} times in ${elapsed.toFixed(0)} ms of async work`);
  assert.ok(intervals >= 3, `setInterval(1 ms) ticked ${intervals} times in ${elapsed.toFixed(0)} ms of async work`);
  console.log(`  async call: ${elapsed.toFixed(0)} ms, ${immediates} setImmediate and ${intervals} setInterval ticks meanwhile`);
});

test.run();
