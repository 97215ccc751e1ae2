// ktoLoss (TRL's KTOTrainer): unpaired sequences, each desirable or not, through the same passes
// as dpoLoss and KTO's own reduce (csrc/core/kto_math.h). Validate, fill the binding's argument
// object, run, and shape the results with TRL's metric keys.
import { STAT, type NativeKtoArgs } from './binding.js';
import { DeviceTensor, holdingTensors } from './device.js';
import { invalidArgument } from './errors.js';
import { checkNotInFlight, whileInFlight, type CallBuffers } from './in-flight.js';
import { KTO_LOSS_TYPES, type KtoHyperparameterName, type KtoLossType } from './loss-kinds.js';
import { bufferOf, gradData, sequenceLogps, sequenceLogpsAsync, tokenArgs, tokenReads } from './loss.js';
import { native } from './native.js';
import { firstNonFinite, type NonFiniteRow } from './non-finite.js';
import { snapshotOptions } from './options.js';
import type { LabelTensor, Tensor } from './types.js';
import {
  checkDeferScale,
  checkKtoSettings,
  checkTokens,
  TOKEN_KEYS,
  type CheckedKtoSettings,
  type CheckedTokens,
  type DeviceTokenOptions,
  type TokenOptions,
} from './validate.js';

/** The KL batch's per-sequence log-prob sums (TRL's KL_logps and reference_KL_logps), detached. */
export interface KtoKlLogps {
  policy: ArrayLike<number>;
  ref: ArrayLike<number>;
}

/**
 * The KL batch as the policy's logits (mismatched prompt/completion pairs, as TRL builds them):
 * one forward-only read with the call's model-head transforms, no gradient; ref: its reference sums.
 */
export interface KtoKlLogits {
  logits: Tensor | DeviceTensor;
  labels: LabelTensor | DeviceTensor;
  cuSeqlens?: Int32Array;
  ignoreIndex?: number;
  ref: ArrayLike<number>;
}

export interface KtoSettingsOptions extends Partial<Record<KtoHyperparameterName, number>> {
  /** One flag per sequence: true (or 1) desirable, false (or 0) undesirable (TRL's label). */
  desirable: ArrayLike<boolean | number>;
  /** The reference model's log-prob sum per sequence (sequenceLogps on the reference model). */
  ref: ArrayLike<number>;
  /** 'kto' (default) or 'apo_zero_unpaired' (TRL's loss_type). */
  lossType?: KtoLossType;
  /** The KL batch for z₀ (required for 'kto'; 'apo_zero_unpaired' has none, as in TRL). */
  kl?: KtoKlLogps | KtoKlLogits;
  /** 'mean' (default): TRL's mean over every sequence, desirable and undesirable together; 'sum'. */
  reduction?: 'mean' | 'sum';
  /** Divide the summed loss by this count instead (data-parallel shards). Overrides reduction. */
  normalizer?: number;
  /** As dpoLoss's: grad receives the unscaled onehot − p, rowScale the per-row factor. */
  deferScale?: boolean;
}

export interface KtoLossOptions extends TokenOptions, KtoSettingsOptions {
  /** true: a new array · 'inplace': over the logits · false: none · a tensor to fill. Default true. */
  grad?: boolean | 'inplace' | Tensor;
}

export interface DeviceKtoLossOptions extends DeviceTokenOptions, KtoSettingsOptions {
  grad?: boolean | 'inplace' | DeviceTensor;
}

/** TRL's KTOTrainer metrics (the chosen/rejected keys only when the batch has such sequences, as TRL logs them). */
export interface KtoMetrics {
  kl: number;
  'rewards/chosen_sum'?: number;
  'logps/chosen_sum'?: number;
  'logits/chosen_sum'?: number;
  'count/chosen'?: number;
  'rewards/rejected_sum'?: number;
  'logps/rejected_sum'?: number;
  'logits/rejected_sum'?: number;
  'count/rejected'?: number;
  /** Beyond TRL's KTO keys, as dpoLoss reports them: over every completion token. */
  entropy: number;
  /** Over the desirable sequences' completion tokens. */
  mean_token_accuracy: number;
  num_tokens: number;
}

export interface KtoLossResult<G extends Tensor | DeviceTensor = Tensor, S extends Float32Array | DeviceTensor = Float32Array> {
  loss: number;
  /** Each sequence's weighted loss (before the reduction). */
  losses: Float64Array;
  /** Each sequence's policy log-prob sum. */
  logps: Float64Array;
  /** β·(logps − ref), per sequence. */
  rewards: Float64Array;
  tokenCounts: Int32Array;
  /** ∂loss/∂(sequence log-prob sum), per sequence. */
  sequenceGrad: Float64Array;
  /** The reference point z₀ = max(0, mean(KL policy − KL ref)) used (0 for apo_zero_unpaired). */
  kl: number;
  grad: G | null;
  rowScale: S | null;
  metrics: KtoMetrics;
  nonFinite: NonFiniteRow | null;
}

const KTO_KEYS = [
  ...TOKEN_KEYS,
  'desirable',
  'ref',
  'lossType',
  'kl',
  'beta',
  'desirableWeight',
  'undesirableWeight',
  'reduction',
  'normalizer',
  'deferScale',
  'grad',
] as const;

type AnyKtoOptions = KtoLossOptions | DeviceKtoLossOptions;
type AnyKtoResult = KtoLossResult<Tensor | DeviceTensor, Float32Array | DeviceTensor>;

interface PreparedKto {
  args: NativeKtoArgs;
  tokens: CheckedTokens;
  settings: CheckedKtoSettings;
  finish(): AnyKtoResult;
  release(): void;
  tensors: readonly unknown[];
  buffers: CallBuffers;
}

function prepareKto(options: AnyKtoOptions, where: string): PreparedKto {
  const o = snapshotOptions(where, options, KTO_KEYS);
  const tokens = checkTokens(o);
  const settings = checkKtoSettings(o, tokens.numSeqs);
  const deferScale = checkDeferScale(o.deferScale, o.grad);
  const grad = gradData(o.grad as KtoLossOptions['grad'], tokens);
  const rowScale = !deferScale
    ? null
    : grad instanceof DeviceTensor
      ? DeviceTensor.alloc([tokens.rows], 'float32', { device: grad.device })
      : new Float32Array(tokens.rows);
  const S = tokens.numSeqs;
  const args: NativeKtoArgs = {
    ...tokenArgs(tokens),
    lossType: KTO_LOSS_TYPES[settings.lossType],
    beta: settings.beta,
    desirableWeight: settings.desirableWeight,
    undesirableWeight: settings.undesirableWeight,
    scale: settings.scale,
    desirable: settings.desirable,
    refLogps: settings.ref,
    klLogps: null,
    klRefLogps: null,
    seqLogps: new Float64Array(S),
    seqCounts: new Int32Array(S),
    seqGrad: new Float64Array(S),
    seqLosses: new Float64Array(S),
    rewards: new Float64Array(S),
    stats: new Float64Array(STAT.count),
    kl: new Float64Array(1),
    grad: grad === null ? null : bufferOf(grad),
    rowScale: rowScale === null ? null : bufferOf(rowScale),
  };
  const allocated = [o.grad === undefined || o.grad === true ? grad : null, rowScale].filter((t) => t instanceof DeviceTensor);
  return {
    args,
    tokens,
    settings,
    tensors: [tokens.data, tokens.labels, tokens.cuSeqlens, o.grad === undefined || o.grad === true ? null : grad, ...allocated],
    buffers: { reads: tokenReads(tokens), writes: [['grad', grad]] },
    release() {
      for (const t of allocated) if (t instanceof DeviceTensor) t.free();
    },
    finish: () => ({
      loss: args.stats[STAT.loss]!,
      losses: args.seqLosses,
      logps: args.seqLogps,
      rewards: args.rewards,
      tokenCounts: args.seqCounts,
      sequenceGrad: args.seqGrad,
      kl: args.kl[0]!,
      grad: grad === null || grad instanceof DeviceTensor ? grad : { data: grad, shape: tokens.shape, dtype: tokens.dtype },
      rowScale,
      metrics: ktoMetrics(args, tokens.vocab),
      nonFinite: firstNonFinite(tokens, args.seqLogps),
    }),
  };
}

// The KL batch as the options of a forward-only sequenceLogps: its tensors, and the main call's
// transforms and placement (TRL runs the same model on it).
function klForwardOptions(kl: Omit<KtoKlLogits, 'ref'> | { logits: unknown; labels: unknown; cuSeqlens?: Int32Array; ignoreIndex?: number }, tokens: CheckedTokens, o: AnyKtoOptions) {
  return {
    logits: kl.logits,
    labels: kl.labels,
    ...(kl.cuSeqlens === undefined ? {} : { cuSeqlens: kl.cuSeqlens }),
    ...(kl.ignoreIndex === undefined ? {} : { ignoreIndex: kl.ignoreIndex }),
    ...(o.logitScale === undefined ? {} : { logitScale: o.logitScale }),
    ...(o.softcap === undefined ? {} : { softcap: o.softcap }),
    ...(o.temperature === undefined ? {} : { temperature: o.temperature }),
    threads: tokens.threads,
    backend: tokens.backend,
    ...(tokens.device === null ? {} : { device: tokens.device }),
  } as Parameters<typeof sequenceLogps>[0];
}

function setKl(prepared: PreparedKto, policy: Float64Array) {
  const { settings } = prepared;
  if (policy.length !== settings.klRef!.length) {
    throw invalidArgument('kl.ref', `${policy.length} entries (one per KL sequence)`, `${settings.klRef!.length} entries`);
  }
  prepared.args.klLogps = policy;
  prepared.args.klRefLogps = settings.klRef;
}

function ratio(numerator: number, denominator: number): number {
  return denominator > 0 ? numerator / denominator : 0;
}

// TRL's metrics: sums over the desirable (chosen) and undesirable (rejected) sequences, NaN entries
// left out (TRL's nansum), and the keys of a side only when it has sequences.
function ktoMetrics(args: NativeKtoArgs, vocab: number): KtoMetrics {
  const s = args.stats;
  const metrics: KtoMetrics = {
    kl: args.kl[0]!,
    entropy: ratio(s[STAT.entropySum]!, s[STAT.chosenTokens]! + s[STAT.rejectedTokens]!),
    mean_token_accuracy: ratio(s[STAT.chosenCorrect]!, s[STAT.chosenTokens]!),
    num_tokens: s[STAT.chosenTokens]! + s[STAT.rejectedTokens]!,
  };
  for (const [side, flag, logitSum] of [['chosen', 1, STAT.chosenLogitSum], ['rejected', 0, STAT.rejectedLogitSum]] as const) {
    let count = 0, rewards = 0, logps = 0;
    for (let i = 0; i < args.desirable.length; i++) {
      if (args.desirable[i] !== flag) continue;
      count += 1;
      if (!Number.isNaN(args.rewards[i]!)) rewards += args.rewards[i]!;
      if (!Number.isNaN(args.seqLogps[i]!)) logps += args.seqLogps[i]!;
    }
    if (count === 0) continue;
    metrics[`rewards/${side}_sum`] = rewards;
    metrics[`logps/${side}_sum`] = logps;
    metrics[`logits/${side}_sum`] = s[logitSum]! * vocab;
    metrics[`count/${side}`] = count;
  }
  return metrics;
}

function runReleasingOnError(prepared: PreparedKto, run: () => void): void {
  try {
    run();
  } catch (error) {
    prepared.release();
    throw error;
  }
}

/**
 * TRL's KTO loss (KTOTrainer.kto_loss) over unpaired sequences, its metrics and its gradient with
 * respect to the logits; the KL batch's z₀ is detached.
 */
export function ktoLoss(options: KtoLossOptions): KtoLossResult;
export function ktoLoss(options: DeviceKtoLossOptions): KtoLossResult<DeviceTensor, DeviceTensor>;
export function ktoLoss(options: AnyKtoOptions): AnyKtoResult {
  const prepared = prepareKto(options, 'ktoLoss');
  runReleasingOnError(prepared, () => {
    const { kl } = prepared.settings;
    if (kl) setKl(prepared, 'policy' in kl ? kl.policy : sequenceLogps(klForwardOptions(kl, prepared.tokens, options)).logps);
    checkNotInFlight(prepared.buffers);
    native().ktoLoss(prepared.args);
  });
  return prepared.finish();
}

/** ktoLoss on the libuv thread pool (the KL batch's forward too); the event loop stays free. Same bits as ktoLoss. */
export function ktoLossAsync(options: KtoLossOptions): Promise<KtoLossResult>;
export function ktoLossAsync(options: DeviceKtoLossOptions): Promise<KtoLossResult<DeviceTensor, DeviceTensor>>;
export async function ktoLossAsync(options: AnyKtoOptions): Promise<AnyKtoResult> {
  const prepared = prepareKto(options, 'ktoLossAsync');
  try {
    const { kl } = prepared.settings;
    if (kl) {
      setKl(prepared, 'policy' in kl ? kl.policy : (await sequenceLogpsAsync(klForwardOptions(kl, prepared.tokens, options))).logps);
    }
    await whileInFlight(prepared.buffers, () => holdingTensors(prepared.tensors, () => native().ktoLossAsync(prepared.args)));
  } catch (error) {
    prepared.release();
    throw error;
  }
  return prepared.finish();
}
