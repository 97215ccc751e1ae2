/** Every error fused-dpo throws carries one of these codes (the README's Errors table explains each). */
export const ERROR_CODES = [
  'ERR_FDPO_INVALID_ARGUMENT',
  /** An options object has a key the call does not know (the message suggests the one it resembles). */
  'ERR_FDPO_UNKNOWN_OPTION',
  /** An option TRL has and fused-dpo does not (the message says what to do instead). */
  'ERR_FDPO_UNSUPPORTED_OPTION',
  /** A buffer of the call is being written (or read, for an output) by an async call that has not settled. */
  'ERR_FDPO_BUFFER_IN_USE',
  'ERR_FDPO_OUT_OF_MEMORY',
  'ERR_FDPO_INTERNAL',
  /** No native binary loads (the message lists every place tried). */
  'ERR_FDPO_NATIVE_NOT_FOUND',
  /** The binaries found were built for another C ABI version than this TypeScript's (a stale build). */
  'ERR_FDPO_NATIVE_ABI_MISMATCH',
  /** The CUDA backend was asked for where it cannot run (not in this build, no driver, no device). */
  'ERR_FDPO_CUDA_UNAVAILABLE',
  /** A CUDA call failed; the message names it. */
  'ERR_FDPO_CUDA',
  /** fused-dpo train: the run folder already holds a run (--force writes over it). */
  'ERR_FDPO_RUN_EXISTS',
  /** fused-dpo train: the demo's corpus or lexicon package is not installed (the message names it). */
  'ERR_FDPO_DEMO_PACKAGE_MISSING',
] as const;

export type FusedDpoErrorCode = (typeof ERROR_CODES)[number];

export interface FusedDpoError extends Error {
  code: FusedDpoErrorCode;
}

export function fusedDpoError(message: string, code: FusedDpoErrorCode, Kind: typeof Error = Error): FusedDpoError {
  const error = new Kind(`fused-dpo: ${message}`) as FusedDpoError;
  error.code = code;
  return error;
}

/** A bad argument: says which argument, what was expected and what was given. */
export function invalidArgument(name: string, expected: string, given: unknown, Kind: typeof TypeError = RangeError): FusedDpoError {
  return fusedDpoError(`${name} must be ${expected}, got ${describe(given)}`, 'ERR_FDPO_INVALID_ARGUMENT', Kind);
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) {
    const items = value.slice(0, 8).map(describe).join(', ');
    return `[${items}${value.length > 8 ? ', …' : ''}]`;
  }
  if (ArrayBuffer.isView(value)) {
    return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  }
  if (typeof value === 'function') return 'a function';
  if ((value as { constructor?: { name?: string } }).constructor?.name === 'DeviceTensor') return String(value);
  return `an object (${Object.prototype.toString.call(value).slice(8, -1)})`;
}
