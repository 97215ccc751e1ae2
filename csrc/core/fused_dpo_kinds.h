/*
 * fused-dpo: the loss kinds and their hyperparameters, and the loss types of fdpo_policy_loss and
 * fdpo_kto_loss; part of the C ABI (fused_dpo.h includes it).
 * Generated from lib/loss-kinds.ts by `npm run generate`: do not edit, change the table instead.
 * Codes and indexes are ABI: they are only ever appended.
 */
#ifndef FUSED_DPO_KINDS_H
#define FUSED_DPO_KINDS_H

typedef enum {
  FDPO_LOSS_SIGMOID = 0,
  FDPO_LOSS_HINGE = 1,
  FDPO_LOSS_IPO = 2,
  FDPO_LOSS_ROBUST = 3,
  FDPO_LOSS_EXO_PAIR = 4,
  FDPO_LOSS_NCA_PAIR = 5,
  FDPO_LOSS_BCO_PAIR = 6,
  FDPO_LOSS_SPPO_HARD = 7,
  FDPO_LOSS_APO_ZERO = 8,
  FDPO_LOSS_APO_DOWN = 9,
  FDPO_LOSS_DISCOPOP = 10,
  FDPO_LOSS_SIGMOID_NORM = 11,
  FDPO_LOSS_AOT = 12,
  FDPO_LOSS_AOT_UNPAIRED = 13,
  FDPO_LOSS_SFT = 14,
  FDPO_LOSS_SIMPO = 15,
  FDPO_LOSS_ORPO = 16,
  FDPO_LOSS_UNLIKELIHOOD = 17,
  FDPO_LOSS_COUNT = 18
} fdpo_loss_kind;

/* Indexes into fdpo_loss_config.params. */
typedef enum {
  FDPO_PARAM_BETA = 0, /* β, the KL penalty (the reward scale); TRL's beta */
  FDPO_PARAM_LABEL_SMOOTHING = 1, /* ε, the probability that a preference label is flipped; TRL's label_smoothing */
  FDPO_PARAM_SIMPO_GAMMA = 2, /* γ, simpo's target reward margin; TRL's simpo_gamma */
  FDPO_PARAM_DISCOPOP_TAU = 3, /* τ, discopop's mixing temperature; TRL's discopop_tau */
  FDPO_PARAM_F_ALPHA_DIVERGENCE_COEF = 4, /* α of fDivergenceType 'alpha_divergence'; TRL's f_alpha_divergence_coef */
  FDPO_PARAM_LENGTH_PENALTY = 5, /* R-DPO's λ: u = βΔ + λ·(N_c − N_r); TRL's null */
  FDPO_PARAM_ALPHA = 6, /* AlphaPO's α of simpo: rewards (1 − p̄^(−α))/α of the length-normalised probability p̄ (0: SimPO); TRL's alpha */
  FDPO_PARAM_UNLIKELIHOOD_ALPHA = 7, /* α, the weight of unlikelihood's term −log(1 − e^{π̄_r}); TRL's null */
  FDPO_PARAM_COUNT = 8
} fdpo_loss_param;

/* fdpo_policy_config.loss_type: TRL's GRPO loss_type, the token weights w_t. */
typedef enum {
  FDPO_POLICY_GRPO = 0, /* w_t = 1 / (S * max(N_s, 1)): the mean over sequences of token means */
  FDPO_POLICY_BNPO = 1, /* w_t = 1 / max(N, 1): the token mean over the batch (N = completion tokens) */
  FDPO_POLICY_DR_GRPO = 2, /* w_t = 1 / (S * max_completion_length) */
  FDPO_POLICY_DAPO = 3, /* w_t = 1 / num_items_in_batch (max(N, 1) when 0) */
  FDPO_POLICY_LOSS_TYPE_COUNT = 4
} fdpo_policy_loss_type;

/* fdpo_kto_config.loss_type: TRL's KTOConfig loss_type. */
typedef enum {
  FDPO_KTO_LOSS_KTO = 0, /* reference point z0 from the KL batch */
  FDPO_KTO_LOSS_APO_ZERO_UNPAIRED = 1, /* z0 = 0, no KL batch */
  FDPO_KTO_LOSS_COUNT = 2
} fdpo_kto_loss_type;

/* A kind's properties, as bits. */
#define FDPO_KIND_NEEDS_REF 1u /* reads ref_chosen and ref_rejected */
#define FDPO_KIND_AVERAGED_SCORES 2u /* scores sequences by their token-mean log-prob */
#define FDPO_KIND_REPORTS_AVERAGED 4u /* rewards and logps metrics on averaged log-probs */
#define FDPO_KIND_COUPLES_BATCH 8u /* a pair's loss depends on the other pairs */
#define FDPO_KIND_PAIR_TERM 16u /* has a pair-local term (loss_math.h pairLoss) */
#define FDPO_KIND_CHOSEN_NLL 32u /* adds the token-mean NLL of the chosen completions */

/* X(kind, name, flags, reads): every kind in code order; reads has bit p set when the kind reads
 * params[p]. */
#define FDPO_LOSS_KIND_TABLE(X) \
  X(FDPO_LOSS_SIGMOID, "sigmoid", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 51u) \
  X(FDPO_LOSS_HINGE, "hinge", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 49u) \
  X(FDPO_LOSS_IPO, "ipo", FDPO_KIND_NEEDS_REF | FDPO_KIND_AVERAGED_SCORES | FDPO_KIND_REPORTS_AVERAGED | FDPO_KIND_PAIR_TERM, 17u) \
  X(FDPO_LOSS_ROBUST, "robust", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 51u) \
  X(FDPO_LOSS_EXO_PAIR, "exo_pair", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 51u) \
  X(FDPO_LOSS_NCA_PAIR, "nca_pair", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 1u) \
  X(FDPO_LOSS_BCO_PAIR, "bco_pair", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 1u) \
  X(FDPO_LOSS_SPPO_HARD, "sppo_hard", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 1u) \
  X(FDPO_LOSS_APO_ZERO, "apo_zero", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 1u) \
  X(FDPO_LOSS_APO_DOWN, "apo_down", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 1u) \
  X(FDPO_LOSS_DISCOPOP, "discopop", FDPO_KIND_NEEDS_REF | FDPO_KIND_PAIR_TERM, 57u) \
  X(FDPO_LOSS_SIGMOID_NORM, "sigmoid_norm", FDPO_KIND_NEEDS_REF | FDPO_KIND_AVERAGED_SCORES | FDPO_KIND_PAIR_TERM, 17u) \
  X(FDPO_LOSS_AOT, "aot", FDPO_KIND_NEEDS_REF | FDPO_KIND_COUPLES_BATCH, 3u) \
  X(FDPO_LOSS_AOT_UNPAIRED, "aot_unpaired", FDPO_KIND_NEEDS_REF | FDPO_KIND_COUPLES_BATCH, 3u) \
  X(FDPO_LOSS_SFT, "sft", FDPO_KIND_COUPLES_BATCH | FDPO_KIND_CHOSEN_NLL, 0u) \
  X(FDPO_LOSS_SIMPO, "simpo", FDPO_KIND_AVERAGED_SCORES | FDPO_KIND_REPORTS_AVERAGED | FDPO_KIND_PAIR_TERM, 71u) \
  X(FDPO_LOSS_ORPO, "orpo", FDPO_KIND_AVERAGED_SCORES | FDPO_KIND_REPORTS_AVERAGED | FDPO_KIND_COUPLES_BATCH | FDPO_KIND_PAIR_TERM | FDPO_KIND_CHOSEN_NLL, 1u) \
  X(FDPO_LOSS_UNLIKELIHOOD, "unlikelihood", FDPO_KIND_AVERAGED_SCORES | FDPO_KIND_PAIR_TERM, 128u) \

/* X(param, name, default): every hyperparameter in index order. */
#define FDPO_PARAM_TABLE(X) \
  X(FDPO_PARAM_BETA, "beta", 0.1) \
  X(FDPO_PARAM_LABEL_SMOOTHING, "labelSmoothing", 0) \
  X(FDPO_PARAM_SIMPO_GAMMA, "simpoGamma", 0.5) \
  X(FDPO_PARAM_DISCOPOP_TAU, "discopopTau", 0.05) \
  X(FDPO_PARAM_F_ALPHA_DIVERGENCE_COEF, "fAlphaDivergenceCoef", 0.5) \
  X(FDPO_PARAM_LENGTH_PENALTY, "lengthPenalty", 0) \
  X(FDPO_PARAM_ALPHA, "alpha", 0) \
  X(FDPO_PARAM_UNLIKELIHOOD_ALPHA, "unlikelihoodAlpha", 1) \

#endif /* FUSED_DPO_KINDS_H */
