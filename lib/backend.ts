import { availableParallelism } from 'node:os';

import { fusedDpoError, invalidArgument } from './errors.js';
import type { NativeCudaStatus } from './binding.js';
import { native } from './native.js';

export type BackendName = 'cpu' | 'cuda';

export interface CudaDeviceInfo {
  index: number;
  name: string;
  /** e.g. '9.0' */
  computeCapability: string;
  /** Bytes of device memory. */
  totalMemory: number;
  multiprocessors: number;
}

export interface BackendInfo {
  /** The backend computing calls on host arrays: 'cuda' when a device answers, else 'cpu'. */
  backend: BackendName;
  /**
   * The CPU kernels: 'avx512', 'avx2' (x86-64), 'neon' (aarch64) or 'baseline', which give the same bits; or
   * 'baseline-mul-add' (x86-64 CPUs without FMA), whose results may differ from theirs in the last
   * bits (see sameBitsAsOtherLevels).
   */
  simd: string;
  /** Whether this level's results are bit-identical to every other level's (false only for 'baseline-mul-add'). */
  sameBitsAsOtherLevels: boolean;
  /** Default CPU thread count (os.availableParallelism()). */
  threads: number;
  /** Version of the C ABI (csrc/core/fused_dpo.h) the addon was built with. */
  abiVersion: number;
  cuda: {
    /** Whether this binary contains the CUDA backend. */
    compiled: boolean;
    /** The CUDA runtime linked in, e.g. '13.0' (null when not compiled). */
    runtimeVersion: string | null;
    /** The newest CUDA version the installed driver supports (null without a driver). */
    driverVersion: string | null;
    devices: CudaDeviceInfo[];
    /** Why the CUDA backend is not the one in use, or null when it is. */
    reason: string | null;
  };
}

function cudaVersion(v: number): string | null {
  return v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : null;
}

interface Choice {
  backend: BackendName;
  reason: string | null;
}

let choice: Choice | undefined;
let status: NativeCudaStatus | undefined;

// Whether CUDA can run does not change while the process lives: ask the driver once.
function cudaStatus(): NativeCudaStatus {
  status ??= native().cudaStatus();
  return status;
}

/** FUSED_DPO_BACKEND=cpu|cuda, else cuda when a device answers, else cpu (quietly). */
function chooseBackend(): Choice {
  if (choice) return choice;
  const forced = process.env.FUSED_DPO_BACKEND ?? '';
  if (forced !== '' && forced !== 'cpu' && forced !== 'cuda') {
    throw invalidArgument('FUSED_DPO_BACKEND', "'cpu', 'cuda' or unset", forced);
  }
  const status = cudaStatus();
  if (forced === 'cuda' && !status.available) {
    throw fusedDpoError(`FUSED_DPO_BACKEND=cuda, but CUDA cannot be used here: ${status.reason}`, 'ERR_FDPO_CUDA_UNAVAILABLE');
  }
  if (forced === 'cpu') {
    choice = { backend: 'cpu', reason: 'FUSED_DPO_BACKEND=cpu' };
  } else {
    choice = status.available ? { backend: 'cuda', reason: null } : { backend: 'cpu', reason: status.reason };
  }
  return choice;
}

/**
 * The backend for one call: `requested` (a call's `backend` option) or the process's choice;
 * device inputs need CUDA. Throws ERR_FDPO_CUDA_UNAVAILABLE when CUDA is needed but cannot run.
 */
export function backendFor(requested: BackendName | undefined, deviceInputs: boolean): BackendName {
  if (requested === 'cpu') {
    if (deviceInputs) throw fusedDpoError("backend 'cpu' cannot read DeviceTensor inputs", 'ERR_FDPO_INVALID_ARGUMENT');
    return 'cpu';
  }
  if (requested === 'cuda' || deviceInputs) {
    const status = cudaStatus();
    if (!status.available) {
      const why = deviceInputs ? 'DeviceTensor inputs need the CUDA backend' : "backend 'cuda' was asked for";
      throw fusedDpoError(`${why}, but CUDA cannot be used here: ${status.reason}`, 'ERR_FDPO_CUDA_UNAVAILABLE');
    }
    return 'cuda';
  }
  return chooseBackend().backend;
}

export function backendInfo(): BackendInfo {
  const info = native().info();
  const status = cudaStatus();
  const chosen = chooseBackend();
  const devices: CudaDeviceInfo[] = [];
  for (let index = 0; status.available && index < status.deviceCount; index++) {
    devices.push({ index, ...native().cudaDevice(index) });
  }
  return {
    backend: chosen.backend,
    simd: info.simd,
    sameBitsAsOtherLevels: info.simd !== 'baseline-mul-add',
    threads: availableParallelism(),
    abiVersion: info.abiVersion,
    cuda: {
      compiled: status.compiled,
      runtimeVersion: cudaVersion(status.runtimeVersion),
      driverVersion: cudaVersion(status.driverVersion),
      devices,
      reason: chosen.reason,
    },
  };
}

const SIMD_LEVELS = ['avx512', 'avx2', 'neon', 'baseline', 'baseline-mul-add'] as const;

/**
 * Force the CPU kernels to a SIMD level this CPU supports (diagnostics and tests; FDPO_SIMD in the
 * environment does the same at load). Throws when the CPU cannot run it.
 */
export function setSimdLevel(level: (typeof SIMD_LEVELS)[number]): void {
  if (!(SIMD_LEVELS as readonly unknown[]).includes(level)) throw invalidArgument('level', `one of ${SIMD_LEVELS.join(', ')}`, level);
  native().setSimdLevel(level);
}
