// The baseline level: scalar code any x86-64 (or other) CPU runs, in the 16 lanes every level has.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "host_device.h"
#include "row_kernels.h"

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"
#include "row_kernels_impl.h"
}  // namespace

// 16 scalar lanes: the 16 lanes of every level.
const RowKernels kBaselineKernels = makeRowKernels<LanesOf<ScalarOps, 16>>("baseline");
const RowKernels kBaselineMulAddKernels = makeRowKernels<LanesOf<ScalarOpsOf<false>, 16>>("baseline-mul-add");

}  // namespace fdpo
