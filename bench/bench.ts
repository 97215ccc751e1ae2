// `npm run bench`: fused-dpo's CPU path on the sizes users train at, with the machine's own
// memory-copy bandwidth as the ceiling. Effective GB/s counts the bytes a call must move at
// least: the logits read once, plus the gradient written once when there is one.
import { execSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';
import { cpus, availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';

import { backendInfo, dpoLoss, sequenceLogps } from '../lib/index.js';

interface Size {
  B: number;
  T: number;
  V: number;
}

const SIZES: Size[] = [
  { B: 4, T: 256, V: 32000 },
  { B: 2, T: 256, V: 128256 },
];

function makeInputs({ B, T, V }: Size) {
  const n = 2 * B * T * V;
  const logits = new Float32Array(n);
  for (let i = 0; i < n; i++) logits[i] = Math.sin(i * 0.7) * 4;
  const labels = new Int32Array(2 * B * T).map((_, i) => (i % T < 16 ? -100 : (i * 7919) % V));
  const ref = { chosen: new Float64Array(B).fill(-300), rejected: new Float64Array(B).fill(-310) };
  return {
    logits: { data: logits, shape: [2 * B, T, V] },
    labels: { data: labels, shape: [2 * B, T] },
    ref,
    grad: { data: new Float32Array(n), shape: [2 * B, T, V] },
  };
}

interface Row {
  size: string;
  task: string;
  threads: number;
  medianMs: number;
  p75Ms: number;
  p25Ms: number;
  bytes: number;
  gbPerS: number;
  ofCeiling: number;
}

async function main() {
  const rows: Row[] = [];
  const threadCounts = [...new Set([1, availableParallelism()])];
  let ceiling = 0;
  for (const size of SIZES) {
    const inputs = makeInputs(size);
    const n = inputs.logits.data.length;
    const copyTarget = new Float32Array(n);
    const bench = new Bench({ time: 1500, warmupTime: 300 });
    const bytes: Record<string, number> = {};
    bench.add('memory copy (ceiling)', () => copyTarget.set(inputs.logits.data));
    bytes['memory copy (ceiling)'] = 2 * 4 * n;
    for (const threads of threadCounts) {
      const loss = `loss+grad fp32, ${threads} thread${threads > 1 ? 's' : ''}`;
      bench.add(loss, () => void dpoLoss({ ...inputs, threads }));
      bytes[loss] = 2 * 4 * n;
      const fwd = `sequenceLogps fp32, ${threads} thread${threads > 1 ? 's' : ''}`;
      bench.add(fwd, () => void sequenceLogps({ ...inputs, threads }));
      bytes[fwd] = 4 * n;
    }
    await bench.run();
    for (const task of bench.tasks) {
      const r = task.result as unknown as { latency: { p50: number; p75: number; p25?: number; min: number } };
      const medianMs = r.latency.p50;
      const gb = bytes[task.name] / medianMs / 1e6;
      if (task.name.startsWith('memory copy')) ceiling = Math.max(ceiling, gb);
      rows.push({
        size: `B=${size.B} T=${size.T} V=${size.V}`,
        task: task.name,
        threads: Number(/(\d+) thread/.exec(task.name)?.[1] ?? 1),
        medianMs,
        p25Ms: r.latency.p25 ?? r.latency.min,
        p75Ms: r.latency.p75,
        bytes: bytes[task.name],
        gbPerS: gb,
        ofCeiling: 0,
      });
    }
  }
  for (const row of rows) row.ofCeiling = row.gbPerS / ceiling;

  console.log(`fused-dpo bench · ${cpus()[0]?.model ?? 'cpu'} · ${availableParallelism()} threads · ${backendInfo().simd}`);
  console.table(
    rows.map((r) => ({
      size: r.size,
      task: r.task,
      'median ms': r.medianMs.toFixed(1),
      'p25–p75 ms': `${r.p25Ms.toFixed(1)}–${r.p75Ms.toFixed(1)}`,
      'GB/s': r.gbPerS.toFixed(1),
      'of copy bw': `${Math.round(r.ofCeiling * 100)}%`,
    })),
  );
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  let commit = 'unknown';
  try {
    commit = execSync('git rev-parse --short HEAD', { cwd: root }).toString().trim();
  } catch {}
  const out = join(root, 'bench', 'results', 'latest.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify({ date: new Date().toISOString(), commit, cpu: cpus()[0]?.model, threads: availableParallelism(), backend: backendInfo(), node: process.version, rows }, null, 2),
  );
  console.log(`written ${out}`);
}

await main();
