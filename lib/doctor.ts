// `fused-dpo doctor`: what is installed and whether it computes the right numbers here.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

import { backendInfo, type BackendInfo, type BackendName } from './backend.js';
import { decodeToFloat64, toBfloat16 } from './dtype.js';
import { dpoLoss } from './loss.js';
import { nativePath, nativeSource, packageRoot, type NativeSource } from './native.js';
import { referenceDpo } from './reference.js';
import { LOSS_DEFAULTS, type LossType } from './loss-kinds.js';
import type { DType } from './types.js';
import { paddedCuSeqlens } from './validate.js';

export interface SelfCheck {
  backend: BackendName;
  case: string;
  lossRelError: number;
  gradRelError: number;
  ok: boolean;
}

export interface DoctorReport {
  version: string;
  node: string;
  platform: string;
  cpu: string;
  binary: string;
  binarySource: NativeSource;
  backend: BackendInfo;
  /** One line on CUDA: the runtime, driver and devices in use, or why CUDA is not used. */
  cuda: string;
  checks: SelfCheck[];
  ok: boolean;
}

// A fixed small case: B=2, T=4, V=67 (not a multiple of any vector width), prompt rows ignored.
function selfCheck(backend: BackendName, lossType: LossType, dtype: DType): SelfCheck {
  const B = 2, T = 4, V = 67, rows = 2 * B * T;
  const values = Float32Array.from({ length: rows * V }, (_, i) => 4 * Math.sin(i * 0.37) + Math.cos(i * 1.3));
  const data = dtype === 'float32' ? values : toBfloat16(values);
  const labels = Int32Array.from({ length: rows }, (_, r) => (r % T === 0 ? -100 : (r * 13) % V));
  const ref = { chosen: Float64Array.of(-9, -11), rejected: Float64Array.of(-10, -8) };
  const got = dpoLoss({
    logits: { data, shape: [2 * B, T, V], dtype },
    labels: { data: labels, shape: [2 * B, T] },
    ref,
    lossType,
    beta: 0.5,
    backend,
  });
  const want = referenceDpo({
    logits: decodeToFloat64(data, dtype),
    rows,
    vocab: V,
    labels,
    cuSeqlens: paddedCuSeqlens(2 * B, T),
    ignoreIndex: -100,
    ref,
    ...LOSS_DEFAULTS,
    beta: 0.5,
    lossTypes: [lossType],
    lossWeights: [1],
    scale: 1 / B,
  });
  const grad = decodeToFloat64(got.grad!.data, dtype);
  let num = 0, den = 0;
  for (let i = 0; i < grad.length; i++) {
    num += (grad[i]! - want.grad[i]!) ** 2;
    den += want.grad[i]! ** 2;
  }
  const lossRelError = Math.abs(got.loss - want.loss) / Math.max(Math.abs(want.loss), 1e-12);
  const gradRelError = Math.sqrt(num / den);
  const gradTolerance = dtype === 'float32' ? 1e-5 : 1e-2; // bf16 output rounding
  return { backend, case: `${lossType} ${dtype}`, lossRelError, gradRelError, ok: lossRelError <= 1e-5 && gradRelError <= gradTolerance };
}

function describeCuda(info: BackendInfo): string {
  const c = info.cuda;
  if (!c.compiled) return `not in this binary: ${c.reason}`;
  const versions = `runtime ${c.runtimeVersion}, driver ${c.driverVersion ?? 'none'}`;
  const devices = c.devices.map(
    (d) => `device ${d.index}: ${d.name} (compute ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(0)} GiB)`,
  );
  if (info.backend === 'cuda') return [versions, ...devices].join(' · ');
  return `not used (${c.reason}) · ${versions}${devices.length ? ` · ${devices.join(' · ')}` : ''}`;
}

export function doctor(): DoctorReport {
  const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  const backend = backendInfo();
  // The CPU always; CUDA too when it is the backend in use, so both are checked against the reference.
  const backends: BackendName[] = backend.backend === 'cuda' ? ['cuda', 'cpu'] : ['cpu'];
  const checks = backends.flatMap((b) =>
    (['sigmoid', 'ipo', 'orpo'] as const).flatMap((t) => (['float32', 'bfloat16'] as const).map((d) => selfCheck(b, t, d))),
  );
  return {
    version: pkg.version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpus()[0]?.model ?? 'unknown',
    binary: nativePath(),
    binarySource: nativeSource(),
    backend,
    cuda: describeCuda(backend),
    checks,
    ok: checks.every((c) => c.ok),
  };
}

export function formatDoctor(r: DoctorReport): string {
  const lines = [
    `fused-dpo ${r.version} · node ${r.node} · ${r.platform}`,
    `binary:   ${r.binary} (${r.binarySource})`,
    `backend:  ${r.backend.backend} · SIMD ${r.backend.simd} · ${r.backend.threads} threads · C ABI ${r.backend.abiVersion}`,
    `cpu:      ${r.cpu}`,
    `cuda:     ${r.cuda}`,
    'self-check against the float64 reference:',
    ...r.checks.map(
      (c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.backend.padEnd(4)} ${c.case.padEnd(18)} loss rel. error ${c.lossRelError.toExponential(1)}, gradient ${c.gradRelError.toExponential(1)}`,
    ),
    r.ok ? 'all good' : 'SELF-CHECK FAILED: please report this output',
  ];
  return lines.join('\n');
}
