// onnxruntime-node peer. ONNX Runtime's Node package runs inference graphs only (no autograd:
// the training API is not in onnxruntime-node), so a user who wants the DPO gradient there
// writes it into the graph by hand. The model is built in memory (bench/peers/onnx-proto.ts,
// opset 17, shapes fixed at setup) and computes, for R = 2·B·T rows of V logits:
//
//   lsm   = LogSoftmax(logits)                      [R, V]
//   tok   = GatherElements(lsm, labels, axis=1)·mask [R, 1]   labels: ignored rows → 0, mask 0
//   π     = ReduceSum(Reshape(tok, [2, B, T]), 2)    [2, B]   row 0 chosen, row 1 rejected
//   Δ     = Σ_row sgn·(π − ref),  sgn = [1, −1]      [B]
//   loss  = ReduceMean(Softplus(−βΔ))                −logσ(βΔ) = softplus(−βΔ), mean over pairs
//   G     = σ(−βΔ)·[−β/B, +β/B]                      [2, B]   dLoss/dπ_chosen, dLoss/dπ_rejected
//   Gr    = Reshape(Expand(G, [2, B, T]), [R, 1])·mask
//   grad  = ScatterElements(Exp(lsm)·(−Gr), labels, Gr, axis=1, reduction='add')
//         = Gr·(onehot(y) − softmax(logits))        [R, V]
import { availableParallelism } from 'node:os';

import { DataType, encodeModel, raw, type ModelSpec } from './onnx-proto.js';
import { checkInputs, IGNORE_INDEX, type Peer, type PeerInputs, type PeerRun } from './types.js';

type Ort = typeof import('onnxruntime-node');

/** The model bytes for fixed B, T, V and β. */
export function buildDpoModel(B: number, T: number, V: number, beta: number): Uint8Array {
  const R = 2 * B * T;
  const spec: ModelSpec = {
    irVersion: 8,
    opset: 17,
    graphName: 'dpo_sigmoid_loss_and_grad',
    inputs: [
      { name: 'logits', type: DataType.FLOAT, dims: [R, V] },
      { name: 'labels', type: DataType.INT64, dims: [R, 1] },
      { name: 'mask', type: DataType.FLOAT, dims: [R, 1] },
      { name: 'ref', type: DataType.FLOAT, dims: [2, B] },
    ],
    outputs: [
      { name: 'loss', type: DataType.FLOAT, dims: [] },
      { name: 'grad', type: DataType.FLOAT, dims: [R, V] },
    ],
    initializers: [
      { name: 'shape_2BT', type: DataType.INT64, dims: [3], raw: raw.i64([2, B, T]) },
      { name: 'shape_2B1', type: DataType.INT64, dims: [3], raw: raw.i64([2, B, 1]) },
      { name: 'shape_R1', type: DataType.INT64, dims: [2], raw: raw.i64([R, 1]) },
      { name: 'axis_T', type: DataType.INT64, dims: [1], raw: raw.i64([2]) },
      { name: 'axis_pair', type: DataType.INT64, dims: [1], raw: raw.i64([0]) },
      { name: 'sgn', type: DataType.FLOAT, dims: [2, 1], raw: raw.f32([1, -1]) },
      { name: 'beta', type: DataType.FLOAT, dims: [], raw: raw.f32([beta]) },
      { name: 'coef', type: DataType.FLOAT, dims: [2, 1], raw: raw.f32([-beta / B, beta / B]) },
    ],
    nodes: [
      // forward: per-token log-prob at the label, per-sequence sums, per-pair loss
      { op: 'LogSoftmax', inputs: ['logits'], outputs: ['lsm'], attrs: { axis: { i: -1 } } },
      { op: 'GatherElements', inputs: ['lsm', 'labels'], outputs: ['tok'], attrs: { axis: { i: 1 } } },
      { op: 'Mul', inputs: ['tok', 'mask'], outputs: ['tok_m'] },
      { op: 'Reshape', inputs: ['tok_m', 'shape_2BT'], outputs: ['tok_3'] },
      { op: 'ReduceSum', inputs: ['tok_3', 'axis_T'], outputs: ['pi'], attrs: { keepdims: { i: 0 } } },
      { op: 'Sub', inputs: ['pi', 'ref'], outputs: ['score'] },
      { op: 'Mul', inputs: ['score', 'sgn'], outputs: ['score_signed'] },
      { op: 'ReduceSum', inputs: ['score_signed', 'axis_pair'], outputs: ['delta'], attrs: { keepdims: { i: 0 } } },
      { op: 'Mul', inputs: ['delta', 'beta'], outputs: ['z'] },
      { op: 'Neg', inputs: ['z'], outputs: ['neg_z'] },
      { op: 'Softplus', inputs: ['neg_z'], outputs: ['losses'] },
      { op: 'ReduceMean', inputs: ['losses'], outputs: ['loss'], attrs: { keepdims: { i: 0 } } },
      // backward, derived by hand: dLoss/dπ per sequence, then per row, then per logit
      { op: 'Sigmoid', inputs: ['neg_z'], outputs: ['w'] },
      { op: 'Mul', inputs: ['w', 'coef'], outputs: ['G'] },
      { op: 'Reshape', inputs: ['G', 'shape_2B1'], outputs: ['G_3'] },
      { op: 'Expand', inputs: ['G_3', 'shape_2BT'], outputs: ['G_e'] },
      { op: 'Reshape', inputs: ['G_e', 'shape_R1'], outputs: ['G_r'] },
      { op: 'Mul', inputs: ['G_r', 'mask'], outputs: ['G_m'] },
      { op: 'Neg', inputs: ['G_m'], outputs: ['neg_G_m'] },
      { op: 'Exp', inputs: ['lsm'], outputs: ['p'] },
      { op: 'Mul', inputs: ['p', 'neg_G_m'], outputs: ['neg_gp'] },
      {
        op: 'ScatterElements',
        inputs: ['neg_gp', 'labels', 'G_m'],
        outputs: ['grad'],
        attrs: { axis: { i: 1 }, reduction: { s: 'add' } },
      },
    ],
  };
  return encodeModel(spec);
}

async function loadOrt(): Promise<Ort> {
  const mod = (await import('onnxruntime-node')) as Ort & { default?: Ort };
  return typeof mod.InferenceSession === 'function' ? mod : (mod.default as Ort);
}

export const onnxRuntime: Peer = {
  name: 'onnxruntime-node',
  async setup(inputs: PeerInputs) {
    checkInputs(inputs);
    const ort = await loadOrt();
    const { B, T, V, beta } = inputs;
    const R = 2 * B * T;

    const session = await ort.InferenceSession.create(buildDpoModel(B, T, V, beta), {
      intraOpNumThreads: availableParallelism(),
      graphOptimizationLevel: 'all',
    });

    const labels = new BigInt64Array(R);
    const mask = new Float32Array(R);
    for (let r = 0; r < R; r++) {
      const y = inputs.labels[r];
      if (y !== IGNORE_INDEX) {
        labels[r] = BigInt(y);
        mask[r] = 1;
      }
    }
    const ref = new Float32Array(2 * B);
    ref.set(inputs.refChosen, 0);
    ref.set(inputs.refRejected, B);
    // CPU input tensors wrap the JavaScript buffers (no copy per run).
    const feeds = {
      logits: new ort.Tensor('float32', inputs.logits, [R, V]),
      labels: new ort.Tensor('int64', labels, [R, 1]),
      mask: new ort.Tensor('float32', mask, [R, 1]),
      ref: new ort.Tensor('float32', ref, [2, B]),
    };

    const run = async (): Promise<PeerRun> => {
      // ORT reports an exhausted CPU allocator as a rejected run ("bad allocation" / "Failed to
      // allocate memory for ..."), passed on as is.
      const out = await session.run(feeds);
      const loss = (out.loss.data as Float32Array)[0];
      const grad = out.grad.data as Float32Array;
      return { loss, grad };
    };

    return {
      run,
      async dispose() {
        await session.release();
      },
    };
  },
};
