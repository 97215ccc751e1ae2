// The NEON level (aarch64, where Advanced SIMD is always present): 4 fp32 lanes, run as four
// quarters of the 16 every level has. Same bits as the other levels: the portable exp, fused
// multiply-adds, and x86's min/max semantics (the second operand when either is NaN; NEON's own
// min and max return the NaN).
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_device.h"
#include "row_kernels.h"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"
#include "row_kernels_impl.h"

struct NeonOps {
  using Tail = ScalarOps;
  static constexpr int W = 4;
  template <int DT>
  static constexpr bool stagesWidened() {
    return DT == FDPO_FLOAT16;  // (bf16's widening is one shift, fp16's one conversion and a load)
  }
  using F = float32x4_t;
  using M = uint32x4_t;
  static F set1(float v) { return vdupq_n_f32(v); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F div(F a, F b) { return vdivq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  // (a < b and a > b are false when either is NaN: b, as x86's minps and maxps give.)
  static F min(F a, F b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
  static F max(F a, F b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static M lessThan(F a, F b) { return vcltq_f32(a, b); }
  static F zeroWhere(M m, F v) { return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(v), m)); }
  // (n is integral here; NEON's conversion gives 0 for NaN, and a NaN n comes only with a NaN
  // result, as on x86.)
  static F exp2i(F n) {
    const int32x4_t e = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
    return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
  }
  static F scalePow2(F e, F n) {
    return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(e), vshlq_n_s32(vcvtnq_s32_f32(n), 23)));
  }
  // The lanes in order, with the scalar max (the order and NaN rule the baseline's lanes have).
  static float hmax(F v) {
    float m = vgetq_lane_f32(v, 0);
    m = ScalarOps::max(vgetq_lane_f32(v, 1), m);
    m = ScalarOps::max(vgetq_lane_f32(v, 2), m);
    return ScalarOps::max(vgetq_lane_f32(v, 3), m);
  }
  static int firstEqual(F z, float m) {
    const uint32x4_t eq = vceqq_f32(z, vdupq_n_f32(m));
    if (vmaxvq_u32(eq) == 0) return -1;
    if (vgetq_lane_u32(eq, 0)) return 0;
    if (vgetq_lane_u32(eq, 1)) return 1;
    return vgetq_lane_u32(eq, 2) ? 2 : 3;
  }
  static F exp(F x) { return expPortable<NeonOps>(x); }
  static F expBelowClamp(F x) { return expPortable<NeonOps, false>(x); }
  static F setLane(F v, int lane, float value) {
    float lanes[4];
    vst1q_f32(lanes, v);
    lanes[lane] = value;
    return vld1q_f32(lanes);
  }
  // (No streaming stores here: plain stores, which the threads' join orders.)
  static void fence() {}

  // fp32 to bf16 in the low half of each 32-bit lane, rounded to nearest even, NaN kept (quiet).
  static uint16x4_t bf16Lanes(F v) {
    const uint32x4_t bits = vreinterpretq_u32_f32(v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(bits, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
    const uint32x4_t quietNan = vorrq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(0x40));
    return vmovn_u32(vbslq_u32(vceqq_f32(v, v), rounded, quietNan));
  }

  template <int DT>
  static F load(const void* p, int64_t i) {
    if (DT == FDPO_FLOAT32) return vld1q_f32((const float*)p + i);
    const uint16x4_t h = vld1_u16((const uint16_t*)p + i);
    if (DT == FDPO_BFLOAT16) return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
  }
  static void store(float* p, int64_t i, F v) { vst1q_f32(p + i, v); }
  static void stream(float* p, int64_t i, F v) { vst1q_f32(p + i, v); }
  // a's 4 values then b's, as 16-bit elements (IEEE fp16: round to nearest even, the FPCR's default).
  template <int DT>
  static void streamPair(void* p, int64_t i, F a, F b) {
    uint16x8_t out;
    if (DT == FDPO_FLOAT16) {
      out = vreinterpretq_u16_f16(vcombine_f16(vcvt_f16_f32(a), vcvt_f16_f32(b)));
    } else {
      out = vcombine_u16(bf16Lanes(a), bf16Lanes(b));
    }
    vst1q_u16((uint16_t*)p + i, out);
  }
};

}  // namespace

// Four 4-lane quarters: the 16 lanes of every level.
const RowKernels kNeonKernels = makeRowKernels<LanesOf<NeonOps, 4>>("neon");

}  // namespace fdpo

#endif  // __aarch64__
