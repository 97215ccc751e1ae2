// The online RL loss of TRL's GRPO family (GRPO, BNPO, Dr. GRPO, DAPO): the clipped surrogate on
// per-token importance ratios, the k3 KL to a reference and an entropy bonus, over the same two
// passes as dpoLoss (SPEC.md, "Policy loss"): validate, fill the binding's arguments, run, shape.
import type { NativePolicyArgs } from './binding.js';
import { checkNotInFlight, type CallBuffers } from './in-flight.js';
import { DeviceTensor } from './device.js';
import { bufferOf, callTensors, gradData, runHeldAsync, runReleasingOnError, tokenArgs, tokenReads, type HeldTensors } from './loss.js';
import { native } from './native.js';
import { firstNonFinite, type NonFiniteRow } from './non-finite.js';
import { snapshotOptions } from './options.js';
import type { Tensor } from './types.js';
import { POLICY_LOSS_TYPES, type PolicyLossType } from './loss-kinds.js';
import { checkPolicySettings, checkTokens, TOKEN_KEYS, type DeviceTokenOptions, type TokenOptions } from './validate.js';

export type { PolicyLossType } from './loss-kinds.js';

/** policyLoss's own settings, the same for host and device tokens: per-token inputs are host arrays either way. */
export interface PolicySettingsOptions {
  /** One per sequence, or one per token (the labels' size). Float64Array or Float32Array. */
  advantages: Float64Array | Float32Array;
  /** Which of the two advantages is (by default, its length says; needed only when the two coincide). */
  advantagesPer?: 'sequence' | 'token';
  /** Per-token log-probs of the policy that sampled (TRL's old_per_token_logps); omitted: on-policy, ratio 1. */
  oldLogps?: Float64Array | Float32Array | null;
  /** Per-token reference log-probs, for the k3 KL (TRL's ref_per_token_logps); needed when beta is not 0. */
  refLogps?: Float64Array | Float32Array | null;
  /** KL coefficient (TRL's beta). Default 0, TRL's. */
  beta?: number;
  /** Lower clip: the ratio is clipped to [1 − epsilon, 1 + epsilonHigh] (TRL's epsilon). Default 0.2. */
  epsilon?: number;
  /** Upper clip (TRL's epsilon_high, DAPO's clip-higher). Default epsilon. */
  epsilonHigh?: number;
  /** Entropy bonus: the loss minus entropyCoef times the aggregated per-token entropy, gradient included. Default 0. */
  entropyCoef?: number;
  /** TRL's loss_type: how the per-token terms add up. Default 'dapo' (TRL's current default). */
  lossType?: PolicyLossType;
  /** dr_grpo's divisor per sequence (TRL's max_completion_length); required with 'dr_grpo'. */
  maxCompletionLength?: number;
  /** dapo's divisor (TRL's num_items_in_batch: the completion tokens of the whole generation batch); default this call's. */
  numItemsInBatch?: number;
}

export interface PolicyLossOptions extends TokenOptions, PolicySettingsOptions {
  /** true: a new array · 'inplace': over the logits · false: none · a tensor to fill. Default true. */
  grad?: boolean | 'inplace' | Tensor;
}

/** Device logits: the gradient stays on the GPU; logps, tokenGrad and the metrics come back to the host. */
export interface DevicePolicyLossOptions extends DeviceTokenOptions, PolicySettingsOptions {
  /** true: a new DeviceTensor · 'inplace': over the logits · false: none · a DeviceTensor to fill. Default true. */
  grad?: boolean | 'inplace' | DeviceTensor;
}

/** TRL's GRPO metrics, over this call's completion tokens. */
export interface PolicyMetrics {
  /** Tokens with ratio < 1 − epsilon and a negative advantage, as a fraction. */
  'clip_ratio/low_mean': number;
  /** Tokens with ratio > 1 + epsilonHigh and a positive advantage. */
  'clip_ratio/high_mean': number;
  /** Either of the two. */
  'clip_ratio/region_mean': number;
  /** Mean k3 KL to the reference; null without refLogps. */
  kl: number | null;
  /** Mean entropy of the (temperature-scaled) token distributions. */
  entropy: number;
  num_tokens: number;
}

/** G: the gradient's type, a host tensor for host logits, a DeviceTensor for device logits (see policyLoss's overloads). */
export interface PolicyLossResult<G extends Tensor | DeviceTensor = Tensor> {
  loss: number;
  /** Per-token log-probs (the labels' size, 0 where ignored): the next step's oldLogps. */
  logps: Float64Array;
  /** ∂loss/∂logp per token (the labels' size, 0 where ignored): the surrogate's and the KL's, weights included. */
  tokenGrad: Float64Array;
  /** ∂loss/∂logits, in the logits' dtype and shape, or null when grad: false. A DeviceTensor when the logits are one. */
  grad: G | null;
  metrics: PolicyMetrics;
  /** The first scored row holding an inf, NaN or beyond-±1.7e38 logit (the loss is then NaN or inf), or null (row null for DeviceTensor logits). */
  nonFinite: NonFiniteRow | null;
}

/** Indexes of the binding's policy stats (fdpo_policy_stat in csrc/core/fused_dpo.h). */
export const POLICY_STAT = { loss: 0, tokens: 1, lowClipped: 2, highClipped: 3, regionClipped: 4, klSum: 5, entropySum: 6, count: 7 } as const;

const POLICY_KEYS = [
  ...TOKEN_KEYS,
  'advantages',
  'advantagesPer',
  'oldLogps',
  'refLogps',
  'beta',
  'epsilon',
  'epsilonHigh',
  'entropyCoef',
  'lossType',
  'maxCompletionLength',
  'numItemsInBatch',
  'grad',
] as const;

type AnyPolicyLossOptions = PolicyLossOptions | DevicePolicyLossOptions;
type AnyPolicyLossResult = PolicyLossResult<Tensor | DeviceTensor>;

interface PreparedPolicy extends HeldTensors {
  args: NativePolicyArgs;
  buffers: CallBuffers;
  finish(): AnyPolicyLossResult;
}

function preparePolicyLoss(options: AnyPolicyLossOptions, where: string): PreparedPolicy {
  const o = snapshotOptions(where, options, POLICY_KEYS);
  const tokens = checkTokens(o);
  const settings = checkPolicySettings(o, tokens);
  const grad = gradData(o.grad as AnyPolicyLossOptions['grad'], tokens);
  const args: NativePolicyArgs = {
    ...tokenArgs(tokens),
    lossType: POLICY_LOSS_TYPES[settings.lossType],
    advantages: settings.advantages,
    advantagesPerToken: settings.advantagesPerToken,
    oldLogps: settings.oldLogps,
    refLogps: settings.refLogps,
    beta: settings.beta,
    epsilon: settings.epsilon,
    epsilonHigh: settings.epsilonHigh,
    entropyCoef: settings.entropyCoef,
    maxCompletionLength: settings.maxCompletionLength,
    numItemsInBatch: settings.numItemsInBatch,
    logps: new Float64Array(tokens.rows),
    tokenGrad: new Float64Array(tokens.rows),
    stats: new Float64Array(POLICY_STAT.count),
    grad: grad === null ? null : bufferOf(grad),
  };
  return {
    args,
    ...callTensors(tokens, o.grad, grad),
    buffers: { reads: tokenReads(tokens), writes: [['grad', grad]] },
    finish() {
      const s = args.stats;
      const count = Math.max(s[POLICY_STAT.tokens]!, 1);
      // Per-sequence sums of the token log-probs: only to find a non-finite row.
      const seqLogps = Float64Array.from({ length: tokens.numSeqs }, (_, q) => {
        let sum = 0;
        for (let r = tokens.cuSeqlens[q]!; r < tokens.cuSeqlens[q + 1]!; r++) sum += args.logps[r]!;
        return sum;
      });
      return {
        loss: s[POLICY_STAT.loss]!,
        logps: args.logps,
        tokenGrad: args.tokenGrad,
        grad: grad === null || grad instanceof DeviceTensor ? grad : { data: grad, shape: tokens.shape, dtype: tokens.dtype },
        metrics: {
          'clip_ratio/low_mean': s[POLICY_STAT.lowClipped]! / count,
          'clip_ratio/high_mean': s[POLICY_STAT.highClipped]! / count,
          'clip_ratio/region_mean': s[POLICY_STAT.regionClipped]! / count,
          kl: settings.refLogps === null ? null : s[POLICY_STAT.klSum]! / count,
          entropy: s[POLICY_STAT.entropySum]! / count,
          num_tokens: s[POLICY_STAT.tokens]!,
        },
        nonFinite: firstNonFinite(tokens, seqLogps),
      };
    },
  };
}

/** The GRPO-family policy loss, its per-token log-probs, TRL's metrics and its gradient with respect to the logits. */
export function policyLoss(options: PolicyLossOptions): PolicyLossResult;
export function policyLoss(options: DevicePolicyLossOptions): PolicyLossResult<DeviceTensor>;
export function policyLoss(options: AnyPolicyLossOptions): AnyPolicyLossResult {
  const prepared = preparePolicyLoss(options, 'policyLoss');
  runReleasingOnError(prepared, () => {
    checkNotInFlight(prepared.buffers);
    native().policyLoss(prepared.args);
  });
  return prepared.finish();
}

/** policyLoss on the libuv thread pool; the event loop stays free. Same bits as policyLoss. */
export function policyLossAsync(options: PolicyLossOptions): Promise<PolicyLossResult>;
export function policyLossAsync(options: DevicePolicyLossOptions): Promise<PolicyLossResult<DeviceTensor>>;
export async function policyLossAsync(options: AnyPolicyLossOptions): Promise<AnyPolicyLossResult> {
  const prepared = preparePolicyLoss(options, 'policyLossAsync');
  await runHeldAsync(prepared, () => native().policyLossAsync(prepared.args));
  return prepared.finish();
}
