// `fused-dpo doctor`: what is installed and whether it computes the right numbers here; when no
// binary loads, every place the loader tried and why each failed.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';

import { backendInfo, type BackendInfo, type BackendName } from './backend.js';
import { decodeToFloat64, toBfloat16 } from './dtype.js';
import { dpoLoss } from './loss.js';
import {
  nativeLoadAttempts,
  nativeLoadOrder,
  nativePath,
  nativeSource,
  packageRoot,
  type NativeLoadAttempt,
  type NativeLoadError,
  type NativeSource,
} from './native.js';
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
  /** Why the loader tried the places in that order (which binary wins, and why). */
  loadOrder: string;
  /** Every place the loader tried, up to the one that loaded (error null). */
  attempts: readonly NativeLoadAttempt[];
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

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/** The report; throws the loader's NativeLoadError when no binary loads (`runDoctor` reports that instead). */
export function doctor(): DoctorReport {
  const backend = backendInfo();
  // The CPU always; CUDA too when it is the backend in use, so both are checked against the reference.
  const backends: BackendName[] = backend.backend === 'cuda' ? ['cuda', 'cpu'] : ['cpu'];
  const checks = backends.flatMap((b) =>
    (['sigmoid', 'ipo', 'orpo'] as const).flatMap((t) => (['float32', 'bfloat16'] as const).map((d) => selfCheck(b, t, d))),
  );
  return {
    version: packageVersion(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpus()[0]?.model ?? 'unknown',
    binary: nativePath(),
    binarySource: nativeSource(),
    loadOrder: nativeLoadOrder(),
    attempts: nativeLoadAttempts(),
    backend,
    cuda: describeCuda(backend),
    checks,
    ok: checks.every((c) => c.ok),
  };
}

function formatAttempts(attempts: readonly NativeLoadAttempt[]): string[] {
  return attempts.map((a) => `  ${a.error === null ? 'loaded' : 'no    '} ${a.source}: ${a.path}${a.error === null ? '' : `: ${a.error}`}`);
}

export function formatDoctor(r: DoctorReport): string {
  const lines = [
    `fused-dpo ${r.version} · node ${r.node} · ${r.platform}`,
    `binary:   ${r.binary} (${r.binarySource})`,
    `order:    ${r.loadOrder}`,
    ...(r.attempts.length > 1 ? ['tried:', ...formatAttempts(r.attempts)] : []),
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

/** What `fused-dpo doctor` prints, and whether all is well; works when no binary loads. */
export function runDoctor(): { text: string; ok: boolean } {
  try {
    const report = doctor();
    return { text: formatDoctor(report), ok: report.ok };
  } catch (error) {
    const e = error as NativeLoadError;
    if (e.code !== 'ERR_FDPO_NATIVE_NOT_FOUND' && e.code !== 'ERR_FDPO_NATIVE_ABI_MISMATCH') throw error;
    const lines = [
      `fused-dpo ${packageVersion()} · node ${process.version} · ${process.platform}-${process.arch} · cpu ${cpus()[0]?.model ?? 'unknown'}`,
      `binary:   none loads (${e.code})`,
      `order:    ${nativeLoadOrder()}`,
      'tried:',
      ...formatAttempts(e.attempts),
      e.attempts[0]?.source === 'FUSED_DPO_NATIVE'
        ? 'fix:      FUSED_DPO_NATIVE is set, so nothing else was tried: point it at a fused-dpo .node file, or unset it'
        : e.code === 'ERR_FDPO_NATIVE_ABI_MISMATCH'
          ? 'fix:      rebuild: `npm run build` in a checkout, `npm rebuild fused-dpo` in a project that installed it'
          : 'fix:      `npm rebuild fused-dpo` (in a checkout: `npm run build`), or set FUSED_DPO_NATIVE to a fused-dpo .node file',
      'NO BINARY LOADS: nothing was checked',
    ];
    return { text: lines.join('\n'), ok: false };
  }
}
