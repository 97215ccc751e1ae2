// `node --import tsx bench/interleaved.ts [--vocab 32000,128256] [--calls 12]`
//
// Two ratios that separate timings on a noisy machine blur, each from calls timed alternately in
// one process (the same inputs as bench.ts's B=4 T=256 cases, float32 and bfloat16):
//  - grad: true in a loop that never yields, against the preallocated call (the gradient pool's
//    reuse, csrc/binding/gradient_buffer.cpp);
//  - dpoLossAsync against dpoLoss.
// Medians and the ratio of the fastest calls; the first three calls of each kind are warm-up.
import { parseArgs } from 'node:util';

import { dpoLoss, dpoLossAsync, toBfloat16 } from '../lib/index.js';
import type { DType } from '../lib/types.js';

const { values: args } = parseArgs({ options: { vocab: { type: 'string' }, calls: { type: 'string' } } });
const VOCABS = (args.vocab ?? '32000,128256').split(',').map(Number);
const CALLS = Number(args.calls ?? 12);
const R = 2048, T = 256, B = R / (2 * T);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function alternate(first: () => unknown, second: () => unknown): Promise<string> {
  const a: number[] = [], b: number[] = [];
  for (let k = 0; k < CALLS + 3; k++) {
    let t = performance.now();
    await first();
    if (k >= 3) a.push(performance.now() - t);
    t = performance.now();
    await second();
    if (k >= 3) b.push(performance.now() - t);
  }
  return `${median(a).toFixed(1)} vs ${median(b).toFixed(1)} ms: ${(median(b) / median(a)).toFixed(2)}× median, ${(Math.min(...b) / Math.min(...a)).toFixed(2)}× fastest`;
}

for (const V of VOCABS) {
  const n = R * V;
  const logits32 = new Float32Array(n);
  for (let i = 0; i < n; i++) logits32[i] = (Math.imul(i, 2654435761) >>> 22) / 128 - 4;
  for (const dtype of ['float32', 'bfloat16'] as DType[]) {
    const base = {
      logits: { data: dtype === 'float32' ? logits32 : toBfloat16(logits32), shape: [2 * B, T, V], dtype },
      labels: { data: Int32Array.from({ length: R }, (_, r) => (r * 7919) % V), shape: [2 * B, T] },
      ref: { chosen: new Float64Array(B).fill(-3 * T), rejected: new Float64Array(B).fill(-3.1 * T) },
      beta: 0.1,
    };
    const grad = { data: dtype === 'float32' ? new Float32Array(n).fill(1) : new Uint16Array(n).fill(1), shape: [2 * B, T, V], dtype };
    const preallocated = () => dpoLoss({ ...base, grad });
    console.log(`${dtype} V=${V}: preallocated vs grad: true (never yielding) ${await alternate(preallocated, () => dpoLoss(base))}`);
    console.log(`${dtype} V=${V}: sync vs async ${await alternate(preallocated, () => dpoLossAsync({ ...base, grad }))}`);
  }
}
