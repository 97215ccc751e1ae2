// The baseline level: scalar code in the 16 lanes every level has, with fused multiply-adds (the
// same bits as the vector levels). On x86-64 it is compiled for FMA, which the dispatch requires
// before it runs it (a CPU without FMA runs row_kernels_baseline_mul_add.cpp instead), so each
// fmaf is one inlined instruction, not a call into libm per operation (which made this level 4.5
// times slower than the mul-add one, measured, even where glibc's fmaf is the FMA instruction);
// elsewhere (aarch64) fmaf is an instruction anyway.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_device.h"
#include "row_kernels.h"

#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("fma")
#endif
#endif

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"
#include "row_kernels_impl.h"
}  // namespace

// 16 scalar lanes: the 16 lanes of every level.
const RowKernels kBaselineKernels = makeRowKernels<LanesOf<ScalarOps, 16>>("baseline");

}  // namespace fdpo

#if defined(__x86_64__)
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
