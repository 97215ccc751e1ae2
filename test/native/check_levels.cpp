// Every SIMD level this CPU runs gives the same bits, through the C ABI alone: for each case (every
// dtype; V = 1, 7, 33, 2049, 5000, which hit the vector tails and the 2048-element chunks; normal
// rows, a row with a NaN or an inf, rows whose max comes in the last chunk, model-head transforms)
// fdpo_dpo_loss (with and without deferScale, several loss kinds), fdpo_sequence_logps and
// fdpo_policy_loss run at each level fdpo_cpu_force_simd_level accepts ('baseline-mul-add' aside:
// it may differ in the last bits), and every output must equal the first level's, a NaN's payload
// aside. test/aarch64.test.ts runs it on an aarch64 build under qemu (baseline and neon); it runs
// on x86 too (baseline, avx2, avx512). Prints what it compared; exits 1 at the first difference.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "fused_dpo.h"
#include "host_device.h"
namespace fdpo {
#include "half_convert.h"
}
using fdpo::bf16ToFloat;
using fdpo::f16ToFloat;
using fdpo::floatToBf16;
using fdpo::floatToF16;

namespace {

// A fixed generator: the same cases on every machine.
struct Lcg {
  uint64_t state;
  double next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(state >> 11) / 9007199254740992.0;
  }
  int below(int n) { return (int)(next() * n); }
  double normal() { return next() + next() + next() + next() - 2.0; }  // (roughly normal, sd 0.58)
};

struct Case {
  int dtype;
  int64_t vocab;
  std::string name;
  std::vector<uint8_t> logits;  // rows * vocab elements of dtype
  std::vector<int32_t> labels;
  std::vector<int32_t> cuSeqlens;
  std::vector<double> ref;  // chosen sums then rejected
  double softcap = 0, temperature = 0;
};

constexpr int kPairs = 2, kSeqs = 2 * kPairs, kT = 3, kRows = kSeqs * kT;

Case makeCase(Lcg& rng, int dtype, int64_t V, int style) {
  Case c;
  c.dtype = dtype;
  c.vocab = V;
  std::vector<float> z((size_t)(kRows * V));
  for (float& v : z) v = (float)(3.0 * rng.normal());
  c.labels.resize(kRows);
  for (int r = 0; r < kRows; ++r) c.labels[r] = r % kT == 0 && rng.next() < 0.5 ? -100 : rng.below((int)V);
  const char* styles[] = {"normal", "nonfinite", "late max", "softcap 5, temperature 0.7"};
  if (style == 1) z[(size_t)(1 * V + rng.below((int)V))] = rng.next() < 0.5 ? NAN : INFINITY;
  if (style == 2 && V > 2048) {
    for (int r = 0; r < kRows; r += 2) z[(size_t)(r * V + V - 1 - rng.below(8))] = 12.0f;
  }
  if (style == 3) {
    c.softcap = 5.0;
    c.temperature = 0.7;
  }
  const size_t size = dtype == FDPO_FLOAT32 ? 4 : 2;
  c.logits.resize(z.size() * size);
  for (size_t i = 0; i < z.size(); ++i) {
    if (dtype == FDPO_FLOAT32) {
      memcpy(&c.logits[4 * i], &z[i], 4);
    } else {
      const uint16_t h = dtype == FDPO_BFLOAT16 ? floatToBf16(z[i]) : floatToF16(z[i]);
      memcpy(&c.logits[2 * i], &h, 2);
    }
  }
  for (int s = 0; s <= kSeqs; ++s) c.cuSeqlens.push_back(s * kT);
  for (int s = 0; s < kSeqs; ++s) c.ref.push_back(-10.0 - 5.0 * rng.next());
  const char* dtypes[] = {"float32", "bfloat16", "float16"};
  c.name = std::string(dtypes[dtype]) + ", V = " + std::to_string(V) + ", " + styles[style];
  return c;
}

fdpo_tokens tokensOf(const Case& c) {
  fdpo_tokens t;
  fdpo_tokens_init(&t);
  t.logits = c.logits.data();
  t.dtype = c.dtype;
  t.rows = kRows;
  t.vocab = c.vocab;
  t.labels = c.labels.data();
  t.cu_seqlens = c.cuSeqlens.data();
  t.num_seqs = kSeqs;
  t.softcap = c.softcap;
  t.temperature = c.temperature;
  return t;
}

// One call's outputs, as named values: each a list of floats (16-bit gradients decoded), so a
// NaN compares equal to a NaN whatever its payload.
struct Output {
  std::string name;
  std::vector<double> values;
};

void add(std::vector<Output>& out, const std::string& name, const double* p, size_t n) { out.push_back({name, std::vector<double>(p, p + n)}); }

void addGrad(std::vector<Output>& out, const std::string& name, const std::vector<uint8_t>& grad, int dtype) {
  Output o{name, {}};
  const size_t n = grad.size() / (dtype == FDPO_FLOAT32 ? 4 : 2);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == FDPO_FLOAT32) {
      float f;
      memcpy(&f, &grad[4 * i], 4);
      o.values.push_back(f);
    } else {
      uint16_t h;
      memcpy(&h, &grad[2 * i], 2);
      o.values.push_back(dtype == FDPO_BFLOAT16 ? bf16ToFloat(h) : f16ToFloat(h));
    }
  }
  out.push_back(o);
}

bool runAll(const Case& c, int variant, std::vector<Output>& out) {
  char error[256];
  const fdpo_tokens tokens = tokensOf(c);
  const size_t gradBytes = (size_t)kRows * (size_t)c.vocab * (c.dtype == FDPO_FLOAT32 ? 4 : 2);
  const int32_t kinds[] = {FDPO_LOSS_SIGMOID, FDPO_LOSS_IPO, FDPO_LOSS_SIMPO, FDPO_LOSS_ORPO, FDPO_LOSS_APO_ZERO};
  for (int deferScale = 0; deferScale < 2; ++deferScale) {
    fdpo_loss_config config;
    fdpo_loss_config_init(&config);
    config.kinds[0] = kinds[variant % 5];
    config.scale = 1.0 / kPairs;
    config.ref_chosen = c.ref.data();
    config.ref_rejected = c.ref.data() + kPairs;
    config.use_weighting = variant % 3 == 0;
    std::vector<double> seqLogps(kSeqs), seqGrad(kSeqs), losses(kPairs), chosen(kPairs), rejected(kPairs), stats(FDPO_STAT_COUNT);
    std::vector<int32_t> counts(kSeqs);
    std::vector<uint8_t> grad(gradBytes);
    std::vector<float> rowScale(kRows);
    fdpo_loss_outputs o;
    fdpo_loss_outputs_init(&o);
    o.seq_logps = seqLogps.data();
    o.seq_counts = counts.data();
    o.seq_grad = seqGrad.data();
    o.pair_losses = losses.data();
    o.chosen_rewards = chosen.data();
    o.rejected_rewards = rejected.data();
    o.stats = stats.data();
    o.grad = grad.data();
    o.row_scale = deferScale ? rowScale.data() : nullptr;
    if (fdpo_dpo_loss(&tokens, &config, &o, 2, error, sizeof error) != FDPO_OK) {
      printf("fdpo_dpo_loss (%s): %s\n", c.name.c_str(), error);
      return false;
    }
    const std::string d = deferScale ? " (deferScale)" : "";
    add(out, "seq logps" + d, seqLogps.data(), kSeqs);
    add(out, "seq grad" + d, seqGrad.data(), kSeqs);
    add(out, "pair losses" + d, losses.data(), kPairs);
    add(out, "chosen rewards" + d, chosen.data(), kPairs);
    add(out, "rejected rewards" + d, rejected.data(), kPairs);
    add(out, "stats" + d, stats.data(), FDPO_STAT_COUNT);
    std::vector<double> countValues(counts.begin(), counts.end());
    add(out, "counts" + d, countValues.data(), kSeqs);
    addGrad(out, "grad" + d, grad, c.dtype);
    std::vector<double> scaleValues(rowScale.begin(), rowScale.end());
    if (deferScale) add(out, "row scale", scaleValues.data(), kRows);
  }
  std::vector<double> logps(kSeqs);
  std::vector<int32_t> counts(kSeqs);
  if (fdpo_sequence_logps(&tokens, variant % 2, logps.data(), counts.data(), 2, error, sizeof error) != FDPO_OK) {
    printf("fdpo_sequence_logps (%s): %s\n", c.name.c_str(), error);
    return false;
  }
  add(out, "sequence logps", logps.data(), kSeqs);

  std::vector<double> advantages(kSeqs), tokenLogps(kRows), tokenGrad(kRows), policyStats(FDPO_POLICY_STAT_COUNT);
  for (int s = 0; s < kSeqs; ++s) advantages[s] = 0.5 * s - 1.0;
  std::vector<uint8_t> grad(gradBytes);
  fdpo_policy_config policy;
  fdpo_policy_config_init(&policy);
  policy.loss_type = FDPO_POLICY_GRPO;
  policy.advantages = advantages.data();
  policy.entropy_coef = 0.01;
  fdpo_policy_outputs po;
  memset(&po, 0, sizeof po);
  po.struct_size = (uint32_t)sizeof po;
  po.token_logps = tokenLogps.data();
  po.token_grad = tokenGrad.data();
  po.stats = policyStats.data();
  po.grad = grad.data();
  if (fdpo_policy_loss(&tokens, &policy, &po, 2, error, sizeof error) != FDPO_OK) {
    printf("fdpo_policy_loss (%s): %s\n", c.name.c_str(), error);
    return false;
  }
  add(out, "policy token logps", tokenLogps.data(), kRows);
  add(out, "policy token grad", tokenGrad.data(), kRows);
  add(out, "policy stats", policyStats.data(), FDPO_POLICY_STAT_COUNT);
  addGrad(out, "policy grad", grad, c.dtype);
  return true;
}

bool same(double a, double b) {
  if (a != a || b != b) return a != a && b != b;
  uint64_t x, y;
  memcpy(&x, &a, 8);
  memcpy(&y, &b, 8);
  return x == y;  // (+0 and -0 differ)
}

}  // namespace

int main() {
  char error[256];
  std::vector<const char*> levels;
  for (const char* name : {"baseline", "avx2", "avx512", "neon"}) {
    if (fdpo_cpu_force_simd_level(name, error, sizeof error) == FDPO_OK) levels.push_back(name);
  }
  printf("levels:");
  for (const char* l : levels) printf(" %s", l);
  printf("\n");
  if (levels.size() < 2) {
    printf("only one level runs here: nothing to compare\n");
    return 0;
  }
  Lcg rng{12345};
  std::vector<Case> cases;
  for (int dtype : {FDPO_FLOAT32, FDPO_BFLOAT16, FDPO_FLOAT16}) {
    for (int64_t V : {1, 7, 33, 2049, 5000}) {
      for (int style = 0; style < 4; ++style) cases.push_back(makeCase(rng, dtype, V, style));
    }
  }
  size_t compared = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    std::vector<std::vector<Output>> runs;
    for (const char* level : levels) {
      fdpo_cpu_force_simd_level(level, error, sizeof error);
      runs.emplace_back();
      if (!runAll(cases[k], (int)k, runs.back())) return 1;
    }
    for (size_t l = 1; l < levels.size(); ++l) {
      for (size_t j = 0; j < runs[0].size(); ++j) {
        const std::vector<double>& want = runs[0][j].values;
        const std::vector<double>& got = runs[l][j].values;
        for (size_t i = 0; i < want.size(); ++i) {
          if (!same(got[i], want[i])) {
            printf("FAIL %s: %s[%zu] is %.17g at %s, %.17g at %s\n", cases[k].name.c_str(), runs[0][j].name.c_str(), i, got[i], levels[l], want[i], levels[0]);
            return 1;
          }
        }
        compared += want.size();
      }
    }
  }
  printf("%zu cases, %zu values compared: every level gives the same bits\n", cases.size(), compared);
  return 0;
}
