// The AVX2 level (with FMA and F16C): 8 fp32 lanes, run as two halves of the 16 every level has.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_device.h"
#include "row_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"
#include "row_kernels_impl.h"

struct Avx2Ops {
  using Tail = ScalarOps;
  static constexpr int W = 8;
  template <int DT>
  static constexpr bool stagesWidened() {
    return true;  // (both 16-bit widenings take two vector ops on the exp's ports)
  }
  using F = __m256;
  using M = __m256;
  static F set1(float v) { return _mm256_set1_ps(v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static M lessThan(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F zeroWhere(M m, F v) { return _mm256_andnot_ps(m, v); }
  static F exp2i(F n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  // (cvtps_epi32 gives 0x80000000 for NaN, which the shift makes 0: e keeps its NaN.)
  static F scalePow2(F e, F n) {
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(e), _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23)));
  }
  static float hmax(F v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
  }
  static int firstEqual(F z, float m) {
    const int eq = _mm256_movemask_ps(_mm256_cmp_ps(z, _mm256_set1_ps(m), _CMP_EQ_OQ));
    return eq ? __builtin_ctz((unsigned)eq) : -1;
  }
  static F exp(F x) { return expPortable<Avx2Ops>(x); }
  static F expBelowClamp(F x) { return expPortable<Avx2Ops, false>(x); }
  static F setLane(F v, int lane, float value) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, v);
    lanes[lane] = value;
    return _mm256_load_ps(lanes);
  }
  static void fence() { _mm_sfence(); }

  // fp32 to bf16 in the low half of each 32-bit lane, rounded to nearest even; NaN is not kept
  // (its rounding may carry into the sign): bf16Lanes keeps it.
  static __m256i bf16Rounded(F v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    return _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  }
  // The same with NaN kept (quiet).
  static __m256i bf16Lanes(F v) {
    const __m256i quietNan = _mm256_or_si256(_mm256_srli_epi32(_mm256_castps_si256(v), 16), _mm256_set1_epi32(0x40));
    const F nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bf16Rounded(v)), _mm256_castsi256_ps(quietNan), nan));
  }

  template <int DT>
  static F load(const void* p, int64_t i) {
    if (DT == FDPO_FLOAT32) return _mm256_loadu_ps((const float*)p + i);
    const __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)p + i));
    if (DT == FDPO_BFLOAT16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
  }
  static void store(float* p, int64_t i, F v) { _mm256_storeu_ps(p + i, v); }
  // Non-temporal: the gradient is written once and not read back by us, so skip the cache.
  static void stream(float* p, int64_t i, F v) { _mm256_stream_ps(p + i, v); }
  // a's 8 values then b's, as 16-bit elements, in one store: packus interleaves 128-bit halves
  // (a0-3 b0-3 a4-7 b4-7) and the permute puts a's before b's.
  template <int DT>
  static void streamPair(void* p, int64_t i, F a, F b) {
    __m256i out;
    if (DT == FDPO_FLOAT16) {
      out = _mm256_set_m128i(_mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                             _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else if (_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q)) == 0) {
      // (No NaN in a or b, the usual case: one comparison for both instead of a blend each.)
      out = _mm256_permute4x64_epi64(_mm256_packus_epi32(bf16Rounded(a), bf16Rounded(b)), 0xd8);
    } else {
      out = _mm256_permute4x64_epi64(_mm256_packus_epi32(bf16Lanes(a), bf16Lanes(b)), 0xd8);
    }
    _mm256_stream_si256((__m256i*)((uint16_t*)p + i), out);
  }
};

}  // namespace

// Two 8-lane halves: the 16 lanes of every level.
const RowKernels kAvx2Kernels = makeRowKernels<LanesOf<Avx2Ops, 2>>("avx2");

}  // namespace fdpo

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // __x86_64__
