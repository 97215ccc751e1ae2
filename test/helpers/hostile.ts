/**
 * Hostile stand-ins for the values a caller passes (for test/fuzz.test.ts): typed arrays that lie
 * through their own getters, Proxies, getters that answer differently on each read, resizable,
 * growable, shared and detached buffers, views at odd offsets, and every way Node offers to
 * detach or resize a buffer.
 */
import { MessageChannel } from 'node:worker_threads';

export type View = Float32Array | Uint16Array | Int32Array | Float64Array;
type ViewConstructor = { new (length: number): View; new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): View; BYTES_PER_ELEMENT: number };

const ctorOf = (view: View) => view.constructor as unknown as ViewConstructor;

/** A copy of view's elements in a fresh array of its kind. */
export function copyOf<T extends View>(view: T): T {
  return view.slice() as T;
}

/** The same elements at element `offset` of a larger buffer (a valid, equivalent view). */
export function atOffset<T extends View>(view: T, offset: number): T {
  const Ctor = ctorOf(view);
  const out = new Ctor(new ArrayBuffer((offset + view.length + 3) * Ctor.BYTES_PER_ELEMENT), offset * Ctor.BYTES_PER_ELEMENT, view.length);
  out.set(view as never);
  return out as T;
}

/** The same elements in a plain (non-growable) SharedArrayBuffer: valid and equivalent. */
export function inSharedBuffer<T extends View>(view: T): T {
  const Ctor = ctorOf(view);
  const out = new Ctor(new SharedArrayBuffer(view.byteLength), 0, view.length);
  out.set(view as never);
  return out as T;
}

const TypedArrayPrototype = Object.getPrototypeOf(Int8Array.prototype) as object;
const intrinsic = (key: string) => Object.getOwnPropertyDescriptor(TypedArrayPrototype, key)!.get! as (this: View) => never;

/** A subclass instance holding view's elements whose own getters lie about its memory. */
export function lying<T extends View>(view: T, lie: 'length' | 'buffer' | 'byteOffset' | 'byteLength' | 'all'): T {
  const Base = ctorOf(view) as unknown as new (length: number) => Float32Array;
  const decoy = new ArrayBuffer(8);
  const lies: Record<string, (real: number & ArrayBufferLike) => unknown> = {
    length: (real) => real + 5,
    buffer: () => decoy,
    byteOffset: () => 4,
    byteLength: (real) => real * 2 + 8,
  };
  class Liar extends Base {}
  for (const [key, tell] of Object.entries(lies)) {
    if (lie !== 'all' && lie !== key) continue;
    const real = intrinsic(key);
    Object.defineProperty(Liar.prototype, key, { get(this: View) { return tell(real.call(this)); } });
  }
  const out = new Liar(view.length) as View;
  new Uint8Array(intrinsic('buffer').call(out)).set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  return out as T;
}

/** A Proxy around a typed array: it reads like one, but is not one (the API refuses it). */
export function proxied<T extends object>(target: T): T {
  return new Proxy(target, {});
}

/**
 * An object whose `key` reads `first` once, then `later` on every further read (a getter that
 * changes its answer); the other fields are copied as they are.
 */
export function flipping<T extends object>(source: T, key: string, first: unknown, later: unknown): T {
  const out = { ...source } as Record<string, unknown>;
  delete out[key];
  let reads = 0;
  Object.defineProperty(out, key, { enumerable: true, configurable: true, get: () => (reads++ === 0 ? first : later) });
  return out as T;
}

/**
 * A Proxy around an array whose elements turn into `later`'s (same length) once its last element
 * has been read: one pass over it sees `first`, any further read sees `later`.
 */
export function flippingArray<T>(first: readonly T[], later: readonly T[]): T[] {
  if (later.length !== first.length) throw new RangeError('flippingArray: later must have first.length elements');
  let flipped = false;
  return new Proxy([...first], {
    get(target, key, receiver) {
      if (typeof key === 'string' && /^\d+$/.test(key)) {
        const i = Number(key);
        const value = flipped ? later[i] : first[i];
        if (i === first.length - 1) flipped = true;
        return value;
      }
      return Reflect.get(target, key, receiver);
    },
  });
}

/** The same elements over a resizable ArrayBuffer (fixed-length view, or length-tracking). */
export function overResizable<T extends View>(view: T, tracking: boolean): T {
  const Ctor = ctorOf(view);
  const buffer = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer)(view.byteLength, {
    maxByteLength: view.byteLength * 2 + 16,
  });
  const out = tracking ? new Ctor(buffer) : new Ctor(buffer, 0, view.length);
  out.set(view as never);
  return out as T;
}

/** The same elements over a growable SharedArrayBuffer. */
export function overGrowable<T extends View>(view: T): T {
  const Ctor = ctorOf(view);
  const buffer = new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(view.byteLength, {
    maxByteLength: view.byteLength * 2 + 16,
  });
  const out = new Ctor(buffer, 0, view.length);
  out.set(view as never);
  return out as T;
}

const port = new MessageChannel().port1;
port.unref();
type BufferMethods = { transfer?: (this: ArrayBuffer, n?: number) => ArrayBuffer; transferToFixedLength?: (this: ArrayBuffer) => ArrayBuffer };
const proto = ArrayBuffer.prototype as BufferMethods;

/** Every way this Node has to detach an ArrayBuffer, by name. */
export const DETACHES: [string, (buffer: ArrayBuffer) => void][] = [
  ['postMessage transfer', (b) => port.postMessage(b, [b])],
  ['structuredClone transfer', (b) => void structuredClone(b, { transfer: [b] })],
  ...(proto.transfer ? [['ArrayBuffer.prototype.transfer', (b: ArrayBuffer) => void proto.transfer!.call(b)] as [string, (b: ArrayBuffer) => void]] : []),
  ...(proto.transfer ? [['transfer to a larger length', (b: ArrayBuffer) => void proto.transfer!.call(b, b.byteLength + 4096)] as [string, (b: ArrayBuffer) => void]] : []),
  ...(proto.transferToFixedLength
    ? [['ArrayBuffer.prototype.transferToFixedLength', (b: ArrayBuffer) => void proto.transferToFixedLength!.call(b)] as [string, (b: ArrayBuffer) => void]]
    : []),
];

/** A copy of view whose buffer is already detached (length 0), by one of DETACHES. */
export function detached<T extends View>(view: T, how: number): T {
  const out = copyOf(view);
  DETACHES[how % DETACHES.length]![1](out.buffer as ArrayBuffer);
  return out;
}

/**
 * Tries to detach or resize the buffer behind view (as a hostile caller would while an async call
 * runs); returns what happened. A refusal (DataCloneError, TypeError) is a good outcome.
 */
export function attackBuffer(view: View, how: number): string {
  const buffer = intrinsic('buffer').call(view) as ArrayBuffer;
  const ways: [string, (b: ArrayBuffer) => void][] = [
    ...DETACHES,
    ['resize to 0', (b) => (b as unknown as { resize(n: number): void }).resize(0)],
  ];
  const [name, attack] = ways[how % ways.length]!;
  try {
    attack(buffer);
    return `${name}: done`;
  } catch (error) {
    return `${name}: refused (${(error as Error).name})`;
  }
}
