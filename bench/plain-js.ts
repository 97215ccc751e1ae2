// The straightforward float32 loop a JavaScript user would write for TRL's sigmoid DPO loss and
// its gradient: log-softmax per row, gather, sum per sequence, loss, then softmax again for the
// gradient. No tricks; the baseline that shows what native code buys.
export interface PlainInputs {
  B: number;
  T: number;
  V: number;
  logits: Float32Array;
  labels: Int32Array;
  refChosen: Float64Array;
  refRejected: Float64Array;
  beta: number;
}

export function plainJsDpo(input: PlainInputs, grad: Float32Array): number {
  const { B, T, V, logits, labels, beta } = input;
  const S = 2 * B;
  const lse = new Float32Array(S * T);
  const seqLogp = new Float32Array(S);
  for (let r = 0; r < S * T; r++) {
    const y = labels[r];
    if (y === -100) continue;
    const row = r * V;
    let m = -Infinity;
    for (let v = 0; v < V; v++) if (logits[row + v] > m) m = logits[row + v];
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(logits[row + v] - m);
    lse[r] = m + Math.log(s);
    seqLogp[Math.floor(r / T)] += logits[row + y] - lse[r];
  }
  let loss = 0;
  const G = new Float32Array(S);
  for (let i = 0; i < B; i++) {
    const u = beta * (seqLogp[i] - input.refChosen[i] - (seqLogp[B + i] - input.refRejected[i]));
    loss += Math.log1p(Math.exp(-u)) / B;
    const d = (-beta / (1 + Math.exp(u))) / B;
    G[i] = d;
    G[B + i] = -d;
  }
  for (let r = 0; r < S * T; r++) {
    const row = r * V;
    const y = labels[r];
    if (y === -100) {
      grad.fill(0, row, row + V);
      continue;
    }
    const g = G[Math.floor(r / T)];
    for (let v = 0; v < V; v++) grad[row + v] = g * ((v === y ? 1 : 0) - Math.exp(logits[row + v] - lse[r]));
  }
  return loss;
}
