// The host memory unsettled async calls read and write. A call that would write memory another
// call is still reading or writing, or read memory another call is still writing, is refused
// (ERR_FDPO_BUFFER_IN_USE) instead of racing it: two 'inplace' calls on one tensor would otherwise
// read each other's gradients. Buffers are compared by identity, which covers every view within
// one thread; a SharedArrayBuffer received again from another thread is a new object to this
// check (the native side's own checks keep memory safe either way).
import { fusedDpoError } from './errors.js';
import { typedArrayFacts } from './intrinsics.js';

interface Extent {
  name: string;
  buffer: ArrayBufferLike;
  begin: number;
  end: number;
  written: boolean;
}

/** The views a call reads and writes, by argument name. */
export interface CallBuffers {
  reads: [name: string, view: unknown][];
  writes: [name: string, view: unknown][];
}

const active = new Set<Extent[]>();

function extentsOf(buffers: CallBuffers): Extent[] {
  const extents: Extent[] = [];
  const add = (name: string, view: unknown, written: boolean) => {
    const facts = typedArrayFacts(view);
    if (facts && facts.byteLength > 0) {
      extents.push({ name, buffer: facts.buffer, begin: facts.byteOffset, end: facts.byteOffset + facts.byteLength, written });
    }
  };
  for (const [name, view] of buffers.reads) add(name, view, false);
  for (const [name, view] of buffers.writes) add(name, view, true);
  return extents;
}

function refuseConflicts(mine: Extent[]): void {
  for (const theirs of active) {
    for (const a of mine) {
      for (const b of theirs) {
        if ((a.written || b.written) && a.buffer === b.buffer && a.begin < b.end && b.begin < a.end) {
          throw fusedDpoError(
            `${a.name} shares memory with the ${b.name} of an async call that has not settled, which ${b.written ? 'writes' : 'reads'} it: ` +
              'await that call first (or give this call its own buffers)',
            'ERR_FDPO_BUFFER_IN_USE',
          );
        }
      }
    }
  }
}

/** Throws ERR_FDPO_BUFFER_IN_USE when the call's memory conflicts with an unsettled async call's. */
export function checkNotInFlight(buffers: CallBuffers): void {
  refuseConflicts(extentsOf(buffers));
}

/** Runs an async call with its memory registered as in use until it settles; refuses a conflicting call first. */
export async function whileInFlight<T>(buffers: CallBuffers, run: () => Promise<T>): Promise<T> {
  const extents = extentsOf(buffers);
  refuseConflicts(extents);
  active.add(extents);
  try {
    return await run();
  } finally {
    active.delete(extents);
  }
}
