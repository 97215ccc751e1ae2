// The baseline level: scalar code any x86-64 (or other) CPU runs.
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

const RowKernels kBaselineKernels = makeRowKernels<ScalarOps>("baseline");

}  // namespace fdpo
