// Where a NaN loss came from: the first scored row with an inf or NaN logit. Found only when a
// sequence's log-prob is NaN, by reading that sequence's rows again, so the common call pays nothing.
import { DeviceTensor } from './device.js';
import type { CheckedTokens } from './validate.js';

/** A row whose logits hold an inf or NaN: its sequence, and the row (null when not read back from a device). */
export interface NonFiniteRow {
  sequence: number;
  row: number | null;
}

// Whether element i of a row is inf or NaN, from its bits for bf16 and fp16 (all exponent bits set).
function rowIsFinite(tokens: CheckedTokens, row: number): boolean {
  const start = row * tokens.vocab;
  const data = tokens.data as Float32Array | Uint16Array;
  const exponent = tokens.dtype === 'bfloat16' ? 0x7f80 : 0x7c00;
  for (let v = start; v < start + tokens.vocab; v++) {
    if (tokens.dtype === 'float32' ? !Number.isFinite(data[v]!) : (data[v]! & exponent) === exponent) return false;
  }
  return true;
}

export function firstNonFinite(tokens: CheckedTokens, seqLogps: Float64Array): NonFiniteRow | null {
  const sequence = seqLogps.findIndex((x) => Number.isNaN(x));
  if (sequence < 0) return null;
  if (tokens.data instanceof DeviceTensor || tokens.labels instanceof DeviceTensor) return { sequence, row: null };
  const labels = tokens.labels;
  for (let r = tokens.cuSeqlens[sequence]!; r < tokens.cuSeqlens[sequence + 1]!; r++) {
    if (labels[r] !== tokens.ignoreIndex && !rowIsFinite(tokens, r)) return { sequence, row: r };
  }
  return { sequence, row: null };
}
