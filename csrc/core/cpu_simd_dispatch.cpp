// Which SIMD level's row kernels the CPU backend runs: the widest this CPU supports, or the one
// FDPO_SIMD or fdpo_cpu_force_simd_level names.
#include <stdlib.h>
#include <string.h>

#include <atomic>

#include "checks.h"
#include "fused_dpo.h"
#include "row_kernels.h"

namespace fdpo {
namespace {

std::atomic<const RowKernels*> gKernels{nullptr};

// The baseline this CPU runs: fused multiply-adds (the same bits as the other levels) where fmaf
// is hardware, separate ones where it would be software.
const RowKernels& baselineKernels() {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("fma")) return kBaselineMulAddKernels;
#endif
  return kBaselineKernels;
}

bool cpuSupports(const RowKernels& k) {
#if defined(__x86_64__)
  if (&k == &kAvx512Kernels) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  }
  if (&k == &kAvx2Kernels) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#if defined(__aarch64__)
  if (&k == &kNeonKernels) return true;  // (Advanced SIMD is part of every aarch64 CPU)
#endif
  // The separate multiply-add baseline is portable: any CPU may be forced to it (to measure it).
  return &k == &baselineKernels() || &k == &kBaselineMulAddKernels;
}

const RowKernels* kernelsNamed(const char* name) {
#if defined(__x86_64__)
  if (strcmp(name, "avx512") == 0) return &kAvx512Kernels;
  if (strcmp(name, "avx2") == 0) return &kAvx2Kernels;
#endif
#if defined(__aarch64__)
  if (strcmp(name, "neon") == 0) return &kNeonKernels;
#endif
  if (strcmp(name, "baseline") == 0) return &baselineKernels();
  if (strcmp(name, "baseline-mul-add") == 0) return &kBaselineMulAddKernels;
  return nullptr;
}

}  // namespace

const RowKernels& selectRowKernels() {
  const RowKernels* k = gKernels.load();
  if (k) return *k;
  const RowKernels* choice = &baselineKernels();
#if defined(__x86_64__)
  if (cpuSupports(kAvx2Kernels)) choice = &kAvx2Kernels;
  if (cpuSupports(kAvx512Kernels)) choice = &kAvx512Kernels;
#endif
#if defined(__aarch64__)
  choice = &kNeonKernels;
#endif
  const char* forced = getenv("FDPO_SIMD");
  if (forced && *forced) {
    const RowKernels* named = kernelsNamed(forced);
    if (named && cpuSupports(*named)) choice = named;
  }
  gKernels.store(choice);
  return *choice;
}

}  // namespace fdpo

using namespace fdpo;

extern "C" {

const char* fdpo_cpu_simd_level(void) { return selectRowKernels().name; }

int32_t fdpo_cpu_force_simd_level(const char* name, char* error, size_t error_size) {
  const RowKernels* k = name ? kernelsNamed(name) : nullptr;
  if (!k && name) {
    // A level of the other architecture: not unknown, just not built into this binary.
    for (const char* other : {"avx512", "avx2", "neon"}) {
      if (strcmp(name, other) == 0) {
        return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "this CPU cannot run the '%s' kernels (%s only)", name,
                    strcmp(name, "neon") == 0 ? "aarch64" : "x86-64");
      }
    }
  }
  if (!k) return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "unknown SIMD level '%s'", name ? name : "(null)");
  if (!cpuSupports(*k)) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "this CPU cannot run the '%s' kernels", name);
  }
  gKernels.store(k);
  return FDPO_OK;
}

int32_t fdpo_cpu_exp(const float* in, float* out, int64_t n) {
  if (n < 0 || (n > 0 && (!in || !out))) return FDPO_ERR_INVALID_ARGUMENT;
  selectRowKernels().exp(in, out, n);
  return FDPO_OK;
}

}  // extern "C"
