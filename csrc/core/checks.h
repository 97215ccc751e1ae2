// The checks every backend runs on what crosses the C ABI, before any kernel indexes with it,
// and the status-with-message convention of its entry points.
#ifndef FUSED_DPO_CHECKS_H
#define FUSED_DPO_CHECKS_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "fused_dpo.h"

namespace fdpo {

// Writes the printf-style message into error (when there is room) and returns status.
int32_t fail(char* error, size_t size, int32_t status, const char* format, ...)
    __attribute__((format(printf, 4, 5)));

// The loss call's config and outputs, given checked tokens.
int32_t checkConfig(const fdpo_tokens* t, const fdpo_loss_config* c, const fdpo_loss_outputs* o, char* error,
                    size_t size);

// The labels and offsets the kernels index with, copied before they are checked: a caller that
// mutates its arrays while an async call runs cannot turn a checked index into a bad one.
// Labels in device memory (labelsOnHost = false) are left where they are, unchecked: the CUDA
// backend checks them on the device.
struct TokenSnapshot {
  std::vector<int32_t> labels, cuSeqlens;
  fdpo_tokens tokens;

  int32_t take(const fdpo_tokens* t, char* error, size_t size, bool labelsOnHost = true);
};

}  // namespace fdpo

#endif
