import { availableParallelism } from 'node:os';

import { invalidArgument } from './errors.js';
import { native } from './native.js';

export interface BackendInfo {
  /** The backend computing the calls: 'cpu' (the CUDA backend is not built yet). */
  backend: 'cpu';
  /** The CPU kernels in use: 'avx512', 'avx2' or 'baseline'. */
  simd: string;
  /** Default thread count (os.availableParallelism()). */
  threads: number;
  /** Version of the C ABI (csrc/core/fused_dpo.h) the addon was built with. */
  abiVersion: number;
}

export function backendInfo(): BackendInfo {
  const info = native().info();
  return { backend: 'cpu', simd: info.simd, threads: availableParallelism(), abiVersion: info.abiVersion };
}

const SIMD_LEVELS = ['avx512', 'avx2', 'baseline'] as const;

/**
 * Force the CPU kernels to a SIMD level this CPU supports (diagnostics and tests; FDPO_SIMD in the
 * environment does the same at load). Throws when the CPU cannot run it.
 */
export function setSimdLevel(level: (typeof SIMD_LEVELS)[number]): void {
  if (!(SIMD_LEVELS as readonly unknown[]).includes(level)) throw invalidArgument('level', `one of ${SIMD_LEVELS.join(', ')}`, level);
  native().setSimdLevel(level);
}
