// The AVX-512 level (F, BW, DQ, VL): 16 fp32 lanes, masked argmax, F16C-style conversions.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_device.h"
#include "row_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#endif

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"
#include "row_kernels_impl.h"

struct Avx512Ops {
  using Tail = ScalarOps;
  static constexpr int W = 16;
  template <int DT>
  static constexpr bool stagesWidened() {
    return true;  // (both 16-bit widenings take two vector ops on the exp's ports)
  }
  using F = __m512;
  using M = __mmask16;
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static float hmax(F v) { return _mm512_reduce_max_ps(v); }
  static int firstEqual(F z, float m) {
    const unsigned eq = _mm512_cmp_ps_mask(z, _mm512_set1_ps(m), _CMP_EQ_OQ);
    return eq ? __builtin_ctz(eq) : -1;
  }
  // The portable exp with AVX-512's scaling: a zero-masked scalef for 2^n that also zeroes the
  // results below kExpFlushBelow (so no lower clamp is needed).
  // (The clamp leaves the flush's comparison as it was: kExpClamp is far above kExpFlushBelow.)
  static F exp(F x) { return expBelowClamp(_mm512_min_ps(_mm512_set1_ps(kExpClamp), x)); }  // second operand on NaN: keep x
  static F expBelowClamp(F x) {
    const M below = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpFlushBelow), _CMP_LT_OQ);
    const F n = expExponent<Avx512Ops>(x);
    return _mm512_maskz_scalef_ps((M)~below, expReduced<Avx512Ops>(x, n), n);
  }
  static F exp2i(F n) { return _mm512_scalef_ps(_mm512_set1_ps(1.0f), n); }
  static F setLane(F v, int lane, float value) { return _mm512_mask_mov_ps(v, (M)(1u << lane), _mm512_set1_ps(value)); }
  static void fence() { _mm_sfence(); }

  // fp32 to bf16 in the high half of each 32-bit lane (the low half is discarded by the caller):
  // rounded to nearest even, NaN kept (quiet) by a masked or in place of the rounding.
  static __m512i bf16High(F v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const M nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x400000));
  }

  template <int DT>
  static F load(const void* p, int64_t i) {
    if (DT == FDPO_FLOAT32) return _mm512_loadu_ps((const float*)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i*)((const uint16_t*)p + i));
    if (DT == FDPO_BFLOAT16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
  static void store(float* p, int64_t i, F v) { _mm512_storeu_ps(p + i, v); }
  // Non-temporal: the gradient is written once and not read back by us, so skip the cache.
  static void stream(float* p, int64_t i, F v) { _mm512_stream_ps(p + i, v); }
  // a's 16 values then b's, as 16-bit elements, in one store (a cache line): for bf16 one word
  // permute gathers the high halves of a's lanes then b's (word 2k + 1 of a, then of b).
  static constexpr uint16_t kHighWords[32] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
  template <int DT>
  static void streamPair(void* p, int64_t i, F a, F b) {
    const __m512i out =
        DT == FDPO_BFLOAT16
            ? _mm512_permutex2var_epi16(bf16High(a), _mm512_loadu_si512(kHighWords), bf16High(b))
            : _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)),
                                 _mm512_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), 1);
    _mm512_stream_si512((__m512i*)((uint16_t*)p + i), out);
  }
};

}  // namespace

const RowKernels kAvx512Kernels = makeRowKernels<Avx512Ops>("avx512");

}  // namespace fdpo

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // __x86_64__
