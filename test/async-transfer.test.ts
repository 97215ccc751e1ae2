// Detaching a buffer while an async call reads or writes it: every way a program can detach an
// ArrayBuffer (a MessagePort transfer, structuredClone's transfer, ArrayBuffer.prototype.transfer
// where Node has it) must leave the call's memory attached, and the call must give the sync
// call's bits.
import { MessageChannel } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync } from '../lib/index.js';
import { makeCase, sameBytes, tokenOptions } from './helpers/cases.js';
import { makeRng } from './helpers/random.js';

type Detach = (buffer: ArrayBuffer) => void;

const port = new MessageChannel().port1;
const DETACHES: [string, Detach][] = [
  ['MessagePort.postMessage transfer', (b) => port.postMessage(b, [b])],
  ['structuredClone transfer', (b) => structuredClone(b, { transfer: [b] })],
];
const transfer = (ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer) => ArrayBuffer }).transfer;
if (transfer) DETACHES.push(['ArrayBuffer.prototype.transfer', (b) => transfer.call(b)]);

/** Tries to detach; a refusal (DataCloneError in Node >= 21, TypeError for transfer()) is the good outcome too. */
function tryDetach(detach: Detach, buffer: ArrayBuffer): void {
  try {
    detach(buffer);
  } catch (error) {
    assert.ok(error instanceof Error && /DataCloneError|TypeError/.test(error.name), String(error));
  }
}

function newCase(seed: number) {
  // large enough that the call is still running when the detach is tried
  return makeCase(makeRng(seed), { B: 2, vocab: 20000, T: 24, layout: 'packed', lengths: [24, 20, 24, 16] });
}

// Validation copies ref into arrays of its own: the caller's may be detached, harmlessly.
const COPIED = new Set(['ref.chosen', 'ref.rejected']);

test('dpoLossAsync: logits, labels, cuSeqlens and grad cannot be detached while the call runs; ref is a copy', async () => {
  const targets = ['logits', 'labels', 'cuSeqlens', 'ref.chosen', 'ref.rejected', 'grad'] as const;
  let seed = 1;
  for (const [how, detach] of DETACHES) {
    for (const target of targets) {
      const c = newCase(seed);
      const grad = { data: new Float32Array(c.logits.data.length), shape: c.logits.shape };
      const options = { ...tokenOptions(c), ref: c.ref, grad };
      const want = dpoLoss({ ...tokenOptions(newCase(seed++)), ref: c.ref, grad: true });
      const views = { logits: c.logits.data, labels: c.labels.data, cuSeqlens: c.cuSeqlens, 'ref.chosen': c.ref.chosen, 'ref.rejected': c.ref.rejected, grad: grad.data };
      const buffer = views[target].buffer as ArrayBuffer;
      const bytes = buffer.byteLength;
      const running = dpoLossAsync(options);
      tryDetach(detach, buffer);
      if (!COPIED.has(target)) assert.is(buffer.byteLength, bytes, `${how} of ${target} detached its buffer during the call`);
      const got = await running;
      assert.ok(Object.is(got.loss, want.loss), `${how} of ${target}: loss ${got.loss} vs ${want.loss}`);
      assert.ok(sameBytes(grad.data, want.grad!.data), `${how} of ${target}: the gradient differs from the sync call's`);
    }
  }
});

test('sequenceLogpsAsync: logits, labels and cuSeqlens cannot be detached while the call runs', async () => {
  for (const [how, detach] of DETACHES) {
    for (const target of ['logits', 'labels', 'cuSeqlens'] as const) {
      const c = newCase(100);
      const want = sequenceLogps(tokenOptions(newCase(100)));
      const views = { logits: c.logits.data, labels: c.labels.data, cuSeqlens: c.cuSeqlens };
      const buffer = views[target].buffer as ArrayBuffer;
      const running = sequenceLogpsAsync(tokenOptions(c));
      tryDetach(detach, buffer);
      assert.ok(buffer.byteLength > 0, `${how} of ${target} detached its buffer during the call`);
      const got = await running;
      assert.ok(sameBytes(got.logps, want.logps), `${how} of ${target}: logps differ from the sync call's`);
    }
  }
});

test('a typed array subclass whose buffer getter lies cannot hide its real buffer', async () => {
  const c = newCase(7);
  class Decoy extends Float32Array {
    override get buffer(): ArrayBuffer {
      return new ArrayBuffer(8);
    }
  }
  const logits = new Decoy(c.logits.data as Float32Array);
  const real = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int8Array.prototype), 'buffer')!.get!.call(logits) as ArrayBuffer;
  const running = dpoLossAsync({ ...tokenOptions(c), logits: { ...c.logits, data: logits }, ref: c.ref, grad: false }).catch((e: unknown) => e);
  tryDetach(DETACHES[1]![1], real);
  assert.ok(real.byteLength > 0, 'structuredClone detached the real buffer of a subclass during the call');
  await running;
});

test.run();
