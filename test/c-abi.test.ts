// The C ABI without Node: CMake builds libfused_dpo.so and test/c-abi/check_loss.c against it;
// the program's loss, sequence sums and gradient must match the float64 reference.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { referenceDpo, referencePolicyLoss } from '../lib/reference.js';
import { referenceKto } from '../lib/reference-kto.js';
import { LOSS_DEFAULTS } from '../lib/loss-kinds.js';
import { paddedCuSeqlens } from '../lib/validate.js';
import { makeRng, testSeed } from './helpers/random.js';
import { skip } from './helpers/skip.js';

const SEED = testSeed();
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const hasCmake = spawnSync('cmake', ['--version']).status === 0;

test('a C program linked against libfused_dpo gets the reference loss and gradient', () => {
  if (!hasCmake) return skip('c-abi', 'cmake not found');
  const build = mkdtempSync(join(tmpdir(), 'fdpo-c-abi-'));
  // CPU only: test/cuda-build.test.ts builds the library with CUDA.
  execFileSync('cmake', ['-S', root, '-B', build, '-DFDPO_BUILD_TESTS=ON', '-DFDPO_CUDA=OFF', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', build, '--target', 'check_loss', '-j', '2'], { stdio: 'pipe' });

  const rng = makeRng(SEED);
  const B = 3, T = 5, V = 37, rows = 2 * B * T, seqs = 2 * B;
  const logits = Float32Array.from({ length: rows * V }, () => 3 * rng.normal());
  const labels = Int32Array.from({ length: rows }, (_, r) => (r % T < 2 ? -100 : rng.int(V)));
  const cu = paddedCuSeqlens(seqs, T);
  const ref = Float64Array.from({ length: seqs }, () => -10 - 5 * rng.next());
  const file = join(build, 'case.bin');
  writeFileSync(file, Buffer.concat([Buffer.from(BigInt64Array.of(BigInt(rows), BigInt(V), BigInt(seqs)).buffer), Buffer.from(logits.buffer), Buffer.from(labels.buffer), Buffer.from(cu.buffer), Buffer.from(ref.buffer)]));
  const lines = execFileSync(join(build, 'check_loss'), [file]).toString().trim().split('\n').map(Number);

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
  assert.ok(Math.abs(ktoLoss! - kto.loss) <= 1e-6 * Math.abs(kto.loss), `kto loss ${ktoLoss} vs ${kto.loss} (seed=${SEED})`);
  assert.ok(Math.abs(z0! - 0.75) <= 1e-12, `z0 ${z0}`);
  assert.ok(Math.abs(lines[0]! - want.loss) <= 1e-6 * Math.abs(want.loss), `loss ${lines[0]} vs ${want.loss} (seed=${SEED})`);
  for (let s = 0; s < seqs; s++) {
    assert.ok(Math.abs(lines[1 + s]! - want.seqLogps[s]!) <= 1e-5 * Math.abs(want.seqLogps[s]!) + 1e-6, `π_${s} (seed=${SEED})`);
  }
  let num = 0, den = 0;
  for (let i = 0; i < rows * V; i++) {
    num += (lines[1 + seqs + i]! - want.grad[i]!) ** 2;
    den += want.grad[i]! ** 2;
  }
  assert.ok(Math.sqrt(num / den) <= 1e-5, `gradient relative L2 error ${Math.sqrt(num / den)} (seed=${SEED})`);

  // fdpo_policy_loss: grpo, on-policy, advantage 0.5 s - 1, entropy_coef 0.1 (as check_loss.c).
  const policy = referencePolicyLoss({
    logits: Float64Array.from(logits), rows, vocab: V, labels, cuSeqlens: cu, ignoreIndex: -100,
    advantages: Float64Array.from({ length: seqs }, (_, s) => 0.5 * s - 1), advantagesPerToken: false,
    oldLogps: null, refLogps: null, beta: 0, epsilon: 0.2, epsilonHigh: 0.2, entropyCoef: 0.1,
    lossType: 'grpo', maxCompletionLength: 0, numItemsInBatch: 0,
  });
  const at = 3 + seqs + rows * V; // after the KTO loss and z0
  assert.ok(Math.abs(lines[at]! - policy.loss) <= 1e-5 * (1 + Math.abs(policy.loss)), `policy loss ${lines[at]} vs ${policy.loss} (seed=${SEED})`);
  num = 0;
  den = 0;
  for (let i = 0; i < rows * V; i++) {
    num += (lines[at + 1 + i]! - policy.grad[i]!) ** 2;
    den += policy.grad[i]! ** 2;
  }
  assert.ok(Math.sqrt(num / den) <= 1e-5, `policy gradient relative L2 error ${Math.sqrt(num / den)} (seed=${SEED})`);
});

test.run();
