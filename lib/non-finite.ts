// Where a NaN (or infinite) loss came from: the first scored row with a logit that is inf, NaN or
// beyond ±MAX_LOGIT (where z − max overflows fp32: SPEC.md, "Numeric edges"). Found only when a
// sequence's log-prob is not finite, by reading that sequence's rows again, so the common call
// pays nothing.
import { DeviceTensor } from './device.js';
import type { CheckedTokens } from './validate.js';

/** The largest logit magnitude for which z − max stays finite in fp32. */
export const MAX_LOGIT = 1.7e38;

/** A row whose logits hold an inf, a NaN or one beyond ±MAX_LOGIT: its sequence, and the row (null when not read back from a device). */
export interface NonFiniteRow {
  sequence: number;
  row: number | null;
}

const bf16 = new Float32Array(1);
const bf16Bits = new Uint32Array(bf16.buffer);

// Whether every logit of a row is within ±MAX_LOGIT (NaN is not): fp16 always is unless inf or
// NaN (all exponent bits set); bf16 is compared by value, its bits being fp32's upper half.
function rowIsUsable(tokens: CheckedTokens, row: number): boolean {
  const start = row * tokens.vocab;
  const data = tokens.data as Float32Array | Uint16Array;
  for (let v = start; v < start + tokens.vocab; v++) {
    let z: number;
    if (tokens.dtype === 'float32') {
      z = data[v]!;
    } else if (tokens.dtype === 'bfloat16') {
      bf16Bits[0] = data[v]! << 16;
      z = bf16[0]!;
    } else {
      if ((data[v]! & 0x7c00) === 0x7c00) return false;
      continue;
    }
    if (!(Math.abs(z) <= MAX_LOGIT)) return false;
  }
  return true;
}

export function firstNonFinite(tokens: CheckedTokens, seqLogps: Float64Array): NonFiniteRow | null {
  const sequence = seqLogps.findIndex((x) => !Number.isFinite(x));
  if (sequence < 0) return null;
  if (tokens.data instanceof DeviceTensor || tokens.labels instanceof DeviceTensor) return { sequence, row: null };
  const labels = tokens.labels;
  for (let r = tokens.cuSeqlens[sequence]!; r < tokens.cuSeqlens[sequence + 1]!; r++) {
    if (labels[r] !== tokens.ignoreIndex && !rowIsUsable(tokens, r)) return { sequence, row: r };
  }
  return { sequence, row: null };
}
