// The three dense products of the model, over a range of output columns or rows so that several
// threads can share one product. Every output element is computed by one call, with the same
// arithmetic in the same order whatever the range, so results are bit-identical for any split.
//
// These functions must stay self-contained (no imports, no outer names): lib/train/pool.ts sends
// their source text to its worker threads.
//
// Layouts are row-major. `rows` maps product row n to row rows[n] of the V-wide buffers (the
// logits and their gradient), or is null for row n itself.

export type FloatArray = Float32Array | Float64Array;

/** out[row(n)·M + j] = bias[j] + Σ_k A[n·K + k]·W[k·M + j], for n < N and j in [j0, j1). */
export function matmulBiasRange(
  A: FloatArray, N: number, K: number, W: FloatArray, M: number, bias: FloatArray,
  out: FloatArray, rows: Int32Array | null, j0: number, j1: number,
): void {
  for (let n = 0; n < N; n++) {
    const o = (rows === null ? n : rows[n]!) * M;
    const a = n * K;
    for (let j = j0; j < j1; j++) out[o + j] = bias[j]!;
    let k = 0;
    for (; k + 8 <= K; k += 8) {
      const a0 = A[a + k]!, a1 = A[a + k + 1]!, a2 = A[a + k + 2]!, a3 = A[a + k + 3]!;
      const a4 = A[a + k + 4]!, a5 = A[a + k + 5]!, a6 = A[a + k + 6]!, a7 = A[a + k + 7]!;
      const w0 = k * M, w1 = w0 + M, w2 = w1 + M, w3 = w2 + M, w4 = w3 + M, w5 = w4 + M, w6 = w5 + M, w7 = w6 + M;
      for (let j = j0; j < j1; j++) {
        out[o + j] +=
          a0 * W[w0 + j]! + a1 * W[w1 + j]! + a2 * W[w2 + j]! + a3 * W[w3 + j]! +
          a4 * W[w4 + j]! + a5 * W[w5 + j]! + a6 * W[w6 + j]! + a7 * W[w7 + j]!;
      }
    }
    for (; k < K; k++) {
      const ak = A[a + k]!, w = k * M;
      for (let j = j0; j < j1; j++) out[o + j] += ak * W[w + j]!;
    }
  }
}

/**
 * dW[k·M + j] += Σ_n A[n·K + k]·G[row(n)·M + j] and db[j] += Σ_n G[row(n)·M + j], for j in [j0, j1).
 * Rows are taken four at a time (the grouping depends on N only).
 */
export function weightGradRange(
  A: FloatArray, N: number, K: number, G: FloatArray, M: number, rows: Int32Array | null,
  dW: FloatArray, db: FloatArray, j0: number, j1: number,
): void {
  let n = 0;
  for (; n + 4 <= N; n += 4) {
    const g0 = (rows === null ? n : rows[n]!) * M;
    const g1 = (rows === null ? n + 1 : rows[n + 1]!) * M;
    const g2 = (rows === null ? n + 2 : rows[n + 2]!) * M;
    const g3 = (rows === null ? n + 3 : rows[n + 3]!) * M;
    const r0 = n * K, r1 = r0 + K, r2 = r1 + K, r3 = r2 + K;
    for (let j = j0; j < j1; j++) db[j] += G[g0 + j]! + G[g1 + j]! + G[g2 + j]! + G[g3 + j]!;
    let k = 0;
    for (; k + 4 <= K; k += 4) {
      const a0 = A[r0 + k]!, a1 = A[r1 + k]!, a2 = A[r2 + k]!, a3 = A[r3 + k]!;
      const b0 = A[r0 + k + 1]!, b1 = A[r1 + k + 1]!, b2 = A[r2 + k + 1]!, b3 = A[r3 + k + 1]!;
      const c0 = A[r0 + k + 2]!, c1 = A[r1 + k + 2]!, c2 = A[r2 + k + 2]!, c3 = A[r3 + k + 2]!;
      const d0 = A[r0 + k + 3]!, d1 = A[r1 + k + 3]!, d2 = A[r2 + k + 3]!, d3 = A[r3 + k + 3]!;
      const w0 = k * M, w1 = w0 + M, w2 = w1 + M, w3 = w2 + M;
      for (let j = j0; j < j1; j++) {
        const x0 = G[g0 + j]!, x1 = G[g1 + j]!, x2 = G[g2 + j]!, x3 = G[g3 + j]!;
        dW[w0 + j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3;
        dW[w1 + j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3;
        dW[w2 + j] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3;
        dW[w3 + j] += d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3;
      }
    }
    for (; k < K; k++) {
      const a0 = A[r0 + k]!, a1 = A[r1 + k]!, a2 = A[r2 + k]!, a3 = A[r3 + k]!;
      const w = k * M;
      for (let j = j0; j < j1; j++) dW[w + j] += a0 * G[g0 + j]! + a1 * G[g1 + j]! + a2 * G[g2 + j]! + a3 * G[g3 + j]!;
    }
  }
  for (; n < N; n++) {
    const g = (rows === null ? n : rows[n]!) * M;
    for (let j = j0; j < j1; j++) db[j] += G[g + j]!;
    for (let k = 0; k < K; k++) {
      const ak = A[n * K + k]!, w = k * M;
      for (let j = j0; j < j1; j++) dW[w + j] += ak * G[g + j]!;
    }
  }
}

/** dA[n·K + k] = Σ_j G[row(n)·M + j]·W[k·M + j] (G times W transposed), for n in [n0, n1). */
export function matmulTransposedRange(
  G: FloatArray, M: number, W: FloatArray, K: number, rows: Int32Array | null,
  dA: FloatArray, n0: number, n1: number,
): void {
  for (let n = n0; n < n1; n++) {
    const g = (rows === null ? n : rows[n]!) * M;
    const o = n * K;
    let k = 0;
    for (; k + 8 <= K; k += 8) {
      const w0 = k * M, w1 = w0 + M, w2 = w1 + M, w3 = w2 + M, w4 = w3 + M, w5 = w4 + M, w6 = w5 + M, w7 = w6 + M;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
      for (let j = 0; j < M; j++) {
        const x = G[g + j]!;
        s0 += x * W[w0 + j]!;
        s1 += x * W[w1 + j]!;
        s2 += x * W[w2 + j]!;
        s3 += x * W[w3 + j]!;
        s4 += x * W[w4 + j]!;
        s5 += x * W[w5 + j]!;
        s6 += x * W[w6 + j]!;
        s7 += x * W[w7 + j]!;
      }
      dA[o + k] = s0;
      dA[o + k + 1] = s1;
      dA[o + k + 2] = s2;
      dA[o + k + 3] = s3;
      dA[o + k + 4] = s4;
      dA[o + k + 5] = s5;
      dA[o + k + 6] = s6;
      dA[o + k + 7] = s7;
    }
    for (; k < K; k++) {
      const w = k * M;
      let s = 0;
      for (let j = 0; j < M; j++) s += G[g + j]! * W[w + j]!;
      dA[o + k] = s;
    }
  }
}
