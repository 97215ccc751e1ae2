// The checks of fdpo_kto_loss (both backends) on its config and outputs, after the tokens' own.
#ifndef FUSED_DPO_KTO_CHECKS_H
#define FUSED_DPO_KTO_CHECKS_H

#include <stdint.h>

#include <vector>

#include "checks.h"
#include "fused_dpo.h"

namespace fdpo {

// The config and outputs read as versioned structs and checked against checked tokens; the
// desirable flags are copied (config.desirable points at the copy).
struct KtoSnapshot {
  fdpo_kto_config config;
  fdpo_kto_outputs outputs;
  std::vector<uint8_t> desirable;

  int32_t take(const TokenSnapshot& tokens, const fdpo_kto_config* c, const fdpo_kto_outputs* o, char* error,
               size_t size);
};

}  // namespace fdpo

#endif
