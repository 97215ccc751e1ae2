// What fused-dpo/tfjs costs on top of the core call, on the same inputs and tfjs's CPU backend:
// the loss and logits gradient through tf.grad (the adapter's copy-free wrap, tf.customGrad, and
// tfjs's dy·grad multiply) against the core's dpoLoss with a new gradient array, and the
// forward-only call outside a gradient tape against the core's grad: false. Median of --runs
// timed runs of each, alternating, after three warm-ups, per size.
//
//   node --import tsx examples/tfjs-overhead.ts [--runs 9]
import * as tf from '@tensorflow/tfjs';
import { dpoLoss as coreDpoLoss, backendInfo } from 'fused-dpo';
import { dpoLoss } from 'fused-dpo/tfjs';

const runsFlag = process.argv.indexOf('--runs');
const runs = runsFlag > 0 ? Number(process.argv[runsFlag + 1]) : 9;
tf.env().set('PROD', true);
await tf.setBackend('cpu');

function median(times: number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

// The two calls alternate, so drift in the machine's load falls on both alike.
function timePair(a: () => void, b: () => void): [number, number] {
  for (let i = 0; i < 3; i++) (a(), b());
  const times: [number[], number[]] = [[], []];
  for (let i = 0; i < runs; i++) {
    for (const [k, run] of [a, b].entries()) {
      const start = process.hrtime.bigint();
      run();
      times[k]!.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
  }
  return [median(times[0]), median(times[1])];
}

const sizes = [
  { B: 2, T: 64, V: 4096 },
  { B: 4, T: 128, V: 32000 },
];
const info = backendInfo();
console.log(`fused-dpo ${info.backend} (${info.simd}, ${info.threads} threads), tfjs ${tf.version.tfjs} ${tf.getBackend()}, median of ${runs}`);
for (const { B, T, V } of sizes) {
  const rows = 2 * B * T;
  const data = Float32Array.from({ length: rows * V }, (_, i) => Math.sin(i * 0.618) * 4);
  const labelIds = Int32Array.from({ length: rows }, (_, r) => (r % T < T / 4 ? -100 : (r * 7919) % V));
  const ref = { chosen: new Float64Array(B).fill(-300), rejected: new Float64Array(B).fill(-310) };
  const logits = tf.tensor3d(data, [2 * B, T, V]);
  const labels = tf.tensor2d(labelIds, [2 * B, T], 'int32');
  const hostLogits = { data, shape: [2 * B, T, V] }, hostLabels = { data: labelIds, shape: [2 * B, T] };
  const tensors = tf.memory().numTensors;

  const [core, adapter] = timePair(
    () => void coreDpoLoss({ logits: hostLogits, labels: hostLabels, ref }),
    () => tf.dispose(tf.grad((x: tf.Tensor) => dpoLoss(x, labels, ref))(logits)),
  );
  const [coreForward, adapterForward] = timePair(
    () => void coreDpoLoss({ logits: hostLogits, labels: hostLabels, ref, grad: false }),
    () => tf.dispose(dpoLoss(logits, labels, ref)),
  );
  if (tf.memory().numTensors !== tensors) throw new Error(`tensors leaked: ${tf.memory().numTensors - tensors}`);

  const mb = (rows * V * 4) / 2 ** 20;
  const pct = (a: number, b: number) => `${a >= b ? '+' : '−'}${((Math.abs(a - b) / b) * 100).toFixed(0)}%`;
  console.log(
    `B=${B} T=${T} V=${V} (logits ${mb.toFixed(0)} MiB): ` +
      `loss+grad core ${core.toFixed(2)} ms, tf.grad(adapter) ${adapter.toFixed(2)} ms (${pct(adapter, core)}); ` +
      `forward core ${coreForward.toFixed(2)} ms, adapter ${adapterForward.toFixed(2)} ms (${pct(adapterForward, coreForward)})`,
  );
  tf.dispose([logits, labels]);
}
