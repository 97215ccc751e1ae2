// The C ABI's view of the loss-kind table (fdpo_loss_kind_info, fdpo_loss_param_info).
#include "loss_kinds.h"

namespace {

struct KindRow {
  const char* name;
  uint32_t flags, reads;
};

const KindRow kKinds[] = {
#define FDPO_KIND_ROW_(code, name, flags, reads) {name, flags, reads},
    FDPO_LOSS_KIND_TABLE(FDPO_KIND_ROW_)
#undef FDPO_KIND_ROW_
};

struct ParamRow {
  const char* name;
  double defaultValue;
};

const ParamRow kParams[] = {
#define FDPO_PARAM_ROW_(param, name, value) {name, value},
    FDPO_PARAM_TABLE(FDPO_PARAM_ROW_)
#undef FDPO_PARAM_ROW_
};

constexpr int kCodes[] = {
#define FDPO_KIND_CODE_(code, name, flags, reads) code,
    FDPO_LOSS_KIND_TABLE(FDPO_KIND_CODE_)
#undef FDPO_KIND_CODE_
};

constexpr bool codesAreIndexes(int i = 0) {
  return i == FDPO_LOSS_COUNT || (kCodes[i] == i && codesAreIndexes(i + 1));
}

static_assert(codesAreIndexes(), "the kind table lists the codes in order");
static_assert(sizeof kKinds / sizeof kKinds[0] == FDPO_LOSS_COUNT, "the kind table lists every code in order");
static_assert(sizeof kParams / sizeof kParams[0] == FDPO_PARAM_COUNT, "the param table lists every index in order");
static_assert(FDPO_PARAM_COUNT <= FDPO_MAX_PARAMS, "fdpo_loss_config.params has room for every hyperparameter");

}  // namespace

extern "C" {

int32_t fdpo_loss_kind_info(int32_t kind, const char** name, uint32_t* flags, uint32_t* reads) {
  if (kind < 0 || kind >= FDPO_LOSS_COUNT) return FDPO_ERR_INVALID_ARGUMENT;
  if (name) *name = kKinds[kind].name;
  if (flags) *flags = kKinds[kind].flags;
  if (reads) *reads = kKinds[kind].reads;
  return FDPO_OK;
}

int32_t fdpo_loss_param_info(int32_t param, const char** name, double* defaultValue) {
  if (param < 0 || param >= FDPO_PARAM_COUNT) return FDPO_ERR_INVALID_ARGUMENT;
  if (name) *name = kParams[param].name;
  if (defaultValue) *defaultValue = kParams[param].defaultValue;
  return FDPO_OK;
}

}  // extern "C"
