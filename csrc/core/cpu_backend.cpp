// The CPU backend of the C ABI: validation that keeps memory safe, then pass A (rows in
// parallel), the fp64 reduce (one thread, fixed order), and pass B (rows in parallel).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <new>
#include <vector>

#include "checks.h"
#include "fused_dpo.h"
#include "reduce.h"
#include "row_kernels.h"
#include "thread_pool.h"
#include "unfused_passes.h"

namespace fdpo {
namespace {

std::atomic<const RowKernels*> gKernels{nullptr};

bool cpuSupports(const RowKernels& k) {
#if defined(__x86_64__)
  if (&k == &kAvx512Kernels) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  }
  if (&k == &kAvx2Kernels) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return &k == &kBaselineKernels;
}

const RowKernels* kernelsNamed(const char* name) {
#if defined(__x86_64__)
  if (strcmp(name, "avx512") == 0) return &kAvx512Kernels;
  if (strcmp(name, "avx2") == 0) return &kAvx2Kernels;
#endif
  if (strcmp(name, "baseline") == 0) return &kBaselineKernels;
  return nullptr;
}

int resolveThreads(int32_t threads) { return threads > 0 ? threads : ThreadPool::hardwareThreads(); }

// Rows per chunk handed to a thread: about 256K elements, at least 4 chunks per thread, but never
// under 128K elements: waking a second thread costs more than that much work (tens of us).
int64_t rowGrain(int64_t rows, int64_t vocab, int threads) {
  const int64_t most = std::max<int64_t>(1, (int64_t)262144 / vocab);
  const int64_t least = std::max<int64_t>(1, ((int64_t)131072 + vocab - 1) / vocab);
  const int64_t balanced = rows / ((int64_t)threads * 4);
  return std::max(least, std::min(most, balanced));
}

void forwardPass(const RowKernels& k, const fdpo_tokens& t, RowForward* rows, int threads) {
  ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, threads), threads, [&](int64_t b, int64_t e) {
    k.forward(t.logits, t.dtype, t.vocab, t.labels, t.ignore_index, b, e, rows);
  });
}

// Pass A and pass B of the fused path: the SIMD row kernels.
struct FusedPasses {
  const RowKernels& kernels;
  void forward(const fdpo_tokens& t, RowForward* rows, int threads) { forwardPass(kernels, t, rows, threads); }
  void forwardDeferred(const fdpo_tokens& t, RowForward* rows, void* grad, int threads) {
    ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, threads), threads, [&](int64_t b, int64_t e) {
      kernels.forwardDeferred(t.logits, grad, t.dtype, t.vocab, t.labels, t.ignore_index, b, e, rows);
    });
  }
  void backward(const fdpo_tokens& t, const float* rowScale, const RowForward* rows, void* grad, int threads) {
    ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, threads), threads, [&](int64_t b, int64_t e) {
      kernels.backward(t.logits, grad, t.dtype, t.vocab, t.labels, rowScale, rows, b, e);
    });
  }
};

// The loss call around a pair of passes: checks, pass A, the fp64 reduce, pass B.
template <class Passes>
int32_t runDpoLoss(Passes& passes, const fdpo_tokens* tokens, const fdpo_loss_config* config,
                   fdpo_loss_outputs* outputs, int32_t threads, char* error, size_t error_size) {
  try {
    TokenSnapshot snapshot;
    LossSnapshot loss;
    int32_t status = snapshot.take(tokens, error, error_size);
    if (status == FDPO_OK) status = loss.take(snapshot, config, outputs, error, error_size);
    if (status != FDPO_OK) return status;
    config = &loss.config;
    outputs = &loss.outputs;
    const fdpo_tokens& t = snapshot.tokens;
    const int nThreads = resolveThreads(threads);
    const int64_t numPairs = t.num_seqs / 2;

    const bool deferred = outputs->grad && outputs->row_scale;
    std::vector<RowForward> rows(t.rows);
    if (deferred) {
      passes.forwardDeferred(t, rows.data(), outputs->grad, nThreads);
    } else {
      passes.forward(t, rows.data(), nThreads);
    }

    std::fill(outputs->stats, outputs->stats + FDPO_STAT_COUNT, 0.0);
    sumSequences(t, rows.data(), numPairs, outputs->seq_logps, outputs->seq_counts, outputs->stats);
    std::vector<double> seqGrad(t.num_seqs);
    pairLosses(*config, numPairs, outputs->seq_logps, outputs->seq_counts, outputs->pair_losses,
               outputs->chosen_rewards, outputs->rejected_rewards, seqGrad.data(), outputs->stats);
    if (outputs->seq_grad) std::copy(seqGrad.begin(), seqGrad.end(), outputs->seq_grad);
    if (!outputs->grad) return FDPO_OK;

    // Per-row scale for pass B: G of the row's sequence, 0 for ignored rows (written as zeros).
    std::vector<float> rowScale(t.rows, 0.0f);
    for (int64_t s = 0; s < t.num_seqs; ++s) {
      for (int64_t r = t.cu_seqlens[s]; r < t.cu_seqlens[s + 1]; ++r) {
        if (t.labels[r] != t.ignore_index) rowScale[r] = (float)seqGrad[s];
      }
    }
    if (deferred) {
      std::copy(rowScale.begin(), rowScale.end(), outputs->row_scale);
    } else {
      passes.backward(t, rowScale.data(), rows.data(), outputs->grad, nThreads);
    }
    return FDPO_OK;
  } catch (const std::bad_alloc&) {
    return fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}

}  // namespace

const RowKernels& selectRowKernels() {
  const RowKernels* k = gKernels.load();
  if (k) return *k;
  const RowKernels* choice = &kBaselineKernels;
#if defined(__x86_64__)
  if (cpuSupports(kAvx2Kernels)) choice = &kAvx2Kernels;
  if (cpuSupports(kAvx512Kernels)) choice = &kAvx512Kernels;
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

int32_t fdpo_abi_version(void) { return FDPO_ABI_VERSION; }

const char* fdpo_cpu_simd_level(void) { return selectRowKernels().name; }

int32_t fdpo_cpu_force_simd_level(const char* name, char* error, size_t error_size) {
  const RowKernels* k = name ? kernelsNamed(name) : nullptr;
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

int32_t fdpo_cpu_copy(void* dst, const void* src, int64_t bytes, int32_t threads) {
  if (bytes < 0 || (bytes > 0 && (!dst || !src))) return FDPO_ERR_INVALID_ARGUMENT;
  const int64_t block = (int64_t)1 << 20;
  ThreadPool::instance().parallelFor((bytes + block - 1) / block, 1, resolveThreads(threads), [&](int64_t b, int64_t e) {
    const int64_t begin = b * block, end = std::min(bytes, e * block);
    memcpy((char*)dst + begin, (const char*)src + begin, (size_t)(end - begin));
  });
  return FDPO_OK;
}

double fdpo_cpu_exp_throughput(int64_t count, int32_t threads) {
  const int64_t kBlock = 4096;  // 16 KB in, 16 KB out: stays in L1
  const int n = resolveThreads(threads);
  std::vector<double> partial(n, 0.0);
  const RowKernels& k = selectRowKernels();
  ThreadPool::instance().parallelFor(n, 1, n, [&](int64_t b, int64_t e) {
    std::vector<float> in(kBlock), out(kBlock);
    for (int64_t i = 0; i < kBlock; ++i) in[i] = -20.0f * (float)i / (float)kBlock;
    for (int64_t part = b; part < e; ++part) {
      double checksum = 0.0;
      for (int64_t done = 0; done < count / n; done += kBlock) {
        k.exp(in.data(), out.data(), kBlock);
        checksum += out[(done / kBlock) % kBlock];
      }
      partial[part] = checksum;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

int32_t fdpo_sequence_logps(const fdpo_tokens* tokens, int32_t average, double* logps, int32_t* counts,
                            int32_t threads, char* error, size_t error_size) {
  try {
    TokenSnapshot snapshot;
    const int32_t status = snapshot.take(tokens, error, error_size);
    if (status != FDPO_OK) return status;
    if (!logps || !counts) return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "logps or counts is NULL");
    const fdpo_tokens& t = snapshot.tokens;
    std::vector<RowForward> rows(t.rows);
    forwardPass(selectRowKernels(), t, rows.data(), resolveThreads(threads));
    sumSequences(t, rows.data(), 0, logps, counts, nullptr);
    if (average) {
      for (int64_t s = 0; s < t.num_seqs; ++s) logps[s] /= counts[s] > 0 ? counts[s] : 1;
    }
    return FDPO_OK;
  } catch (const std::bad_alloc&) {
    return fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}

int32_t fdpo_dpo_loss(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                      int32_t threads, char* error, size_t error_size) {
  FusedPasses passes{selectRowKernels()};
  return runDpoLoss(passes, tokens, config, outputs, threads, error, error_size);
}

int32_t fdpo_dpo_loss_unfused(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                              int32_t threads, char* error, size_t error_size) {
  UnfusedPasses passes;
  return runDpoLoss(passes, tokens, config, outputs, threads, error, error_size);
}

}  // extern "C"
