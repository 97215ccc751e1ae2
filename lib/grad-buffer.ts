// New gradient arrays (grad: true), for every entry point that allocates one. Large ones come from
// the addon's pool of warm memory (csrc/binding/gradient_buffer.cpp: a block is lent again only
// after V8 has collected the array that held it, also in a loop that never yields, so nothing the
// caller can reach is ever reused); otherwise a plain array. A fresh multi-hundred-MB array pays a
// page fault per 4 KB on first write, more than the loss call itself.
import { getHeapStatistics } from 'node:v8';

import { fusedDpoError } from './errors.js';
import { native } from './native.js';
import type { DType } from './types.js';

/** A zero-length-safe new array of `length` elements in the storage of `dtype`; ERR_FDPO_OUT_OF_MEMORY when none can be had. */
export function newGradient(dtype: DType, length: number): Float32Array | Uint16Array {
  const Kind = dtype === 'float32' ? Float32Array : Uint16Array;
  const bytes = length * Kind.BYTES_PER_ELEMENT;
  // (The heap's limit lets the pool ask for a collection when every block is out: gradient_buffer.cpp.)
  const pooled = native().gradientBuffer(bytes, heapLimit());
  // (Its contents are a previous gradient's: the call overwrites every element.)
  if (pooled !== null) return new Kind(pooled, 0, length);
  try {
    return new Kind(length);
  } catch (error) {
    throw fusedDpoError(`cannot allocate the ${bytes}-byte gradient (${(error as Error).message}): pass grad: 'inplace', false or a tensor to fill`, 'ERR_FDPO_OUT_OF_MEMORY', RangeError);
  }
}

let limit: number | undefined;
function heapLimit(): number {
  limit ??= getHeapStatistics().heap_size_limit;
  return limit;
}
