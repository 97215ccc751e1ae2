// Worker body for test/async-workers.test.ts: runs `calls` dpoLossAsync calls on a synthetic
// case of rows × vocab with `threads` kernel threads, posting 'calling' before each call and
// 'done' after the last. The addon loads on the first call, inside this worker.
import { parentPort, workerData } from 'node:worker_threads';

import { dpoLossAsync } from '../../lib/index.js';

const { rows, vocab, calls, threads } = workerData as { rows: number; vocab: number; calls: number; threads: number };
const T = rows / 4; // 2 pairs of sequences of T tokens
const logits = new Float32Array(rows * vocab).map((_, i) => Math.sin(i) * 4);
const labels = new Int32Array(rows).map((_, r) => (r * 7919) % vocab);
const ref = { chosen: new Float64Array(2), rejected: new Float64Array(2) };
for (let k = 0; k < calls; k++) {
  parentPort!.postMessage('calling');
  await dpoLossAsync({ logits: { data: logits, shape: [4, T, vocab] }, labels: { data: labels, shape: [4, T] }, ref, threads });
}
parentPort!.postMessage('done');
