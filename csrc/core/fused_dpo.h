/*
 * fused-dpo C ABI: the DPO-family loss and its logits gradient, for any caller (the Node
 * binding, C/C++ trainers, Rust, Python ctypes). Plain C, no exceptions cross it: every entry
 * point that can fail returns a status code (fdpo_status), and those that take an error buffer
 * write a message into it on failure.
 *
 * Layout: logits are R rows x V columns, row-major, in fp32, bf16 or fp16. Sequences are row
 * ranges given by cu_seqlens[num_seqs + 1] (sequence s = rows cu_seqlens[s]..cu_seqlens[s+1]-1).
 * For the loss, num_seqs = 2B: sequences 0..B-1 are the chosen completions, B..2B-1 the
 * rejected ones. The math every backend meets is SPEC.md at the package root.
 *
 * How the ABI grows (from ABI 2 on). Every struct a caller passes or receives starts with
 * `uint32_t struct_size`, which the caller sets to sizeof the struct as its header declares it
 * (the *_init functions below do it, zero everything else and set the defaults). Fields are only
 * ever appended, and a new field's zero means "as before" (off, or the default). So:
 *   - a caller built against an older header passes a smaller struct_size: the library reads
 *     only those bytes and takes zero for the fields after them;
 *   - a caller built against a newer header passes a larger struct_size: the library accepts it
 *     when every byte past the end it knows is zero, and otherwise refuses the call with
 *     FDPO_ERR_INVALID_ARGUMENT naming the struct (an option this library does not have is
 *     never ignored);
 *   - structs the library writes (fdpo_cuda_status, fdpo_cuda_device_info) are written only up
 *     to the caller's struct_size.
 * Loss hyperparameters travel in fdpo_loss_config.params, indexed by fdpo_loss_param
 * (fused_dpo_kinds.h), with num_params saying how many the caller filled; the library takes the
 * defaults for the others and refuses a num_params larger than it knows.
 * FDPO_ABI_VERSION changes only when this contract breaks; fdpo_abi_version() reports it.
 */
#ifndef FUSED_DPO_H
#define FUSED_DPO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fused_dpo_kinds.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FDPO_ABI_VERSION 2

/* The exported entry points (the library is built with hidden visibility otherwise). */
#if defined(FDPO_BUILDING) && defined(__GNUC__)
#define FDPO_API __attribute__((visibility("default")))
#else
#define FDPO_API
#endif
#define FDPO_MAX_LOSSES 8
/* Room for loss hyperparameters in fdpo_loss_config.params (FDPO_PARAM_COUNT are defined). */
#define FDPO_MAX_PARAMS 16

typedef enum {
  FDPO_OK = 0,
  FDPO_ERR_INVALID_ARGUMENT = 1,
  FDPO_ERR_OUT_OF_MEMORY = 2,
  FDPO_ERR_INTERNAL = 3,
  FDPO_ERR_UNAVAILABLE = 4, /* the CUDA backend is not in this build, or no device answers */
  FDPO_ERR_DEVICE = 5       /* a CUDA call failed (the message names it) */
} fdpo_status;

typedef enum { FDPO_FLOAT32 = 0, FDPO_BFLOAT16 = 1, FDPO_FLOAT16 = 2 } fdpo_dtype;

/* The loss kinds (fdpo_loss_kind) are in fused_dpo_kinds.h, generated from lib/loss-kinds.ts. */

/* The token-level input: what sequenceLogps needs, and the first half of the loss input. */
typedef struct {
  uint32_t struct_size;      /* sizeof(fdpo_tokens) */
  const void* logits;        /* rows * vocab elements of dtype */
  int32_t dtype;             /* fdpo_dtype */
  int64_t rows;
  int64_t vocab;
  const int32_t* labels;     /* rows; each in [0, vocab) or == ignore_index */
  const int32_t* cu_seqlens; /* num_seqs + 1, non-decreasing, from 0 to rows */
  int64_t num_seqs;
  int32_t ignore_index;
  /*
   * Model-head transforms (appended in ABI 2; 0 = off), applied to every logit of a scored row in
   * this order (TRL's): z*logit_scale (Cohere), then softcap*tanh(z/softcap) (Gemma 2/3), then
   * z/temperature (TRL's GRPO and online trainers). The log-softmax, every metric and the gradient
   * are those of the transformed logits; the gradient is with respect to the raw ones (the chain
   * rule: d/dz of the transformed logit times onehot - p), so the caller never materialises the
   * transformed logits. Each, when not 0, must be finite and > 0. (doubles: the first appended
   * field must not start in the padding after ignore_index, which older callers may not zero.)
   */
  double logit_scale;
  double softcap;
  double temperature;
  /*
   * LD-DPO (TRL's ld_alpha; appended after ABI 2, ld_weighting 0 = off, 1 = on): the num_seqs = 2B
   * sequences are pairs (0..B-1 chosen, B..2B-1 rejected), and each sequence's log-prob sum weighs
   * its first min(N_c, N_r) completion tokens (non-ignored labels, counted in order within the
   * sequence) by 1 and the later ones by ld_alpha, in [0, 1]. The counts stay N_s (averaged scores
   * divide the weighted sum by N_s). fdpo_sequence_logps then gives the reference the same weights;
   * fdpo_dpo_loss weighs the policy's scores and, through them, the gradient (SPEC.md, "LD-DPO").
   */
  double ld_alpha;
  int32_t ld_weighting;
} fdpo_tokens;

typedef struct {
  uint32_t struct_size;                  /* sizeof(fdpo_loss_config) */
  int32_t num_losses;                    /* 1..FDPO_MAX_LOSSES */
  int32_t kinds[FDPO_MAX_LOSSES];        /* fdpo_loss_kind */
  double weights[FDPO_MAX_LOSSES];
  int32_t num_params;                    /* entries of params the caller filled, <= FDPO_PARAM_COUNT */
  double params[FDPO_MAX_PARAMS];        /* indexed by fdpo_loss_param */
  double scale;                          /* 1/B (mean), 1 (sum) or 1/normalizer */
  const double* ref_chosen;              /* B reference sums, or NULL when no loss needs them */
  const double* ref_rejected;
  int32_t f_divergence;                  /* fdpo_f_divergence: how the log-ratios make the margin (0: DPO's) */
  /*
   * WPO (TRL's use_weighting; appended in ABI 2, 0 = off, 1 = on): pair i's loss and its gradient
   * times min(1, w_c*w_r), w_s = exp(mean over s's completion tokens of (logp - log sum_v p_v^2)),
   * detached (no gradient flows through w). Pass A sums exp(2(z - m)) from the exps it already
   * computes: no further read of the logits.
   */
  int32_t use_weighting;
  /*
   * Per-token reference log-probs (appended after ABI 2; NULL = off): rows entries (read only where
   * the label is not ignore_index), instead of ref_chosen/ref_rejected (which must then be NULL).
   * Each sequence's log-ratio is accumulated in fp64 as sum_t w_t (logp_t - ref_t), with LD-DPO's
   * weights w_t (1 without it), and the reference score as sum_t w_t ref_t.
   */
  const double* ref_token_logps;
} fdpo_loss_config;

/* f-DPO: the divergence whose f' turns the log-ratios a = pi_c - rho_c, b = pi_r - rho_r into the
 * margin the losses of Delta read (TRL's f_divergence_type; SPEC.md, "f-divergences"). */
typedef enum {
  FDPO_F_REVERSE_KL = 0,       /* Delta = a - b (DPO) */
  FDPO_F_FORWARD_KL = 1,       /* Delta = e^-b - e^-a (alpha_divergence at alpha = 1) */
  FDPO_F_JS_DIVERGENCE = 2,    /* Delta = (a - b) - (softplus(a) - softplus(b)) */
  FDPO_F_ALPHA_DIVERGENCE = 3, /* Delta = (e^(-alpha b) - e^(-alpha a)) / alpha, exponents capped */
  FDPO_F_COUNT
} fdpo_f_divergence;

/* Indexes into fdpo_loss_outputs.stats. */
typedef enum {
  FDPO_STAT_LOSS = 0,
  FDPO_STAT_CHOSEN_LOGIT_SUM,    /* sum over chosen completion tokens of the row's mean logit */
  FDPO_STAT_CHOSEN_TOKENS,
  FDPO_STAT_REJECTED_LOGIT_SUM,
  FDPO_STAT_REJECTED_TOKENS,
  FDPO_STAT_ENTROPY_SUM,         /* over all completion tokens */
  FDPO_STAT_CHOSEN_CORRECT,      /* chosen completion tokens whose argmax is the label */
  FDPO_STAT_COUNT
} fdpo_stat;

typedef struct {
  uint32_t struct_size;     /* sizeof(fdpo_loss_outputs) */
  double* seq_logps;        /* num_seqs: policy sums pi_s */
  int32_t* seq_counts;      /* num_seqs: N_s */
  double* seq_grad;         /* num_seqs: G_s = dloss/dpi_s, or NULL */
  double* pair_losses;      /* B */
  double* chosen_rewards;   /* B */
  double* rejected_rewards; /* B */
  double* stats;            /* FDPO_STAT_COUNT */
  void* grad;               /* rows * vocab of the logits dtype (may equal logits: in place), or NULL */
  /*
   * Deferred scale, or NULL. When given (with grad), pass A also writes the UNSCALED onehot - p
   * into grad and there is no pass B (1 read + 1 write of the logits in all); row_scale[r] then
   * receives G of row r's sequence (0 for ignored rows), and the gradient is row_scale[r] * grad[r, :].
   * For trainers that apply the scale on the hidden-size side of the next matmul, where it is free.
   */
  float* row_scale;         /* rows */
  /*
   * Appended after ABI 2, or NULL: d loss / d(plain sum of s's log-probs), num_seqs. Non-zero only
   * with LD-DPO weighting and an NLL term (sft, orpo), which reads the unweighted chosen sums as TRL
   * does; seq_grad is then d loss / d(the weighted score), and row r's gradient scale is
   * seq_grad[s] * w_r + seq_plain_grad[s]. Without LD-DPO it is all zeros (seq_grad holds everything).
   */
  double* seq_plain_grad;
} fdpo_loss_outputs;

/*
 * The online RL loss of TRL's GRPO family (fdpo_policy_loss; SPEC.md, "Policy loss"). Per completion
 * token t (label not ignore_index) of sequence s, with logp_t from the logits:
 *   r_t = exp(logp_t - old_t), A_t the advantage,
 *   l_t = -min(r_t A_t, clip(r_t, 1 - epsilon, 1 + epsilon_high) A_t) + beta k3_t - entropy_coef H_t,
 *   k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1, H_t the token distribution's entropy,
 * and loss = sum_t w_t l_t with TRL's loss_type weights w_t (below). old_logps NULL: on-policy
 * (old_t = logp_t detached: r_t = 1, its gradient kept).
 */
/* fdpo_policy_loss_type (FDPO_POLICY_GRPO, _BNPO, _DR_GRPO, _DAPO): fused_dpo_kinds.h. */

typedef struct {
  uint32_t struct_size;             /* sizeof(fdpo_policy_config) */
  int32_t loss_type;                /* fdpo_policy_loss_type */
  const double* advantages;         /* num_seqs, or rows when advantages_per_token */
  int32_t advantages_per_token;     /* 0 or 1 */
  const double* old_logps;          /* rows, or NULL: on-policy */
  const double* ref_logps;          /* rows, or NULL (beta must then be 0) */
  double beta;                      /* KL coefficient, >= 0 */
  double epsilon;                   /* lower clip, in [0, 1] */
  double epsilon_high;              /* upper clip, >= 0 */
  double entropy_coef;              /* entropy bonus: the loss minus entropy_coef * sum_t w_t H_t */
  int64_t max_completion_length;    /* dr_grpo's L, >= 1 (read only by dr_grpo) */
  double num_items_in_batch;        /* dapo's divisor, > 0, or 0: this call's completion tokens */
} fdpo_policy_config;

/* Indexes into fdpo_policy_outputs.stats (sums over completion tokens; divide by TOKENS for TRL's means). */
typedef enum {
  FDPO_POLICY_STAT_LOSS = 0,
  FDPO_POLICY_STAT_TOKENS,         /* completion tokens N */
  FDPO_POLICY_STAT_LOW_CLIPPED,    /* r_t < 1 - epsilon and A_t < 0 */
  FDPO_POLICY_STAT_HIGH_CLIPPED,   /* r_t > 1 + epsilon_high and A_t > 0 */
  FDPO_POLICY_STAT_REGION_CLIPPED, /* either */
  FDPO_POLICY_STAT_KL_SUM,         /* sum of k3_t (0 without ref_logps) */
  FDPO_POLICY_STAT_ENTROPY_SUM,
  FDPO_POLICY_STAT_COUNT
} fdpo_policy_stat;

typedef struct {
  uint32_t struct_size; /* sizeof(fdpo_policy_outputs) */
  double* token_logps;  /* rows: logp_t (0 where ignored), or NULL */
  double* token_grad;   /* rows: dloss/dlogp_t = w_t dl_t/dlogp_t without the entropy term (0 where ignored), or NULL */
  double* stats;        /* FDPO_POLICY_STAT_COUNT */
  void* grad;           /* rows * vocab of the logits dtype (may equal logits: in place), or NULL */
} fdpo_policy_outputs;

/* Version of this ABI (FDPO_ABI_VERSION) the library was built with. */
FDPO_API int32_t fdpo_abi_version(void);

/* Name of the SIMD level the CPU backend dispatched to ("avx512", "avx2" or "baseline"). */
FDPO_API const char* fdpo_cpu_simd_level(void);

/*
 * Diagnostics: force the CPU kernels to "avx512", "avx2" or "baseline" (fails when the CPU
 * cannot run them; FDPO_SIMD in the environment does the same at first use), and run the
 * kernels' vectorised exp over n floats (for accuracy tests).
 */
FDPO_API int32_t fdpo_cpu_force_simd_level(const char* name, char* error, size_t error_size);
FDPO_API int32_t fdpo_cpu_exp(const float* in, float* out, int64_t n);

/*
 * The ceilings the benchmark compares against, on the backend's threads: copy `bytes` from src
 * to dst (memory bandwidth), and evaluate the kernels' exp `count` times on cache-resident data
 * (returns a checksum so the work cannot be elided).
 */
FDPO_API int32_t fdpo_cpu_copy(void* dst, const void* src, int64_t bytes, int32_t threads);
FDPO_API double fdpo_cpu_exp_throughput(int64_t count, int32_t threads);

/*
 * Forward only, one read of the logits: per-sequence log-prob sums (or averages) and counts.
 * threads <= 0 means all cores; more threads than cores are not started (the results are the same
 * for any count).
 */
FDPO_API int32_t fdpo_sequence_logps(const fdpo_tokens* tokens, int32_t average, double* logps, int32_t* counts,
                            int32_t threads, char* error, size_t error_size);

/*
 * The loss, its metrics and (when outputs->grad is not NULL) the gradient with respect to the
 * logits: one read for the forward, one read and one write for the gradient.
 */
FDPO_API int32_t fdpo_dpo_loss(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                      int32_t threads, char* error, size_t error_size);

/*
 * The policy loss (fdpo_policy_config above), TRL's metrics as sums, the per-token log-probs and
 * (when outputs->grad is not NULL) the gradient with respect to the logits, entropy bonus
 * included: one read for the forward, one read and one write for the gradient.
 */
FDPO_API int32_t fdpo_policy_loss(const fdpo_tokens* tokens, const fdpo_policy_config* config,
                                  fdpo_policy_outputs* outputs, int32_t threads, char* error, size_t error_size);

/*
 * The same results computed the way a direct port would: log-softmax written to a full
 * rows x vocab float32 buffer, then gathered, summed, the loss, and the backward from that
 * buffer. Scalar code, for benchmarks (what fusion buys); every other argument as fdpo_dpo_loss.
 */
FDPO_API int32_t fdpo_dpo_loss_unfused(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                              int32_t threads, char* error, size_t error_size);

/*
 * The CUDA backend. Every build has these functions; without CUDA they report
 * FDPO_ERR_UNAVAILABLE (and fdpo_cuda_get_status says why).
 */
typedef struct {
  uint32_t struct_size;    /* sizeof(fdpo_cuda_status), set by the caller */
  int32_t compiled;        /* 1 when this library contains the CUDA backend */
  int32_t available;       /* 1 when at least one device answered */
  int32_t device_count;
  int32_t runtime_version; /* CUDA runtime linked in, e.g. 13000 (0 when not compiled) */
  int32_t driver_version;  /* CUDA version the driver supports (0 when there is no driver) */
  char reason[256];        /* when not available: why */
} fdpo_cuda_status;

typedef struct {
  uint32_t struct_size;      /* sizeof(fdpo_cuda_device_info), set by the caller */
  char name[256];
  int32_t major, minor;      /* compute capability */
  int64_t total_memory;      /* bytes */
  int32_t multiprocessors;
} fdpo_cuda_device_info;

FDPO_API int32_t fdpo_cuda_get_status(fdpo_cuda_status* out);
FDPO_API int32_t fdpo_cuda_get_device(int32_t device, fdpo_cuda_device_info* out, char* error, size_t error_size);

/* Device memory (cudaMalloc / cudaFree), and a copy in any direction (host or device pointers,
 * synchronous with respect to the host). */
FDPO_API int32_t fdpo_cuda_alloc(int32_t device, int64_t bytes, void** out, char* error, size_t error_size);
FDPO_API int32_t fdpo_cuda_free(int32_t device, void* pointer, char* error, size_t error_size);
FDPO_API int32_t fdpo_cuda_copy(int32_t device, void* dst, const void* src, int64_t bytes, char* error,
                                size_t error_size);

/* FDPO_OK when [pointer, pointer + bytes) lies inside one allocation of device memory (or managed
 * memory) of `device`; else FDPO_ERR_INVALID_ARGUMENT and why. For callers that take device
 * addresses from untrusted code (the Node binding checks every DeviceTensor with it). */
FDPO_API int32_t fdpo_cuda_check_device_buffer(const void* pointer, int64_t bytes, int32_t device, char* error,
                                               size_t error_size);

/* Where a CUDA call runs. */
typedef struct {
  uint32_t struct_size; /* sizeof(fdpo_cuda_launch) */
  int32_t device;
  void* stream;        /* a cudaStream_t, or NULL for the default stream */
  float* timings_ms;   /* NULL, or 3 floats: pass A, the reduce, pass B (CUDA events; 0 when not run) */
} fdpo_cuda_launch;

/*
 * fdpo_sequence_logps and fdpo_dpo_loss on a GPU, with the same arguments and results. logits,
 * labels, grad and row_scale may be device or host memory (host ones are copied in and out);
 * cu_seqlens, the reference sums and every other output are host memory. Device pointers are
 * trusted to hold what the shapes say. The call returns when its results are on the host and the
 * gradient is written.
 */
FDPO_API int32_t fdpo_cuda_sequence_logps(const fdpo_tokens* tokens, int32_t average, double* logps, int32_t* counts,
                                          const fdpo_cuda_launch* launch, char* error, size_t error_size);
FDPO_API int32_t fdpo_cuda_dpo_loss(const fdpo_tokens* tokens, const fdpo_loss_config* config,
                                    fdpo_loss_outputs* outputs, const fdpo_cuda_launch* launch, char* error,
                                    size_t error_size);

/* fdpo_policy_loss on a GPU; logits, labels and grad may be device or host memory, every other
 * array is host memory. */
FDPO_API int32_t fdpo_cuda_policy_loss(const fdpo_tokens* tokens, const fdpo_policy_config* config,
                                       fdpo_policy_outputs* outputs, const fdpo_cuda_launch* launch, char* error,
                                       size_t error_size);

/* The device's copy bandwidth (bytes read + written per second by cudaMemcpy device to device),
 * the ceiling the kernels are measured against. */
FDPO_API int32_t fdpo_cuda_copy_bandwidth(int32_t device, int64_t bytes, int32_t iterations, double* bytes_per_second,
                                          char* error, size_t error_size);

/*
 * Initialisers, inline so they use the caller's own header: struct_size, zeros, and for the
 * config one sigmoid loss of weight 1, every hyperparameter at its default and scale 1.
 */
static inline void fdpo_tokens_init(fdpo_tokens* t) {
  memset(t, 0, sizeof *t);
  t->struct_size = (uint32_t)sizeof *t;
  t->ignore_index = -100;
}

static inline void fdpo_loss_config_init(fdpo_loss_config* c) {
  memset(c, 0, sizeof *c);
  c->struct_size = (uint32_t)sizeof *c;
  c->num_losses = 1;
  c->kinds[0] = FDPO_LOSS_SIGMOID;
  c->weights[0] = 1.0;
  c->num_params = FDPO_PARAM_COUNT;
#define FDPO_SET_DEFAULT_(param, name, value) c->params[param] = (value);
  FDPO_PARAM_TABLE(FDPO_SET_DEFAULT_)
#undef FDPO_SET_DEFAULT_
  c->scale = 1.0;
}

static inline void fdpo_loss_outputs_init(fdpo_loss_outputs* o) {
  memset(o, 0, sizeof *o);
  o->struct_size = (uint32_t)sizeof *o;
}

/* The policy config's defaults: dapo, epsilon = epsilon_high = 0.2 (TRL's), beta 0, no entropy bonus. */
static inline void fdpo_policy_config_init(fdpo_policy_config* c) {
  memset(c, 0, sizeof *c);
  c->struct_size = (uint32_t)sizeof *c;
  c->loss_type = FDPO_POLICY_DAPO;
  c->epsilon = 0.2;
  c->epsilon_high = 0.2;
}

static inline void fdpo_policy_outputs_init(fdpo_policy_outputs* o) {
  memset(o, 0, sizeof *o);
  o->struct_size = (uint32_t)sizeof *o;
}

static inline void fdpo_cuda_launch_init(fdpo_cuda_launch* l) {
  memset(l, 0, sizeof *l);
  l->struct_size = (uint32_t)sizeof *l;
}

/* The loss kinds this library was built with: name, flags (FDPO_KIND_*) and the hyperparameters
 * it reads (bit p for params[p]); FDPO_ERR_INVALID_ARGUMENT for a kind it does not know. */
FDPO_API int32_t fdpo_loss_kind_info(int32_t kind, const char** name, uint32_t* flags, uint32_t* reads);
/* The hyperparameters this library knows: name and default; FDPO_ERR_INVALID_ARGUMENT past the last. */
FDPO_API int32_t fdpo_loss_param_info(int32_t param, const char** name, double* default_value);

/*
 * KTO (TRL's KTOTrainer; SPEC.md, "KTO"): unpaired sequences, each desirable or not. Sequence s
 * (any num_seqs >= 1) has the log-ratio x_s = pi_s - ref_logps[s] and, for loss_type
 * FDPO_KTO_LOSS_KTO, the loss desirable_weight*(1 - sig(beta*(x_s - z0))) when desirable, else
 * undesirable_weight*(1 - sig(beta*(z0 - x_s))), with the detached reference point
 * z0 = max(0, mean over the KL batch of (kl_logps[j] - kl_ref_logps[j])); for
 * FDPO_KTO_LOSS_APO_ZERO_UNPAIRED, desirable_weight*(1 - sig(beta*x_s)) or
 * undesirable_weight*sig(beta*x_s), and no KL batch (z0 = 0). The loss is scale times the sum over
 * sequences (TRL's mean over desirable and undesirable together: scale = 1/num_seqs).
 */
/* fdpo_kto_loss_type (FDPO_KTO_LOSS_KTO, _APO_ZERO_UNPAIRED): fused_dpo_kinds.h. */

typedef struct {
  uint32_t struct_size;        /* sizeof(fdpo_kto_config) */
  int32_t loss_type;           /* fdpo_kto_loss_type */
  double beta;                 /* finite, > 0 (TRL's default 0.1) */
  double desirable_weight;     /* finite, >= 0 (TRL's default 1) */
  double undesirable_weight;   /* finite, >= 0 (TRL's default 1) */
  double scale;                /* 1/num_seqs (mean), 1 (sum) or 1/normalizer */
  const uint8_t* desirable;    /* num_seqs flags, each 0 or 1 (TRL's label) */
  const double* ref_logps;     /* num_seqs reference sums */
  const double* kl_logps;      /* kl_count policy sums over the KL batch (detached), NULL for apo_zero_unpaired */
  const double* kl_ref_logps;  /* kl_count reference sums over the KL batch */
  int64_t kl_count;            /* >= 1 for kto, 0 for apo_zero_unpaired */
} fdpo_kto_config;

typedef struct {
  uint32_t struct_size;  /* sizeof(fdpo_kto_outputs) */
  double* seq_logps;     /* num_seqs: pi_s */
  int32_t* seq_counts;   /* num_seqs: N_s */
  double* seq_grad;      /* num_seqs: G_s = dloss/dpi_s, or NULL */
  double* seq_losses;    /* num_seqs: each sequence's weighted loss (before scale) */
  double* rewards;       /* num_seqs: beta * x_s */
  double* stats;         /* FDPO_STAT_COUNT, as fdpo_dpo_loss's with chosen = desirable, rejected = undesirable */
  double* kl;            /* 1: the reference point z0 used (0 for apo_zero_unpaired) */
  void* grad;            /* as fdpo_loss_outputs.grad */
  float* row_scale;      /* as fdpo_loss_outputs.row_scale (the deferred scale) */
} fdpo_kto_outputs;

/* The KTO loss, its metrics and (when outputs->grad is not NULL) its gradient: the same passes as
 * fdpo_dpo_loss (model-head transforms included), another reduce. */
FDPO_API int32_t fdpo_kto_loss(const fdpo_tokens* tokens, const fdpo_kto_config* config, fdpo_kto_outputs* outputs,
                               int32_t threads, char* error, size_t error_size);
FDPO_API int32_t fdpo_cuda_kto_loss(const fdpo_tokens* tokens, const fdpo_kto_config* config,
                                    fdpo_kto_outputs* outputs, const fdpo_cuda_launch* launch, char* error,
                                    size_t error_size);

/* TRL's defaults: kto, beta 0.1, both weights 1, scale 1. */
static inline void fdpo_kto_config_init(fdpo_kto_config* c) {
  memset(c, 0, sizeof *c);
  c->struct_size = (uint32_t)sizeof *c;
  c->loss_type = FDPO_KTO_LOSS_KTO;
  c->beta = 0.1;
  c->desirable_weight = 1.0;
  c->undesirable_weight = 1.0;
  c->scale = 1.0;
}

static inline void fdpo_kto_outputs_init(fdpo_kto_outputs* o) {
  memset(o, 0, sizeof *o);
  o->struct_size = (uint32_t)sizeof *o;
}

#ifdef __cplusplus
}
#endif

#endif /* FUSED_DPO_H */
