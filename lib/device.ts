// GPU memory for the CUDA backend: a DeviceTensor is a shape, a dtype and a device pointer,
// either allocated here (and freed by free() or, failing that, when it is garbage-collected) or
// wrapped from other CUDA code (never freed here).
import { markAsUntransferable } from 'node:worker_threads';

import { fusedDpoError, invalidArgument, type FusedDpoError } from './errors.js';
import { typedArrayFacts } from './intrinsics.js';
import { native } from './native.js';
import { snapshotOptions } from './options.js';
import type { DType, LabelTensor, Tensor } from './types.js';

/** Element types a DeviceTensor holds: the logits dtypes, and int32 for labels. */
export type DeviceDType = DType | 'int32';

type HostArray = Float32Array | Uint16Array | Int32Array;

/** Bytes per element of each dtype a tensor can hold. */
export const ELEMENT_BYTES: Record<DeviceDType, number> = { float32: 4, bfloat16: 2, float16: 2, int32: 4 };

export interface DeviceOptions {
  /** CUDA device index (default 0). */
  device?: number;
}

function checkDevice(options: DeviceOptions | undefined): number {
  const device = options === undefined ? 0 : (snapshotOptions('DeviceTensor', options, ['device']).device ?? 0);
  if (typeof device !== 'number' || !Number.isInteger(device) || device < 0 || device > 1023) {
    throw invalidArgument('device', 'a device index in [0, 1023]', device);
  }
  return device;
}

function checkDeviceShape(shape: unknown): number[] {
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isInteger(d) || d < 0)) {
    throw invalidArgument('shape', 'an array of non-negative integers', shape, TypeError);
  }
  return [...(shape as number[])];
}

function checkDeviceDType(dtype: unknown): DeviceDType {
  if (typeof dtype !== 'string' || !(dtype in ELEMENT_BYTES)) {
    throw invalidArgument('dtype', "'float32', 'bfloat16', 'float16' or 'int32'", dtype);
  }
  return dtype as DeviceDType;
}

function hostArrayFor(dtype: DeviceDType, length: number): HostArray {
  if (dtype === 'float32') return new Float32Array(length);
  if (dtype === 'int32') return new Int32Array(length);
  return new Uint16Array(length);
}

function hostDType(data: unknown, dtype: unknown): DeviceDType {
  if (data instanceof Float32Array) return dtype === undefined ? 'float32' : checkDeviceDType(dtype);
  if (data instanceof Int32Array) return dtype === undefined ? 'int32' : checkDeviceDType(dtype);
  if (data instanceof Uint16Array) {
    if (dtype !== 'bfloat16' && dtype !== 'float16') throw invalidArgument('dtype', "'bfloat16' or 'float16' for Uint16Array data", dtype);
    return dtype;
  }
  throw invalidArgument('data', 'a Float32Array, Int32Array, or Uint16Array of bfloat16/float16 bits', data, TypeError);
}

function matches(dtype: DeviceDType, data: HostArray): boolean {
  return dtype === 'float32' ? data instanceof Float32Array : dtype === 'int32' ? data instanceof Int32Array : data instanceof Uint16Array;
}

// Owned allocations the program dropped without free(): released when collected.
const leaked = new FinalizationRegistry<{ device: number; pointer: bigint }>(({ device, pointer }) => {
  try {
    native().cudaFree(device, pointer);
  } catch {
    // The process may be tearing the context down; nothing useful to report from a finalizer.
  }
});

/** A dense row-major tensor in GPU memory. */
export class DeviceTensor {
  readonly shape: readonly number[];
  readonly dtype: DeviceDType;
  readonly device: number;
  readonly byteLength: number;
  /** Whether free() releases the memory (allocated here) or only forgets it (wrapped). */
  readonly owned: boolean;
  #pointer: bigint | null;

  private constructor(pointer: bigint, shape: number[], dtype: DeviceDType, device: number, owned: boolean) {
    this.#pointer = pointer;
    this.shape = Object.freeze(shape);
    this.dtype = dtype;
    this.device = device;
    this.byteLength = shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[dtype];
    this.owned = owned;
    if (owned) leaked.register(this, { device, pointer }, this);
  }

  /** Uninitialised device memory for shape and dtype. */
  static alloc(shape: readonly number[], dtype: DeviceDType, options?: DeviceOptions): DeviceTensor {
    const dims = checkDeviceShape(shape);
    const kind = checkDeviceDType(dtype);
    const device = checkDevice(options);
    const bytes = dims.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[kind];
    return new DeviceTensor(native().cudaAlloc(device, bytes), dims, kind, device, true);
  }

  /** A device copy of a host tensor (logits as Float32Array or Uint16Array bits, labels as Int32Array). */
  static from(tensor: Tensor | LabelTensor, options?: DeviceOptions): DeviceTensor {
    if (typeof tensor !== 'object' || tensor === null) throw invalidArgument('tensor', 'a tensor { data, shape, dtype? }', tensor, TypeError);
    const dtype = hostDType(tensor.data, (tensor as Tensor).dtype);
    const out = DeviceTensor.alloc(tensor.shape, dtype, options);
    try {
      out.upload(tensor.data);
    } catch (error) {
      out.free();
      throw error;
    }
    return out;
  }

  /**
   * Wraps memory other CUDA code owns (a pointer as a bigint, e.g. from a framework's tensor). It
   * must hold the shape's elements on `device`; fused-dpo never frees it.
   */
  static wrap(pointer: bigint, shape: readonly number[], dtype: DeviceDType, options?: DeviceOptions): DeviceTensor {
    if (typeof pointer !== 'bigint' || pointer <= 0n || pointer >= 1n << 64n) {
      throw invalidArgument('pointer', 'a non-null device address as a bigint', pointer, TypeError);
    }
    const kind = checkDeviceDType(dtype);
    if (pointer % BigInt(ELEMENT_BYTES[kind]) !== 0n) {
      throw invalidArgument('pointer', `an address aligned to ${ELEMENT_BYTES[kind]} bytes for ${kind}`, pointer);
    }
    return new DeviceTensor(pointer, checkDeviceShape(shape), kind, checkDevice(options), false);
  }

  /** The device address (throws once freed). */
  get pointer(): bigint {
    if (this.#pointer === null) throw freedError();
    return this.#pointer;
  }

  get freed(): boolean {
    return this.#pointer === null;
  }

  /** Copies host data of this tensor's dtype and size into it. */
  upload(data: HostArray): void {
    if (!ArrayBuffer.isView(data) || !matches(this.dtype, data)) {
      throw invalidArgument('data', `a typed array of ${this.dtype} values`, data, TypeError);
    }
    if (data.byteLength !== this.byteLength) throw invalidArgument('data', `${this.byteLength} bytes (the tensor's size)`, data);
    native().cudaCopy(this.device, this.pointer, data, this.byteLength);
  }

  /** Copies the tensor to the host: into `into` when given, else a new typed array. */
  download(into?: HostArray): HostArray {
    const out = into ?? hostArrayFor(this.dtype, this.byteLength / ELEMENT_BYTES[this.dtype]);
    if (!ArrayBuffer.isView(out) || !matches(this.dtype, out) || out.byteLength !== this.byteLength) {
      throw invalidArgument('into', `a typed array of ${this.byteLength} bytes of ${this.dtype}`, into, TypeError);
    }
    native().cudaCopy(this.device, out, this.pointer, this.byteLength);
    return out;
  }

  /**
   * Releases owned memory (a wrapped tensor is only forgotten). Safe to call twice; refused while
   * a dpoLossAsync, sequenceLogpsAsync or policyLossAsync call is using the tensor.
   */
  free(): void {
    if (this.#pointer === null) return;
    if ((inUse.get(this) ?? 0) > 0) {
      throw fusedDpoError('this DeviceTensor is in use by a running async call: await it before free()', 'ERR_FDPO_INVALID_ARGUMENT');
    }
    const pointer = this.#pointer;
    this.#pointer = null;
    if (this.owned) {
      leaked.unregister(this);
      native().cudaFree(this.device, pointer);
    }
  }

  /** What the binding reads: the address and how many bytes it may touch. */
  nativeBuffer(): { pointer: bigint; byteLength: number } {
    return { pointer: this.pointer, byteLength: this.byteLength };
  }

  toString(): string {
    return `DeviceTensor(${this.dtype} [${this.shape.join(', ')}] on cuda:${this.device}${this.freed ? ', freed' : ''})`;
  }
}

// Async calls running on a tensor: free() refuses while there are any.
const inUse = new WeakMap<DeviceTensor, number>();


/**
 * Runs an async call that reads or writes `tensors`: DeviceTensors are kept from free(), and the
 * ArrayBuffer behind each host typed array is marked untransferable (postMessage, structuredClone
 * and, where Node's mark covers it, ArrayBuffer.prototype.transfer then cannot detach it under the
 * native code). Node has no way to undo the mark, so it stays after the call. SharedArrayBuffers
 * are left alone: they cannot be detached, and growing one does not move its memory.
 */
export async function holdingTensors<T>(tensors: readonly unknown[], run: () => Promise<T>): Promise<T> {
  for (const t of tensors) {
    // The real backing buffer (intrinsic getters), whatever a subclass's getter says.
    const facts = typedArrayFacts(t);
    if (facts && !facts.shared) markAsUntransferable(facts.buffer);
  }
  const held = tensors.filter((t): t is DeviceTensor => t instanceof DeviceTensor);
  for (const t of held) inUse.set(t, (inUse.get(t) ?? 0) + 1);
  try {
    return await run();
  } finally {
    for (const t of held) inUse.set(t, inUse.get(t)! - 1);
  }
}

function freedError(): FusedDpoError {
  return fusedDpoError('this DeviceTensor was freed: allocate, upload or wrap a new one', 'ERR_FDPO_INVALID_ARGUMENT');
}
