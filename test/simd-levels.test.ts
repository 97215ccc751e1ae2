// Every SIMD level this CPU runs (baseline, avx2, avx512; neon on aarch64) against the float64 reference, on
// vocab sizes that hit the vector tails and the 2048-element row chunks, the same bits from every
// level, and the accuracy of the kernels' vectorised exp.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';

import { decodeToFloat64 } from '../lib/dtype.js';
import { backendInfo, dpoLoss, sequenceLogps, setSimdLevel } from '../lib/index.js';
import { native } from '../lib/native.js';
import { LOSS_TYPES, type LossType } from '../lib/loss-kinds.js';
import { checkDpo, DTYPES, encode, IGNORE, makeCase, tokenOptions, ulpDist32, type TokenCase } from './helpers/cases.js';
import { makeRng, testSeed, type Rng } from './helpers/random.js';

const SEED = testSeed();
// Narrowest first. 'baseline-mul-add' (the baseline for CPUs without FMA, which any CPU may be
// forced to) is checked against the reference, not for the other levels' bits.
const LEVELS = ['baseline-mul-add', 'baseline', 'neon', 'avx2', 'avx512'] as const;
type Level = (typeof LEVELS)[number];

const levels = suite('simd levels');
const initial = backendInfo().simd as Level;
const usable: Level[] = [];

levels.before(() => {
  for (const level of LEVELS) {
    try {
      setSimdLevel(level);
      assert.is(backendInfo().simd, level, `backendInfo().simd after setSimdLevel('${level}')`);
      usable.push(level);
    } catch (error) {
      assert.is((error as { code?: string }).code, 'ERR_FDPO_INVALID_ARGUMENT', `setSimdLevel('${level}') failed oddly: ${String(error)}`);
      console.log(`  (this CPU cannot run '${level}': ${(error as Error).message})`);
    }
  }
  setSimdLevel(initial);
  assert.ok(usable.includes('baseline'), 'baseline always runs');
});

levels.after(() => {
  setSimdLevel(initial);
  assert.is(backendInfo().simd, initial, 'the default level is restored');
});

levels('the default level is the widest this CPU runs', () => {
  assert.is(initial, usable[usable.length - 1], `default ${initial}, usable ${usable.join(', ')}`);
});

levels('setSimdLevel rejects unknown names', () => {
  assert.throws(() => setSimdLevel('sse9' as Level), (e: Error & { code?: string }) => e.code === 'ERR_FDPO_INVALID_ARGUMENT' && /level/.test(e.message));
  assert.is(backendInfo().simd, initial);
});

levels("setSimdLevel names the architecture of the other architecture's levels", () => {
  const [other, arch] = process.arch === 'arm64' ? (['avx2', 'x86-64'] as const) : (['neon', 'aarch64'] as const);
  assert.throws(
    () => setSimdLevel(other),
    (e: Error & { code?: string }) => e.code === 'ERR_FDPO_INVALID_ARGUMENT' && e.message.includes(`'${other}' kernels (${arch} only)`),
  );
  assert.is(backendInfo().simd, initial);
});

/** Plants the row's maximum in a later chunk, and ties of it, so the argmax and the rebase of the running sums are exercised. */
function plantMaxima(c: TokenCase, rng: Rng): void {
  const V = c.vocab;
  if (V < 2048) return;
  const f32 = new Float32Array(Array.from(c.decoded));
  for (let r = 0; r < c.rows; r++) {
    const row = f32.subarray(r * V, (r + 1) * V);
    // just above the row's maximum: 1 − p_y stays far above float32 resolution (see
    // orpo-confident.test.ts for what happens when it does not)
    const top = Math.fround(Math.max(...row) + 0.5 + rng.next());
    switch (r % 4) {
      case 0: // max in the last chunk only
        row[V - 1 - rng.int(Math.min(V - 2048, 40))] = top;
        break;
      case 1: {
        // tie between the first and the last chunk: argmax is the first
        const first = rng.int(2048);
        const last = 2048 + rng.int(V - 2048);
        row[first] = top;
        row[last] = top;
        if (c.labels.data[r] !== IGNORE) c.labels.data[r] = rng.next() < 0.5 ? first : last;
        break;
      }
      case 2: // a larger value in chunk 0 and a smaller bump in the last chunk
        row[rng.int(2048)] = top;
        row[2048 + rng.int(V - 2048)] = top - 0.25;
        break;
      default: {
        // the label holds chunk 0's max and the row max comes later: the running sums are rebased
        // after the label's term was added
        const at = rng.int(2048);
        row[at] = top - 1;
        row[2048 + rng.int(V - 2048)] = top;
        if (c.labels.data[r] !== IGNORE) c.labels.data[r] = at;
        break;
      }
    }
    if (r % 4 === 0 && c.labels.data[r] !== IGNORE) c.labels.data[r] = row.indexOf(Math.max(...row));
  }
  const { data, decoded } = encode(f32, c.dtype);
  c.logits = { ...c.logits, data };
  c.decoded = decoded;
}

const TYPES: LossType[] = ['sigmoid', 'simpo', 'ipo', 'orpo'];

levels('entropy and log-probs when the row max rises in a chunk after the label', () => {
  // V = 4099: chunks [0, 2048), [2048, 4096), [4096, 4099). Every row: 0.5·normal, the label's logit
  // 5, another 5 at 3000, and the row max 8 at `maxAt`. When the max comes in a chunk after the
  // label's, the running sums (Σe, Σe·x) are rebased after the label's term went in.
  const rng = makeRng(SEED + 33);
  for (const level of usable) {
    setSimdLevel(level);
    for (const dtype of DTYPES) {
      for (const [label, maxAt] of [[5, 100], [3000, 4000], [4000, 4000], [5, 4000], [5, 4097], [2100, 4098]] as const) {
        const c = makeCase(rng, { B: 1, vocab: 4099, T: 2, dtype, ignoreProb: 0, logit: (g) => 0.5 * g.normal() });
        const f32 = new Float32Array(Array.from(c.decoded));
        for (let r = 0; r < c.rows; r++) {
          f32[r * c.vocab + label] = 5;
          f32[r * c.vocab + 3000] = 5;
          f32[r * c.vocab + maxAt] = 8;
          c.labels.data[r] = label;
        }
        const { data, decoded } = encode(f32, dtype);
        c.logits = { ...c.logits, data };
        c.decoded = decoded;
        checkDpo(c, { lossType: 'sigmoid', ref: c.ref }, true, `${level}: label ${label}, row max at ${maxAt} (seed=${SEED})`);
      }
    }
  }
  setSimdLevel(initial);
});

levels('each level against the reference: V = 1, 7, 33, 2050, 2067, 4099, every dtype', () => {
  const rng = makeRng(SEED + 30);
  for (const level of usable) {
    setSimdLevel(level);
    let k = 0;
    for (const dtype of DTYPES) {
      for (const V of [1, 7, 33, 2050, 2067, 4099]) {
        for (const layout of ['padded', 'packed'] as const) {
          k++;
          const c = makeCase(rng, { B: 2, vocab: V, T: V > 100 ? 2 : 4, dtype, layout, ignoreProb: 0.15 });
          plantMaxima(c, rng);
          const type = k % 3 === 0 ? LOSS_TYPES[rng.int(LOSS_TYPES.length)]! : TYPES[k % TYPES.length]!;
          checkDpo(c, { lossType: type, ref: c.ref, beta: 0.4 }, k % 2 === 0 ? true : 'inplace', `${level}: ${type} (seed=${SEED})`);
        }
      }
    }
  }
  setSimdLevel(initial);
});

/** The bytes of a tensor's values, every NaN as one NaN (a NaN's payload is not a result). */
function valueBytes(data: Float32Array | Uint16Array | Float64Array, dtype: 'float32' | 'bfloat16' | 'float16' | 'float64'): Uint8Array {
  const out = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const values = dtype === 'float64' ? data : decodeToFloat64(data as Float32Array | Uint16Array, dtype);
  const view = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    if (!Number.isNaN(values[i]!)) continue;
    if (dtype === 'float64') view.setFloat64(8 * i, NaN, true);
    else if (dtype === 'float32') view.setUint32(4 * i, 0x7fc00000, true);
    else view.setUint16(2 * i, 0x7fff, true);
  }
  return out;
}

/** Everything a call returns, as bytes: what must not depend on the SIMD level. */
function resultBytes(c: TokenCase, lossType: LossType, deferScale: boolean): Uint8Array[] {
  const r = dpoLoss({ ...tokenOptions(c), ref: c.ref, lossType, beta: 0.3, deferScale, threads: 2 });
  const s = sequenceLogps({ ...tokenOptions(c), average: lossType === 'simpo' });
  const doubles = [Float64Array.of(r.loss), r.losses, r.chosenLogps, r.rejectedLogps, r.chosenRewards, r.rejectedRewards, r.sequenceGrad, s.logps];
  const metrics = Float64Array.from(Object.values(r.metrics) as number[]);
  return [
    ...doubles.map((d) => valueBytes(d, 'float64')),
    valueBytes(metrics, 'float64'),
    new Uint8Array(r.tokenCounts.buffer.slice(0)),
    valueBytes(r.grad!.data, c.dtype),
    r.rowScale ? valueBytes(r.rowScale, 'float32') : new Uint8Array(0),
  ];
}

levels('every level gives the same bits: loss, metrics, log-probs, grad, rowScale; every dtype, odd V, deferScale', () => {
  if (usable.length < 2) {
    console.log(`  (only ${usable.join(', ')} runs here: nothing to compare)`);
    return;
  }
  const rng = makeRng(SEED + 34);
  const cases: TokenCase[] = [];
  for (const dtype of DTYPES) {
    for (const V of [1, 7, 33, 2049, 5000]) {
      for (const style of ['normal', 'confident', 'nonfinite'] as const) {
        const c = makeCase(rng, { B: 2, vocab: V, T: V > 1000 ? 3 : 5, dtype, layout: rng.next() < 0.5 ? 'padded' : 'packed', ignoreProb: 0.2 });
        if (style !== 'normal' || V >= 2049) {
          const f32 = new Float32Array(Array.from(c.decoded));
          for (let r = 0; r < c.rows; r++) {
            const y = c.labels.data[r]!;
            if (style === 'confident' && y !== IGNORE) f32[r * V + y] = 30 + 10 * rng.next(); // 1 − p_y below float32's ulp of 1
            if (style === 'nonfinite' && r === 1) f32[r * V + rng.int(V)] = rng.next() < 0.5 ? NaN : Infinity;
            if (V >= 2049 && r % 2 === 0) f32[r * V + V - 1 - rng.int(8)] = 12; // the row max in the last chunk: the rebase
          }
          const { data, decoded } = encode(f32, dtype);
          c.logits = { ...c.logits, data };
          c.decoded = decoded;
        }
        cases.push(c);
      }
    }
  }
  const names = ['loss', 'losses', 'chosenLogps', 'rejectedLogps', 'chosenRewards', 'rejectedRewards', 'sequenceGrad', 'sequenceLogps', 'metrics', 'tokenCounts', 'grad', 'rowScale'];
  const runs = new Map<Level, Uint8Array[][]>();
  for (const level of usable.filter((l) => l !== 'baseline-mul-add')) {
    setSimdLevel(level);
    const all: Uint8Array[][] = [];
    cases.forEach((c, k) => {
      for (const deferScale of [false, true]) all.push(resultBytes(c, TYPES[k % TYPES.length]!, deferScale));
    });
    runs.set(level, all);
  }
  setSimdLevel(initial);
  const [first, ...rest] = usable.filter((level) => level !== 'baseline-mul-add');
  const want = runs.get(first!)!;
  for (const level of rest) {
    const got = runs.get(level)!;
    got.forEach((outputs, i) => {
      const c = cases[i >> 1]!;
      outputs.forEach((bytes, j) => {
        const what = `${names[j]}: ${level} differs from ${first} (${c.dtype}, V = ${c.vocab}, ${c.layout}, deferScale ${(i & 1) === 1}, seed=${SEED})`;
        assert.ok(bytes.length === want[i]![j]!.length && bytes.every((b, n) => b === want[i]![j]![n]), what);
      });
    });
  }
});

levels("'baseline-mul-add' (no FMA) differs from the other levels only in the last bits: loss within 1e-6, gradient within 1e-6 relative L2", () => {
  if (!usable.includes('baseline-mul-add')) return;
  const rng = makeRng(SEED + 36);
  let worstLoss = 0, worstGrad = 0, worstUlp = 0;
  for (const V of [7, 2049, 5000]) {
    const c = makeCase(rng, { B: 2, vocab: V, T: 3, dtype: 'float32', ignoreProb: 0.1 });
    const run = (level: Level) => {
      setSimdLevel(level);
      return dpoLoss({ ...tokenOptions(c), ref: c.ref, beta: 0.3 });
    };
    const fused = run('baseline'), mulAdd = run('baseline-mul-add');
    setSimdLevel(initial);
    worstLoss = Math.max(worstLoss, Math.abs(fused.loss - mulAdd.loss) / Math.max(Math.abs(fused.loss), 1e-30));
    const a = fused.grad!.data as Float32Array, b = mulAdd.grad!.data as Float32Array;
    let num = 0, den = 0;
    for (let i = 0; i < a.length; i++) {
      num += (a[i]! - b[i]!) ** 2;
      den += a[i]! ** 2;
      worstUlp = Math.max(worstUlp, ulpDist32(a[i]!, b[i]!));
    }
    worstGrad = Math.max(worstGrad, Math.sqrt(num / Math.max(den, 1e-300)));
  }
  // (ulps of the tiniest entries are large and meaningless next to the row's scale: printed only)
  console.log(`  baseline-mul-add vs baseline: loss ${worstLoss.toExponential(2)}, gradient ${worstGrad.toExponential(2)} relative L2 (${worstUlp} ulp at most)`);
  assert.ok(worstLoss <= 1e-6, `loss relative difference ${worstLoss}`);
  assert.ok(worstGrad <= 1e-6, `gradient relative L2 ${worstGrad}`);
});

/** Float32 inputs for exp: uniform in [-87, 0], a grid with every fractional offset, and special points. */
function expInputs(rng: Rng): Float32Array {
  const xs: number[] = [];
  for (let i = 0; i < 150_000; i++) xs.push(-87 * rng.next());
  for (let i = 0; i <= 8700; i++) xs.push(-i / 100);
  for (let i = 0; i < 2000; i++) xs.push(-(2 ** (-30 * rng.next()))); // small magnitudes
  for (let i = 0; i < 500; i++) xs.push(88 * rng.next()); // a few positive ones
  xs.push(0, -0, 88, -87, -87.29, 1e-30, -1e-30, Math.LN2 / 2, -Math.LN2 / 2, Math.LN2, -Math.LN2, 1, -1);
  xs.push(1.5); // 161_215 in all: not a multiple of 16, so the scalar tail runs too
  return Float32Array.from(xs);
}

levels('vectorExp: within 2 ulp of exp rounded to float32 on [-87, 88]; exp(-100) = 0; exp(NaN) is NaN', () => {
  const rng = makeRng(SEED + 31);
  const xs = expInputs(rng);
  for (const level of usable) {
    setSimdLevel(level);
    // offsets 0..16 move each input through every lane and the scalar tail
    for (const shift of [0, 5]) {
      const input = new Float32Array(xs.length + shift);
      input.set(xs, shift);
      const out = native().vectorExp(input);
      assert.is(out.length, input.length);
      let worst = 0;
      for (let i = shift; i < input.length; i++) {
        const want = Math.fround(Math.exp(input[i]!));
        const d = ulpDist32(out[i]!, want);
        if (d > 2) assert.unreachable(`${level}: exp(${input[i]}) = ${out[i]}, expected ${want}: ${d} ulps apart`);
        worst = Math.max(worst, d);
      }
      if (shift === 0) console.log(`  ${level}: worst exp error ${worst} ulp over ${xs.length} inputs`);
    }
    for (const n of [1, 3, 16, 17, 40]) {
      // short arrays: all tail, or one vector and a tail; special values in every position
      for (let at = 0; at < n; at++) {
        const input = new Float32Array(n).fill(-1);
        input[at] = -100;
        const nanInput = new Float32Array(n).fill(-2);
        nanInput[at] = NaN;
        const out = native().vectorExp(input);
        const nanOut = native().vectorExp(nanInput);
        assert.is(out[at], 0, `${level}: exp(-100) at ${at} of ${n} is ${out[at]}`);
        assert.ok(Number.isNaN(nanOut[at]!), `${level}: exp(NaN) at ${at} of ${n} is ${nanOut[at]}`);
        for (let i = 0; i < n; i++) {
          if (i === at) continue;
          assert.ok(ulpDist32(out[i]!, Math.fround(Math.exp(-1))) <= 2, `${level}: neighbour ${i} of exp(-100) is ${out[i]}`);
          assert.ok(ulpDist32(nanOut[i]!, Math.fround(Math.exp(-2))) <= 2, `${level}: neighbour ${i} of exp(NaN) is ${nanOut[i]}`);
        }
      }
    }
    assert.equal(Array.from(native().vectorExp(new Float32Array(0))), []);
  }
  setSimdLevel(initial);
});

/** Float32 inputs x whose x*log2(e) lies within a few ulps of k + 1/2, where n = round(x*log2(e)) is a tie. */
function expRoundingTies(): number[] {
  const xs: number[] = [];
  const bits = new Float32Array(1);
  const word = new Int32Array(bits.buffer);
  for (let k = -126; k <= 126; k++) {
    bits[0] = (k + 0.5) * Math.LN2;
    const center = word[0]!;
    for (let d = -3; d <= 3; d++) {
      word[0] = center + d;
      xs.push(bits[0]);
    }
  }
  return xs;
}

levels('vectorExp: the vector lanes and the scalar tail give the same bits', () => {
  // (the gradient pass mixes both within a row, depending on the output's alignment)
  const rng = makeRng(SEED + 32);
  const random = Array.from({ length: 60_000 }, (_, i) => (i % 7 === 0 ? 88 : 87.3) * (rng.next() - (i % 7 === 0 ? 0 : 1)));
  const xs = Float32Array.from([...expRoundingTies(), ...random]);
  for (const level of usable) {
    setSimdLevel(level);
    const vector = native().vectorExp(xs);
    const lanes = 16; // every level runs 16 lanes
    for (let i = 0; i + lanes - 1 <= xs.length; i += lanes - 1) {
      const tail = native().vectorExp(xs.subarray(i, i + lanes - 1)); // shorter than one vector: all scalar
      for (let j = 0; j < lanes - 1; j++) {
        if (!Object.is(tail[j], vector[i + j])) assert.unreachable(`${level}: exp(${xs[i + j]}) is ${vector[i + j]} in a vector lane but ${tail[j]} in the scalar tail`);
      }
    }
  }
  setSimdLevel(initial);
});

levels.run();
