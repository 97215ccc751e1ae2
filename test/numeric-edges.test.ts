// SPEC.md's "Numeric edges", pinned: each limit behaves as documented.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { dpoLoss, toBfloat16 } from '../lib/index.js';

const V = 8;
const labels = { data: Int32Array.from([1, 2, 3, 4]), shape: [2, 2] };
const ref = { chosen: [0], rejected: [0] };
const logits = (f: (i: number) => number) => ({ data: Float32Array.from({ length: 4 * V }, (_, i) => f(i)), shape: [2, 2, V] });

test('logits within ±1.7e38 give a finite loss and gradient; beyond, a non-finite loss that nonFinite names', () => {
  const inside = dpoLoss({ logits: logits((i) => (i % 2 ? 1.7e38 : -1.7e38)), labels, ref });
  assert.ok(Number.isFinite(inside.loss) && (inside.grad!.data as Float32Array).every(Number.isFinite));
  assert.is(inside.nonFinite, null);
  // Sequence 1's labels (3, 4) sit at -3e38 next to +3e38: z - max overflows, logp = -inf.
  const beyond = dpoLoss({ logits: logits((i) => (i < 2 * V ? 0 : i % 2 ? -3e38 : 3e38)), labels, ref });
  assert.is(beyond.rejectedLogps[0], -Infinity);
  assert.equal(beyond.nonFinite, { sequence: 1, row: 2 });
  const bf16 = toBfloat16(Float32Array.from({ length: 4 * V }, (_, i) => (i === 1 ? -3e38 : i === 6 ? 3e38 : 0)));
  const bf = dpoLoss({ logits: { data: bf16, shape: [2, 2, V], dtype: 'bfloat16' }, labels, ref });
  assert.not.ok(Number.isFinite(bf.chosenLogps[0]!));
  assert.equal(bf.nonFinite, { sequence: 0, row: 0 });
});

test('a G beyond fp32 (beta 1e300) gives a finite loss and sequenceGrad but non-finite gradient entries', () => {
  const out = dpoLoss({ logits: logits((i) => Math.sin(i)), labels, ref: { chosen: [5], rejected: [-5] }, beta: 1e300 });
  assert.ok(Number.isFinite(out.loss));
  assert.ok(out.sequenceGrad.every(Number.isFinite) && Math.abs(out.sequenceGrad[0]!) > 3.4e38);
  assert.ok((out.grad!.data as Float32Array).some((g) => !Number.isFinite(g)));
  const fits = dpoLoss({ logits: logits((i) => Math.sin(i)), labels, ref: { chosen: [5], rejected: [-5] }, beta: 1e30 });
  assert.ok((fits.grad!.data as Float32Array).every(Number.isFinite));
});

test('a probability below e^-87.3 gives an exact 0 gradient entry, never a denormal', () => {
  // Row 0: the label (1) at 0, one logit at -88 (p = e^-88 / s), the others at 0.
  const out = dpoLoss({ logits: logits((i) => (i === 5 ? -88 : 0)), labels, ref, beta: 1 });
  const g = out.grad!.data as Float32Array;
  assert.is(g[5], 0);
  assert.ok(Object.is(g[5], 0) || Object.is(g[5], -0));
  assert.ok(g[4] !== 0, 'an ordinary entry of the same row is not 0');
});

test.run();
