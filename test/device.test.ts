// DeviceTensor and backend selection where the machine may have no GPU: every path that needs
// CUDA fails with ERR_FDPO_CUDA_UNAVAILABLE and says why; device memory never reaches the CPU
// backend. On a machine with a device, the same calls run, and match the CPU (test/gpu/check.ts
// checks the numbers in depth, and npm run test:cuda-emulated the CUDA code without a GPU).
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { backendInfo, DeviceTensor, dpoLoss, policyLoss, policyLossAsync, sequenceLogps, type PolicyLossResult, type PolicySettingsOptions } from '../lib/index.js';
import { ELEMENT_BYTES, holdingTensors } from '../lib/device.js';
import { decodeToFloat64 } from '../lib/dtype.js';
import type { Tensor } from '../lib/types.js';
import { IGNORE, makeCase, tokenOptions, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';
import { skip } from './helpers/skip.js';

const SEED = testSeed();
const cuda = backendInfo().cuda.devices.length > 0;

function codeOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    return `${(error as { code?: string }).code}: ${(error as Error).message}`;
  }
  return 'no error';
}

test('DeviceTensor.wrap checks its pointer, shape, dtype and device', () => {
  assert.match(codeOf(() => DeviceTensor.wrap(0n, [2], 'float32')), /^ERR_FDPO_INVALID_ARGUMENT: .*pointer must be a non-null device address/);
  assert.match(codeOf(() => DeviceTensor.wrap(1n << 64n, [2], 'float32')), /pointer must be/);
  assert.match(codeOf(() => DeviceTensor.wrap(4098n, [2], 'float32')), /aligned to 4 bytes for float32/);
  assert.match(codeOf(() => DeviceTensor.wrap(4096n, [2, -1], 'float32')), /shape must be an array of non-negative integers/);
  assert.match(codeOf(() => DeviceTensor.wrap(4096n, [2], 'float64' as 'float32')), /dtype must be 'float32', 'bfloat16', 'float16' or 'int32', got "float64"/);
  assert.match(codeOf(() => DeviceTensor.wrap(4096n, [2], 'float32', { device: -1 })), /device must be a device index/);
  const t = DeviceTensor.wrap(4096n, [3, 5], 'bfloat16', { device: 0 });
  assert.is(t.byteLength, 30);
  assert.is(t.owned, false);
  assert.is(String(t), 'DeviceTensor(bfloat16 [3, 5] on cuda:0)');
  t.free(); // forgets a wrapped pointer, frees nothing
  assert.ok(t.freed);
  assert.match(codeOf(() => t.pointer), /^ERR_FDPO_INVALID_ARGUMENT: .*this DeviceTensor was freed/);
});

test('a DeviceTensor in use by an async call cannot be freed until the call ends', async () => {
  const t = DeviceTensor.wrap(4096n, [4], 'float32');
  let release!: () => void;
  const call = holdingTensors([t, null, 'not a tensor'], () => new Promise<void>((resolve) => (release = resolve)));
  assert.match(codeOf(() => t.free()), /^ERR_FDPO_INVALID_ARGUMENT: .*in use by a running async call/);
  assert.not.ok(t.freed);
  release();
  await call;
  t.free();
  assert.ok(t.freed);
});

test('device inputs: CUDA or a clear error; never the CPU backend', () => {
  const c = makeCase(makeRng(SEED), { B: 1, vocab: 7, T: 3 });
  const host = tokenOptions(c);
  const logits = DeviceTensor.wrap(1n << 20n, host.logits.shape, 'float32');
  const labels = DeviceTensor.wrap(1n << 21n, host.labels.shape, 'int32');
  const advantages = Float64Array.of(0.5, -0.5);
  // Each of these is refused before any device memory is touched (the pointers above are fake).
  const refused: [string, () => unknown, RegExp][] = [
    ['backend cpu with device logits', () => dpoLoss({ logits, labels: host.labels, ref: c.ref, backend: 'cpu' }), /backend 'cpu' cannot read DeviceTensor inputs/],
    ['device labels with host logits', () => dpoLoss({ ...host, labels: labels as never, ref: c.ref }), /labels must be host labels for host logits/],
    ['a device grad for host logits', () => dpoLoss({ ...host, ref: c.ref, grad: logits as never }), /grad must be a host tensor for host logits/],
    ['int32 logits', () => dpoLoss({ logits: labels, labels: host.labels, ref: c.ref }), /logits.dtype must be 'float32', 'bfloat16' or 'float16'/],
    ['float32 device labels', () => sequenceLogps({ logits, labels: logits }), /labels.dtype must be 'int32'/],
    ['a bad backend name', () => dpoLoss({ ...host, ref: c.ref, backend: 'gpu' as 'cuda' }), /backend must be 'cpu' or 'cuda', got "gpu"/],
    ['device -1 for host inputs', () => dpoLoss({ ...host, ref: c.ref, backend: 'cuda', device: -1 }), cuda ? /device must be an integer in \[0, 1023\], got -1/ : /ERR_FDPO_CUDA_UNAVAILABLE/],
    ['a stream that is not a bigint', () => dpoLoss({ ...host, ref: c.ref, backend: 'cuda', stream: 5 as unknown as bigint }), cuda ? /stream must be a cudaStream_t/ : /ERR_FDPO_CUDA_UNAVAILABLE/],
    ['policyLoss: backend cpu with device logits', () => policyLoss({ logits, labels: host.labels, advantages, backend: 'cpu' }), /backend 'cpu' cannot read DeviceTensor inputs/],
    ['policyLoss: device labels with host logits', () => policyLoss({ ...host, labels: labels as never, advantages }), /labels must be host labels for host logits/],
    ['policyLoss: a device grad for host logits', () => policyLoss({ ...host, advantages, grad: logits as never }), /grad must be a host tensor for host logits/],
    ['policyLoss: a host grad for device logits', () => policyLoss({ logits, labels, advantages, grad: host.logits as never }), cuda ? /grad must be true, false, 'inplace' or a DeviceTensor to fill/ : /ERR_FDPO_CUDA_UNAVAILABLE/],
    ['policyLoss: int32 logits', () => policyLoss({ logits: labels, labels: host.labels, advantages }), /logits.dtype must be 'float32', 'bfloat16' or 'float16'/],
  ];
  for (const [what, run, message] of refused) assert.match(codeOf(run), message, what);
  if (!cuda) {
    const why = backendInfo().cuda.reason!;
    assert.match(codeOf(() => dpoLoss({ logits, labels, ref: c.ref })), /^ERR_FDPO_CUDA_UNAVAILABLE: fused-dpo: DeviceTensor inputs need the CUDA backend, but CUDA cannot be used here: /);
    assert.ok(codeOf(() => sequenceLogps({ logits, labels })).includes(why), why);
    assert.match(codeOf(() => policyLoss({ logits, labels, advantages })), /^ERR_FDPO_CUDA_UNAVAILABLE: fused-dpo: DeviceTensor inputs need the CUDA backend/);
    assert.match(codeOf(() => dpoLoss({ ...host, ref: c.ref, backend: 'cuda' })), /^ERR_FDPO_CUDA_UNAVAILABLE: .*backend 'cuda' was asked for/);
    assert.match(codeOf(() => DeviceTensor.alloc([4], 'float32')), /^ERR_FDPO_CUDA_UNAVAILABLE: /);
  }
});

test('with a device: upload, download, alloc, free, and a loss on device tensors', () => {
  if (!cuda) return skip('device', 'no CUDA device here');
  const c = makeCase(makeRng(SEED + 1), { B: 2, vocab: 300, T: 5 });
  const host = tokenOptions(c);
  const logits = DeviceTensor.from(host.logits);
  const labels = DeviceTensor.from(host.labels);
  assert.equal(Array.from(labels.download()), Array.from(host.labels.data));
  assert.match(codeOf(() => logits.upload(new Float32Array(3))), /^ERR_FDPO_INVALID_ARGUMENT: .*data must be \d+ bytes \(the tensor's size\)/);
  assert.match(codeOf(() => logits.upload(new Int32Array(c.rows * c.vocab))), /data must be a typed array of float32 values/);
  assert.match(codeOf(() => labels.download(new Float32Array(c.rows))), /into must be a typed array of \d+ bytes of int32/);
  assert.match(codeOf(() => dpoLoss({ ...host, ref: c.ref, backend: 'cuda', device: 7 })), /^ERR_FDPO_INVALID_ARGUMENT: .*device 7 does not exist/);
  const onHost = dpoLoss({ ...host, ref: c.ref, backend: 'cpu' });
  const onDevice = dpoLoss({ logits, labels, ref: c.ref });
  assert.ok(onDevice.grad instanceof DeviceTensor && onDevice.grad.owned);
  const grad = onDevice.grad!.download() as Float32Array;
  let worst = 0;
  for (let i = 0; i < grad.length; i++) worst = Math.max(worst, Math.abs(grad[i]! - (onHost.grad!.data as Float32Array)[i]!));
  assert.ok(worst < 1e-6, `device gradient differs from the CPU's by ${worst}`);
  assert.ok(Math.abs(onDevice.loss - onHost.loss) <= 1e-6 * Math.abs(onHost.loss), `${onDevice.loss} vs ${onHost.loss}`);
  onDevice.grad!.free();
  logits.free();
  labels.free();
  logits.free(); // twice is fine
});

// 16-byte vectors start where each row reaches 16-byte alignment; the logits and the gradient may
// be misaligned differently (then the gradient's vectors are read element by element). A wrong
// head or tail faults on a GPU and aborts the CUDA emulation; the guards catch a stray write.
test('with a device: device tensors at any element offset, the logits and the gradient differently', () => {
  if (!cuda) return skip('device', 'no CUDA device here');
  const rng = makeRng(SEED + 2);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    for (const vocab of [37, 4099]) {
      const c = makeCase(rng, { B: 1, vocab, dtype, T: 3 });
      const host = tokenOptions(c);
      const options = { ref: c.ref, lossType: 'sigmoid' as const };
      const n = c.rows * c.vocab, guard = 16;
      const at = (block: DeviceTensor, offset: number) => DeviceTensor.wrap(block.pointer + BigInt(offset * ELEMENT_BYTES[dtype]), host.logits.shape, dtype);
      const fresh = () => (dtype === 'float32' ? new Float32Array(n + 2 * guard).fill(777) : new Uint16Array(n + 2 * guard).fill(0x4321));
      const logitsBlock = DeviceTensor.alloc([n + 2 * guard], dtype);
      const gradBlock = DeviceTensor.alloc([n + 2 * guard], dtype);
      const labels = DeviceTensor.from(host.labels);
      for (const [logitsOffset, gradOffset] of [[1, 3], [guard - 1, guard], [3, 3]]) {
        const context = `${dtype} V=${vocab} logits at +${logitsOffset}, grad at +${gradOffset} elements (seed ${SEED})`;
        logitsBlock.upload(fresh());
        const logits = at(logitsBlock, logitsOffset!);
        logits.upload(host.logits.data);
        gradBlock.upload(fresh());
        const cpu = dpoLoss({ ...host, ...options, backend: 'cpu' });
        const cpuDeferred = dpoLoss({ ...host, ...options, backend: 'cpu', deferScale: true });
        const checkGrad = (got: Float32Array | Uint16Array, want: Float32Array | Uint16Array, what: string) => {
          const a = decodeToFloat64(got, dtype), b = decodeToFloat64(want, dtype);
          let worst = 0;
          for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
          assert.ok(worst <= (dtype === 'float32' ? 1e-6 : 1e-2), `${context}: ${what} differs from the CPU's by ${worst}`);
        };
        const guardsKept = (block: DeviceTensor, offset: number, what: string) => {
          const all = block.download() as Float32Array | Uint16Array;
          const pattern = fresh();
          for (let i = 0; i < offset; i++) assert.is(all[i], pattern[i], `${context}: ${what} guard ${i} overwritten`);
          for (let i = offset + n; i < all.length; i++) assert.is(all[i], pattern[i], `${context}: ${what} guard ${i} overwritten`);
        };
        const grad = at(gradBlock, gradOffset!);
        const filled = dpoLoss({ logits, labels, ...options, grad });
        assert.ok(Math.abs(filled.loss - cpu.loss) <= 1e-5 * Math.abs(cpu.loss), `${context}: loss ${filled.loss} vs ${cpu.loss}`);
        checkGrad(grad.download() as Float32Array | Uint16Array, cpu.grad!.data as Float32Array | Uint16Array, 'gradient');
        guardsKept(gradBlock, gradOffset!, 'gradient');
        dpoLoss({ logits, labels, ...options, grad, deferScale: true }).rowScale!.free();
        checkGrad(grad.download() as Float32Array | Uint16Array, cpuDeferred.grad!.data as Float32Array | Uint16Array, 'deferred gradient');
        guardsKept(gradBlock, gradOffset!, 'deferred gradient');
        dpoLoss({ logits, labels, ...options, grad: 'inplace' });
        checkGrad(logits.download() as Float32Array | Uint16Array, cpu.grad!.data as Float32Array | Uint16Array, 'in-place gradient');
        guardsKept(logitsBlock, logitsOffset!, 'in-place logits');
      }
      logitsBlock.free();
      gradBlock.free();
      labels.free();
    }
  }
});

// policyLoss on device tokens: per-token inputs stay host arrays, and so do logps, tokenGrad and
// the metrics; the gradient stays on the device. Host inputs on the CUDA backend run the same
// kernels, so the results must be the same bits.
function policyInputs(c: TokenCase, seed: number): PolicySettingsOptions & { temperature: number } {
  const rng = makeRng(seed);
  const first = policyLoss({ ...tokenOptions(c), advantages: new Float64Array(2 * c.B), grad: false, backend: 'cuda' });
  const near = (spread: number) => Float64Array.from(first.logps, (x, r) => (c.labels.data[r] === IGNORE ? 0 : x + spread * rng.normal()));
  const advantages = Float64Array.from({ length: 2 * c.B }, () => rng.normal());
  return { advantages, oldLogps: near(0.3), refLogps: near(0.5), beta: 0.05, entropyCoef: 0.1, temperature: 0.9, lossType: 'grpo' };
}

function assertSamePolicy(got: PolicyLossResult<Tensor | DeviceTensor>, want: PolicyLossResult, context: string): void {
  assert.ok(Object.is(got.loss, want.loss), `${context}: loss ${got.loss} vs ${want.loss}`);
  assert.equal(Array.from(got.logps), Array.from(want.logps), `${context}: logps`);
  assert.equal(Array.from(got.tokenGrad), Array.from(want.tokenGrad), `${context}: tokenGrad`);
  assert.equal(got.metrics, want.metrics, `${context}: metrics`);
  if (want.grad === null) return assert.is(got.grad, null, `${context}: no gradient`);
  assert.ok(got.grad instanceof DeviceTensor, `${context}: a device gradient`);
  assert.equal(Array.from(got.grad.download()), Array.from(want.grad.data), `${context}: gradient`);
}

test('with a device: policyLoss on device tensors gives the bits of host tensors on the CUDA backend, in every grad mode, sync and async', async () => {
  if (!cuda) return skip('device', 'no CUDA device here');
  const rng = makeRng(SEED + 3);
  for (const [dtype, layout] of [['float32', 'padded'], ['bfloat16', 'packed']] as const) {
    const c = makeCase(rng, { B: 1, vocab: 37, dtype, layout, T: 3 });
    const host = tokenOptions(c);
    const settings = policyInputs(c, SEED + 4);
    const context = `${dtype} ${layout} (seed ${SEED})`;
    const want = policyLoss({ ...host, ...settings, backend: 'cuda' });
    const logits = DeviceTensor.from(host.logits);
    const labels = DeviceTensor.from(host.labels);
    const device = { ...host, logits, labels, ...settings };
    try {
      const fresh = policyLoss(device);
      assert.ok(fresh.grad instanceof DeviceTensor && fresh.grad.owned && fresh.grad.dtype === dtype, `${context}: a new DeviceTensor`);
      assert.equal(fresh.grad.shape, host.logits.shape, `${context}: the logits' shape`);
      assertSamePolicy(fresh, want, `${context}, new gradient`);
      fresh.grad.free();
      const hostLabels = policyLoss({ ...device, labels: host.labels });
      assertSamePolicy(hostLabels, want, `${context}, host labels`);
      hostLabels.grad!.free();
      const given = DeviceTensor.alloc(host.logits.shape, dtype);
      const filled = policyLoss({ ...device, grad: given });
      assert.is(filled.grad, given, `${context}: the given tensor is filled`);
      assertSamePolicy(filled, want, `${context}, given gradient`);
      given.free();
      assertSamePolicy(policyLoss({ ...device, grad: false }), { ...want, grad: null }, `${context}, no gradient`);
      const async = await policyLossAsync(device);
      assertSamePolicy(async, want, `${context}, async`);
      async.grad!.free();
      const inplace = policyLoss({ ...device, grad: 'inplace' });
      assert.is(inplace.grad, logits, `${context}: in place returns the logits`);
      assertSamePolicy(inplace, want, `${context}, in place`);
    } finally {
      logits.free();
      labels.free();
    }
  }
});

test('with a device: bad device inputs to policyLoss give clear errors; policyLossAsync holds its tensors until it settles', async () => {
  if (!cuda) return skip('device', 'no CUDA device here');
  const c = makeCase(makeRng(SEED + 5), { B: 1, vocab: 11, T: 2, ignoreProb: 0 });
  const host = tokenOptions(c);
  const n = c.rows * c.vocab;
  const advantages = Float64Array.of(1, -1);
  const block = DeviceTensor.alloc([n + 4], 'float32');
  const logits = DeviceTensor.wrap(block.pointer, host.logits.shape, 'float32');
  logits.upload(host.logits.data as Float32Array);
  const labels = DeviceTensor.from(host.labels);
  const badLabels = DeviceTensor.from({ data: Int32Array.from(host.labels.data, (y, r) => (r === 1 ? 99 : y)), shape: host.labels.shape });
  const freed = DeviceTensor.alloc(host.logits.shape, 'float32');
  freed.free();
  const device = { logits, labels, advantages };
  const refused: [string, () => unknown, RegExp][] = [
    ['a grad of another dtype', () => policyLoss({ ...device, grad: DeviceTensor.wrap(block.pointer, host.logits.shape, 'bfloat16') }), /grad.dtype must be the logits dtype 'float32', got "bfloat16"/],
    ['a grad of another size', () => policyLoss({ ...device, grad: DeviceTensor.wrap(block.pointer, [n - 1], 'float32') }), /grad.shape must be \d+ elements \(as many as logits\)/],
    ['a freed grad', () => policyLoss({ ...device, grad: freed }), /this DeviceTensor was freed/],
    ['freed logits', () => policyLoss({ ...device, logits: freed }), /this DeviceTensor was freed/],
    ['a grad overlapping the logits', () => policyLoss({ ...device, grad: DeviceTensor.wrap(block.pointer + 4n, host.logits.shape, 'float32') }), /logits and grad overlap in memory/],
    ['logits that are not device memory', () => policyLoss({ ...device, logits: DeviceTensor.wrap(1n << 20n, host.logits.shape, 'float32') }), /^ERR_FDPO_INVALID_ARGUMENT: fused-dpo: logits: address .* is not CUDA device memory/],
    ['a device label out of range', () => policyLoss({ ...device, labels: badLabels }), /^ERR_FDPO_INVALID_ARGUMENT: fused-dpo: labels\[1\] = 99 is outside \[0, 11\)/],
  ];
  try {
    for (const [what, run, message] of refused) assert.match(codeOf(run), message, what);
    const given = DeviceTensor.alloc(host.logits.shape, 'float32');
    const call = policyLossAsync({ logits, labels: host.labels, advantages, grad: given });
    for (const [what, t] of [['logits', logits], ['grad', given]] as const) {
      assert.match(codeOf(() => t.free()), /^ERR_FDPO_INVALID_ARGUMENT: .*in use by a running async call/, what);
    }
    // Host labels read by a device call cannot be detached under it (marked untransferable).
    const labelBuffer = host.labels.data.buffer as ArrayBuffer;
    codeOf(() => structuredClone(labelBuffer, { transfer: [labelBuffer] }));
    assert.is(labelBuffer.byteLength, 4 * c.rows, 'the host labels were detached during the call');
    const result = await call;
    assertSamePolicy(result, policyLoss({ ...host, advantages, backend: 'cuda' }), 'async with host labels');
    given.free();
  } finally {
    block.free();
    labels.free();
    badLabels.free();
  }
});

test.run();
