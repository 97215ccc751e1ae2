// test/c-abi/check_loss.c's output against the float64 reference: what a native trainer gets from
// libfused_dpo, wherever the program runs (test/c-abi.test.ts: this machine; test/aarch64.test.ts:
// an aarch64 build under qemu).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';

import { referenceDpo, referencePolicyLoss } from '../../lib/reference.js';
import { referenceKto } from '../../lib/reference-kto.js';
import { LOSS_DEFAULTS } from '../../lib/loss-kinds.js';
import { paddedCuSeqlens } from '../../lib/validate.js';
import { makeRng } from './random.js';

/** Writes a random case into dir, has run(caseFile) run check_loss on it (its stdout), and checks every number it prints; what: names the run in failures. */
export function checkLossProgram(seed: number, dir: string, run: (caseFile: string) => string, what: string): void {
  const SEED = seed;
  const rng = makeRng(SEED);
  const B = 3, T = 5, V = 37, rows = 2 * B * T, seqs = 2 * B;
  const logits = Float32Array.from({ length: rows * V }, () => 3 * rng.normal());
  const labels = Int32Array.from({ length: rows }, (_, r) => (r % T < 2 ? -100 : rng.int(V)));
  const cu = paddedCuSeqlens(seqs, T);
  const ref = Float64Array.from({ length: seqs }, () => -10 - 5 * rng.next());
  const file = join(dir, 'case.bin');
  writeFileSync(file, Buffer.concat([Buffer.from(BigInt64Array.of(BigInt(rows), BigInt(V), BigInt(seqs)).buffer), Buffer.from(logits.buffer), Buffer.from(labels.buffer), Buffer.from(cu.buffer), Buffer.from(ref.buffer)]));
  const lines = run(file).trim().split('\n').map(Number);

  const want = referenceDpo({
    logits: Float64Array.from(logits),
    rows,
    vocab: V,
    labels,
    cuSeqlens: cu,
    ignoreIndex: -100,
    ref: { chosen: ref.subarray(0, B), rejected: ref.subarray(B) },
    ...LOSS_DEFAULTS, // check_loss.c uses them too
    lossTypes: ['sigmoid'],
    lossWeights: [1],
    scale: 1 / B,
  });
  assert.is(lines.length, 4 + seqs + 2 * rows * V);
  // KTO: odd sequences desirable, z0 = mean(1, 0.5) = 0.75 (check_loss.c)
  const kto = referenceKto({
    logits: Float64Array.from(logits), rows, vocab: V, labels, cuSeqlens: cu, ignoreIndex: -100,
    desirable: Array.from({ length: seqs }, (_, s) => s % 2), ref, lossType: 'kto', beta: 0.1, desirableWeight: 1, undesirableWeight: 1,
    kl: { policy: Float64Array.of(ref[0]! + 1, ref[1]! + 0.5), ref: Float64Array.of(ref[0]!, ref[1]!) }, scale: 1 / seqs,
  });
  const [ktoLoss, z0] = lines.slice(1 + seqs + rows * V);
  assert.ok(Math.abs(ktoLoss! - kto.loss) <= 1e-6 * Math.abs(kto.loss), `kto loss ${ktoLoss} vs ${kto.loss} (${what}, seed=${SEED})`);
  assert.ok(Math.abs(z0! - 0.75) <= 1e-12, `z0 ${z0}`);
  assert.ok(Math.abs(lines[0]! - want.loss) <= 1e-6 * Math.abs(want.loss), `loss ${lines[0]} vs ${want.loss} (${what}, seed=${SEED})`);
  for (let s = 0; s < seqs; s++) {
    assert.ok(Math.abs(lines[1 + s]! - want.seqLogps[s]!) <= 1e-5 * Math.abs(want.seqLogps[s]!) + 1e-6, `π_${s} (${what}, seed=${SEED})`);
  }
  let num = 0, den = 0;
  for (let i = 0; i < rows * V; i++) {
    num += (lines[1 + seqs + i]! - want.grad[i]!) ** 2;
    den += want.grad[i]! ** 2;
  }
  assert.ok(Math.sqrt(num / den) <= 1e-5, `gradient relative L2 error ${Math.sqrt(num / den)} (${what}, seed=${SEED})`);

  // fdpo_policy_loss: grpo, on-policy, advantage 0.5 s - 1, entropy_coef 0.1 (as check_loss.c).
  const policy = referencePolicyLoss({
    logits: Float64Array.from(logits), rows, vocab: V, labels, cuSeqlens: cu, ignoreIndex: -100,
    advantages: Float64Array.from({ length: seqs }, (_, s) => 0.5 * s - 1), advantagesPerToken: false,
    oldLogps: null, refLogps: null, beta: 0, epsilon: 0.2, epsilonHigh: 0.2, entropyCoef: 0.1,
    lossType: 'grpo', maxCompletionLength: 0, numItemsInBatch: 0,
  });
  const at = 3 + seqs + rows * V; // after the KTO loss and z0
  assert.ok(Math.abs(lines[at]! - policy.loss) <= 1e-5 * (1 + Math.abs(policy.loss)), `policy loss ${lines[at]} vs ${policy.loss} (${what}, seed=${SEED})`);
  num = 0;
  den = 0;
  for (let i = 0; i < rows * V; i++) {
    num += (lines[at + 1 + i]! - policy.grad[i]!) ** 2;
    den += policy.grad[i]! ** 2;
  }
  assert.ok(Math.sqrt(num / den) <= 1e-5, `policy gradient relative L2 error ${Math.sqrt(num / den)} (${what}, seed=${SEED})`);
}
