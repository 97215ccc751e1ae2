// See cuda_fp16.h here: both formats' conversions live there.
#include "cuda_fp16.h"
