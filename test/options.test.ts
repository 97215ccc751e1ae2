// Nothing silent: every options object refuses a key it does not know (naming it, and the known one
// it resembles, TRL's snake_case names included); TRL options fused-dpo lacks say so. And user
// values are read once, through the intrinsic typed-array getters: getters, Proxies and subclasses
// that answer differently on each read cannot pass validation with one value and reach the
// binding with another.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { DeviceTensor, dpoLoss, dpoLossAsync, sequenceLogps, sequenceLogpsAsync, type DpoLossOptions } from '../lib/index.js';
import { makeCase, tokenOptions } from './helpers/cases.js';
import { makeRng, testSeed } from './helpers/random.js';

const SEED = testSeed();
const base = makeCase(makeRng(SEED + 70), { B: 2, vocab: 6, T: 3 });
const valid = { ...tokenOptions(base), ref: base.ref } as DpoLossOptions;

type Call = (options: never) => unknown;

// A resizable ArrayBuffer (ES2024; this TypeScript's lib is ES2023).
const resizableBuffer = (bytes: number) =>
  new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer)(bytes, { maxByteLength: bytes * 2 });
const LOSS_CALLS: [string, Call][] = [['dpoLoss', dpoLoss as Call], ['dpoLossAsync', dpoLossAsync as Call]];
const SEQUENCE_CALLS: [string, Call][] = [['sequenceLogps', sequenceLogps as Call], ['sequenceLogpsAsync', sequenceLogpsAsync as Call]];

async function refusal(call: Call, options: unknown): Promise<{ code?: string; message: string }> {
  try {
    await call(options as never);
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error(`accepted: ${JSON.stringify(Object.keys(options as object))}`);
}

test('an unknown option is refused by every call, naming it and the option it resembles', async () => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ loss_type: 'ipo' }, 'loss_type', /did you mean 'lossType'/],
    [{ label_smoothing: 0.1 }, 'label_smoothing', /did you mean 'labelSmoothing'/],
    [{ betaa: 5 }, 'betaa', /did you mean 'beta'/],
    [{ lossTypes: 'ipo' }, 'lossTypes', /did you mean 'lossType'/],
    [{ ignore_index: -1 }, 'ignore_index', /did you mean 'ignoreIndex'/],
    [{ label_pad_token_id: -100 }, 'label_pad_token_id', /did you mean 'ignoreIndex'/],
    [{ f_divergence_type: 'js_divergence' }, 'f_divergence_type', /did you mean 'fDivergenceType'/],
    [{ zzzzzz: 1 }, 'zzzzzz', /the options are logits, labels/],
  ];
  for (const [name, call] of LOSS_CALLS) {
    for (const [extra, key, hint] of cases) {
      const e = await refusal(call, { ...valid, ...extra });
      assert.is(e.code, 'ERR_FDPO_UNKNOWN_OPTION', `${name} ${key}: ${e.message}`);
      assert.match(e.message, `'${key}'`);
      assert.match(e.message, hint);
      assert.match(e.message, name.replace('Async', ''));
    }
  }
  for (const [name, call] of SEQUENCE_CALLS) {
    const e = await refusal(call, { ...tokenOptions(base), averge: true });
    assert.is(e.code, 'ERR_FDPO_UNKNOWN_OPTION', name);
    assert.match(e.message, /did you mean 'average'/);
    // A loss option is not a sequenceLogps option.
    assert.is((await refusal(call, { ...tokenOptions(base), beta: 0.1 })).code, 'ERR_FDPO_UNKNOWN_OPTION', `${name}: beta`);
  }
});

test("TRL options fused-dpo does not have are refused as unsupported, in TRL's and in camelCase spelling", async () => {
  for (const key of ['rpo_alpha', 'rpoAlpha', 'reference_free']) {
    for (const [name, call] of LOSS_CALLS) {
      const e = await refusal(call, { ...valid, [key]: 1 });
      assert.is(e.code, 'ERR_FDPO_UNSUPPORTED_OPTION', `${name} ${key}: ${e.message}`);
      assert.match(e.message, `'${key}'`);
      assert.match(e.message, /not supported|here that is|instead/);
    }
  }
});

test('ref refuses keys other than chosen and rejected', async () => {
  const e = await refusal(dpoLoss as Call, { ...valid, ref: { ...base.ref, chosn: base.ref.chosen } });
  assert.is(e.code, 'ERR_FDPO_UNKNOWN_OPTION');
  assert.match(e.message, /'chosn'.*'chosen'/);
});

test("DeviceTensor's options refuse unknown keys too (before any CUDA call)", async () => {
  for (const run of [
    () => DeviceTensor.alloc([2], 'float32', { devise: 0 } as never),
    () => DeviceTensor.wrap(4096n, [2], 'float32', { device_id: 0 } as never),
  ]) {
    const e = await refusal(run as Call, undefined);
    assert.is(e.code, 'ERR_FDPO_UNKNOWN_OPTION', e.message);
  }
});

test('a gradient the engine cannot allocate is ERR_FDPO_OUT_OF_MEMORY, not a bare RangeError', () => {
  const original = globalThis.Float32Array;
  const refusing = class extends original {
    constructor(...args: unknown[]) {
      if (typeof args[0] === 'number' && args[0] === base.logits.data.length) throw new RangeError('Array buffer allocation failed');
      super(...(args as []));
    }
  };
  globalThis.Float32Array = refusing as typeof Float32Array;
  try {
    dpoLoss(valid);
    assert.unreachable('allocated');
  } catch (error) {
    assert.is((error as { code?: string }).code, 'ERR_FDPO_OUT_OF_MEMORY', (error as Error).message);
    assert.match((error as Error).message, /gradient/);
  } finally {
    globalThis.Float32Array = original;
  }
});

test('options given by getters or a Proxy are read once', () => {
  let reads = 0;
  const counted = new Proxy({ ...valid }, {
    get(target, key, receiver) {
      if (key === 'beta') reads++;
      return Reflect.get(target, key, receiver);
    },
  });
  dpoLoss(counted);
  assert.ok(reads <= 1, `beta read ${reads} times`);
  // A getter that answers a valid ignoreIndex once and then a different one: the first answer is used throughout.
  let calls = 0;
  const flipping = { ...valid } as Record<string, unknown>;
  Object.defineProperty(flipping, 'ignoreIndex', { enumerable: true, get: () => (calls++ === 0 ? -100 : 3) });
  const out = dpoLoss(flipping as unknown as DpoLossOptions);
  assert.is(calls, 1);
  assert.is(out.loss, dpoLoss(valid).loss);
});

test('a typed-array subclass with a decoy buffer getter over a resizable buffer is refused', () => {
  const resizable = resizableBuffer(base.logits.data.byteLength);
  class Decoy extends Float32Array {
    override get buffer(): ArrayBuffer {
      return new ArrayBuffer(8);
    }
  }
  const data = new Decoy(resizable);
  data.set(base.logits.data as Float32Array);
  const e = (() => {
    try {
      dpoLoss({ ...valid, logits: { data, shape: base.logits.shape } });
    } catch (error) {
      return error as { code?: string; message: string };
    }
    return null;
  })();
  assert.ok(e, 'accepted');
  assert.is(e!.code, 'ERR_FDPO_INVALID_ARGUMENT');
  assert.match(e!.message, /logits\.data.*resizable/);
});

test('labels.data read once: a getter that turns resizable on its third read changes nothing', () => {
  const fixed = base.labels.data;
  const resizable = new Int32Array(resizableBuffer(fixed.byteLength));
  resizable.set(fixed);
  let reads = 0;
  const labels = { shape: [...base.labels.shape] } as Record<string, unknown>;
  Object.defineProperty(labels, 'data', { get: () => (++reads >= 3 ? resizable : fixed) });
  const out = dpoLoss({ ...valid, labels } as unknown as DpoLossOptions);
  assert.is(reads, 1);
  assert.is(out.loss, dpoLoss(valid).loss);
});

test('a Proxy around a typed array, and shape entries that change on each read, are handled', () => {
  const proxy = new Proxy(base.logits.data, {});
  let e: { code?: string } | null = null;
  try {
    dpoLoss({ ...valid, logits: { data: proxy as Float32Array, shape: base.logits.shape } });
  } catch (error) {
    e = error as { code?: string };
  }
  assert.is(e?.code, 'ERR_FDPO_INVALID_ARGUMENT', 'a Proxy is not a typed array');
  let reads = 0;
  const shape = new Proxy([...base.logits.shape], {
    get(target, key, receiver) {
      if (key === '2') return reads++ === 0 ? target[2] : 1e6;
      return Reflect.get(target, key, receiver);
    },
  });
  const out = dpoLoss({ ...valid, logits: { data: base.logits.data, shape } });
  assert.is(out.loss, dpoLoss(valid).loss);
});

test('a NaN loss names the first non-finite row and its sequence', () => {
  const rows = base.labels.data.length;
  const scored = Array.from({ length: rows }, (_, r) => r).filter((r) => base.labels.data[r] !== -100);
  const row = scored[Math.floor(scored.length / 2)]!;
  const data = Float32Array.from(base.logits.data as Float32Array);
  data[row * 6 + 2] = Number.POSITIVE_INFINITY;
  const out = dpoLoss({ ...valid, logits: { data, shape: base.logits.shape } });
  assert.ok(Number.isNaN(out.loss));
  assert.equal(out.nonFinite, { sequence: Math.floor(row / 3), row });
  assert.equal(sequenceLogps({ ...tokenOptions(base), logits: { data, shape: base.logits.shape } }).nonFinite, { sequence: Math.floor(row / 3), row });
  assert.is(dpoLoss(valid).nonFinite, null);
});

test.run();
