// New gradient arrays (grad: true, lib/grad-buffer.ts): large ones come from the addon's pool of
// warm memory. They hold the preallocated call's bits in every dtype, a block is lent again after
// the array holding it was collected (also in a loop that never yields), and never while the caller
// still holds that array.
import { execFileSync } from 'node:child_process';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, dpoLossAsync } from '../lib/index.js';
import { newGradient } from '../lib/grad-buffer.js';
import { native } from '../lib/native.js';
import { DTYPES, makeCase, sameBytes, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const SEED = testSeed();
const test = suite('gradient buffers');

// Collects what is unreachable and lets the finalizers (run on the event loop) return their blocks.
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
}

// 2 * 8 rows of V = 2^17 + 5: just over 4 MB (16-bit) or 8 MB (float32) of gradient, past the pool's 4 MB floor.
function bigCase(seed: number, dtype: (typeof DTYPES)[number]): TokenCase {
  return makeCase(makeRng(seed), { B: 1, T: 8, vocab: (1 << 17) + 5, dtype, ignoreProb: 0.2, logit: (g) => 2 * g.normal() });
}

test('grad: true gives the bits of a preallocated gradient, every dtype, sync and async, while earlier gradients stay intact', async () => {
  await collect();
  for (const dtype of DTYPES) {
    const c = bigCase(SEED + 1, dtype);
    const options = { ...tokenOptions(c), ref: c.ref, beta: 0.2 };
    const given = c.dtype === 'float32' ? new Float32Array(c.rows * c.vocab) : new Uint16Array(c.rows * c.vocab);
    dpoLoss({ ...options, grad: { data: given, shape: c.logits.shape, dtype } });
    const held = dpoLoss(options).grad!.data;
    assert.ok(sameBytes(held, given), `${dtype}: the first new gradient (seed=${SEED})`);
    for (let k = 0; k < 6; k++) {
      const r = k % 2 === 0 ? dpoLoss(options) : await dpoLossAsync(options);
      assert.ok(r.grad!.data.buffer !== held.buffer, `${dtype}: call ${k} lent the held gradient's buffer`);
      assert.ok(sameBytes(r.grad!.data, given), `${dtype}: call ${k} (seed=${SEED})`);
      assert.ok(sameBytes(held, given), `${dtype}: call ${k} changed a gradient the caller holds`);
      if (k % 3 === 2) await collect();
    }
  }
});

test('a released gradient block is lent again (warm), a held one never', async () => {
  await collect();
  const bytes = 6 << 20;
  const held: ArrayBuffer[] = [];
  // (Buffers are touched only in functions of their own: a dead local of this frame could keep one alive.)
  const lendInto = (list: ArrayBuffer[], k: number) => {
    const lent = native().gradientBuffer(bytes);
    assert.ok(lent instanceof ArrayBuffer && lent.byteLength === bytes, `the pool lends block ${k} while ${k} are held`);
    new Uint8Array(lent!).fill(7 + k);
    list.push(lent!);
  };
  for (let k = 0; k < 3; k++) lendInto(held, k);
  assert.ok(held.every((b, k) => new Uint8Array(b).every((x) => x === 7 + k)), 'lending a block changed a held one');
  // Three are out: the pool gives none (the caller falls back to a plain array), however often asked.
  assert.is(native().gradientBuffer(bytes), null, 'a fourth block while three are held');
  const plain = newGradient('float32', bytes / 4);
  assert.ok(plain.every((v) => v === 0), 'the fallback is a plain zeroed array');
  // Release the last: after a collection its block comes back, with its old contents.
  held.pop();
  await collect();
  const again = native().gradientBuffer(bytes);
  assert.ok(again instanceof ArrayBuffer, 'a block after the release');
  assert.ok(new Uint8Array(again!).every((b) => b === 9), 'the released block is lent again, unzeroed');
  assert.ok(held.every((b, k) => new Uint8Array(b).every((x) => x === 7 + k)), 'the held blocks are untouched');
});

test('in a loop that never yields, the block of a collected gradient comes back at the next call; a held one never', async () => {
  await collect();
  const bytes = 6 << 20;
  // No await from here on: no finalizer can run, only the collection's weak references say what is free.
  // (Buffers are touched only in functions of their own: a dead local of this frame could keep one alive.)
  const held: ArrayBuffer[] = [];
  const lendInto = (list: ArrayBuffer[], k: number) => {
    const lent = native().gradientBuffer(bytes);
    assert.ok(lent instanceof ArrayBuffer, `block ${k}`);
    new Uint8Array(lent!).fill(k + 1);
    list.push(lent!);
  };
  for (let k = 0; k < 3; k++) lendInto(held, k);
  assert.is(native().gradientBuffer(bytes), null, 'three are out: none to lend');
  held.pop();
  gc();
  lendInto(held, 5);
  assert.ok(held.every((b, k) => new Uint8Array(b).every((x) => x === (k === 2 ? 6 : k + 1))), 'a held block changed');
  // Without gc(): given the heap's limit, a lending that leaves none for the next asks V8 for a
  // collection itself, so a loop that drops each buffer never finds all three out.
  held.length = 0;
  gc();
  const limit = getHeapStatistics().heap_size_limit;
  const lendAndDrop = (k: number) => {
    const lent = native().gradientBuffer(bytes, limit);
    assert.ok(lent instanceof ArrayBuffer, `lending ${k} in a loop that drops each buffer found none to give`);
    new Uint8Array(lent!).fill(k);
  };
  for (let k = 0; k < 12; k++) lendAndDrop(k);
  assert.throws(() => native().gradientBuffer(bytes, -1), /out of range/);
  // And the same through the loss: a sync loop that drops each gradient keeps reusing blocks
  // (the three above released, so the pool is not at its cap).
  held.length = 0;
  const c = bigCase(SEED + 2, 'float32');
  const options = { ...tokenOptions(c), ref: c.ref, beta: 0.2 };
  const first = dpoLoss(options).grad!.data;
  const firstCopy = first.slice();
  for (let k = 0; k < 8; k++) {
    gc();
    const g = dpoLoss(options).grad!.data;
    assert.ok(g.buffer !== first.buffer && sameBytes(g, first), `call ${k} (seed=${SEED})`);
    assert.ok(sameBytes(first, firstCopy), `call ${k} changed the held first gradient`);
  }
  await collect();
});

test('transfers cannot make a pooled block alias: postMessage and structuredClone copy it, ArrayBuffer.prototype.transfer keeps it lent', async () => {
  await collect();
  const bytes = 6 << 20;
  const lent = native().gradientBuffer(bytes)!;
  new Uint8Array(lent).fill(3);
  const clone = structuredClone(lent, { transfer: [lent] });
  assert.is(lent.byteLength, bytes, 'structuredClone left the pooled buffer attached (it copies)');
  assert.ok(clone !== lent && new Uint8Array(clone).every((b) => b === 3));
  const transfer = (ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer) => ArrayBuffer }).transfer;
  if (!transfer) return; // (Node 20 has no ArrayBuffer.prototype.transfer)
  // The moved buffer owns the block's memory now; the detached one is collected: the block must not come back.
  let source: ArrayBuffer | null = native().gradientBuffer(bytes)!;
  const moved = transfer.call(source);
  new Uint8Array(moved).fill(4);
  source = null;
  await collect();
  for (let k = 0; k < 3; k++) {
    const other = native().gradientBuffer(bytes);
    if (other) new Uint8Array(other).fill(8);
    assert.ok(new Uint8Array(moved).every((b) => b === 4), 'a transferred gradient was lent again while held');
  }
});

test('a replaced global the transfer probe reads (a throwing getter) neither crashes nor leaks its exception: the pool still lends', () => {
  // (The probe runs once per process: in a process of its own.)
  const native = new URL('../lib/native.ts', import.meta.url).href;
  const code = `Object.defineProperty(globalThis, 'structuredClone', { get() { throw new Error('hostile'); }, configurable: true });
const { native } = await import(${JSON.stringify(native)});
const sizes = [0, 1].map(() => native().gradientBuffer(8 << 20, 1 << 30)?.byteLength);
console.log(JSON.stringify(sizes));`;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8' });
  assert.equal(JSON.parse(out.trim().split('\n').pop()!), [8 << 20, 8 << 20]);
});

test('a loop that drops each gradient maps three blocks up to 512 MB and two above: a lending that finds none returned asks for the collection before it maps one', () => {
  // (A fresh pool: in a process of its own. A fresh block reads as zeros, a reused one as the
  // byte its last holder wrote. Up to 512 MB a collection is asked once three are out, above once
  // two are: csrc/binding/gradient_buffer.cpp's kThreeBlockMaxBytes. Each size in a fresh
  // process; only the first byte is written: the 600 MB blocks touch one huge page each.)
  const native = new URL('../lib/native.ts', import.meta.url).href;
  const freshOf = (bytes: number) => {
    const code = `const { native } = await import(${JSON.stringify(native)});
const { getHeapStatistics } = await import('node:v8');
const limit = getHeapStatistics().heap_size_limit;
const fresh = [];
const lendAndDrop = (k) => {
  const view = new Uint8Array(native().gradientBuffer(${bytes}, limit));
  if (view[0] === 0) fresh.push(k);
  view[0] = k + 1;
};
for (let k = 0; k < 16; k++) lendAndDrop(k);
console.log(JSON.stringify(fresh));`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8' });
    return JSON.parse(out.trim().split('\n').pop()!);
  };
  assert.equal(freshOf(8 << 20), [0, 1, 2], 'the 8 MB lendings that got fresh memory');
  assert.equal(freshOf(600 << 20), [0, 1], 'the 600 MB lendings that got fresh memory');
});

test('small gradients are plain arrays; zero length works', () => {
  assert.is(native().gradientBuffer(1 << 20), null);
  assert.is(newGradient('bfloat16', 0).length, 0);
  assert.ok(newGradient('float16', 1000) instanceof Uint16Array);
  assert.throws(() => native().gradientBuffer(-1), /out of range/);
});

test.run();
