/**
 * float32 <-> bfloat16 / float16 conversions. The 16-bit formats travel as raw bits in a
 * Uint16Array. Inputs that are not a Float32Array are first rounded to float32 (as
 * `new Float32Array(src)` would), then to 16 bits.
 */
import type { DType } from './types.js';

// Shared scratch for bit casts: F32[0] and U32[0] alias the same four bytes.
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

function f32Bits(x: number): number {
  F32[0] = x;
  return U32[0]!;
}

function bitsF32(u: number): number {
  U32[0] = u;
  return F32[0]!;
}

/** float32 -> bfloat16 bits, round to nearest even; NaN becomes a quiet NaN, ±inf stays ±inf. */
export function toBfloat16(src: Float32Array | ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const u = f32Bits(src[i]!);
    if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) {
      out[i] = (u >>> 16) | 0x0040; // NaN: keep sign and top payload bits, set the quiet bit
    } else {
      // Add 0x7fff plus the lowest kept bit: carries exactly when the dropped half is > 1/2 ulp,
      // or == 1/2 ulp and the kept part is odd. A carry out of the mantissa bumps the exponent
      // (the largest finite values round to inf, as they should). Stays below 2^32.
      out[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/** bfloat16 bits -> float32 (exact). */
export function fromBfloat16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bitsF32(bits[i]! << 16);
  return out;
}

/** float32 -> IEEE binary16 bits, round to nearest even, overflow to inf, subnormals and NaN kept. */
export function toFloat16(src: Float32Array | ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const u = f32Bits(src[i]!);
    const sign = (u >>> 16) & 0x8000;
    const exp = (u >>> 23) & 0xff;
    const mant = u & 0x007fffff;
    if (exp === 0xff) {
      // inf, or NaN (top payload bits kept, quiet bit set)
      out[i] = mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
      continue;
    }
    const e = exp - 127 + 15; // binary16 biased exponent
    if (e >= 31) {
      out[i] = sign | 0x7c00; // |x| >= 2^16: overflow
    } else if (e >= 1) {
      // normal: keep 10 mantissa bits, round on the 13 dropped ones
      let h = (e << 10) | (mant >>> 13);
      const rest = mant & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1; // may carry into inf
      out[i] = sign | h;
    } else if (e >= -10) {
      // subnormal result: |x| = m * 2^(e-38) with the implicit bit, in units of 2^-24 that is
      // m * 2^(e-14); shift right by 14-e (14..24) and round to nearest even.
      const m = mant | 0x00800000;
      const shift = 14 - e;
      let h = m >>> shift;
      const rest = m & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rest > half || (rest === half && (h & 1) === 1)) h += 1; // may become the smallest normal
      out[i] = sign | h;
    } else {
      out[i] = sign; // |x| < 2^-25 (float32 subnormals included): rounds to ±0
    }
  }
  return out;
}

/** IEEE binary16 bits -> float32 (exact). */
export function fromFloat16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x03ff;
    if (exp === 0) {
      out[i] = (sign ? -1 : 1) * mant * 2 ** -24; // zero or subnormal, exact
    } else if (exp === 31) {
      out[i] = bitsF32(sign | 0x7f800000 | (mant << 13)); // inf or NaN (payload kept)
    } else {
      out[i] = bitsF32(sign | ((exp + 112) << 23) | (mant << 13));
    }
  }
  return out;
}

/** Widen float32 / bfloat16 / float16 data to float64, exactly. */
export function decodeToFloat64(data: Float32Array | Uint16Array, dtype: DType): Float64Array {
  if (dtype === 'float32') {
    if (!(data instanceof Float32Array)) throw new TypeError("dtype 'float32' needs a Float32Array");
    return Float64Array.from(data);
  }
  if (!(data instanceof Uint16Array)) throw new TypeError(`dtype '${dtype}' needs a Uint16Array of raw bits`);
  if (dtype === 'bfloat16') return Float64Array.from(fromBfloat16(data));
  if (dtype === 'float16') return Float64Array.from(fromFloat16(data));
  throw new TypeError(`unknown dtype '${String(dtype)}'`);
}
