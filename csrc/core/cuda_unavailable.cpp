// The CUDA half of the C ABI in builds without CUDA (node-gyp, or CMake without nvcc): every
// entry point exists and says why it cannot run.
#include <string.h>

#include "checks.h"
#include "fused_dpo.h"

using fdpo::fail;

namespace {

const char kNotCompiled[] = "this build of fused-dpo has no CUDA backend (built without nvcc)";

int32_t notCompiled(char* error, size_t error_size) {
  return fail(error, error_size, FDPO_ERR_UNAVAILABLE, "%s", kNotCompiled);
}

}  // namespace

extern "C" {

int32_t fdpo_cuda_get_status(fdpo_cuda_status* out) {
  if (!out) return FDPO_ERR_INVALID_ARGUMENT;
  const size_t bytes = fdpo::writableSize(out->struct_size, fdpo::kCudaStatusAbi2Size, sizeof *out);
  if (bytes == 0) return FDPO_ERR_INVALID_ARGUMENT;
  fdpo_cuda_status status;
  memset(&status, 0, sizeof status);
  status.struct_size = out->struct_size;
  strncpy(status.reason, kNotCompiled, sizeof status.reason - 1);
  memcpy(out, &status, bytes);
  return FDPO_OK;
}

int32_t fdpo_cuda_get_device(int32_t, fdpo_cuda_device_info*, char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_alloc(int32_t, int64_t, void**, char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_free(int32_t, void*, char* error, size_t error_size) { return notCompiled(error, error_size); }

int32_t fdpo_cuda_copy(int32_t, void*, const void*, int64_t, char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_check_device_buffer(const void*, int64_t, int32_t, char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_sequence_logps(const fdpo_tokens*, int32_t, double*, int32_t*, const fdpo_cuda_launch*, char* error,
                                 size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_dpo_loss(const fdpo_tokens*, const fdpo_loss_config*, fdpo_loss_outputs*, const fdpo_cuda_launch*,
                           char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_kto_loss(const fdpo_tokens*, const fdpo_kto_config*, fdpo_kto_outputs*, const fdpo_cuda_launch*,
                           char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_policy_loss(const fdpo_tokens*, const fdpo_policy_config*, fdpo_policy_outputs*, const fdpo_cuda_launch*,
                              char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

int32_t fdpo_cuda_copy_bandwidth(int32_t, int64_t, int32_t, double*, char* error, size_t error_size) {
  return notCompiled(error, error_size);
}

}  // extern "C"
