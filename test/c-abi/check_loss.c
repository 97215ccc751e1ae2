/*
 * A native trainer's view of fused-dpo: plain C against libfused_dpo and fused_dpo.h, no Node.
 * Reads a case from the file named by argv[1] (int64 rows, vocab, num_seqs; float32 logits;
 * int32 labels; int32 cu_seqlens; float64 ref sums, chosen then rejected), runs the sigmoid loss
 * with beta 0.1 and its gradient, and prints the loss, each sequence's log-prob sum and the
 * gradient, one number a line, then the policy loss (fdpo_policy_loss: grpo, on-policy, advantage
 * 0.5 s - 1 for sequence s, entropy_coef 0.1) and its gradient, for test/c-abi.test.ts to compare
 * with the float64 reference; then checks that malformed calls (sizes that disagree, versioned
 * structs that lie) are refused.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fused_dpo.h"

/* 1 (a failure) unless status is FDPO_ERR_INVALID_ARGUMENT. */
static int expectInvalid(const char* what, int32_t status) {
  if (status == FDPO_ERR_INVALID_ARGUMENT) return 0;
  fprintf(stderr, "%s: status %d, not FDPO_ERR_INVALID_ARGUMENT\n", what, (int)status);
  return 1;
}

static void* readExactly(FILE* f, size_t bytes) {
  void* p = malloc(bytes ? bytes : 1);
  if (!p || fread(p, 1, bytes, f) != bytes) {
    fprintf(stderr, "short input\n");
    exit(2);
  }
  return p;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: check_loss <case file>\n");
    return 2;
  }
  FILE* f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 2;
  }
  int64_t* header = readExactly(f, 3 * sizeof(int64_t));
  const int64_t rows = header[0], vocab = header[1], seqs = header[2], pairs = seqs / 2;
  float* logits = readExactly(f, (size_t)(rows * vocab) * sizeof(float));
  int32_t* labels = readExactly(f, (size_t)rows * sizeof(int32_t));
  int32_t* cu = readExactly(f, (size_t)(seqs + 1) * sizeof(int32_t));
  double* ref = readExactly(f, (size_t)seqs * sizeof(double));
  fclose(f);

  if (fdpo_abi_version() != FDPO_ABI_VERSION) {
    fprintf(stderr, "ABI %d, header %d\n", fdpo_abi_version(), FDPO_ABI_VERSION);
    return 1;
  }
  fdpo_tokens tokens;
  fdpo_tokens_init(&tokens);
  tokens.logits = logits;
  tokens.dtype = FDPO_FLOAT32;
  tokens.rows = rows;
  tokens.vocab = vocab;
  tokens.labels = labels;
  tokens.cu_seqlens = cu;
  tokens.num_seqs = seqs;
  /* The defaults (TRL's: beta 0.1, ...) from the header's table; one sigmoid loss. */
  fdpo_loss_config config;
  fdpo_loss_config_init(&config);
  config.scale = 1.0 / (double)pairs;
  config.ref_chosen = ref;
  config.ref_rejected = ref + pairs;

  double* seqLogps = calloc((size_t)seqs, sizeof(double));
  int32_t* seqCounts = calloc((size_t)seqs, sizeof(int32_t));
  double* pairLosses = calloc((size_t)pairs, sizeof(double));
  double* chosenRewards = calloc((size_t)pairs, sizeof(double));
  double* rejectedRewards = calloc((size_t)pairs, sizeof(double));
  double stats[FDPO_STAT_COUNT];
  float* grad = calloc((size_t)(rows * vocab), sizeof(float));
  fdpo_loss_outputs outputs;
  fdpo_loss_outputs_init(&outputs);
  outputs.seq_logps = seqLogps;
  outputs.seq_counts = seqCounts;
  outputs.pair_losses = pairLosses;
  outputs.chosen_rewards = chosenRewards;
  outputs.rejected_rewards = rejectedRewards;
  outputs.stats = stats;
  outputs.grad = grad;

  char error[256];
  const int32_t status = fdpo_dpo_loss(&tokens, &config, &outputs, 0, error, sizeof error);
  if (status != FDPO_OK) {
    fprintf(stderr, "fdpo_dpo_loss: %d %s\n", (int)status, error);
    return 1;
  }
  const double loss = stats[FDPO_STAT_LOSS];
  printf("%.17g\n", loss);
  for (int64_t s = 0; s < seqs; ++s) printf("%.17g\n", seqLogps[s]);
  for (int64_t i = 0; i < rows * vocab; ++i) printf("%.9g\n", grad[i]);

  /* KTO on the same sequences, unpaired: odd sequences desirable, the ref sums per sequence, a KL
   * batch of two whose mean log-ratio is 0.75 (z0). Prints the loss and z0. */
  uint8_t* desirable = calloc((size_t)seqs, 1);
  for (int64_t s = 0; s < seqs; ++s) desirable[s] = (uint8_t)(s % 2);
  const double klPolicy[2] = {ref[0] + 1.0, ref[1] + 0.5}, klRef[2] = {ref[0], ref[1]};
  fdpo_kto_config kto;
  fdpo_kto_config_init(&kto);
  kto.scale = 1.0 / (double)seqs;
  kto.desirable = desirable;
  kto.ref_logps = ref;
  kto.kl_logps = klPolicy;
  kto.kl_ref_logps = klRef;
  kto.kl_count = 2;
  double* seqLosses = calloc((size_t)seqs, sizeof(double));
  double* rewards = calloc((size_t)seqs, sizeof(double));
  double z0 = 0.0;
  fdpo_kto_outputs ktoOut;
  fdpo_kto_outputs_init(&ktoOut);
  ktoOut.seq_logps = seqLogps;
  ktoOut.seq_counts = seqCounts;
  ktoOut.seq_losses = seqLosses;
  ktoOut.rewards = rewards;
  ktoOut.stats = stats;
  ktoOut.kl = &z0;
  if (fdpo_kto_loss(&tokens, &kto, &ktoOut, 0, error, sizeof error) != FDPO_OK) {
    fprintf(stderr, "fdpo_kto_loss: %s\n", error);
    return 1;
  }
  printf("%.17g\n%.17g\n", stats[FDPO_STAT_LOSS], z0);

  /* The policy loss on the same tokens. */
  double* advantages = calloc((size_t)seqs, sizeof(double));
  for (int64_t q = 0; q < seqs; ++q) advantages[q] = 0.5 * (double)q - 1.0;
  double* tokenLogps = calloc((size_t)rows, sizeof(double));
  double* tokenGrad = calloc((size_t)rows, sizeof(double));
  double policyStats[FDPO_POLICY_STAT_COUNT];
  fdpo_policy_config policy;
  fdpo_policy_config_init(&policy);
  policy.loss_type = FDPO_POLICY_GRPO;
  policy.advantages = advantages;
  policy.entropy_coef = 0.1;
  fdpo_policy_outputs policyOut;
  fdpo_policy_outputs_init(&policyOut);
  policyOut.token_logps = tokenLogps;
  policyOut.token_grad = tokenGrad;
  policyOut.stats = policyStats;
  policyOut.grad = grad;
  if (fdpo_policy_loss(&tokens, &policy, &policyOut, 0, error, sizeof error) != FDPO_OK) {
    fprintf(stderr, "fdpo_policy_loss: %s\n", error);
    return 1;
  }
  printf("%.17g\n", policyStats[FDPO_POLICY_STAT_LOSS]);
  for (int64_t i = 0; i < rows * vocab; ++i) printf("%.9g\n", grad[i]);

  /* Bad calls must come back as a status and a message, not a crash or a read out of bounds
   * (this program also runs under AddressSanitizer). */
  int failures = 0;
  fdpo_tokens bad = tokens;
  bad.rows = rows + 1000000; /* past the labels: must be refused before they are read */
  failures += expectInvalid("rows past cu_seqlens", fdpo_dpo_loss(&bad, &config, &outputs, 0, error, sizeof error));
  bad.rows = INT64_MAX;
  failures += expectInvalid("rows = INT64_MAX", fdpo_dpo_loss(&bad, &config, &outputs, 0, error, sizeof error));
  bad = tokens;
  bad.struct_size = 0;
  failures += expectInvalid("struct_size 0", fdpo_dpo_loss(&bad, &config, &outputs, 0, error, sizeof error));
  fdpo_loss_config badConfig = config;
  badConfig.num_params = FDPO_PARAM_COUNT + 1;
  failures += expectInvalid("num_params past the table", fdpo_dpo_loss(&tokens, &badConfig, &outputs, 0, error, sizeof error));

  /* A caller built against a newer header: a larger struct is fine while the bytes this library
   * does not know are zero, and refused once one is set. */
  struct {
    fdpo_loss_config config;
    double newer_option;
  } newer;
  memset(&newer, 0, sizeof newer);
  newer.config = config;
  newer.config.struct_size = (uint32_t)sizeof newer;
  if (fdpo_dpo_loss(&tokens, &newer.config, &outputs, 0, error, sizeof error) != FDPO_OK) {
    fprintf(stderr, "a larger config with zero extra bytes was refused: %s\n", error);
    failures++;
  }
  newer.newer_option = 1.0;
  failures += expectInvalid("an option this library does not know", fdpo_dpo_loss(&tokens, &newer.config, &outputs, 0, error, sizeof error));

  /* A caller that fills fewer hyperparameters gets the defaults for the others. */
  badConfig = config;
  badConfig.num_params = 0;
  if (fdpo_dpo_loss(&tokens, &badConfig, &outputs, 0, error, sizeof error) != FDPO_OK || stats[FDPO_STAT_LOSS] != loss) {
    fprintf(stderr, "num_params 0 did not give the defaults' loss\n");
    failures++;
  }

  fdpo_kto_config badKto = kto;
  badKto.kl_count = 0;
  failures += expectInvalid("kto without its KL batch", fdpo_kto_loss(&tokens, &badKto, &ktoOut, 0, error, sizeof error));
  badKto = kto;
  badKto.struct_size = 0;
  failures += expectInvalid("kto struct_size 0", fdpo_kto_loss(&tokens, &badKto, &ktoOut, 0, error, sizeof error));
  desirable[1] = 2;
  failures += expectInvalid("a desirable flag of 2", fdpo_kto_loss(&tokens, &kto, &ktoOut, 0, error, sizeof error));
  desirable[1] = 1;
  badKto = kto;
  badKto.loss_type = FDPO_KTO_LOSS_APO_ZERO_UNPAIRED;
  failures += expectInvalid("apo_zero_unpaired with a KL batch", fdpo_kto_loss(&tokens, &badKto, &ktoOut, 0, error, sizeof error));
  ktoOut.kl = seqLosses; /* overlaps an output */
  failures += expectInvalid("kl overlapping seq_losses", fdpo_kto_loss(&tokens, &kto, &ktoOut, 0, error, sizeof error));
  ktoOut.kl = &z0;
  fdpo_tokens ldTokens = tokens;
  ldTokens.ld_weighting = 1; /* LD-DPO pairs sequences: KTO's are unpaired */
  ldTokens.ld_alpha = 0.5;
  failures += expectInvalid("kto with ld_weighting", fdpo_kto_loss(&ldTokens, &kto, &ktoOut, 0, error, sizeof error));

  /* Callers from before LD-DPO and per-token references: structs that end before those fields,
   * with garbage after them, which the library must neither read nor write. */
  {
    unsigned char oldTokens[sizeof(fdpo_tokens)], oldConfig[sizeof(fdpo_loss_config)], oldOutputs[sizeof(fdpo_loss_outputs)];
    memset(oldTokens, 0xff, sizeof oldTokens);
    memset(oldConfig, 0xff, sizeof oldConfig);
    memset(oldOutputs, 0xff, sizeof oldOutputs);
    memcpy(oldTokens, &tokens, offsetof(fdpo_tokens, ld_alpha));
    memcpy(oldConfig, &config, offsetof(fdpo_loss_config, ref_token_logps));
    memcpy(oldOutputs, &outputs, offsetof(fdpo_loss_outputs, seq_plain_grad));
    ((fdpo_tokens*)oldTokens)->struct_size = (uint32_t)offsetof(fdpo_tokens, ld_alpha);
    ((fdpo_loss_config*)oldConfig)->struct_size = (uint32_t)offsetof(fdpo_loss_config, ref_token_logps);
    ((fdpo_loss_outputs*)oldOutputs)->struct_size = (uint32_t)offsetof(fdpo_loss_outputs, seq_plain_grad);
    if (fdpo_dpo_loss((fdpo_tokens*)oldTokens, (fdpo_loss_config*)oldConfig, (fdpo_loss_outputs*)oldOutputs, 0, error,
                      sizeof error) != FDPO_OK ||
        stats[FDPO_STAT_LOSS] != loss) {
      fprintf(stderr, "a caller from before ld_alpha/ref_token_logps/seq_plain_grad did not get the same loss: %s\n", error);
      failures++;
    }
  }

  /* LD-DPO: alpha 1 is the plain loss (to rounding), alpha 0.5 another; seq_plain_grad is written.
   * The last row of sequence 0 is ignored here so that its pair's completions differ in length. */
  {
    const int64_t steps = rows / seqs;
    const int32_t saved = labels[steps - 1];
    labels[steps - 1] = -100;
    double plainLoss = 0.0;
    if (fdpo_dpo_loss(&tokens, &config, &outputs, 0, error, sizeof error) != FDPO_OK) {
      fprintf(stderr, "the plain loss with a shorter chosen sequence failed: %s\n", error);
      failures++;
    }
    plainLoss = stats[FDPO_STAT_LOSS];
    fdpo_tokens ld = tokens;
    ld.ld_weighting = 1;
    ld.ld_alpha = 1.0;
    double* plainGrad = calloc((size_t)seqs, sizeof(double));
    for (int64_t s = 0; s < seqs; ++s) plainGrad[s] = 42.0;
    fdpo_loss_outputs withPlain = outputs;
    withPlain.seq_plain_grad = plainGrad;
    int32_t status = fdpo_dpo_loss(&ld, &config, &withPlain, 0, error, sizeof error);
    if (status != FDPO_OK || fabs(stats[FDPO_STAT_LOSS] - plainLoss) > 1e-12 * fabs(plainLoss) || plainGrad[0] != 0.0) {
      fprintf(stderr, "ld_alpha 1: status %d, loss %.17g vs %.17g, seq_plain_grad[0] %g: %s\n", (int)status,
              stats[FDPO_STAT_LOSS], plainLoss, plainGrad[0], error);
      failures++;
    }
    ld.ld_alpha = 0.5;
    status = fdpo_dpo_loss(&ld, &config, &withPlain, 0, error, sizeof error);
    if (status != FDPO_OK || stats[FDPO_STAT_LOSS] == plainLoss) {
      fprintf(stderr, "ld_alpha 0.5: status %d, the loss did not change: %s\n", (int)status, error);
      failures++;
    }
    double* ldLogps = calloc((size_t)seqs, sizeof(double));
    int32_t* ldCounts = calloc((size_t)seqs, sizeof(int32_t));
    status = fdpo_sequence_logps(&ld, 0, ldLogps, ldCounts, 0, error, sizeof error);
    if (status != FDPO_OK || ldLogps[0] != seqLogps[0]) {
      fprintf(stderr, "the pair-aware sequence logps (%d) differ from the loss's scores: %.17g vs %.17g\n", (int)status,
              ldLogps[0], seqLogps[0]);
      failures++;
    }
    ld.ld_alpha = 1.5;
    failures += expectInvalid("ld_alpha 1.5", fdpo_dpo_loss(&ld, &config, &outputs, 0, error, sizeof error));
    ld.ld_alpha = 0.5;
    ld.ld_weighting = 2;
    failures += expectInvalid("ld_weighting 2", fdpo_dpo_loss(&ld, &config, &outputs, 0, error, sizeof error));
    fdpo_loss_config both = config;
    both.ref_token_logps = ref; /* rows >= 2B entries: only the both-given check matters here */
    failures += expectInvalid("ref_token_logps with ref_chosen", fdpo_dpo_loss(&tokens, &both, &outputs, 0, error, sizeof error));
    free(plainGrad);
    free(ldLogps);
    free(ldCounts);
    labels[steps - 1] = saved;
  }

  fdpo_policy_config badPolicy = policy;
  badPolicy.loss_type = FDPO_POLICY_LOSS_TYPE_COUNT;
  failures += expectInvalid("an unknown policy loss_type", fdpo_policy_loss(&tokens, &badPolicy, &policyOut, 0, error, sizeof error));
  badPolicy = policy;
  badPolicy.beta = 0.1; /* without ref_logps */
  failures += expectInvalid("beta without ref_logps", fdpo_policy_loss(&tokens, &badPolicy, &policyOut, 0, error, sizeof error));
  badPolicy = policy;
  badPolicy.advantages = NULL;
  failures += expectInvalid("NULL advantages", fdpo_policy_loss(&tokens, &badPolicy, &policyOut, 0, error, sizeof error));
  badPolicy = policy;
  badPolicy.loss_type = FDPO_POLICY_DR_GRPO; /* max_completion_length 0 */
  failures += expectInvalid("dr_grpo without max_completion_length", fdpo_policy_loss(&tokens, &badPolicy, &policyOut, 0, error, sizeof error));
  badPolicy = policy;
  badPolicy.struct_size = 8;
  failures += expectInvalid("a policy config struct_size too small", fdpo_policy_loss(&tokens, &badPolicy, &policyOut, 0, error, sizeof error));
  fdpo_policy_outputs badPolicyOut = policyOut;
  badPolicyOut.token_grad = tokenLogps + 1; /* overlaps token_logps */
  failures += expectInvalid("overlapping policy outputs", fdpo_policy_loss(&tokens, &policy, &badPolicyOut, 0, error, sizeof error));
  badPolicyOut = policyOut;
  badPolicyOut.stats = NULL;
  failures += expectInvalid("NULL policy stats", fdpo_policy_loss(&tokens, &policy, &badPolicyOut, 0, error, sizeof error));
  struct {
    fdpo_policy_config config;
    double newer_option;
  } newerPolicy;
  memset(&newerPolicy, 0, sizeof newerPolicy);
  newerPolicy.config = policy;
  newerPolicy.config.struct_size = (uint32_t)sizeof newerPolicy;
  if (fdpo_policy_loss(&tokens, &newerPolicy.config, &policyOut, 0, error, sizeof error) != FDPO_OK) {
    fprintf(stderr, "a larger policy config with zero extra bytes was refused: %s\n", error);
    failures++;
  }
  newerPolicy.newer_option = 1.0;
  failures += expectInvalid("a policy option this library does not know",
                            fdpo_policy_loss(&tokens, &newerPolicy.config, &policyOut, 0, error, sizeof error));

  labels[0] = (int32_t)vocab;
  failures += expectInvalid("an out-of-range label", fdpo_dpo_loss(&tokens, &config, &outputs, 0, error, sizeof error));
  return failures == 0 ? 0 : 1;
}
