// Loads the native addon: a prebuilt binary first, then a local build (node-gyp-build's order).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The argument object the binding reads (csrc/binding/addon.cpp); lib/ fills it after validation. */
export interface NativeTokens {
  logits: Float32Array | Uint16Array;
  dtype: number;
  rows: number;
  vocab: number;
  labels: Int32Array;
  cuSeqlens: Int32Array;
  ignoreIndex: number;
  threads: number;
}

export interface NativeSequenceArgs extends NativeTokens {
  average: boolean;
  logps: Float64Array;
  counts: Int32Array;
}

export interface NativeLossArgs extends NativeTokens {
  kinds: Int32Array;
  weights: Float64Array;
  beta: number;
  labelSmoothing: number;
  simpoGamma: number;
  discopopTau: number;
  scale: number;
  refChosen: Float64Array | null;
  refRejected: Float64Array | null;
  seqLogps: Float64Array;
  seqCounts: Int32Array;
  seqGrad: Float64Array;
  pairLosses: Float64Array;
  chosenRewards: Float64Array;
  rejectedRewards: Float64Array;
  stats: Float64Array;
  grad: Float32Array | Uint16Array | null;
  rowScale: Float32Array | null;
}

export interface NativeAddon {
  sequenceLogps(args: NativeSequenceArgs): void;
  sequenceLogpsAsync(args: NativeSequenceArgs): Promise<void>;
  dpoLoss(args: NativeLossArgs): void;
  dpoLossAsync(args: NativeLossArgs): Promise<void>;
  dpoLossUnfused(args: NativeLossArgs): void;
  info(): { abiVersion: number; simd: string };
  setSimdLevel(level: string): void;
  vectorExp(input: Float32Array): Float32Array;
  copy(dst: ArrayBufferView, src: ArrayBufferView, threads: number): void;
  expThroughput(count: number, threads: number): number;
}

/** Indexes of the binding's stats array (fdpo_stat in csrc/core/fused_dpo.h). */
export const STAT = {
  loss: 0,
  chosenLogitSum: 1,
  chosenTokens: 2,
  rejectedLogitSum: 3,
  rejectedTokens: 4,
  entropySum: 5,
  chosenCorrect: 6,
  count: 7,
} as const;

export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

let addon: NativeAddon | undefined;
let addonPath: string | undefined;

export function native(): NativeAddon {
  if (!addon) {
    const require = createRequire(import.meta.url);
    const gypBuild = require('node-gyp-build') as { path(dir: string): string };
    addonPath = gypBuild.path(packageRoot);
    addon = require(addonPath) as NativeAddon;
  }
  return addon;
}

/** The file the addon was loaded from. */
export function nativePath(): string {
  native();
  return addonPath!;
}
