/*
 * A native trainer's view of fused-dpo: plain C against libfused_dpo and fused_dpo.h, no Node.
 * Reads a case from the file named by argv[1] (int64 rows, vocab, num_seqs; float32 logits;
 * int32 labels; int32 cu_seqlens; float64 ref sums, chosen then rejected), runs the sigmoid loss
 * with beta 0.1 and its gradient, and prints the loss, each sequence's log-prob sum and the
 * gradient, one number a line, for test/c-abi.test.ts to compare with the float64 reference;
 * then checks that malformed calls (sizes that disagree, versioned structs that lie) are refused.
 */
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

  labels[0] = (int32_t)vocab;
  failures += expectInvalid("an out-of-range label", fdpo_dpo_loss(&tokens, &config, &outputs, 0, error, sizeof error));
  return failures == 0 ? 0 : 1;
}
