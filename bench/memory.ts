// Peak extra memory of one call: Linux's peak-RSS counter (VmHWM), reset before the call through
// /proc/self/clear_refs. Covers native, V8 and wasm allocations alike. null where unsupported.
import { readFileSync, writeFileSync } from 'node:fs';

function readKb(field: string): number | null {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Runs fn once and returns the bytes by which the peak RSS rose above the RSS before it. */
export async function peakExtraBytes(fn: () => unknown): Promise<number | null> {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    await fn();
    return null;
  }
  const before = readKb('VmRSS');
  await fn();
  const peak = readKb('VmHWM');
  return before === null || peak === null ? null : Math.max(0, peak - before);
}
