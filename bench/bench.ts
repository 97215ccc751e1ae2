// `npm run bench [-- --full] [--tokens 128,2048] [--vocab 512,32000] [--dtypes float32,bfloat16]
//                [--peers all|none|<name>,...] [--threads N] [--time ms]`
//
// One run, the same inputs for every path: fused-dpo's fused calls, the unfused native baseline,
// plain TypeScript (the float64 reference and a float32 loop), and the JavaScript peers (bench/
// peers), against the machine's own ceilings measured in the same run: copy bandwidth and exp
// rate. Effective GB/s counts the floor traffic of the call (the completion rows' logits read once,
// plus every row of the gradient written once when there is one); "of floor" is the floor time
// those ceilings imply for that traffic and one exp per element read, divided by the measured time.
import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';

import { backendInfo, dpoLoss, dpoLossAsync, policyLoss, sequenceLogps, toBfloat16 } from '../lib/index.js';
import { dpoLossUnfused } from '../lib/loss.js';
import { native } from '../lib/native.js';
import { referenceDpo } from '../lib/reference.js';
import { paddedCuSeqlens } from '../lib/validate.js';
import { LOSS_DEFAULTS } from '../lib/loss-kinds.js';
import type { DType } from '../lib/types.js';
import { peakExtraBytes } from './memory.js';
import { PEERS } from './peers/index.js';
import { plainJsDpo } from './plain-js.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const { values: args } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    tokens: { type: 'string' },
    vocab: { type: 'string' },
    dtypes: { type: 'string' },
    peers: { type: 'string', default: 'all' },
    threads: { type: 'string' },
    time: { type: 'string' },
  },
});
const list = (s: string | undefined, fallback: number[]) => (s ? s.split(',').map(Number) : fallback);
const TOKENS = list(args.tokens, args.full ? [128, 512, 2048, 4096] : [128, 2048]);
const VOCABS = list(args.vocab, [512, 32000, 128256]);
const DTYPES = (args.dtypes ? args.dtypes.split(',') : ['float32', 'bfloat16']) as DType[];
const THREADS = args.threads ? Number(args.threads) : availableParallelism();
const TIME_MS = args.time ? Number(args.time) : args.full ? 2000 : 250;
// In the default set a slow path (one run over this) is timed once and skipped at larger sizes.
const SLOW_MS = args.full ? Infinity : 1000;
const peerFilter = args.peers === 'all' ? null : args.peers === 'none' ? [] : args.peers.split(',');

interface Row {
  size: string;
  dtype: DType;
  rows: number;
  vocab: number;
  path: string;
  status: 'ok' | 'failed' | 'skipped';
  note?: string;
  samples?: number;
  medianMs?: number;
  p25Ms?: number;
  p75Ms?: number;
  gbPerS?: number;
  ofFloor?: number;
  peakExtraMB?: number | null;
  fusedSpeedup?: number;
}

interface Case {
  B: number;
  T: number;
  V: number;
  dtype: DType;
  logits: Float32Array | Uint16Array;
  logits32: Float32Array;
  labels: Int32Array;
  ref: { chosen: Float64Array; rejected: Float64Array };
}

function makeCase(rows: number, V: number, dtype: DType): Case {
  const T = Math.min(256, rows / 2);
  const B = rows / (2 * T);
  // A block of random logits, tiled: timings do not depend on the values, and large cases are
  // built in a fraction of a second.
  const block = new Float32Array(Math.min(rows * V, 1 << 20));
  let state = 12345;
  for (let i = 0; i < block.length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) | 0;
    block[i] = ((state >>> 8) / 16777216 - 0.5) * 8;
  }
  const tile = <A extends Float32Array | Uint16Array>(out: A, from: A): A => {
    for (let at = 0; at < out.length; at += from.length) out.set(from.subarray(0, Math.min(from.length, out.length - at)), at);
    return out;
  };
  const logits32 = tile(new Float32Array(rows * V), block);
  const logits = dtype === 'float32' ? logits32 : tile(new Uint16Array(rows * V), toBfloat16(block));
  // The first quarter of each sequence is prompt (ignored), the rest completion.
  const labels = Int32Array.from({ length: rows }, (_, r) => (r % T < T / 4 ? -100 : (r * 7919) % V));
  const ref = { chosen: new Float64Array(B).fill(-3 * T), rejected: new Float64Array(B).fill(-3.1 * T) };
  return { B, T, V, dtype, logits, logits32, labels, ref };
}

interface Timing {
  samples: number;
  median: number;
  p25: number;
  p75: number;
  peakExtraBytes: number | null;
}

// Two calls timed alternately (the order swapped each round, so load drift falls on both): the
// medians of each, for a cost ratio that the machine's noise between separate timings would blur.
async function interleaved(fn: () => unknown, other: () => unknown): Promise<{ mine: Timing; other: number; minRatio: number }> {
  const peakExtra = await peakExtraBytes(fn);
  await other();
  const mine: number[] = [], theirs: number[] = [];
  const started = performance.now();
  for (let k = 0; k < 16 || (performance.now() - started < 2 * TIME_MS && k < 400); k++) {
    for (const [f, into] of (k % 2 === 0 ? [[fn, mine], [other, theirs]] : [[other, theirs], [fn, mine]]) as [() => unknown, number[]][]) {
      const t0 = performance.now();
      await f();
      into.push(performance.now() - t0);
    }
  }
  const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(q * (xs.length - 1))]!;
  return {
    mine: { samples: mine.length, median: quantile(mine, 0.5), p25: quantile(mine, 0.25), p75: quantile(mine, 0.75), peakExtraBytes: peakExtra },
    other: quantile(theirs, 0.5),
    // the fastest of each: what is left when a shared machine's load is taken out
    minRatio: Math.min(...mine) / Math.min(...theirs),
  };
}

// The first run measures the peak extra memory (and warms up); a path slower than SLOW_MS keeps
// that single sample.
async function time(fn: () => unknown): Promise<Timing> {
  const first = performance.now();
  const peakExtra = await peakExtraBytes(fn);
  const once = performance.now() - first;
  if (once > SLOW_MS) return { samples: 1, median: once, p25: once, p75: once, peakExtraBytes: peakExtra };
  const bench = new Bench({ time: TIME_MS, warmup: false, iterations: 3 });
  bench.add('x', fn);
  await bench.run();
  const r = bench.tasks[0].result as unknown as { latency: { p50: number; p25?: number; p75: number; min: number; samplesCount?: number; samples?: number[] } };
  const count = (bench.tasks[0].result as unknown as { latency: { samplesCount?: number } }).latency.samplesCount;
  return { samples: count ?? 0, median: r.latency.p50, p25: r.latency.p25 ?? r.latency.min, p75: r.latency.p75, peakExtraBytes: peakExtra };
}

// A path's setup that runs it a few times first (and then times it as it is).
function warmed(run: () => unknown): () => Promise<{ run: () => unknown; dispose: () => unknown }> {
  return async () => {
    for (let k = 0; k < 4; k++) await run();
    return { run, dispose: () => undefined };
  };
}

function machine() {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const flags = (/^flags\s*:\s*(.*)$/m.exec(info)?.[1] ?? '').split(' ').filter((f) => /^(avx|fma|f16c|sse4)/.test(f));
  let commit = 'unknown';
  try {
    commit = execSync('git rev-parse --short HEAD', { cwd: root }).toString().trim();
  } catch {}
  const version = (p: string) => {
    try {
      return JSON.parse(readFileSync(join(root, p, 'package.json'), 'utf8')).version as string;
    } catch {
      return 'not installed';
    }
  };
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memoryGB: Math.round(totalmem() / 2 ** 30),
    flags,
    node: process.version,
    fusedDpo: version('.'),
    backend: backendInfo(),
    peers: {
      '@tensorflow/tfjs': version('bench/node_modules/@tensorflow/tfjs'),
      '@tensorflow/tfjs-backend-wasm': version('bench/node_modules/@tensorflow/tfjs-backend-wasm'),
      'onnxruntime-node': version('bench/node_modules/onnxruntime-node'),
    },
    commit,
  };
}

async function main() {
  const m = machine();
  console.log(`fused-dpo bench · ${m.cpu} · ${m.cores} threads · ${m.backend.simd} · node ${m.node} · ${m.commit}`);

  // The ceilings, measured now on this machine.
  const big = new Float32Array(64 << 20);
  const bigOut = new Float32Array(big.length);
  const copy = await time(() => native().copy(bigOut, big, THREADS));
  const copyBytesPerMs = (2 * big.byteLength) / copy.median;
  const expCount = 2e8;
  const exps = await time(() => native().expThroughput(expCount, THREADS));
  const expsPerMs = expCount / exps.median;
  console.log(
    `ceilings: copy ${(copyBytesPerMs / 1e6).toFixed(1)} GB/s (read + write, ${THREADS} threads), exp ${(expsPerMs / 1e6).toFixed(2)} G/s`,
  );

  const rows: Row[] = [];
  const tooSlow = new Map<string, string>(); // path -> why it is skipped from here on
  const cases = TOKENS.flatMap((R) => VOCABS.map((V) => ({ R, V }))).sort((a, b) => a.R * a.V - b.R * b.V);
  for (const { R, V } of cases) {
    for (const dtype of DTYPES) {
      const c = makeCase(R, V, dtype);
      const n = R * V;
      const esize = dtype === 'float32' ? 4 : 2;
      const size = `B=${c.B} T=${c.T} V=${V}`;
      const grad = { data: dtype === 'float32' ? new Float32Array(n) : new Uint16Array(n), shape: [2 * c.B, c.T, V], dtype };
      const base = {
        logits: { data: c.logits, shape: [2 * c.B, c.T, V], dtype },
        labels: { data: c.labels, shape: [2 * c.B, c.T] },
        ref: c.ref,
        beta: LOSS_DEFAULTS.beta,
        threads: THREADS,
      };
      // Outputs are touched before timing, so first-touch page faults count only where a path
      // allocates its own memory. The in-place path works on a copy (its values drift run after
      // run, which changes nothing in the timing).
      grad.data.fill(1);
      const scratch = dtype === 'float32' ? new Float32Array(n) : new Uint16Array(n);
      scratch.set(c.logits);
      // The floor counts what a call must do: read each completion row once (prompt rows are
      // ignored: no pass reads them), write every gradient row once (ignored rows get zeros), one
      // exp per read element.
      const read = c.labels.filter((y) => y !== -100).length * V;
      const withGrad = (read + n) * esize;
      const floorMs = (bytes: number) => Math.max(bytes / copyBytesPerMs, read / expsPerMs);
      // policyLoss's inputs, as a GRPO step has them: off-policy ratios, a reference, one advantage per sequence.
      const policy = {
        logits: base.logits,
        labels: base.labels,
        advantages: Float64Array.from({ length: 2 * c.B }, (_, s) => (s % 2 === 0 ? 1 : -1) * 0.5),
        oldLogps: Float64Array.from({ length: R }, (_, r) => -2 - (r % 7) * 0.1),
        refLogps: Float64Array.from({ length: R }, (_, r) => -2 - (r % 5) * 0.1),
        beta: 0.04,
        lossType: 'dapo' as const,
        threads: THREADS,
      };

      const plain = () => dpoLoss({ ...base, grad });
      const paths: {
        name: string;
        bytes: number;
        fp32Only?: boolean;
        slow?: boolean;
        run: () => unknown;
        /** Timed alternately with this call, and the ratio of the medians noted. */
        against?: () => unknown;
        setup?: () => Promise<{ run: () => unknown; dispose: () => unknown }>;
      }[] = [
        { name: 'fused loss+grad (sync, preallocated grad)', bytes: withGrad, run: plain },
        // WPO adds one accumulator to pass A and no read of the logits: within a few % of the plain call.
        { name: 'fused loss+grad (useWeighting, WPO)', bytes: withGrad, run: () => dpoLoss({ ...base, grad, useWeighting: true }), against: plain },
        // async, so tinybench awaits each call: overlapping calls writing one grad would race (and are refused).
        { name: 'fused loss+grad (async)', bytes: withGrad, run: async () => void (await dpoLossAsync({ ...base, grad })), against: plain },
        {
          name: 'fused loss+grad (in place)',
          bytes: withGrad,
          run: () => dpoLoss({ ...base, logits: { ...base.logits, data: scratch }, grad: 'inplace' }),
        },
        // Timed once the pool is warm (its first two blocks are fresh memory, a one-off cost of
        // first-touch page faults), as a training loop runs after its first steps, and alternately
        // with the preallocated call: the ratio is the pool's cost, without the machine's drift.
        { name: 'fused loss+grad (new grad array)', bytes: withGrad, run: () => dpoLoss(base), setup: warmed(() => dpoLoss(base)), against: plain },
        // The same call in a loop that yields to the event loop between calls (as an async training
        // loop does): there the finalizers of released gradients also run (in the loop above only the
        // collection's weak references return blocks).
        {
          name: 'fused loss+grad (new grad array, event loop turns)',
          bytes: withGrad,
          run: async () => {
            dpoLoss(base);
            await new Promise((resolve) => setImmediate(resolve));
          },
          setup: warmed(async () => {
            dpoLoss(base);
            await new Promise((resolve) => setImmediate(resolve));
          }),
          against: plain,
        },
        { name: 'fused loss+grad (deferred scale)', bytes: withGrad, run: () => dpoLoss({ ...base, grad, deferScale: true }) },
        { name: 'policyLoss (sync, preallocated grad)', bytes: withGrad, run: () => policyLoss({ ...policy, grad }) },
        { name: 'policyLoss + entropy bonus (preallocated grad)', bytes: withGrad, run: () => policyLoss({ ...policy, entropyCoef: 0.01, grad }) },
        { name: 'fused forward only (sequenceLogps)', bytes: read * esize, run: () => sequenceLogps({ logits: base.logits, labels: base.labels, threads: THREADS }) },
        { name: 'unfused native (log-softmax buffer)', bytes: withGrad, slow: true, run: () => dpoLossUnfused({ ...base, grad }) },
        {
          name: 'plain TypeScript float32 loop',
          bytes: withGrad,
          fp32Only: true,
          slow: true,
          run: () => plainJsDpo({ B: c.B, T: c.T, V, logits: c.logits32, labels: c.labels, refChosen: c.ref.chosen, refRejected: c.ref.rejected, beta: LOSS_DEFAULTS.beta }, grad.data as Float32Array),
        },
        {
          name: 'float64 TypeScript reference',
          bytes: withGrad,
          fp32Only: true,
          slow: true,
          run: () =>
            referenceDpo({
              logits: Float64Array.from(c.logits32),
              rows: R,
              vocab: V,
              labels: c.labels,
              cuSeqlens: paddedCuSeqlens(2 * c.B, c.T),
              ignoreIndex: -100,
              ref: c.ref,
              ...LOSS_DEFAULTS,
              lossTypes: ['sigmoid'],
              lossWeights: [1],
              scale: 1 / c.B,
            }),
        },
        ...PEERS.filter((p) => peerFilter === null || peerFilter.includes(p.name)).map((peer) => ({
          name: peer.name,
          bytes: withGrad,
          fp32Only: true,
          slow: true,
          run: () => undefined,
          setup: async () => {
            const session = await peer.setup({ B: c.B, T: c.T, V, logits: c.logits32, labels: c.labels, refChosen: c.ref.chosen, refRejected: c.ref.rejected, beta: LOSS_DEFAULTS.beta });
            return { run: () => session.run(), dispose: () => session.dispose() };
          },
        })),
      ];

      let fusedMs = 0;
      for (const path of paths) {
        const row: Row = { size, dtype, rows: R, vocab: V, path: path.name, status: 'ok' };
        rows.push(row);
        if (path.fp32Only && dtype !== 'float32') {
          row.status = 'skipped';
          row.note = 'float32 only';
          continue;
        }
        if (tooSlow.has(path.name)) {
          row.status = 'skipped';
          row.note = tooSlow.get(path.name);
          continue;
        }
        let dispose: (() => unknown) | undefined;
        try {
          let run = path.run;
          if (path.setup) {
            const session = await path.setup();
            run = session.run;
            dispose = session.dispose;
          }
          let t: Timing;
          if (path.against) {
            const pair = await interleaved(run, path.against);
            t = pair.mine;
            row.note = `interleaved with the plain call (median ${pair.other.toFixed(2)} ms): ${(t.median / pair.other).toFixed(3)}× median, ${pair.minRatio.toFixed(3)}× fastest`;
          } else {
            t = await time(run);
          }
          row.samples = t.samples;
          row.medianMs = t.median;
          row.p25Ms = t.p25;
          row.p75Ms = t.p75;
          row.gbPerS = path.bytes / t.median / 1e6;
          row.ofFloor = floorMs(path.bytes) / t.median;
          row.peakExtraMB = t.peakExtraBytes === null ? null : t.peakExtraBytes / 2 ** 20;
          if (!fusedMs) fusedMs = t.median;
          if (path.bytes === withGrad) row.fusedSpeedup = t.median / fusedMs;
          if (path.slow && t.median > SLOW_MS) tooSlow.set(path.name, `took ${(t.median / 1000).toFixed(1)} s at ${size}; --full runs it`);
        } catch (error) {
          row.status = 'failed';
          const message = error instanceof Error ? error.message : String(error);
          row.note = /memory|alloc|OOM/i.test(message) ? `out of memory: ${message.slice(0, 120)}` : message.slice(0, 160);
        } finally {
          await dispose?.();
        }
      }
      printCase(rows.filter((r) => r.size === size && r.dtype === dtype));
    }
  }

  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const result = { date: new Date().toISOString(), machine: m, options: { full: args.full, threads: THREADS, timeMs: TIME_MS }, ceilings: { copyGBps: copyBytesPerMs / 1e6, expGps: expsPerMs / 1e6 }, rows };
  const file = join(dir, `${result.date.slice(0, 19).replace(/:/g, '-')}-${m.commit}${args.full ? '-full' : ''}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2));
  writeFileSync(join(dir, 'latest.json'), JSON.stringify(result, null, 2));
  console.log(`\nwritten ${file} and bench/results/latest.json`);
  if (!existsSync(join(root, 'bench', 'node_modules'))) console.log('peers not installed: run `npm run bench:install` once');
}

function printCase(rows: Row[]) {
  const first = rows[0];
  const ok = rows.filter((r) => r.status === 'ok' && r.fusedSpeedup !== undefined);
  const fastest = (candidates: Row[]) =>
    candidates.reduce<Row | undefined>((best, r) => (!best || r.medianMs! < best.medianMs! ? r : best), undefined);
  const winner = fastest(ok);
  const peerNames = new Set(PEERS.map((p) => p.name));
  const peer = fastest(ok.filter((r) => peerNames.has(r.path)));
  const peerNote = peer ? `; fastest peer: ${peer.path}, ${peer.fusedSpeedup!.toFixed(2)}× the fused time` : '';
  console.log(`\n${first.size} · ${first.dtype} · ${first.rows} rows × ${first.vocab}  (fastest loss+grad: ${winner?.path ?? 'none'}${peerNote})`);
  console.table(
    rows.map((r) => ({
      path: r.path,
      'median ms': r.medianMs?.toFixed(r.medianMs < 10 ? 2 : 1) ?? '',
      'p25–p75': r.p25Ms !== undefined ? `${r.p25Ms.toFixed(1)}–${r.p75Ms!.toFixed(1)}` : '',
      n: r.samples ?? '',
      'GB/s': r.gbPerS?.toFixed(1) ?? '',
      'of floor': r.ofFloor !== undefined ? `${Math.round(r.ofFloor * 100)}%` : '',
      'peak extra MB': r.peakExtraMB === undefined || r.peakExtraMB === null ? '' : r.peakExtraMB.toFixed(0),
      'vs fused': r.fusedSpeedup !== undefined ? `${r.fusedSpeedup.toFixed(r.fusedSpeedup < 10 ? 2 : 0)}×` : '',
      status: r.status === 'ok' ? (r.note ?? '') : `${r.status}: ${r.note}`,
    })),
  );
}

await main();
