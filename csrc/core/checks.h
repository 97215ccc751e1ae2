// The checks every backend runs on what crosses the C ABI, before any kernel indexes with it,
// and the status-with-message convention of its entry points.
#ifndef FUSED_DPO_CHECKS_H
#define FUSED_DPO_CHECKS_H

#include <stddef.h>
#include <string.h>
#include <stdint.h>

#include <vector>

#include "fused_dpo.h"

namespace fdpo {

// Writes the printf-style message into error (when there is room) and returns status.
int32_t fail(char* error, size_t size, int32_t status, const char* format, ...)
    __attribute__((format(printf, 4, 5)));

// Copies a caller's struct of the versioned ABI (fused_dpo.h, "How the ABI grows") into out:
// the caller's first struct_size bytes, zeros after them; refuses a struct_size below ABI 2's
// size, or one past what this library knows unless the bytes past it are zero.
template <class T>
int32_t readVersioned(const T* in, T& out, size_t abi2Size, const char* name, char* error, size_t size);

// The size of the caller's T to write: min(struct_size, sizeof(T)); 0 when struct_size is below
// ABI 2's size (nothing is written, the call fails).
size_t writableSize(uint32_t structSize, size_t abi2Size, size_t ownSize);

// ABI 2's sizes: the end of each struct's last ABI-2 field (later fields are appended after it).
#define FDPO_END_OF(type, field) (offsetof(type, field) + sizeof(((type*)0)->field))
constexpr size_t kTokensAbi2Size = FDPO_END_OF(fdpo_tokens, ignore_index);
constexpr size_t kConfigAbi2Size = FDPO_END_OF(fdpo_loss_config, ref_rejected);
constexpr size_t kOutputsAbi2Size = FDPO_END_OF(fdpo_loss_outputs, row_scale);
constexpr size_t kLaunchAbi2Size = FDPO_END_OF(fdpo_cuda_launch, timings_ms);
constexpr size_t kCudaStatusAbi2Size = FDPO_END_OF(fdpo_cuda_status, reason);
constexpr size_t kKtoConfigSize = FDPO_END_OF(fdpo_kto_config, kl_count);
constexpr size_t kKtoOutputsSize = FDPO_END_OF(fdpo_kto_outputs, row_scale);
constexpr size_t kDeviceInfoAbi2Size = FDPO_END_OF(fdpo_cuda_device_info, multiprocessors);

// A buffer of a call: its name, first byte, byte count, and whether the call writes it.
struct Extent {
  const char* name;
  const void* begin;
  size_t bytes;
  bool written;
};

// Every written extent against every other: FDPO_ERR_INVALID_ARGUMENT naming the first two that
// overlap (an output that overlaps anything would be read after, or while, it is written).
int32_t checkExtents(const Extent* extents, size_t n, char* error, size_t size);

// The labels and offsets the kernels index with, copied before they are checked: a caller that
// mutates its arrays while an async call runs cannot turn a checked index into a bad one.
// Labels in device memory (labelsOnHost = false) are left where they are, unchecked: the CUDA
// backend checks them on the device.
struct TokenSnapshot {
  std::vector<int32_t> labels, cuSeqlens;
  fdpo_tokens tokens;
  // The caller's own arrays, which the copies replace in tokens (for LossSnapshot's overlap check).
  const int32_t* callerLabels = nullptr;
  const int32_t* callerCuSeqlens = nullptr;

  int32_t take(const fdpo_tokens* t, char* error, size_t size, bool labelsOnHost = true);
};

// The loss call's config and outputs, read as versioned structs and checked against checked
// tokens: config.params holds every hyperparameter (the defaults past the caller's num_params).
struct LossSnapshot {
  fdpo_loss_config config;
  fdpo_loss_outputs outputs;

  int32_t take(const TokenSnapshot& tokens, const fdpo_loss_config* c, const fdpo_loss_outputs* o, char* error,
               size_t size);
};

// The policy loss's config and outputs (fdpo_policy_config, fdpo_policy_outputs), checked against
// checked tokens. The per-token inputs are copied (the config then points at the copies), so a
// caller that mutates its arrays while an async call runs changes nothing the kernels read.
struct PolicySnapshot {
  fdpo_policy_config config;
  fdpo_policy_outputs outputs;
  std::vector<double> advantages, oldLogps, refLogps;

  int32_t take(const TokenSnapshot& tokens, const fdpo_policy_config* c, const fdpo_policy_outputs* o, char* error,
               size_t size);
};

constexpr size_t kPolicyConfigSize = sizeof(fdpo_policy_config);
constexpr size_t kPolicyOutputsSize = sizeof(fdpo_policy_outputs);

template <class T>
int32_t readVersioned(const T* in, T& out, size_t abi2Size, const char* name, char* error, size_t size) {
  // A struct_size past this bound is not a struct size: refuse it before reading that far.
  const uint32_t kLargest = 1u << 16;
  if (!in) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "%s is NULL", name);
  const uint32_t given = in->struct_size;
  if (given < abi2Size || given > kLargest) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                "%s.struct_size is %u: set it to sizeof(%s) (at least %zu; the *_init functions do)", name,
                (unsigned)given, name, abi2Size);
  }
  memset(&out, 0, sizeof out);
  memcpy(&out, in, given < sizeof out ? given : sizeof out);
  for (uint32_t i = (uint32_t)sizeof out; i < given; ++i) {
    if (((const unsigned char*)in)[i] != 0) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                  "%s sets a field at byte %u that this library (ABI %d, %zu bytes) does not know: use a newer "
                  "library, or leave it 0",
                  name, (unsigned)i, FDPO_ABI_VERSION, sizeof out);
    }
  }
  out.struct_size = (uint32_t)sizeof out;
  return FDPO_OK;
}

}  // namespace fdpo

#endif
