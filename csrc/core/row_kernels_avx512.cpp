// The AVX-512 level (F, BW, DQ, VL): 16 fp32 lanes, masked argmax, F16C-style conversions.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

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

  static __m256i toBf16(F v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const M nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(rounded);
  }
  static __m256i toF16(F v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

  template <int DT>
  static F load(const void* p, int64_t i) {
    if (DT == FDPO_FLOAT32) return _mm512_loadu_ps((const float*)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i*)((const uint16_t*)p + i));
    if (DT == FDPO_BFLOAT16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
  template <int DT>
  static void store(void* p, int64_t i, F v) {
    if (DT == FDPO_FLOAT32) return _mm512_storeu_ps((float*)p + i, v);
    _mm256_storeu_si256((__m256i*)((uint16_t*)p + i), DT == FDPO_BFLOAT16 ? toBf16(v) : toF16(v));
  }
  // Non-temporal: the gradient is written once and not read back by us, so skip the cache.
  template <int DT>
  static void stream(void* p, int64_t i, F v) {
    if (DT == FDPO_FLOAT32) return _mm512_stream_ps((float*)p + i, v);
    _mm256_stream_si256((__m256i*)((uint16_t*)p + i), DT == FDPO_BFLOAT16 ? toBf16(v) : toF16(v));
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
