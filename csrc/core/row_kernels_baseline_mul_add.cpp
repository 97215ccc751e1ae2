// The baseline for x86-64 CPUs without FMA (and any CPU forced to it): row_kernels_baseline.cpp's
// scalar code with each multiply-add rounded twice (a*b + c), since glibc's software fmaf would
// make it about 45 times slower. Its results may differ from the other levels' in the last bits. Compiled
// for the architecture's baseline: no instruction a CPU without FMA lacks.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_device.h"
#include "row_kernels.h"

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"
#include "row_kernels_impl.h"
}  // namespace

const RowKernels kBaselineMulAddKernels = makeRowKernels<LanesOf<ScalarOpsOf<false>, 16>>("baseline-mul-add");

}  // namespace fdpo
