// The loss-kind table (fused_dpo_kinds.h, generated from lib/loss-kinds.ts) as functions both
// backends call: a kind's flags and the hyperparameters it reads, and the defaults.
#ifndef FUSED_DPO_LOSS_KINDS_H
#define FUSED_DPO_LOSS_KINDS_H

#include <stdint.h>

#include "fused_dpo.h"
#include "host_device.h"

namespace fdpo {

// FDPO_KIND_* bits of a kind; 0 for a code outside the table.
FDPO_HD uint32_t lossKindFlags(int kind) {
  switch (kind) {
#define FDPO_KIND_FLAGS_CASE_(code, name, flags, reads) \
  case code:                                           \
    return flags;
    FDPO_LOSS_KIND_TABLE(FDPO_KIND_FLAGS_CASE_)
#undef FDPO_KIND_FLAGS_CASE_
    default:
      return 0u;
  }
}

// The default of hyperparameter p (TRL's), for a caller that filled fewer than FDPO_PARAM_COUNT.
FDPO_HD double lossParamDefault(int p) {
  switch (p) {
#define FDPO_PARAM_DEFAULT_CASE_(param, name, value) \
  case param:                                       \
    return value;
    FDPO_PARAM_TABLE(FDPO_PARAM_DEFAULT_CASE_)
#undef FDPO_PARAM_DEFAULT_CASE_
    default:
      return 0.0;
  }
}

}  // namespace fdpo

#endif
