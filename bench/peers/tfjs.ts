// TensorFlow.js peers: the DPO loss written with tf ops the way a user ports TRL's
// `DPOTrainer` (log_softmax, gather of the label's log-prob, masked per-sequence sum, −logσ),
// and the logits gradient by autograd (`tf.valueAndGrad`).
//
// The gather: TRL does `torch.gather(logits.log_softmax(-1), 2, labels[..., None])`. tfjs's
// differentiable gather (`tf.gather`, GatherV2) back-propagates through UnsortedSegmentSum, which
// the CPU backend runs as one full pass over the tensor per segment (here: per vocabulary entry
// — V·R·V work) and the WASM backend does not implement at all; `tf.gatherND` has no gradient.
// So the port that works is the one-hot mask: Σ_v logp[r,v]·onehot(y_r)[v], which costs one more
// [R, V] tensor, built per step from that step's labels as a training loop would.
//
// Both backends share tfjs's single global engine: each run() switches to its own backend if
// another peer switched away (tensors then migrate lazily, which costs a copy), so run the peers
// one after another (setup → runs → dispose), not interleaved.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { checkInputs, IGNORE_INDEX, type Peer, type PeerInputs, type PeerRun } from './types.js';

type Tf = typeof import('@tensorflow/tfjs');
type Backend = 'cpu' | 'wasm';

let tfPromise: Promise<Tf> | undefined;
let wasmPathsSet = false;
/** Set once the WASM module has trapped: its heap is then in an unknown state for good. */
let wasmBroken: string | undefined;

/** The WASM heap's current size in bytes, or undefined when the backend is not up. */
function wasmHeapBytes(tf: Tf): number | undefined {
  try {
    const b = tf.findBackend('wasm') as unknown as { wasm?: { HEAPU8?: Uint8Array } } | null;
    return b?.wasm?.HEAPU8?.length;
  } catch {
    return undefined;
  }
}

/**
 * Names the WASM backend's out-of-memory failure. tfjs-backend-wasm is a wasm32 module: its heap
 * cannot pass 4 GiB (and never shrinks). When an allocation does not fit, the module does not
 * report it — the next write lands outside the heap and the module traps with "RuntimeError:
 * memory access out of bounds", after which every later op on that backend in this process
 * traps too.
 */
function explainFailure(tf: Tf, backend: Backend, e: unknown): unknown {
  if (backend === 'wasm' && e instanceof WebAssembly.RuntimeError) {
    const heap = wasmHeapBytes(tf);
    const gib = heap === undefined ? '?' : (heap / 2 ** 30).toFixed(2);
    wasmBroken = `${e.message}, heap ${gib} GiB`;
    return new Error(
      `WASM heap exhausted (wasm32 caps it at 4 GiB; it was at ${gib} GiB when the module trapped ` +
        `with "${e.message}"); the WASM backend is unusable for the rest of this process`,
      { cause: e },
    );
  }
  return e; // e.g. the CPU backend's own "RangeError: Array buffer allocation failed"
}

async function loadTf(): Promise<Tf> {
  tfPromise ??= (async () => {
    const mod = (await import('@tensorflow/tfjs')) as Tf & { default?: Tf };
    // dist/tf.node.js is CommonJS: Node exposes its exports as named exports (and as default).
    const tf = typeof mod.tensor === 'function' ? mod : (mod.default as Tf);
    // PROD silences the "install tfjs-node" banner the CPU backend prints on first use in Node
    // and the deprecation warnings; it does not change any kernel.
    tf.env().set('PROD', true);
    return tf;
  })().catch((e: unknown) => {
    tfPromise = undefined; // let a later setup() retry (e.g. after `npm ci` in bench/)
    throw e;
  });
  return tfPromise;
}

async function useBackend(backend: Backend): Promise<Tf> {
  const tf = await loadTf();
  if (backend === 'wasm' && wasmBroken) {
    throw new Error(`the tfjs WASM module trapped earlier in this process (${wasmBroken}); it cannot be used again`);
  }
  if (backend === 'wasm' && !wasmPathsSet) {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // In Node the Emscripten loader finds the .wasm next to dist/tf-backend-wasm.node.js by
    // itself; point it there explicitly so bundling or a different resolution of the JS file
    // cannot break it. The prefix must end with a slash (it is concatenated with the file name).
    const require = createRequire(import.meta.url);
    const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
    const setWasmPaths = (wasm as { setWasmPaths?: (p: string) => void }).setWasmPaths
      ?? (wasm as { default?: { setWasmPaths: (p: string) => void } }).default?.setWasmPaths;
    if (!setWasmPaths) throw new Error('@tensorflow/tfjs-backend-wasm has no setWasmPaths export');
    setWasmPaths(join(dist, '/'));
    wasmPathsSet = true;
  }
  if (tf.getBackend() !== backend) {
    if (!(await tf.setBackend(backend))) {
      throw new Error(`tf.setBackend('${backend}') failed (see the warning above)`);
    }
  }
  await tf.ready();
  return tf;
}

function makeTfjsPeer(backend: Backend, name: string): Peer {
  return {
    name,
    async setup(inputs: PeerInputs) {
      checkInputs(inputs);
      const tf = await useBackend(backend);
      const { B, T, V, beta } = inputs;
      const R = 2 * B * T;
      type Tensor = import('@tensorflow/tfjs').Tensor;

      // Constants of the batch, uploaded once: the logits (the thing differentiated), the labels
      // with ignored positions set to 0 plus the mask that zeroes them (TRL's
      // `labels[labels == -100] = 0; loss_mask = labels != -100`), and the reference sums.
      const safeLabels = new Int32Array(R);
      const mask = new Float32Array(R);
      for (let r = 0; r < R; r++) {
        const y = inputs.labels[r];
        if (y !== IGNORE_INDEX) {
          safeLabels[r] = y;
          mask[r] = 1;
        }
      }
      const owned: Tensor[] = [];
      const keep = <T extends Tensor>(t: T): T => (owned.push(t), t);
      const upload = () => ({
        // The CPU backend keeps a reference to the Float32Array; WASM copies it into its heap.
        logitsT: keep(tf.tensor2d(inputs.logits, [R, V], 'float32')),
        labelsT: keep(tf.tensor1d(safeLabels, 'int32')),
        maskT: keep(tf.tensor1d(mask, 'float32')),
        refC: keep(tf.tensor1d(Float32Array.from(inputs.refChosen), 'float32')),
        refR: keep(tf.tensor1d(Float32Array.from(inputs.refRejected), 'float32')),
      });
      let c: ReturnType<typeof upload>;
      try {
        c = upload();
      } catch (e) {
        if (!(backend === 'wasm' && wasmBroken)) for (const t of owned) t.dispose();
        throw explainFailure(tf, backend, e);
      }
      const { logitsT, labelsT, maskT, refC, refR } = c;

      // The loss as a function of the logits, as TRL writes it.
      const lossOf = (logits: Tensor, oneHot: Tensor) => {
        const logp = tf.logSoftmax(logits, -1); // [R, V]
        const perToken = tf.mul(tf.sum(tf.mul(logp, oneHot), -1), maskT); // [R]
        const seq = tf.sum(tf.reshape(perToken, [2, B, T]), -1); // [2, B]: π_chosen, π_rejected
        const [piC, piR] = tf.unstack(seq, 0); // [B] each
        const a = tf.sub(piC, refC);
        const b = tf.sub(piR, refR);
        const z = tf.mul(tf.sub(a, b), beta);
        // −logσ(z) = softplus(−z). Not `tf.neg(tf.logSigmoid(z))`: in tfjs 4.22 logSigmoid's
        // custom gradient closes over its input without saving it, so differentiating it applied
        // to an intermediate tensor throws "Cannot read properties of undefined (reading
        // 'backend')" (the forward pass's tidy has disposed that intermediate).
        return tf.mean(tf.softplus(tf.neg(z))) as import('@tensorflow/tfjs').Scalar;
      };

      const run = async (): Promise<PeerRun> => {
        await useBackend(backend);
        let out: { value: Tensor; grad: Tensor };
        try {
          out = tf.tidy(() => {
            // One-hot of this step's labels. int32 then a cast, not oneHot(..., 'float32'): the
            // WASM backend's OneHot kernel ignores the dtype and writes int32 bits, i.e. all
            // zeros as float32 (tfjs-backend-wasm 4.22).
            const oneHot = tf.cast(tf.oneHot(labelsT, V), 'float32'); // [R, V]
            return tf.valueAndGrad((logits: Tensor) => lossOf(logits, oneHot))(logitsT);
          });
        } catch (e) {
          throw explainFailure(tf, backend, e);
        }
        try {
          const grad = (await out.grad.data()) as Float32Array;
          const loss = (await out.value.data())[0];
          return { loss, grad };
        } catch (e) {
          throw explainFailure(tf, backend, e);
        } finally {
          if (!(backend === 'wasm' && wasmBroken)) {
            out.value.dispose();
            out.grad.dispose();
          }
        }
      };

      return {
        run,
        dispose() {
          if (backend === 'wasm' && wasmBroken) return; // disposing would trap again
          for (const t of owned) t.dispose();
        },
      };
    },
  };
}

export const tfjsCpu: Peer = makeTfjsPeer('cpu', 'tfjs (cpu backend)');
export const tfjsWasm: Peer = makeTfjsPeer('wasm', 'tfjs-wasm');
