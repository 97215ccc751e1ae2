// A small pool of worker threads that share the model's three large products (the ones over the
// vocabulary). The calling thread takes one share and blocks until the workers finish theirs, so
// the pool is a drop-in for a synchronous call. Work is split by output columns or rows and each
// output element is computed by one thread with the same arithmetic as a single-threaded call:
// the results are bit-identical for any thread count.
//
// Workers can only see memory in a SharedArrayBuffer: arrays the products read or write must be
// allocated with `sharedFloats` (anything else runs on the calling thread).
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';

import { matmulBiasRange, matmulTransposedRange, weightGradRange, type FloatArray } from './kernels.js';

/** A zeroed float32 (or float64) array in shared memory. */
export function sharedFloats(length: number, precision: 'float32' | 'float64' = 'float32'): FloatArray {
  return precision === 'float64'
    ? new Float64Array(new SharedArrayBuffer(length * 8))
    : new Float32Array(new SharedArrayBuffer(length * 4));
}

function isShared(a: ArrayBufferView | null): boolean {
  return a === null || a.buffer instanceof SharedArrayBuffer;
}

const KERNELS = { matmulBiasRange, weightGradRange, matmulTransposedRange };
type KernelName = keyof typeof KERNELS;

// control words
const SEQ = 0, DONE = 1, STOP = 2, FAILED = 3;

const WORKER_SOURCE = `'use strict';
const { workerData, receiveMessageOnPort } = require('node:worker_threads');
${matmulBiasRange.toString()}
${weightGradRange.toString()}
${matmulTransposedRange.toString()}
const kernels = { matmulBiasRange, weightGradRange, matmulTransposedRange };
const { control, port } = workerData;
let seen = 0;
for (;;) {
  Atomics.wait(control, ${SEQ}, seen);
  seen = Atomics.load(control, ${SEQ});
  if (Atomics.load(control, ${STOP}) === 1) break;
  let received;
  while ((received = receiveMessageOnPort(port)) === undefined) {}
  try {
    const job = received.message;
    kernels[job.name](...job.args);
  } catch (error) {
    Atomics.store(control, ${FAILED}, 1);
  }
  Atomics.add(control, ${DONE}, 1);
  Atomics.notify(control, ${DONE});
}
`;

/** Products smaller than this many multiply-adds run on the calling thread. */
const MIN_PARALLEL_WORK = 1 << 18;

export class KernelPool {
  /** Threads sharing each product, this one included. */
  threads: number;
  private readonly control: Int32Array;
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];

  constructor(threads: number) {
    this.threads = Math.max(1, Math.floor(threads));
    this.control = new Int32Array(new SharedArrayBuffer(16));
    for (let i = 1; i < this.threads; i++) {
      const channel = new MessageChannel();
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { control: this.control, port: channel.port2 },
        transferList: [channel.port2],
      });
      worker.unref();
      channel.port1.unref();
      this.workers.push(worker);
      this.ports.push(channel.port1);
    }
  }

  /** Run kernel `name` with one argument list per thread (the first on this thread). */
  private run(name: KernelName, jobs: unknown[][]): void {
    const c = this.control;
    Atomics.store(c, DONE, 0);
    for (let i = 0; i < this.ports.length; i++) this.ports[i]!.postMessage({ name, args: jobs[i + 1] });
    Atomics.add(c, SEQ, 1);
    Atomics.notify(c, SEQ);
    (KERNELS[name] as (...args: unknown[]) => void)(...jobs[0]!);
    for (;;) {
      const done = Atomics.load(c, DONE);
      if (done >= this.workers.length) break;
      Atomics.wait(c, DONE, done);
    }
    if (Atomics.load(c, FAILED) !== 0) {
      Atomics.store(c, FAILED, 0);
      throw new Error(`fused-dpo train: a worker thread failed in ${name}`);
    }
  }

  private split(length: number, t: number): [number, number] {
    return [Math.floor((t * length) / this.threads), Math.floor(((t + 1) * length) / this.threads)];
  }

  private parallel(work: number, arrays: (ArrayBufferView | null)[]): boolean {
    return this.threads > 1 && work >= MIN_PARALLEL_WORK && arrays.every(isShared);
  }

  /** out[row(n)·M + j] = bias[j] + Σ_k A[n·K + k]·W[k·M + j]. */
  matmulBias(A: FloatArray, N: number, K: number, W: FloatArray, M: number, bias: FloatArray, out: FloatArray, rows: Int32Array | null): void {
    if (!this.parallel(N * K * M, [A, W, bias, out])) return matmulBiasRange(A, N, K, W, M, bias, out, rows, 0, M);
    this.run('matmulBiasRange', Array.from({ length: this.threads }, (_, t) => [A, N, K, W, M, bias, out, rows, ...this.split(M, t)]));
  }

  /** dW[k·M + j] += Σ_n A[n·K + k]·G[row(n)·M + j];  db[j] += Σ_n G[row(n)·M + j]. */
  weightGrad(A: FloatArray, N: number, K: number, G: FloatArray, M: number, rows: Int32Array | null, dW: FloatArray, db: FloatArray): void {
    if (!this.parallel(N * K * M, [A, G, dW, db])) return weightGradRange(A, N, K, G, M, rows, dW, db, 0, M);
    this.run('weightGradRange', Array.from({ length: this.threads }, (_, t) => [A, N, K, G, M, rows, dW, db, ...this.split(M, t)]));
  }

  /** dA[n·K + k] = Σ_j G[row(n)·M + j]·W[k·M + j]. */
  matmulTransposed(G: FloatArray, N: number, M: number, W: FloatArray, K: number, rows: Int32Array | null, dA: FloatArray): void {
    if (!this.parallel(N * K * M, [G, W, dA])) return matmulTransposedRange(G, M, W, K, rows, dA, 0, N);
    this.run('matmulTransposedRange', Array.from({ length: this.threads }, (_, t) => [G, M, W, K, rows, dA, ...this.split(N, t)]));
  }

  /** Stop the worker threads (the pool runs everything on the calling thread afterwards). */
  close(): void {
    if (this.workers.length === 0) return;
    Atomics.store(this.control, STOP, 1);
    Atomics.add(this.control, SEQ, 1);
    Atomics.notify(this.control, SEQ);
    this.workers.length = 0;
    this.ports.length = 0;
    this.threads = 1;
  }
}

const pools = new Map<number, KernelPool>();

let chosenThreads: number | undefined;

/** Default thread count: as set by setDefaultThreads, else the machine's cores, at most 8. */
export function defaultThreads(): number {
  return chosenThreads ?? Math.min(availableParallelism(), 8);
}

/** Set the thread count of the pool that workspaces get by default (undefined: back to the cores). */
export function setDefaultThreads(threads: number | undefined): void {
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) throw new RangeError(`threads must be a positive integer, got ${threads}`);
  chosenThreads = threads;
}

/** A shared pool per thread count, started on first use. */
export function kernelPool(threads: number = defaultThreads()): KernelPool {
  let pool = pools.get(threads);
  if (!pool) {
    pool = new KernelPool(threads);
    pools.set(threads, pool);
  }
  return pool;
}
