// The only C++ that knows about Node. It turns the plain object lib/native.ts builds into the
// core's structs, re-checks every length the kernels will index with (so no JavaScript value can
// make them read or write out of bounds), runs the work inline or on the libuv pool, and turns
// status codes into JS Errors with a `code`.
#include <napi.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "../core/fused_dpo.h"
#include "gradient_buffer.h"

namespace {

const char* statusCode(int32_t status) {
  switch (status) {
    case FDPO_ERR_INVALID_ARGUMENT: return "ERR_FDPO_INVALID_ARGUMENT";
    case FDPO_ERR_OUT_OF_MEMORY: return "ERR_FDPO_OUT_OF_MEMORY";
    case FDPO_ERR_UNAVAILABLE: return "ERR_FDPO_CUDA_UNAVAILABLE";
    case FDPO_ERR_DEVICE: return "ERR_FDPO_CUDA";
    default: return "ERR_FDPO_INTERNAL";
  }
}

Napi::Error makeError(Napi::Env env, int32_t status, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, "fused-dpo: " + message);
  error.Set("code", Napi::String::New(env, statusCode(status)));
  return error;
}

// A binding-level check failed: lib/ validates first, so this means lib/ was bypassed.
[[noreturn]] void invalid(Napi::Env env, const std::string& message) {
  throw makeError(env, FDPO_ERR_INVALID_ARGUMENT, message);
}

Napi::TypedArray typedArray(const Napi::Object& args, const char* name, napi_typedarray_type type) {
  Napi::Value value = args.Get(name);
  if (!value.IsTypedArray()) invalid(args.Env(), std::string(name) + " must be a typed array");
  Napi::TypedArray array = value.As<Napi::TypedArray>();
  if (array.TypedArrayType() != type) invalid(args.Env(), std::string(name) + " has the wrong typed array type");
  return array;
}

// The array's first element, for views over an ArrayBuffer or a SharedArrayBuffer alike.
template <class T>
T* dataOf(const Napi::TypedArray& array) {
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void* data = nullptr;
  napi_value buffer;
  if (napi_get_typedarray_info(array.Env(), array, &type, &length, &data, &buffer, &offset) != napi_ok) {
    invalid(array.Env(), "cannot read a typed array");
  }
  return static_cast<T*>(data);
}

template <class T>
T* checkedData(const Napi::Object& args, const char* name, napi_typedarray_type type, size_t length) {
  Napi::TypedArray array = typedArray(args, name, type);
  if (array.ElementLength() != length) {
    invalid(args.Env(), std::string(name) + " must have " + std::to_string(length) + " elements, has " +
                            std::to_string(array.ElementLength()));
  }
  return length == 0 ? nullptr : dataOf<T>(array);
}

int64_t integer(const Napi::Object& args, const char* name, int64_t min, int64_t max) {
  Napi::Value value = args.Get(name);
  if (!value.IsNumber()) invalid(args.Env(), std::string(name) + " must be a number");
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    invalid(args.Env(), std::string(name) + " is out of range");
  }
  return (int64_t)d;
}

// A device pointer given as a bigint.
void* pointerOf(Napi::Env env, const Napi::Value& value, const std::string& name) {
  if (!value.IsBigInt()) invalid(env, name + " must be a bigint device pointer");
  bool lossless = false;
  const uint64_t address = value.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless || address == 0) invalid(env, name + " is not a valid device pointer");
  return reinterpret_cast<void*>(address);
}

// Where a call runs: `device` is null for the CPU, a device index for CUDA, with an optional
// stream (a bigint cudaStream_t) and an optional Float32Array(3) for the passes' timings.
struct Placement {
  bool cuda = false;
  fdpo_cuda_launch launch{};

  explicit Placement(const Napi::Object& args) {
    fdpo_cuda_launch_init(&launch);
    if (args.Get("device").IsNull() || args.Get("device").IsUndefined()) return;
    cuda = true;
    launch.device = (int32_t)integer(args, "device", 0, 1023);
    const Napi::Value stream = args.Get("stream");
    if (!stream.IsNull() && !stream.IsUndefined()) launch.stream = pointerOf(args.Env(), stream, "stream");
    if (!args.Get("timings").IsNull() && !args.Get("timings").IsUndefined()) {
      launch.timings_ms = checkedData<float>(args, "timings", napi_float32_array, 3);
    }
  }
};

// A buffer the kernels read or write: a typed array (host memory), or, for the CUDA backend, a
// device buffer { pointer: bigint, byteLength } as lib/device.ts passes a DeviceTensor. Either
// must hold at least `length` elements of `elementBytes`.
void* bufferData(const Napi::Object& args, const char* name, napi_typedarray_type type, size_t length,
                 size_t elementBytes, const Placement& placement) {
  Napi::Value value = args.Get(name);
  if (value.IsTypedArray()) return checkedData<void>(args, name, type, length);
  if (!value.IsObject() || !value.As<Napi::Object>().Get("pointer").IsBigInt()) {
    invalid(args.Env(), std::string(name) + " must be a typed array or a device buffer");
  }
  if (!placement.cuda) invalid(args.Env(), std::string(name) + " is device memory, which only the CUDA backend reads");
  Napi::Object buffer = value.As<Napi::Object>();
  const int64_t bytes = integer(buffer, "byteLength", 0, INT64_MAX / 2);
  if ((size_t)bytes < length * elementBytes) {
    invalid(args.Env(), std::string(name) + " must hold " + std::to_string(length * elementBytes) + " bytes, holds " +
                            std::to_string(bytes));
  }
  void* pointer = pointerOf(args.Env(), buffer.Get("pointer"), std::string(name) + ".pointer");
  // A wrapped address must really hold what the tensor claims: ask the driver.
  char error[512] = {0};
  const int32_t status =
      fdpo_cuda_check_device_buffer(pointer, (int64_t)(length * elementBytes), placement.launch.device, error, sizeof error);
  if (status != FDPO_OK) throw makeError(args.Env(), status, std::string(name) + ": " + error);
  return pointer;
}


double number(const Napi::Object& args, const char* name) {
  Napi::Value value = args.Get(name);
  if (!value.IsNumber()) invalid(args.Env(), std::string(name) + " must be a number");
  return value.As<Napi::Number>().DoubleValue();
}

double optionalNumber(const Napi::Object& args, const char* name) {
  return args.Get(name).IsUndefined() ? 0.0 : number(args, name);
}

napi_typedarray_type logitsArrayType(int32_t dtype) {
  return dtype == FDPO_FLOAT32 ? napi_float32_array : napi_uint16_array;
}

size_t logitsElementBytes(int32_t dtype) { return dtype == FDPO_FLOAT32 ? 4 : 2; }

// Reads the token-level arguments shared by both entry points.
fdpo_tokens readTokens(const Napi::Object& args, const Placement& placement) {
  fdpo_tokens t;
  fdpo_tokens_init(&t);
  t.dtype = (int32_t)integer(args, "dtype", 0, 2);
  t.rows = integer(args, "rows", 0, (int64_t)1 << 40);
  t.vocab = integer(args, "vocab", 1, 0x7fffffff);
  if (t.rows > ((int64_t)1 << 53) / t.vocab) invalid(args.Env(), "rows * vocab is too large");
  t.logits = bufferData(args, "logits", logitsArrayType(t.dtype), (size_t)(t.rows * t.vocab), logitsElementBytes(t.dtype),
                        placement);
  t.labels = (const int32_t*)bufferData(args, "labels", napi_int32_array, (size_t)t.rows, 4, placement);
  Napi::TypedArray cu = typedArray(args, "cuSeqlens", napi_int32_array);
  if (cu.ElementLength() < 1) invalid(args.Env(), "cuSeqlens must have at least one element");
  t.cu_seqlens = dataOf<int32_t>(cu);
  t.num_seqs = (int64_t)cu.ElementLength() - 1;
  t.ignore_index = (int32_t)integer(args, "ignoreIndex", INT32_MIN, INT32_MAX);
  // The model-head transforms (absent or 0 = off; the core checks their ranges).
  t.logit_scale = optionalNumber(args, "logitScale");
  t.softcap = optionalNumber(args, "softcap");
  t.temperature = optionalNumber(args, "temperature");
  // LD-DPO (absent or null = off; the core checks the range and the pairs).
  const Napi::Value ld = args.Get("ldAlpha");
  if (!ld.IsNull() && !ld.IsUndefined()) {
    t.ld_weighting = 1;
    t.ld_alpha = number(args, "ldAlpha");
  }
  return t;
}

// Holds what one call reads and writes. `keep` pins the argument object (and so every typed
// array in it) until an async call completes.
struct SequenceCall {
  Placement placement;
  fdpo_tokens tokens;
  int32_t average;
  int32_t threads;
  double* logps;
  int32_t* counts;

  explicit SequenceCall(const Napi::Object& args) : placement(args) {
    tokens = readTokens(args, placement);
    average = args.Get("average").ToBoolean() ? 1 : 0;
    threads = (int32_t)integer(args, "threads", 0, 4096);
    const size_t seqs = (size_t)tokens.num_seqs;
    logps = checkedData<double>(args, "logps", napi_float64_array, seqs);
    counts = checkedData<int32_t>(args, "counts", napi_int32_array, seqs);
  }
  int32_t run(char* error, size_t size) {
    if (placement.cuda) return fdpo_cuda_sequence_logps(&tokens, average, logps, counts, &placement.launch, error, size);
    return fdpo_sequence_logps(&tokens, average, logps, counts, threads, error, size);
  }
};

struct LossCall {
  Placement placement;
  fdpo_tokens tokens;
  fdpo_loss_config config;
  fdpo_loss_outputs outputs;
  int32_t threads;

  explicit LossCall(const Napi::Object& args) : placement(args) {
    Napi::Env env = args.Env();
    fdpo_loss_config_init(&config);
    fdpo_loss_outputs_init(&outputs);
    tokens = readTokens(args, placement);
    threads = (int32_t)integer(args, "threads", 0, 4096);
    if (tokens.num_seqs < 2 || tokens.num_seqs % 2 != 0) invalid(env, "cuSeqlens must describe 2B sequences");
    const size_t seqs = (size_t)tokens.num_seqs, pairs = seqs / 2;

    Napi::TypedArray kinds = typedArray(args, "kinds", napi_int32_array);
    Napi::TypedArray weights = typedArray(args, "weights", napi_float64_array);
    if (kinds.ElementLength() < 1 || kinds.ElementLength() > FDPO_MAX_LOSSES ||
        weights.ElementLength() != kinds.ElementLength()) {
      invalid(env, "kinds and weights must have the same length, 1 to 8");
    }
    config.num_losses = (int32_t)kinds.ElementLength();
    for (int32_t k = 0; k < config.num_losses; ++k) {
      config.kinds[k] = dataOf<int32_t>(kinds)[k];
      config.weights[k] = dataOf<double>(weights)[k];
    }
    // The hyperparameters, indexed by fdpo_loss_param (lib/loss-kinds.ts's codes).
    Napi::TypedArray params = typedArray(args, "params", napi_float64_array);
    if (params.ElementLength() > FDPO_PARAM_COUNT) invalid(env, "params has more entries than this addon knows");
    config.num_params = (int32_t)params.ElementLength();
    for (int32_t p = 0; p < config.num_params; ++p) config.params[p] = dataOf<double>(params)[p];
    config.scale = number(args, "scale");
    config.f_divergence = (int32_t)integer(args, "fDivergence", 0, FDPO_F_COUNT - 1);
    config.use_weighting = args.Get("useWeighting").ToBoolean() ? 1 : 0;
    if (!args.Get("refChosen").IsNull()) {
      config.ref_chosen = checkedData<double>(args, "refChosen", napi_float64_array, pairs);
      config.ref_rejected = checkedData<double>(args, "refRejected", napi_float64_array, pairs);
    }
    const Napi::Value refTokens = args.Get("refTokenLogps");
    if (!refTokens.IsNull() && !refTokens.IsUndefined()) {
      // Zero rows have nothing to read, but the pointer still says "per-token references".
      static const double kNoRows = 0.0;
      const double* data = checkedData<double>(args, "refTokenLogps", napi_float64_array, (size_t)tokens.rows);
      config.ref_token_logps = data ? data : &kNoRows;
    }

    outputs.seq_logps = checkedData<double>(args, "seqLogps", napi_float64_array, seqs);
    outputs.seq_counts = checkedData<int32_t>(args, "seqCounts", napi_int32_array, seqs);
    outputs.seq_grad = checkedData<double>(args, "seqGrad", napi_float64_array, seqs);
    outputs.pair_losses = checkedData<double>(args, "pairLosses", napi_float64_array, pairs);
    outputs.chosen_rewards = checkedData<double>(args, "chosenRewards", napi_float64_array, pairs);
    outputs.rejected_rewards = checkedData<double>(args, "rejectedRewards", napi_float64_array, pairs);
    outputs.stats = checkedData<double>(args, "stats", napi_float64_array, FDPO_STAT_COUNT);
    const Napi::Value plainGrad = args.Get("seqPlainGrad");
    if (!plainGrad.IsNull() && !plainGrad.IsUndefined()) {
      outputs.seq_plain_grad = checkedData<double>(args, "seqPlainGrad", napi_float64_array, seqs);
    }
    if (!args.Get("grad").IsNull()) {
      outputs.grad = bufferData(args, "grad", logitsArrayType(tokens.dtype), (size_t)(tokens.rows * tokens.vocab),
                                logitsElementBytes(tokens.dtype), placement);
    }
    if (!args.Get("rowScale").IsNull()) {
      outputs.row_scale = (float*)bufferData(args, "rowScale", napi_float32_array, (size_t)tokens.rows, 4, placement);
    }
  }
  int32_t run(char* error, size_t size) {
    if (placement.cuda) return fdpo_cuda_dpo_loss(&tokens, &config, &outputs, &placement.launch, error, size);
    return fdpo_dpo_loss(&tokens, &config, &outputs, threads, error, size);
  }
};

// policyLoss: the GRPO family's loss (fdpo_policy_config).
struct PolicyCall {
  Placement placement;
  fdpo_tokens tokens;
  fdpo_policy_config config;
  fdpo_policy_outputs outputs;
  int32_t threads;

  explicit PolicyCall(const Napi::Object& args) : placement(args) {
    fdpo_policy_config_init(&config);
    fdpo_policy_outputs_init(&outputs);
    tokens = readTokens(args, placement);
    threads = (int32_t)integer(args, "threads", 0, 4096);
    const size_t rows = (size_t)tokens.rows, seqs = (size_t)tokens.num_seqs;
    config.loss_type = (int32_t)integer(args, "lossType", 0, FDPO_POLICY_LOSS_TYPE_COUNT - 1);
    config.advantages_per_token = args.Get("advantagesPerToken").ToBoolean() ? 1 : 0;
    config.advantages = checkedData<double>(args, "advantages", napi_float64_array, config.advantages_per_token ? rows : seqs);
    if (!args.Get("oldLogps").IsNull()) config.old_logps = checkedData<double>(args, "oldLogps", napi_float64_array, rows);
    if (!args.Get("refLogps").IsNull()) config.ref_logps = checkedData<double>(args, "refLogps", napi_float64_array, rows);
    config.beta = number(args, "beta");
    config.epsilon = number(args, "epsilon");
    config.epsilon_high = number(args, "epsilonHigh");
    config.entropy_coef = number(args, "entropyCoef");
    config.max_completion_length = integer(args, "maxCompletionLength", 0, INT32_MAX);
    config.num_items_in_batch = number(args, "numItemsInBatch");
    outputs.token_logps = checkedData<double>(args, "logps", napi_float64_array, rows);
    outputs.token_grad = checkedData<double>(args, "tokenGrad", napi_float64_array, rows);
    outputs.stats = checkedData<double>(args, "stats", napi_float64_array, FDPO_POLICY_STAT_COUNT);
    if (!args.Get("grad").IsNull()) {
      outputs.grad = bufferData(args, "grad", logitsArrayType(tokens.dtype), rows * (size_t)tokens.vocab,
                                logitsElementBytes(tokens.dtype), placement);
    }
  }
  int32_t run(char* error, size_t size) {
    if (placement.cuda) return fdpo_cuda_policy_loss(&tokens, &config, &outputs, &placement.launch, error, size);
    return fdpo_policy_loss(&tokens, &config, &outputs, threads, error, size);
  }
};

// The unfused baseline, for the benchmark only (CPU).
struct UnfusedLossCall : LossCall {
  using LossCall::LossCall;
  int32_t run(char* error, size_t size) {
    if (placement.cuda) {
      snprintf(error, size, "the unfused baseline runs on the CPU only");
      return FDPO_ERR_INVALID_ARGUMENT;
    }
    return fdpo_dpo_loss_unfused(&tokens, &config, &outputs, threads, error, size);
  }
};

// ktoLoss: unpaired sequences, each desirable or not (the core checks the flags and the KL batch).
struct KtoCall {
  Placement placement;
  fdpo_tokens tokens;
  fdpo_kto_config config;
  fdpo_kto_outputs outputs;
  int32_t threads;

  explicit KtoCall(const Napi::Object& args) : placement(args) {
    Napi::Env env = args.Env();
    fdpo_kto_config_init(&config);
    fdpo_kto_outputs_init(&outputs);
    tokens = readTokens(args, placement);
    threads = (int32_t)integer(args, "threads", 0, 4096);
    if (tokens.num_seqs < 1) invalid(env, "cuSeqlens must describe at least one sequence");
    const size_t seqs = (size_t)tokens.num_seqs;
    config.loss_type = (int32_t)integer(args, "lossType", 0, FDPO_KTO_LOSS_COUNT - 1);
    config.beta = number(args, "beta");
    config.desirable_weight = number(args, "desirableWeight");
    config.undesirable_weight = number(args, "undesirableWeight");
    config.scale = number(args, "scale");
    config.desirable = checkedData<uint8_t>(args, "desirable", napi_uint8_array, seqs);
    config.ref_logps = checkedData<double>(args, "refLogps", napi_float64_array, seqs);
    if (!args.Get("klLogps").IsNull()) {
      const size_t kl = typedArray(args, "klLogps", napi_float64_array).ElementLength();
      config.kl_logps = checkedData<double>(args, "klLogps", napi_float64_array, kl);
      config.kl_ref_logps = checkedData<double>(args, "klRefLogps", napi_float64_array, kl);
      config.kl_count = (int64_t)kl;
    }
    outputs.seq_logps = checkedData<double>(args, "seqLogps", napi_float64_array, seqs);
    outputs.seq_counts = checkedData<int32_t>(args, "seqCounts", napi_int32_array, seqs);
    outputs.seq_grad = checkedData<double>(args, "seqGrad", napi_float64_array, seqs);
    outputs.seq_losses = checkedData<double>(args, "seqLosses", napi_float64_array, seqs);
    outputs.rewards = checkedData<double>(args, "rewards", napi_float64_array, seqs);
    outputs.stats = checkedData<double>(args, "stats", napi_float64_array, FDPO_STAT_COUNT);
    outputs.kl = checkedData<double>(args, "kl", napi_float64_array, 1);
    if (!args.Get("grad").IsNull()) {
      outputs.grad = bufferData(args, "grad", logitsArrayType(tokens.dtype), (size_t)(tokens.rows * tokens.vocab),
                                logitsElementBytes(tokens.dtype), placement);
    }
    if (!args.Get("rowScale").IsNull()) {
      outputs.row_scale = (float*)bufferData(args, "rowScale", napi_float32_array, (size_t)tokens.rows, 4, placement);
    }
  }
  int32_t run(char* error, size_t size) {
    if (placement.cuda) return fdpo_cuda_kto_loss(&tokens, &config, &outputs, &placement.launch, error, size);
    return fdpo_kto_loss(&tokens, &config, &outputs, threads, error, size);
  }
};

template <class Call>
Napi::Value runSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) invalid(env, "expected an argument object");
  Call call(info[0].As<Napi::Object>());
  char error[512] = {0};
  const int32_t status = call.run(error, sizeof error);
  if (status != FDPO_OK) throw makeError(env, status, error);
  return env.Undefined();
}

template <class Call>
class AsyncCall : public Napi::AsyncWorker {
 public:
  AsyncCall(Napi::Env env, const Napi::Object& args) : Napi::AsyncWorker(env, "fused-dpo"), call_(args) {
    keep_ = Napi::Persistent(args);
    napi_value promise;
    if (napi_create_promise(env, &deferred_, &promise) != napi_ok) invalid(env, "cannot create a promise");
    promise_ = promise;
  }
  Napi::Value promise() { return Napi::Value(Env(), promise_); }

  // On a libuv pool thread: no N-API here.
  void Execute() override { status_ = call_.run(error_, sizeof error_); }

  // Back on the JavaScript thread, whose environment may be shutting down (a worker being
  // terminated): there every N-API call can fail, and a Napi::Error thrown from here would
  // abort the whole process. So settle the promise with plain napi_* calls and, when one
  // fails, drop the result: nobody is left to receive it.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    if (status != napi_cancelled) settle(env);
    Destroy();
  }

 private:
  void settle(napi_env env) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value value = nullptr;
    if (status_ == FDPO_OK) {
      if (napi_get_undefined(env, &value) == napi_ok) napi_resolve_deferred(env, deferred_, value);
    } else {
      napi_value code, message;
      const std::string text = std::string("fused-dpo: ") + error_;
      if (napi_create_string_utf8(env, statusCode(status_), NAPI_AUTO_LENGTH, &code) == napi_ok &&
          napi_create_string_utf8(env, text.c_str(), text.size(), &message) == napi_ok &&
          napi_create_error(env, code, message, &value) == napi_ok) {
        napi_reject_deferred(env, deferred_, value);
      }
    }
    napi_close_handle_scope(env, scope);
  }

  Call call_;
  napi_deferred deferred_ = nullptr;
  napi_value promise_ = nullptr;
  Napi::ObjectReference keep_;
  int32_t status_ = FDPO_OK;
  char error_[512] = {0};
};

template <class Call>
Napi::Value runAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) invalid(env, "expected an argument object");
  auto* worker = new AsyncCall<Call>(env, info[0].As<Napi::Object>());
  Napi::Value promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("abiVersion", Napi::Number::New(env, fdpo_abi_version()));
  out.Set("simd", Napi::String::New(env, fdpo_cpu_simd_level()));
  return out;
}

// The loss-kind table this binary was built with (fused_dpo_kinds.h), for test/loss-kinds.test.ts
// to compare with lib/loss-kinds.ts.
Napi::Value LossTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array kinds = Napi::Array::New(env), params = Napi::Array::New(env);
  for (int32_t k = 0; k < FDPO_LOSS_COUNT; ++k) {
    const char* name = nullptr;
    uint32_t flags = 0, reads = 0;
    fdpo_loss_kind_info(k, &name, &flags, &reads);
    Napi::Object kind = Napi::Object::New(env);
    kind.Set("name", Napi::String::New(env, name));
    kind.Set("code", Napi::Number::New(env, k));
    kind.Set("flags", Napi::Number::New(env, flags));
    kind.Set("reads", Napi::Number::New(env, reads));
    kinds.Set((uint32_t)k, kind);
  }
  for (int32_t p = 0; p < FDPO_PARAM_COUNT; ++p) {
    const char* name = nullptr;
    double value = 0;
    fdpo_loss_param_info(p, &name, &value);
    Napi::Object param = Napi::Object::New(env);
    param.Set("name", Napi::String::New(env, name));
    param.Set("code", Napi::Number::New(env, p));
    param.Set("default", Napi::Number::New(env, value));
    params.Set((uint32_t)p, param);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("kinds", kinds);
  out.Set("params", params);
  return out;
}

Napi::Value SetSimdLevel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) invalid(env, "expected a SIMD level name");
  char error[256] = {0};
  const int32_t status = fdpo_cpu_force_simd_level(info[0].As<Napi::String>().Utf8Value().c_str(), error, sizeof error);
  if (status != FDPO_OK) throw makeError(env, status, error);
  return env.Undefined();
}

Napi::Value VectorExp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) invalid(env, "expected a Float32Array");
  Napi::Object args = Napi::Object::New(env);
  args.Set("input", info[0]);
  Napi::TypedArray input = typedArray(args, "input", napi_float32_array);
  Napi::Float32Array output = Napi::Float32Array::New(env, input.ElementLength());
  fdpo_cpu_exp(dataOf<float>(input), output.Data(), (int64_t)input.ElementLength());
  return output;
}

// The benchmark's ceilings: a multi-threaded copy and the exp rate (fdpo_cpu_copy, fdpo_cpu_exp_throughput).
Napi::Value Copy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsNumber()) {
    invalid(env, "expected (dst, src, threads)");
  }
  Napi::TypedArray dst = info[0].As<Napi::TypedArray>(), src = info[1].As<Napi::TypedArray>();
  if (dst.ByteLength() != src.ByteLength()) invalid(env, "dst and src must have the same byte length");
  fdpo_cpu_copy(dataOf<void>(dst), dataOf<void>(src), (int64_t)src.ByteLength(), info[2].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

Napi::Value ExpThroughput(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) invalid(env, "expected (count, threads)");
  const double count = info[0].As<Napi::Number>().DoubleValue();
  if (!(count >= 0 && count <= 1e13)) invalid(env, "count is out of range");
  return Napi::Number::New(env, fdpo_cpu_exp_throughput((int64_t)count, info[1].As<Napi::Number>().Int32Value()));
}

// The CUDA backend's status and devices, device memory, and the copy-bandwidth ceiling.
Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  fdpo_cuda_status status;
  memset(&status, 0, sizeof status);
  status.struct_size = sizeof status;
  fdpo_cuda_get_status(&status);
  Napi::Object out = Napi::Object::New(env);
  out.Set("compiled", Napi::Boolean::New(env, status.compiled != 0));
  out.Set("available", Napi::Boolean::New(env, status.available != 0));
  out.Set("deviceCount", Napi::Number::New(env, status.device_count));
  out.Set("runtimeVersion", Napi::Number::New(env, status.runtime_version));
  out.Set("driverVersion", Napi::Number::New(env, status.driver_version));
  out.Set("reason", Napi::String::New(env, status.reason));
  return out;
}

int32_t deviceArgument(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !info[index].IsNumber()) invalid(info.Env(), "expected a device index");
  const double d = info[index].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 1023) || d != (double)(int32_t)d) invalid(info.Env(), "device index is out of range");
  return (int32_t)d;
}

int64_t bytesArgument(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !info[index].IsNumber()) invalid(info.Env(), "expected a byte count");
  const double d = info[index].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(int64_t)d) invalid(info.Env(), "byte count is out of range");
  return (int64_t)d;
}

void check(Napi::Env env, int32_t status, const char* error) {
  if (status != FDPO_OK) throw makeError(env, status, error);
}

Napi::Value CudaDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  fdpo_cuda_device_info device;
  memset(&device, 0, sizeof device);
  device.struct_size = sizeof device;
  char error[512] = {0};
  check(env, fdpo_cuda_get_device(deviceArgument(info, 0), &device, error, sizeof error), error);
  Napi::Object out = Napi::Object::New(env);
  out.Set("name", Napi::String::New(env, device.name));
  out.Set("computeCapability", Napi::String::New(env, std::to_string(device.major) + "." + std::to_string(device.minor)));
  out.Set("totalMemory", Napi::Number::New(env, (double)device.total_memory));
  out.Set("multiprocessors", Napi::Number::New(env, device.multiprocessors));
  return out;
}

Napi::Value CudaAlloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* pointer = nullptr;
  char error[512] = {0};
  check(env, fdpo_cuda_alloc(deviceArgument(info, 0), bytesArgument(info, 1), &pointer, error, sizeof error), error);
  return Napi::BigInt::New(env, (uint64_t)reinterpret_cast<uintptr_t>(pointer));
}

Napi::Value CudaFree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) invalid(env, "expected (device, pointer)");
  char error[512] = {0};
  check(env, fdpo_cuda_free(deviceArgument(info, 0), pointerOf(env, info[1], "pointer"), error, sizeof error), error);
  return env.Undefined();
}

// (device, dst, src, bytes): dst and src are each a typed array (host, at least `bytes` long) or
// a bigint device pointer (lib/device.ts checks those against the tensor's size).
Napi::Value CudaCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4) invalid(env, "expected (device, dst, src, bytes)");
  const int32_t device = deviceArgument(info, 0);
  const int64_t bytes = bytesArgument(info, 3);
  char error[512] = {0};
  auto endpoint = [&](const Napi::Value& value, const char* name) -> void* {
    if (!value.IsTypedArray()) {
      void* pointer = pointerOf(env, value, name);
      check(env, fdpo_cuda_check_device_buffer(pointer, bytes, device, error, sizeof error), error);
      return pointer;
    }
    Napi::TypedArray array = value.As<Napi::TypedArray>();
    if ((int64_t)array.ByteLength() < bytes) invalid(env, std::string(name) + " is shorter than the copy");
    return dataOf<void>(array);
  };
  void* dst = endpoint(info[1], "dst");
  const void* src = endpoint(info[2], "src");
  check(env, fdpo_cuda_copy(device, dst, src, bytes, error, sizeof error), error);
  return env.Undefined();
}

Napi::Value CudaCopyBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[2].IsNumber()) invalid(env, "expected (device, bytes, iterations)");
  double bytesPerSecond = 0;
  char error[512] = {0};
  check(env, fdpo_cuda_copy_bandwidth(deviceArgument(info, 0), bytesArgument(info, 1), info[2].As<Napi::Number>().Int32Value(),
                                      &bytesPerSecond, error, sizeof error),
        error);
  return Napi::Number::New(env, bytesPerSecond);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("sequenceLogps", Napi::Function::New(env, runSync<SequenceCall>));
  exports.Set("sequenceLogpsAsync", Napi::Function::New(env, runAsync<SequenceCall>));
  exports.Set("dpoLoss", Napi::Function::New(env, runSync<LossCall>));
  exports.Set("dpoLossAsync", Napi::Function::New(env, runAsync<LossCall>));
  exports.Set("ktoLoss", Napi::Function::New(env, runSync<KtoCall>));
  exports.Set("ktoLossAsync", Napi::Function::New(env, runAsync<KtoCall>));
  exports.Set("dpoLossUnfused", Napi::Function::New(env, runSync<UnfusedLossCall>));
  exports.Set("policyLoss", Napi::Function::New(env, runSync<PolicyCall>));
  exports.Set("policyLossAsync", Napi::Function::New(env, runAsync<PolicyCall>));
  exports.Set("gradientBuffer", Napi::Function::New(env, GradientBuffer));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("lossTable", Napi::Function::New(env, LossTable));
  exports.Set("setSimdLevel", Napi::Function::New(env, SetSimdLevel));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("expThroughput", Napi::Function::New(env, ExpThroughput));
  exports.Set("vectorExp", Napi::Function::New(env, VectorExp));
  exports.Set("cudaStatus", Napi::Function::New(env, CudaStatus));
  exports.Set("cudaDevice", Napi::Function::New(env, CudaDevice));
  exports.Set("cudaAlloc", Napi::Function::New(env, CudaAlloc));
  exports.Set("cudaFree", Napi::Function::New(env, CudaFree));
  exports.Set("cudaCopy", Napi::Function::New(env, CudaCopy));
  exports.Set("cudaCopyBandwidth", Napi::Function::New(env, CudaCopyBandwidth));
  return exports;
}

}  // namespace

NODE_API_MODULE(fused_dpo, Init)
