// The language model: a fixed-window word model in the style of Bengio et al. (2003).
//
//   x = [E[w_{t-C+1}], …, E[w_t]]        (C token embeddings of size D, concatenated: I = C·D)
//   h = tanh(x·W1 + b1)                  (H hidden units)
//   z = h·W2 + b2                        (V logits: the distribution of w_{t+1})
//
// The forward pass writes logits into chosen rows of a caller's [rows, V] buffer (for DPO: the
// labelled rows of the padded [2B, T, V] batch fused-dpo reads), and the backward pass reads
// ∂loss/∂logits from the same rows of a buffer of that layout (what fused-dpo writes). The dense
// products are plain blocked loops over typed arrays (kernels.ts), shared between threads by the
// workspace's kernel pool (pool.ts), with bit-identical results for any thread count.
import { BOS } from './data.js';
import type { FloatArray } from './kernels.js';
import { refuseUnknownKeys } from './options.js';
import { kernelPool, sharedFloats, type KernelPool } from './pool.js';
import type { Rng } from './rng.js';

export type { FloatArray };
export type Precision = 'float32' | 'float64';

export interface ModelConfig {
  /** Vocabulary size V. */
  vocab: number;
  /** Context window C: the number of previous tokens the model sees. */
  context: number;
  /** Embedding size D per token. */
  embed: number;
  /** Hidden units H. */
  hidden: number;
}

export const PARAM_NAMES = ['emb', 'w1', 'b1', 'w2', 'b2'] as const;
export type ParamName = (typeof PARAM_NAMES)[number];
export type Params = Record<ParamName, FloatArray>;

// Parameters, gradients and activations live in shared memory so the kernel pool's threads can work on them.
function allocate(precision: Precision, n: number): FloatArray {
  return sharedFloats(n, precision);
}

function paramSizes(c: ModelConfig): Record<ParamName, number> {
  const inputs = c.context * c.embed;
  return { emb: c.vocab * c.embed, w1: inputs * c.hidden, b1: c.hidden, w2: c.hidden * c.vocab, b2: c.vocab };
}

export interface InitOptions {
  precision?: Precision;
  /** Token counts: the output bias starts at their log-frequencies (a unigram model), which saves most of the first steps. */
  unigramCounts?: ArrayLike<number>;
}

/** Scratch activations for up to `capacity` rows (grows on demand), and the threads that run the products. */
export class Workspace {
  capacity = 0;
  readonly pool: KernelPool;
  x: FloatArray;
  h: FloatArray;
  dh: FloatArray;
  dx: FloatArray;
  /** One row of V float64 values (sampling). */
  row: Float64Array;
  private readonly precision: Precision;

  constructor(private readonly config: ModelConfig, precision: Precision = 'float32', capacity = 64, pool: KernelPool = kernelPool()) {
    this.precision = precision;
    this.pool = pool;
    this.x = this.h = this.dh = this.dx = allocate(precision, 0);
    this.row = new Float64Array(config.vocab);
    this.ensure(capacity);
  }

  ensure(rows: number): void {
    if (rows <= this.capacity) return;
    const c = this.config;
    const inputs = c.context * c.embed;
    this.capacity = rows;
    this.x = allocate(this.precision, rows * inputs);
    this.dx = allocate(this.precision, rows * inputs);
    this.h = allocate(this.precision, rows * c.hidden);
    this.dh = allocate(this.precision, rows * c.hidden);
  }
}

export class WordLM {
  readonly config: ModelConfig;
  readonly params: Params;
  readonly precision: Precision;

  constructor(config: ModelConfig, params: Params) {
    this.config = { ...config };
    const sizes = paramSizes(config);
    for (const name of PARAM_NAMES) {
      if (params[name].length !== sizes[name]) throw new Error(`WordLM: ${name} has ${params[name].length} values, expected ${sizes[name]}`);
    }
    this.params = params;
    this.precision = params.w2 instanceof Float64Array ? 'float64' : 'float32';
  }

  /** Random weights (scaled normal), zero hidden bias, output bias at the log unigram frequencies when given. */
  static init(config: ModelConfig, rng: Rng, options: InitOptions = {}): WordLM {
    refuseUnknownKeys('WordLM.init options', options, Object.keys({ precision: 1, unigramCounts: 1 } satisfies Record<keyof InitOptions, 1>));
    const precision = options.precision ?? 'float32';
    const sizes = paramSizes(config);
    const p = {} as Params;
    for (const name of PARAM_NAMES) p[name] = allocate(precision, sizes[name]);
    const fill = (a: FloatArray, scale: number) => {
      for (let i = 0; i < a.length; i++) a[i] = scale * rng.normal();
    };
    fill(p.emb, 0.3);
    fill(p.w1, 1 / Math.sqrt(config.context * config.embed));
    fill(p.w2, 0.3 / Math.sqrt(config.hidden));
    const counts = options.unigramCounts;
    if (counts) {
      let total = 0;
      for (let v = 0; v < config.vocab; v++) total += counts[v]! + 1;
      for (let v = 0; v < config.vocab; v++) p.b2[v] = Math.log((counts[v]! + 1) / total);
    }
    return new WordLM(config, p);
  }

  clone(): WordLM {
    const p = this.zeros(); // (not .slice(): that would leave shared memory)
    for (const name of PARAM_NAMES) p[name].set(this.params[name]);
    return new WordLM(this.config, p);
  }

  /** Zeroed arrays shaped like the parameters (gradients, optimizer moments). */
  zeros(): Params {
    const p = {} as Params;
    for (const name of PARAM_NAMES) p[name] = allocate(this.precision, this.params[name].length);
    return p;
  }

  parameterCount(): number {
    let n = 0;
    for (const name of PARAM_NAMES) n += this.params[name].length;
    return n;
  }

  /**
   * Logits for `count` positions. contexts[n·C … n·C+C-1] are the C token ids before position n's
   * prediction (oldest first). Row n of the result goes to row `rows[n]` of `logits` (row stride
   * V), or row n when rows is null; other rows are not touched.
   */
  forward(ws: Workspace, contexts: Int32Array, count: number, logits: FloatArray, rows: Int32Array | null = null): void {
    const { context: C, embed: D, hidden: H, vocab: V } = this.config;
    const I = C * D;
    const { emb, w1, b1, w2, b2 } = this.params;
    ws.ensure(count);
    const x = ws.x, h = ws.h;
    for (let n = 0; n < count; n++) {
      for (let c = 0; c < C; c++) {
        const src = contexts[n * C + c]! * D, dst = n * I + c * D;
        for (let d = 0; d < D; d++) x[dst + d] = emb[src + d]!;
      }
    }
    ws.pool.matmulBias(x, count, I, w1, H, b1, h, null);
    for (let i = 0; i < count * H; i++) h[i] = Math.tanh(h[i]!);
    ws.pool.matmulBias(h, count, H, w2, V, b2, logits, rows);
  }

  /**
   * Add ∂loss/∂params to `grads`, given ∂loss/∂logits in `dlogits` at the same rows the forward
   * pass wrote, and the workspace that forward pass filled (same contexts and count).
   */
  backward(ws: Workspace, contexts: Int32Array, count: number, dlogits: FloatArray, rows: Int32Array | null, grads: Params): void {
    const { context: C, embed: D, hidden: H, vocab: V } = this.config;
    const I = C * D;
    const { w1, w2 } = this.params;
    const x = ws.x, h = ws.h, dh = ws.dh, dx = ws.dx;
    ws.pool.weightGrad(h, count, H, dlogits, V, rows, grads.w2, grads.b2);
    ws.pool.matmulTransposed(dlogits, count, V, w2, H, rows, dh);
    for (let i = 0; i < count * H; i++) {
      const hi = h[i]!;
      dh[i] = dh[i]! * (1 - hi * hi);
    }
    ws.pool.weightGrad(x, count, I, dh, H, null, grads.w1, grads.b1);
    ws.pool.matmulTransposed(dh, count, H, w1, I, null, dx);
    const demb = grads.emb;
    for (let n = 0; n < count; n++) {
      for (let c = 0; c < C; c++) {
        const dst = contexts[n * C + c]! * D, src = n * I + c * D;
        for (let d = 0; d < D; d++) demb[dst + d] += dx[src + d]!;
      }
    }
  }
}

/**
 * The C context tokens for the prediction at position t of `seq` (the logits at t predict t+1):
 * seq[t-C+1 … t], BOS before the start. Written to out[at … at+C-1].
 */
export function writeContext(seq: ArrayLike<number>, t: number, C: number, out: Int32Array, at: number): void {
  for (let c = 0; c < C; c++) {
    const i = t - C + 1 + c;
    out[at + c] = i >= 0 ? seq[i]! : BOS;
  }
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Clip the global gradient norm to this value first (default: no clipping). */
  clipNorm?: number;
}

/** Adam (Kingma & Ba) with bias correction, over all of a model's parameters. */
export class Adam {
  step = 0;
  private readonly m: Params;
  private readonly v: Params;
  readonly options: Required<AdamOptions>;

  constructor(private readonly model: WordLM, options: AdamOptions) {
    refuseUnknownKeys('Adam options', options, Object.keys({ lr: 1, beta1: 1, beta2: 1, eps: 1, clipNorm: 1 } satisfies Record<keyof AdamOptions, 1>));
    this.m = model.zeros();
    this.v = model.zeros();
    this.options = { beta1: 0.9, beta2: 0.999, eps: 1e-8, clipNorm: Infinity, ...options };
  }

  /** Apply one update from `grads` (left unchanged); returns the gradient's global L2 norm. */
  update(grads: Params, lr: number = this.options.lr): number {
    const { beta1, beta2, eps, clipNorm } = this.options;
    let sq = 0;
    for (const name of PARAM_NAMES) {
      const g = grads[name];
      for (let i = 0; i < g.length; i++) sq += g[i]! * g[i]!;
    }
    const norm = Math.sqrt(sq);
    const clip = norm > clipNorm ? clipNorm / norm : 1;
    this.step++;
    const c1 = 1 - Math.pow(beta1, this.step);
    const c2 = 1 - Math.pow(beta2, this.step);
    const stepSize = lr / c1;
    for (const name of PARAM_NAMES) {
      const p = this.model.params[name], g = grads[name], m = this.m[name], v = this.v[name];
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]! * clip;
        const mi = (m[i] = beta1 * m[i]! + (1 - beta1) * gi);
        const vi = (v[i] = beta2 * v[i]! + (1 - beta2) * gi * gi);
        p[i] -= (stepSize * mi) / (Math.sqrt(vi / c2) + eps);
      }
    }
    return norm;
  }
}

export function zeroParams(p: Params): void {
  for (const name of PARAM_NAMES) p[name].fill(0);
}

export interface SampleOptions {
  /** Softmax temperature (default 1: the model's own distribution). */
  temperature?: number;
  /**
   * Where to keep the logits of every sampled position: row m·K + t of this [M·K, V] buffer gets
   * the logits that produced completion token t of prompt m. Default: a scratch buffer. (In shared
   * memory, from `sharedFloats`, for the pool's threads to help.)
   */
  logits?: FloatArray;
}

/**
 * Sample a K-token continuation of each prompt from the model. Returns prompt + continuation per
 * prompt. All prompts advance together, one batched forward pass per position.
 */
export function sampleContinuations(model: WordLM, ws: Workspace, prompts: readonly Int32Array[], K: number, rng: Rng, options: SampleOptions = {}): Int32Array[] {
  refuseUnknownKeys('sampleContinuations options', options, Object.keys({ temperature: 1, logits: 1 } satisfies Record<keyof SampleOptions, 1>));
  const { context: C, vocab: V } = model.config;
  const M = prompts.length;
  const temperature = options.temperature ?? 1;
  const seqs = prompts.map((p) => {
    const s = new Int32Array(p.length + K);
    s.set(p);
    return s;
  });
  const contexts = new Int32Array(M * C);
  const keep = options.logits;
  if (keep && keep.length < M * K * V) throw new Error(`sampleContinuations: logits buffer needs ${M * K * V} values`);
  const scratch = keep ? null : sharedFloats(M * V);
  const rows = new Int32Array(M);
  const probs = ws.row;
  for (let t = 0; t < K; t++) {
    for (let m = 0; m < M; m++) {
      const at = prompts[m]!.length + t; // the position being sampled
      writeContext(seqs[m]!, at - 1, C, contexts, m * C);
      rows[m] = keep ? m * K + t : m;
    }
    const out = keep ?? scratch!;
    model.forward(ws, contexts, M, out, rows);
    for (let m = 0; m < M; m++) {
      const o = rows[m]! * V;
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (out[o + v]! > max) max = out[o + v]!;
      let sum = 0;
      for (let v = 0; v < V; v++) sum += probs[v] = Math.exp((out[o + v]! - max) / temperature);
      let u = rng.next() * sum;
      let pick = V - 1;
      for (let v = 0; v < V; v++) {
        u -= probs[v]!;
        if (u < 0) {
          pick = v;
          break;
        }
      }
      seqs[m]![prompts[m]!.length + t] = pick;
    }
  }
  return seqs;
}
