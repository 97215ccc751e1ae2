// The README's promise: typed arrays over a resizable ArrayBuffer or a growable
// SharedArrayBuffer (which could shrink or move under a running call) are refused up front, for
// every array a call reads or writes, sync and async, naming the argument.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync, type DpoLossOptions } from '../lib/index.js';
import { assertInvalid, makeCase, tokenOptions } from './helpers/cases.js';
import { makeRng } from './helpers/random.js';

type View = Float32Array | Int32Array;
// (@types/node 20 predates the maxByteLength option)
type Resizable = new (bytes: number, options: { maxByteLength: number }) => ArrayBufferLike;
const KINDS: [string, (bytes: number) => ArrayBufferLike][] = [
  ['resizable ArrayBuffer', (bytes) => new (ArrayBuffer as unknown as Resizable)(bytes, { maxByteLength: 2 * bytes })],
  ['growable SharedArrayBuffer', (bytes) => new (SharedArrayBuffer as unknown as Resizable)(bytes, { maxByteLength: 2 * bytes })],
];

/** A copy of `view` over a buffer `make` returns. */
function over<T extends View>(view: T, make: (bytes: number) => ArrayBufferLike): T {
  const copy = new (view.constructor as new (buffer: ArrayBufferLike) => T)(make(view.byteLength));
  copy.set(view);
  return copy;
}

function refusal(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return assert.unreachable('the call was not refused');
}

async function asyncRefusal(run: () => Promise<unknown>): Promise<unknown> {
  return run().then(() => assert.unreachable('the async call was not refused'), (error: unknown) => error);
}

const c = makeCase(makeRng(11), { B: 2, vocab: 13, layout: 'packed', lengths: [3, 2, 4, 1] });
const grad = () => ({ data: new Float32Array(c.logits.data.length), shape: c.logits.shape });
/** Each argument, its name in the error, and the options with it replaced. */
const ARGUMENTS: [string, RegExp, (make: (bytes: number) => ArrayBufferLike) => DpoLossOptions][] = [
  ['logits', /logits\.data/, (make) => ({ ...tokenOptions(c), logits: { ...c.logits, data: over(c.logits.data as Float32Array, make) } })],
  ['labels', /labels\.data/, (make) => ({ ...tokenOptions(c), labels: { ...c.labels, data: over(c.labels.data, make) } })],
  ['cuSeqlens', /cuSeqlens/, (make) => ({ ...tokenOptions(c), cuSeqlens: over(c.cuSeqlens, make) })],
  ['grad', /grad\.data/, (make) => ({ ...tokenOptions(c), grad: { ...grad(), data: over(grad().data, make) } })],
];

test('dpoLoss and dpoLossAsync refuse logits, labels, cuSeqlens and grad over resizable or growable buffers', async () => {
  for (const [kind, make] of KINDS) {
    for (const [name, pattern, options] of ARGUMENTS) {
      const what = `${name} over a ${kind}`;
      const args = { ...options(make), ref: c.ref };
      assertInvalid(refusal(() => dpoLoss(args)), pattern, `dpoLoss, ${what}`);
      assertInvalid(await asyncRefusal(() => dpoLossAsync(args)), pattern, `dpoLossAsync, ${what}`);
    }
  }
});

test('sequenceLogps and sequenceLogpsAsync refuse logits, labels and cuSeqlens over resizable or growable buffers', async () => {
  for (const [kind, make] of KINDS) {
    for (const [name, pattern, options] of ARGUMENTS.filter(([name]) => name !== 'grad')) {
      const what = `${name} over a ${kind}`;
      const args = options(make);
      assertInvalid(refusal(() => sequenceLogps(args)), pattern, `sequenceLogps, ${what}`);
      assertInvalid(await asyncRefusal(() => sequenceLogpsAsync(args)), pattern, `sequenceLogpsAsync, ${what}`);
    }
  }
});

test('the same arrays over fixed-length buffers, plain and shared, are accepted', () => {
  const shared = (bytes: number) => new SharedArrayBuffer(bytes);
  const want = dpoLoss({ ...tokenOptions(c), ref: c.ref, grad: false }).loss;
  for (const [name, , options] of ARGUMENTS) {
    assert.ok(Object.is(dpoLoss({ ...options(shared), ref: c.ref }).loss, want), `${name} over a SharedArrayBuffer`);
  }
});

test.run();
