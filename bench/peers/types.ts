// The contract between bench/bench.ts and the peers it compares fused-dpo against: the ways a
// JavaScript user can compute the same DPO loss and logits gradient without fused-dpo.

export interface PeerInputs {
  B: number; T: number; V: number;
  logits: Float32Array;           // [2B, T, V] row-major; sequences 0..B-1 chosen, B..2B-1 rejected
  labels: Int32Array;             // [2B, T]; -100 = ignored (prompt/padding); else in [0, V)
  refChosen: Float64Array;        // B reference log-prob sums
  refRejected: Float64Array;      // B
  beta: number;
}
export interface PeerRun { loss: number; grad: Float32Array }   // grad: [2B, T, V] dLoss/dLogits
export interface Peer {
  name: string;                   // e.g. 'tfjs (cpu backend)', 'tfjs-wasm', 'onnxruntime-node'
  // Prepare once (build graph/session, upload constants). May throw: the harness reports the error.
  setup(inputs: PeerInputs): Promise<{ run(): Promise<PeerRun>; dispose(): Promise<void> | void }>;
}

export const IGNORE_INDEX = -100;

/** Throws a RangeError naming the first inconsistency between the sizes and the arrays. */
export function checkInputs(x: PeerInputs): void {
  const { B, T, V } = x;
  for (const [k, v] of [['B', B], ['T', T], ['V', V]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${k} must be a positive integer, got ${v}`);
  }
  if (x.logits.length !== 2 * B * T * V) {
    throw new RangeError(`logits.length must be 2·B·T·V = ${2 * B * T * V}, got ${x.logits.length}`);
  }
  if (x.labels.length !== 2 * B * T) throw new RangeError(`labels.length must be 2·B·T = ${2 * B * T}, got ${x.labels.length}`);
  if (x.refChosen.length !== B) throw new RangeError(`refChosen.length must be B = ${B}, got ${x.refChosen.length}`);
  if (x.refRejected.length !== B) throw new RangeError(`refRejected.length must be B = ${B}, got ${x.refRejected.length}`);
  if (!(x.beta > 0)) throw new RangeError(`beta must be > 0, got ${x.beta}`);
  for (let i = 0; i < x.labels.length; i++) {
    const y = x.labels[i];
    if (y !== IGNORE_INDEX && (y < 0 || y >= V)) {
      throw new RangeError(`labels[${i}] must be in [0, ${V}) or ${IGNORE_INDEX}, got ${y}`);
    }
  }
}
