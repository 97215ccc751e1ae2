// The bf16 and fp16 conversions of cuda_bf16.h / cuda_fp16.h for the CPU emulation (see
// cuda_runtime.h here): round to nearest even through the CPU backend's own half_convert.h.
#ifndef FDPO_CUDA_EMULATION_HALF_H
#define FDPO_CUDA_EMULATION_HALF_H

#include <stdint.h>
#include <string.h>

#include "fused_dpo.h"
#include "host_device.h"

namespace fdpo_emulation {
#include "half_convert.h"
}  // namespace fdpo_emulation

struct __half {
  unsigned short bits;
};
struct __nv_bfloat16 {
  unsigned short bits;
};

inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline float __half2float(__half h) { return fdpo_emulation::f16ToFloat(h.bits); }
inline __half __float2half_rn(float f) { return __half{fdpo_emulation::floatToF16(f)}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{fdpo_emulation::floatToBf16(f)}; }

#endif
