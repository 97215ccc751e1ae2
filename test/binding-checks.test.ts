// The binding's own checks, with lib/'s validation bypassed: argument objects that lie about
// sizes, offsets and labels must come back as ERR_FDPO_INVALID_ARGUMENT, never as a read or
// write out of bounds, an abort or an exit.
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { STAT, type NativeLossArgs } from '../lib/binding.js';
import { HYPERPARAMETER_NAMES, LOSS_DEFAULTS } from '../lib/loss-kinds.js';
import { native } from '../lib/native.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();

function validArgs(): NativeLossArgs {
  const rows = 6, vocab = 5;
  return {
    logits: new Float32Array(rows * vocab).fill(0.5),
    dtype: 0,
    rows,
    vocab,
    labels: new Int32Array([1, 2, -100, 0, 4, 3]),
    cuSeqlens: new Int32Array([0, 3, 6]),
    ignoreIndex: -100,
    threads: 2,
    device: null,
    stream: null,
    timings: null,
    kinds: new Int32Array([0]),
    weights: new Float64Array([1]),
    params: Float64Array.from(HYPERPARAMETER_NAMES, (name) => LOSS_DEFAULTS[name]),
    fDivergence: 0,
    scale: 1,
    refChosen: new Float64Array([-3]),
    refRejected: new Float64Array([-3]),
    seqLogps: new Float64Array(2),
    seqCounts: new Int32Array(2),
    seqGrad: new Float64Array(2),
    pairLosses: new Float64Array(1),
    chosenRewards: new Float64Array(1),
    rejectedRewards: new Float64Array(1),
    stats: new Float64Array(STAT.count),
    grad: new Float32Array(rows * vocab),
    rowScale: null,
  };
}

function expectInvalid(args: NativeLossArgs, what: string): void {
  try {
    native().dpoLoss(args);
  } catch (error) {
    assert.is((error as { code?: string }).code, 'ERR_FDPO_INVALID_ARGUMENT', `${what}: ${(error as Error).message}`);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

test('threads 4096 through the binding starts no more kernel threads than cores', () => {
  // fdpo_cpu_copy splits 64 MB into 64 chunks, so a pool that took the count as given would start 63.
  const tasks = () => readdirSync('/proc/self/task').length;
  const src = new Uint8Array(64 << 20).fill(7), dst = new Uint8Array(64 << 20);
  const before = tasks();
  native().copy(dst, src, 4096);
  assert.ok(tasks() - before <= availableParallelism(), `${tasks() - before} threads started for 4096 on ${availableParallelism()} cores`);
  assert.is(dst[12345], 7);
  const args = validArgs();
  args.threads = 4096;
  native().dpoLoss(args);
  const one = validArgs();
  one.threads = 1;
  native().dpoLoss(one);
  assert.equal(Array.from(args.stats), Array.from(one.stats), 'the same bits for any thread count');
});

test('the valid argument object works (the baseline of the cases below)', () => {
  const args = validArgs();
  native().dpoLoss(args);
  assert.ok(Number.isFinite(args.stats[STAT.loss]));
});

test('lies about sizes, offsets, labels and types are refused by the binding', () => {
  const cases: [string, (a: NativeLossArgs) => void][] = [
    ['rows larger than the logits', (a) => (a.rows = 7)],
    ['vocab larger than the logits', (a) => (a.vocab = 6)],
    ['vocab 0', (a) => (a.vocab = 0)],
    ['negative rows', (a) => (a.rows = -1)],
    ['fractional rows', (a) => (a.rows = 5.5)],
    ['dtype 7', (a) => (a.dtype = 7)],
    ['bf16 dtype with float32 data', (a) => (a.dtype = 1)],
    ['labels too short', (a) => (a.labels = new Int32Array(5))],
    ['a label past V', (a) => (a.labels = new Int32Array([1, 2, 5, 0, 4, 3]))],
    ['a negative label', (a) => (a.labels = new Int32Array([1, 2, -1, 0, 4, 3]))],
    ['cuSeqlens past the rows', (a) => (a.cuSeqlens = new Int32Array([0, 3, 9]))],
    ['cuSeqlens decreasing', (a) => (a.cuSeqlens = new Int32Array([0, 4, 3, 6]))],
    ['cuSeqlens not starting at 0', (a) => (a.cuSeqlens = new Int32Array([1, 3, 6]))],
    ['cuSeqlens empty', (a) => (a.cuSeqlens = new Int32Array(0))],
    ['odd number of sequences', (a) => (a.cuSeqlens = new Int32Array([0, 2, 4, 6]))],
    ['an unknown loss kind', (a) => (a.kinds = new Int32Array([99]))],
    ['weights shorter than kinds', (a) => ((a.kinds = new Int32Array([0, 1])), (a.weights = new Float64Array([1])))],
    ['more hyperparameters than the addon knows', (a) => (a.params = new Float64Array(HYPERPARAMETER_NAMES.length + 1))],
    ['params of another type', (a) => ((a as unknown as { params: Float32Array }).params = new Float32Array(4))],
    ['nine loss kinds', (a) => ((a.kinds = new Int32Array(9)), (a.weights = new Float64Array(9)))],
    ['ref too short', (a) => (a.refChosen = new Float64Array(0))],
    ['ref missing for sigmoid', (a) => ((a.refChosen = null), (a.refRejected = null))],
    ['grad too short', (a) => (a.grad = new Float32Array(29))],
    ['grad of another type', (a) => (a.grad = new Uint16Array(30))],
    ['rowScale shorter than the rows', (a) => (a.rowScale = new Float32Array(5))],
    ['rowScale of another type', (a) => ((a as unknown as { rowScale: Float64Array }).rowScale = new Float64Array(6))],
    ['seqLogps too short', (a) => (a.seqLogps = new Float64Array(1))],
    ['pairLosses too long', (a) => (a.pairLosses = new Float64Array(2))],
    ['stats too short', (a) => (a.stats = new Float64Array(2))],
    ['logits a plain array', (a) => ((a as unknown as { logits: number[] }).logits = [1, 2, 3])],
    ['threads a string', (a) => ((a as unknown as { threads: string }).threads = '2')],
    // Device memory is never read by the CPU backend, whatever the object claims.
    ['device logits on the CPU', (a) => (a.logits = { pointer: 4096n, byteLength: 120 })],
    ['device labels on the CPU', (a) => (a.labels = { pointer: 4096n, byteLength: 24 })],
    ['a device grad on the CPU', (a) => (a.grad = { pointer: 4096n, byteLength: 120 })],
    ['a device rowScale on the CPU', (a) => (a.rowScale = { pointer: 4096n, byteLength: 24 })],
    ['a device pointer as a number', (a) => ((a as unknown as { logits: unknown }).logits = { pointer: 4096, byteLength: 120 })],
  ];
  for (const [what, mutate] of cases) {
    const args = validArgs();
    mutate(args);
    expectInvalid(args, what);
  }
});

test('device buffers that are too small, null or not bigints are refused before CUDA is asked', () => {
  const cases: [string, (a: NativeLossArgs) => void][] = [
    ['logits smaller than rows x vocab', (a) => (a.logits = { pointer: 4096n, byteLength: 119 })],
    ['labels smaller than rows', (a) => (a.labels = { pointer: 4096n, byteLength: 23 })],
    ['grad smaller than the logits', (a) => (a.grad = { pointer: 4096n, byteLength: 100 })],
    ['a null device pointer', (a) => (a.logits = { pointer: 0n, byteLength: 120 })],
    ['a pointer past 64 bits', (a) => (a.logits = { pointer: 1n << 70n, byteLength: 120 })],
    ['a stream that is not a bigint', (a) => ((a as unknown as { stream: number }).stream = 1)],
    ['timings too short', (a) => (a.timings = new Float32Array(2))],
    ['device -1', (a) => (a.device = -1)],
  ];
  for (const [what, mutate] of cases) {
    const args = validArgs();
    args.device = 0;
    mutate(args);
    expectInvalid(args, what);
  }
});

test('random garbage in every field never crashes the process', () => {
  const rng = makeRng(SEED);
  const pick = <T>(xs: T[]): T => xs[rng.int(xs.length)]!;
  const garbage = (): unknown =>
    pick<() => unknown>([
      () => new Float32Array(rng.int(40)),
      () => new Int32Array(rng.int(12)).map(() => rng.int(20) - 10),
      () => new Float64Array(rng.int(4)),
      () => new Uint16Array(rng.int(40)),
      () => rng.int(50) - 10,
      () => rng.normal() * 1e10,
      () => null,
      () => 'x',
      () => ({}),
    ])();
  const keys = Object.keys(validArgs()) as (keyof NativeLossArgs)[];
  let refused = 0;
  for (let i = 0; i < 3000; i++) {
    const args = validArgs() as unknown as Record<string, unknown>;
    for (let k = 1 + rng.int(3); k > 0; k--) args[pick(keys)] = garbage();
    try {
      native().dpoLoss(args as unknown as NativeLossArgs);
    } catch (error) {
      // (a garbage `device` asks for CUDA, which this machine may not have)
      const code = (error as { code?: string }).code;
      assert.ok(code === 'ERR_FDPO_INVALID_ARGUMENT' || code === 'ERR_FDPO_CUDA_UNAVAILABLE', `${code}: ${(error as Error).message}`);
      refused++;
    }
  }
  assert.ok(refused > 2000, `only ${refused} of 3000 garbage calls were refused (seed=${SEED})`);
});

test.run();
