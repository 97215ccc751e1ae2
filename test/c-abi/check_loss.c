/*
 * A native trainer's view of fused-dpo: plain C against libfused_dpo and fused_dpo.h, no Node.
 * Reads a case from the file named by argv[1] (int64 rows, vocab, num_seqs; float32 logits;
 * int32 labels; int32 cu_seqlens; float64 ref sums, chosen then rejected), runs the sigmoid loss
 * with beta 0.1 and its gradient, and prints the loss, each sequence's log-prob sum and the
 * gradient, one number a line, for test/c-abi.test.ts to compare with the float64 reference.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fused_dpo.h"

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
  fdpo_tokens tokens = {logits, FDPO_FLOAT32, rows, vocab, labels, cu, seqs, -100};
  fdpo_loss_config config = {0};
  config.num_losses = 1;
  config.kinds[0] = FDPO_LOSS_SIGMOID;
  config.weights[0] = 1.0;
  config.beta = 0.1;
  config.discopop_tau = 0.05;
  config.simpo_gamma = 0.5;
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
  fdpo_loss_outputs outputs = {seqLogps, seqCounts, NULL, pairLosses, chosenRewards, rejectedRewards, stats, grad};

  char error[256];
  const int32_t status = fdpo_dpo_loss(&tokens, &config, &outputs, 0, error, sizeof error);
  if (status != FDPO_OK) {
    fprintf(stderr, "fdpo_dpo_loss: %d %s\n", (int)status, error);
    return 1;
  }
  printf("%.17g\n", stats[FDPO_STAT_LOSS]);
  for (int64_t s = 0; s < seqs; ++s) printf("%.17g\n", seqLogps[s]);
  for (int64_t i = 0; i < rows * vocab; ++i) printf("%.9g\n", grad[i]);

  /* A bad call must come back as a status and a message, not a crash. */
  labels[0] = (int32_t)vocab;
  if (fdpo_dpo_loss(&tokens, &config, &outputs, 0, error, sizeof error) != FDPO_ERR_INVALID_ARGUMENT) {
    fprintf(stderr, "an out-of-range label was accepted\n");
    return 1;
  }
  return 0;
}
