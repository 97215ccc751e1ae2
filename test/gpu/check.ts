// The CUDA backend on a real GPU (run by test/gpu/run.sh): CUDA against the float64 reference and
// the CPU backend on fresh random inputs (every loss type, fp32/bf16/fp16, padded and packed, V up
// to 152064, device tensors in every grad mode, rows x V past 2^31 once), guard regions around
// device outputs, run-to-run bitwise equality, and the kernels timed with CUDA events against the
// device's copy bandwidth. Prints a report; writes its numbers as JSON to the path given.
// `--quick` shrinks every size (no 2^31 case, no meaningful timing, no TRL): for checking this
// script on the CPU emulation of CUDA (test/cuda-emulation/) before a GPU's time is spent on it,
// and for run.sh's compute-sanitizer stages. `--no-trl` leaves out only TRL's way.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { backendInfo, DeviceTensor, dpoLoss, sequenceLogps, type DpoLossOptions } from '../../lib/index.js';
import { dpoLossTimed } from '../../lib/loss.js';
import { native } from '../../lib/native.js';
import { LOSS_KINDS, LOSS_TYPES, type LossType } from '../../lib/loss-kinds.js';
import type { DType } from '../../lib/types.js';
import { checkDpo, DTYPES, encode, GRAD_L2, makeCase, relErr, relL2, sameBytes, tokenOptions, type Layout, type TokenCase } from '../helpers/cases.js';
import { decodeToFloat64 } from '../../lib/dtype.js';
import { ELEMENT_BYTES } from '../../lib/device.js';
import { makeRng, testSeed, type Rng } from '../helpers/random.js';

const SEED = testSeed();
const QUICK = process.argv.includes('--quick');
// --no-trl: leave TRL's way out (run.sh's sanitizer stages; --quick does too).
const TRL = !QUICK && !process.argv.includes('--no-trl');
const jsonPath = process.argv.slice(2).find((a) => !a.startsWith('--'));
const SIZES = QUICK
  ? { vocabs: [5, 130], deviceVocabs: [1000, 5000], repeatVocab: 5000, big: { vocab: 300, rows: 256 }, timed: { tokens: 128, vocab: 5000, T: 32 }, runs: 3 }
  : {
      vocabs: [5, 130, 4096, 4097, 9001, 50257],
      deviceVocabs: [1000, 32000, 152064],
      repeatVocab: 32003,
      big: { vocab: 128256, rows: 16832 }, // 2.16e9 elements, 4.3 GB of bf16
      timed: { tokens: 16384, vocab: 128256, T: 1024 },
      runs: 12,
    };
const here = dirname(fileURLToPath(import.meta.url));
const report: Record<string, unknown> = { seed: SEED, date: new Date().toISOString() };
const failures: string[] = [];
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

function check(what: string, run: () => void): void {
  try {
    run();
    console.log(`  ok    ${what}`);
  } catch (error) {
    failures.push(`${what}: ${(error as Error).message}`);
    console.log(`  FAIL  ${what}\n        ${(error as Error).message.split('\n')[0]}`);
  }
}

function expect(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}

const info = backendInfo();
if (info.cuda.devices.length === 0) {
  console.error(`no CUDA device: ${info.cuda.reason}`);
  process.exit(2);
}
const device = info.cuda.devices[0]!;
report.device = device;
report.cuda = { runtime: info.cuda.runtimeVersion, driver: info.cuda.driverVersion };
console.log(`seed=${SEED} · ${device.name} (compute ${device.computeCapability}, ${(device.totalMemory / 2 ** 30).toFixed(0)} GiB) · CUDA runtime ${info.cuda.runtimeVersion}, driver ${info.cuda.driverVersion}`);

function refFor(c: TokenCase, types: readonly LossType[]): DpoLossOptions['ref'] {
  return types.some((t) => LOSS_KINDS[t].needsRef) ? c.ref : undefined;
}

function gradOf(result: { grad: { data: Float32Array | Uint16Array } | DeviceTensor | null }, dtype: DType): Float64Array {
  const g = result.grad!;
  const data = g instanceof DeviceTensor ? (g.download() as Float32Array | Uint16Array) : g.data;
  return decodeToFloat64(data, dtype);
}

// ---------------------------------------------------------------------------------------------
console.log('\n1. CUDA against the float64 reference and the CPU: every loss type x dtype x layout');
{
  const rng = makeRng(SEED);
  const layouts: Layout[] = ['padded', 'packed'];
  let worstLoss = 0, worstGrad = 0;
  for (const lossType of LOSS_TYPES) {
    for (const dtype of DTYPES) {
      for (const layout of layouts) {
        const vocab = pick(rng, SIZES.vocabs);
        const c = makeCase(rng, { B: 1 + rng.int(4), vocab, dtype, layout, emptySeqs: rng.next() < 0.2 ? [0] : [] });
        const options: Partial<DpoLossOptions> = { lossType, ref: refFor(c, [lossType]), beta: 0.1 + rng.next() };
        check(`${lossType} ${dtype} ${layout} V=${vocab}`, () => {
          const cpu = dpoLoss({ ...tokenOptions(c), ...options, backend: 'cpu' } as DpoLossOptions);
          const run = checkDpo(c, { ...options, backend: 'cuda' }, pick(rng, [true, 'tensor', false] as const), 'cuda');
          worstLoss = Math.max(worstLoss, run.lossRelErr);
          // Each backend is within run.lossTolerance of float64, so within twice that of each other.
          const lossDiff = Math.abs(run.got.loss - cpu.loss);
          expect(Number.isNaN(cpu.loss) ? Number.isNaN(run.got.loss) : lossDiff <= 2 * run.lossTolerance, `loss ${run.got.loss} vs CPU ${cpu.loss} (allowed ${2 * run.lossTolerance})`);
          if (run.got.grad && cpu.grad) {
            const d = relL2(gradOf(run.got, dtype), gradOf(cpu, dtype));
            worstGrad = Math.max(worstGrad, d);
            // Both within GRAD_L2 of float64 (fp32); 16-bit values may round to neighbouring codes.
            expect(d <= (dtype === 'float32' ? 2 * GRAD_L2 : 1e-2), `gradient relative L2 ${d} from the CPU's`);
          }
        });
      }
    }
  }
  report.referenceCheck = { worstLossRelError: worstLoss, worstGradRelL2VsCpu: worstGrad };
  console.log(`  worst loss error vs float64 ${worstLoss.toExponential(2)}, worst gradient L2 vs CPU ${worstGrad.toExponential(2)}`);
}

// ---------------------------------------------------------------------------------------------
console.log('\n2. Device tensors: grad modes, deferred scale, sequenceLogps, guard regions, V up to 152064');
{
  const rng = makeRng(SEED + 1);
  for (const dtype of DTYPES) {
    for (const vocab of SIZES.deviceVocabs) {
      const c = makeCase(rng, { B: 2, vocab, dtype, T: 3 + rng.int(4) });
      const host = tokenOptions(c);
      const options = { ref: c.ref, lossType: 'sigmoid' as const, beta: 0.2 };
      const cpu = dpoLoss({ ...host, ...options, backend: 'cpu' });
      const cpuDeferred = dpoLoss({ ...host, ...options, backend: 'cpu', deferScale: true });
      const cpuSeq = sequenceLogps({ ...host, backend: 'cpu' });
      const want = gradOf(cpu, dtype);
      const tol = dtype === 'float32' ? 2 * GRAD_L2 : 1e-2;
      check(`${dtype} V=${vocab}: new, filled (with guards), in place, deferred; sequenceLogps`, () => {
        const logits = DeviceTensor.from(host.logits);
        const labels = DeviceTensor.from(host.labels);
        const seq = sequenceLogps({ logits, labels });
        for (let s = 0; s < seq.logps.length; s++) expect(Math.abs(seq.logps[s]! - cpuSeq.logps[s]!) <= 1e-4 * (1 + Math.abs(cpuSeq.logps[s]!)), `sequenceLogps[${s}]`);
        const fresh = dpoLoss({ logits, labels, ...options });
        expect(relL2(gradOf(fresh, dtype), want) <= tol, 'new DeviceTensor gradient');
        fresh.grad!.free();

        // A gradient target with 64 guard elements on each side, filled with a pattern.
        const n = c.rows * c.vocab, guard = 64, es = ELEMENT_BYTES[dtype];
        const padded = DeviceTensor.alloc([n + 2 * guard], dtype);
        const pattern = dtype === 'float32' ? new Float32Array(n + 2 * guard).fill(1234.5) : new Uint16Array(n + 2 * guard).fill(0x7bcd);
        padded.upload(pattern);
        const target = DeviceTensor.wrap(padded.pointer + BigInt(guard * es), c.logits.shape, dtype);
        const filled = dpoLoss({ logits, labels, ...options, grad: target });
        const all = padded.download() as Float32Array | Uint16Array;
        for (let i = 0; i < guard; i++) expect(all[i] === pattern[0] && all[guard + n + i] === pattern[0], `guard element ${i} overwritten`);
        expect(relL2(decodeToFloat64(all.subarray(guard, guard + n), dtype), want) <= tol, 'filled gradient');
        expect(filled.grad === target, 'the filled tensor is returned');
        padded.free();

        const deferred = dpoLoss({ logits, labels, ...options, deferScale: true });
        expect(relL2(gradOf(deferred, dtype), gradOf(cpuDeferred, dtype)) <= tol, 'deferred unscaled gradient');
        const scales = deferred.rowScale!.download() as Float32Array;
        for (let r = 0; r < c.rows; r++) expect(relErr(scales[r]!, cpuDeferred.rowScale![r]!, 1e-20) <= 1e-5, `rowScale[${r}]`);
        deferred.grad!.free();
        deferred.rowScale!.free();

        const inPlace = dpoLoss({ logits, labels, ...options, grad: 'inplace' });
        expect(inPlace.grad === logits, "'inplace' returns the logits tensor");
        expect(relL2(gradOf(inPlace, dtype), want) <= tol, 'in-place gradient');
        logits.free();
        labels.free();
      });
    }
  }
  check('labels out of range on the device are refused before any kernel runs', () => {
    const c = makeCase(rng, { B: 1, vocab: 50, T: 4 });
    const host = tokenOptions(c);
    const bad = Int32Array.from(host.labels.data);
    bad[5] = 50;
    const logits = DeviceTensor.from(host.logits);
    const labels = DeviceTensor.from({ data: bad, shape: host.labels.shape });
    const before = logits.download();
    let message = '';
    try {
      dpoLoss({ logits, labels, ref: c.ref, grad: 'inplace' });
    } catch (error) {
      message = `${(error as { code?: string }).code}: ${(error as Error).message}`;
    }
    expect(/ERR_FDPO_INVALID_ARGUMENT.*labels\[5\] = 50 is outside \[0, 50\)/.test(message), message || 'accepted');
    expect(sameBytes(before, logits.download()), 'the logits were modified by a refused call');
    logits.free();
    labels.free();
  });
  const manySeqs = QUICK ? 301 : 70001;
  check(`packed: ${manySeqs} sequences of 0 to 3 rows and one of 5000 (the sums kernel's grid loop)`, () => {
    const lengths = Array.from({ length: manySeqs + 1 }, (_, s) => (s === 0 ? 5000 : rng.int(4)));
    const c = makeCase(rng, { B: (manySeqs + 1) / 2, vocab: 16, layout: 'packed', lengths, refSpread: 0 });
    const cpu = sequenceLogps({ ...tokenOptions(c), backend: 'cpu' });
    const gpu = sequenceLogps({ ...tokenOptions(c), backend: 'cuda' });
    expect(sameBytes(cpu.counts, gpu.counts), 'counts differ from the CPU');
    let worst = 0;
    for (let s = 0; s < cpu.logps.length; s++) worst = Math.max(worst, relErr(gpu.logps[s]!, cpu.logps[s]!, 1e-3));
    expect(worst <= 1e-5, `worst relative difference ${worst} from the CPU`);
  });
}

// ---------------------------------------------------------------------------------------------
console.log('\n3. Run-to-run bitwise equality');
{
  const rng = makeRng(SEED + 2);
  for (const dtype of DTYPES) {
    const c = makeCase(rng, { B: 4, vocab: SIZES.repeatVocab, dtype, T: 16 });
    check(`${dtype}: three runs, the same bits`, () => {
      const logits = DeviceTensor.from(c.logits);
      const labels = DeviceTensor.from(c.labels);
      const runs = [0, 1, 2].map(() => {
        const r = dpoLoss({ logits, labels, ref: c.ref, lossType: ['sigmoid', 'sft', 'aot'], lossWeights: [1, 0.1, 0.5] });
        const grad = r.grad!.download();
        r.grad!.free();
        return { loss: r.loss, seq: r.sequenceGrad, grad };
      });
      for (const r of runs.slice(1)) {
        expect(Object.is(r.loss, runs[0]!.loss), `loss ${r.loss} vs ${runs[0]!.loss}`);
        expect(sameBytes(r.seq, runs[0]!.seq) && sameBytes(r.grad, runs[0]!.grad), 'gradient bits differ');
      }
      logits.free();
      labels.free();
    });
  }
}

// ---------------------------------------------------------------------------------------------
/** A device tensor of `rows` rows: a random block of `block` rows, repeated (uploads stay small). */
function tiledLogits(rng: Rng, rows: number, vocab: number, dtype: DType, block: number) {
  const values = Float32Array.from({ length: block * vocab }, () => 3 * rng.normal());
  const { data } = encode(values, dtype);
  const tensor = DeviceTensor.alloc([rows, vocab], dtype);
  const blockBytes = BigInt(block * vocab * ELEMENT_BYTES[dtype]);
  for (let r = 0; r < rows; r += block) {
    const n = Math.min(block, rows - r);
    const piece = DeviceTensor.wrap(tensor.pointer + BigInt(r / block) * blockBytes, [n, vocab], dtype);
    piece.upload(data.subarray(0, n * vocab));
  }
  return { tensor, block: data };
}

console.log(QUICK ? '\n4. (quick: the big-offset case at a small size)' : '\n4. rows x V past 2^31 elements (64-bit offsets)');
{
  const rng = makeRng(SEED + 3);
  const { vocab, rows } = SIZES.big;
  const block = 64;
  check(`bf16 rows=${rows} V=${vocab}: per-sequence sums and the last rows' gradients`, () => {
    const { tensor: logits, block: blockData } = tiledLogits(rng, rows, vocab, 'bfloat16', block);
    const blockLabels = Int32Array.from({ length: block }, () => rng.int(vocab));
    const labels = Int32Array.from({ length: rows }, (_, r) => blockLabels[r % block]!);
    // 2B = 2 sequences of 64-row blocks each... the packed layout: sequence s = rows [s*T, (s+1)*T)
    const T = rows / 2;
    const cuSeqlens = Int32Array.of(0, T, rows);
    // Per-row log-probs of the block, on the CPU, one sequence per row.
    const perRow = sequenceLogps({
      logits: { data: blockData, shape: [block, vocab], dtype: 'bfloat16' },
      labels: { data: blockLabels, shape: [block] },
      cuSeqlens: Int32Array.from({ length: block + 1 }, (_, s) => s),
      backend: 'cpu',
    });
    const expected = [0, 1].map((s) => {
      let sum = 0;
      for (let r = s * T; r < (s + 1) * T; r++) sum += perRow.logps[r % block]!;
      return sum;
    });
    const seq = sequenceLogps({ logits, labels: { data: labels, shape: [rows] }, cuSeqlens });
    for (let s = 0; s < 2; s++) expect(relErr(seq.logps[s]!, expected[s]!, 1e-12) <= 1e-5, `sequence ${s}: ${seq.logps[s]} vs ${expected[s]}`);
    // Deferred: the unscaled onehot - p of the last row (past 2^31 elements) against the CPU's.
    const deferred = dpoLoss({ logits, labels: { data: labels, shape: [rows] }, cuSeqlens, lossType: 'sft', deferScale: true });
    const last = rows - 1;
    const lastRow = DeviceTensor.wrap(deferred.grad!.pointer + BigInt(last * vocab * 2), [vocab], 'bfloat16').download() as Uint16Array;
    const cpuBlock = dpoLoss({
      logits: { data: blockData, shape: [block, vocab], dtype: 'bfloat16' },
      labels: { data: blockLabels, shape: [block] },
      cuSeqlens: Int32Array.of(0, block / 2, block),
      lossType: 'sft',
      deferScale: true,
      backend: 'cpu',
    });
    const cpuRow = (cpuBlock.grad as { data: Uint16Array }).data.subarray((last % block) * vocab, (last % block + 1) * vocab);
    expect(relL2(decodeToFloat64(lastRow, 'bfloat16'), decodeToFloat64(cpuRow, 'bfloat16')) <= 1e-2, 'last row of the deferred gradient');
    deferred.grad!.free();
    deferred.rowScale!.free();
    logits.free();
  });
}

// ---------------------------------------------------------------------------------------------
/** TRL's way in PyTorch on the same shape, when PyTorch with CUDA is here; null when not. */
function timeTrlWay(seqs: number, T: number, vocab: number, fusedMs: number) {
  try {
    const out = execFileSync('python3', [join(here, 'trl_way.py'), String(seqs), String(T), String(vocab)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const trl = JSON.parse(out.trim().split('\n').pop()!) as { ms: number; peakExtraGiB: number; torch: string };
    console.log(`  TRL's way (PyTorch ${trl.torch}: log_softmax gather + autograd): ${trl.ms.toFixed(2)} ms, peak extra ${trl.peakExtraGiB.toFixed(1)} GiB -> fused is ${(trl.ms / fusedMs).toFixed(1)}x faster`);
    return { ...trl, speedup: trl.ms / fusedMs };
  } catch (error) {
    // Python's last line says why (no torch, no CUDA device for it, ...).
    const why = String((error as { stderr?: string }).stderr ?? '').trim().split('\n').pop() || (error as Error).message.split('\n')[0];
    console.log(`  TRL's way: not measured (${why})`);
    return null;
  }
}

console.log(`\n5. Timing (CUDA events): B*T = ${SIZES.timed.tokens} tokens x V = ${SIZES.timed.vocab}, bf16`);
{
  const rng = makeRng(SEED + 4);
  const { tokens, vocab, T } = SIZES.timed;
  const B = tokens / (2 * T);
  const elements = tokens * vocab, bytes = elements * 2;
  const copy = native().cudaCopyBandwidth(device.index, 2 ** 30, 20);
  const { tensor: logits } = tiledLogits(rng, tokens, vocab, 'bfloat16', 256);
  const prompt = Math.min(64, T / 4);
  const labels = DeviceTensor.from({ data: Int32Array.from({ length: tokens }, (_, r) => (r % T < prompt ? -100 : rng.int(vocab))), shape: [2 * B, T] });
  const shaped = DeviceTensor.wrap(logits.pointer, [2 * B, T, vocab], 'bfloat16');
  const grad = DeviceTensor.alloc([2 * B, T, vocab], 'bfloat16');
  const ref = { chosen: new Float64Array(B).fill(-3000), rejected: new Float64Array(B).fill(-3000) };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const time = (deferScale: boolean) => {
    const samples: Float32Array[] = [];
    for (let i = 0; i < SIZES.runs; i++) {
      const { result, timings } = dpoLossTimed({ logits: shaped, labels, ref, grad, deferScale });
      if (result.rowScale instanceof DeviceTensor) result.rowScale.free();
      if (i >= 2) samples.push(timings); // the first two warm up
    }
    return [0, 1, 2].map((k) => median(samples.map((t) => t[k]!)));
  };
  const [a, reduce, b] = time(false);
  const [aDeferred, reduceDeferred] = time(true);
  const gbps = (traffic: number, ms: number) => traffic / (ms * 1e-3) / 1e9;
  const full = a! + reduce! + b!;
  const deferredTotal = aDeferred! + reduceDeferred!;
  const rows = [
    ['copy bandwidth (cudaMemcpy D2D, read + write)', '', (copy / 1e9).toFixed(0), '100 %'],
    ['loss + grad: pass A (1 read)', a!.toFixed(3), gbps(bytes, a!).toFixed(0), `${((100 * gbps(bytes, a!) * 1e9) / copy).toFixed(0)} %`],
    ['            reduce', reduce!.toFixed(3), '', ''],
    ['            pass B (1 read + 1 write)', b!.toFixed(3), gbps(2 * bytes, b!).toFixed(0), `${((100 * gbps(2 * bytes, b!) * 1e9) / copy).toFixed(0)} %`],
    ['            total (2 reads + 1 write)', full.toFixed(3), gbps(3 * bytes, full).toFixed(0), `${((100 * gbps(3 * bytes, full) * 1e9) / copy).toFixed(0)} %`],
    ['deferred scale (1 read + 1 write)', deferredTotal.toFixed(3), gbps(2 * bytes, deferredTotal).toFixed(0), `${((100 * gbps(2 * bytes, deferredTotal) * 1e9) / copy).toFixed(0)} %`],
  ];
  console.log(rows.map((r) => `  ${r[0]!.padEnd(48)} ${r[1]!.padStart(8)} ms ${r[2]!.padStart(6)} GB/s ${r[3]!.padStart(6)}`).join('\n'));
  report.timing = { tokens, vocab, dtype: 'bfloat16', copyBandwidthGBs: copy / 1e9, passAms: a, reduceMs: reduce, passBms: b, totalMs: full, deferredMs: deferredTotal };

  if (TRL) {
    report.trl = timeTrlWay(2 * B, T, vocab, full);
  } else {
    console.log("  TRL's way: not measured (--quick or --no-trl)");
    report.trl = null;
  }
  grad.free();
  labels.free();
  logits.free();
}

report.failures = failures;
if (jsonPath) writeFileSync(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
console.log(failures.length === 0 ? '\nall checks passed' : `\n${failures.length} check(s) FAILED (seed=${SEED})`);
process.exit(failures.length === 0 ? 0 : 1);
