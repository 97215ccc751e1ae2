// Typed arrays read through the language's own getters, not the object's: a subclass that overrides
// `buffer` or `length`, or a Proxy around a typed array, cannot make validation see one buffer and
// the binding another. (The binding reads the same internal slots these getters do.)

const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;

function getter<T>(target: object, key: PropertyKey): (this: unknown) => T {
  const descriptor = Object.getOwnPropertyDescriptor(target, key);
  if (!descriptor?.get) throw new Error(`fused-dpo: this JavaScript engine has no ${String(key)} getter`);
  return descriptor.get as (this: unknown) => T;
}

const tagOf = getter<string | undefined>(TypedArrayPrototype, Symbol.toStringTag);
const lengthOf = getter<number>(TypedArrayPrototype, 'length');
const bufferOf = getter<ArrayBufferLike>(TypedArrayPrototype, 'buffer');
const byteOffsetOf = getter<number>(TypedArrayPrototype, 'byteOffset');
const byteLengthOf = getter<number>(TypedArrayPrototype, 'byteLength');
const resizableOf = getter<boolean>(ArrayBuffer.prototype, 'resizable');
const growableOf = getter<boolean>(SharedArrayBuffer.prototype, 'growable');
const isSharedBuffer = (buffer: ArrayBufferLike) => Object.prototype.toString.call(buffer) === '[object SharedArrayBuffer]';

/** The kinds of typed array the API reads, by their internal name. */
export type TypedArrayKind =
  | 'Float32Array'
  | 'Float64Array'
  | 'Uint16Array'
  | 'Int32Array'
  | 'Int8Array'
  | 'Uint8Array'
  | 'Uint8ClampedArray'
  | 'Int16Array'
  | 'Uint32Array'
  | 'BigInt64Array'
  | 'BigUint64Array'
  | 'Float16Array';

/** A typed array as its internal slots say: its kind, element count and buffer. */
export interface TypedArrayFacts {
  kind: TypedArrayKind;
  length: number;
  byteOffset: number;
  byteLength: number;
  buffer: ArrayBufferLike;
  /** The buffer can change size (a resizable ArrayBuffer or a growable SharedArrayBuffer). */
  resizable: boolean;
  shared: boolean;
}

/** The facts of a real typed array (subclasses included), or null for anything else (Proxies too). */
export function typedArrayFacts(value: unknown): TypedArrayFacts | null {
  if (typeof value !== 'object' || value === null) return null;
  let kind: string | undefined;
  try {
    kind = tagOf.call(value);
  } catch {
    return null;
  }
  if (kind === undefined) return null; // not a typed array: the getter answers undefined
  const buffer = bufferOf.call(value);
  const shared = isSharedBuffer(buffer);
  const resizable = shared ? growableOf.call(buffer) : resizableOf.call(buffer);
  return {
    kind: kind as TypedArrayKind,
    length: lengthOf.call(value),
    byteOffset: byteOffsetOf.call(value),
    byteLength: byteLengthOf.call(value),
    buffer,
    resizable,
    shared,
  };
}
