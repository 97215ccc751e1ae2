// The only C++ that knows about Node. It turns the plain object lib/native.ts builds into the
// core's structs, re-checks every length the kernels will index with (so no JavaScript value can
// make them read or write out of bounds), runs the work inline or on the libuv pool, and turns
// status codes into JS Errors with a `code`.
#include <napi.h>

#include <string>

#include "../core/fused_dpo.h"

namespace {

const char* statusCode(int32_t status) {
  switch (status) {
    case FDPO_ERR_INVALID_ARGUMENT: return "ERR_FDPO_INVALID_ARGUMENT";
    case FDPO_ERR_OUT_OF_MEMORY: return "ERR_FDPO_OUT_OF_MEMORY";
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

double number(const Napi::Object& args, const char* name) {
  Napi::Value value = args.Get(name);
  if (!value.IsNumber()) invalid(args.Env(), std::string(name) + " must be a number");
  return value.As<Napi::Number>().DoubleValue();
}

napi_typedarray_type logitsArrayType(int32_t dtype) {
  return dtype == FDPO_FLOAT32 ? napi_float32_array : napi_uint16_array;
}

// Reads the token-level arguments shared by both entry points.
fdpo_tokens readTokens(const Napi::Object& args) {
  fdpo_tokens t{};
  t.dtype = (int32_t)integer(args, "dtype", 0, 2);
  t.rows = integer(args, "rows", 0, (int64_t)1 << 40);
  t.vocab = integer(args, "vocab", 1, 0x7fffffff);
  if (t.rows > ((int64_t)1 << 53) / t.vocab) invalid(args.Env(), "rows * vocab is too large");
  t.logits = checkedData<void>(args, "logits", logitsArrayType(t.dtype), (size_t)(t.rows * t.vocab));
  t.labels = checkedData<int32_t>(args, "labels", napi_int32_array, (size_t)t.rows);
  Napi::TypedArray cu = typedArray(args, "cuSeqlens", napi_int32_array);
  if (cu.ElementLength() < 1) invalid(args.Env(), "cuSeqlens must have at least one element");
  t.cu_seqlens = dataOf<int32_t>(cu);
  t.num_seqs = (int64_t)cu.ElementLength() - 1;
  t.ignore_index = (int32_t)integer(args, "ignoreIndex", INT32_MIN, INT32_MAX);
  return t;
}

// Holds what one call reads and writes. `keep` pins the argument object (and so every typed
// array in it) until an async call completes.
struct SequenceCall {
  fdpo_tokens tokens;
  int32_t average;
  int32_t threads;
  double* logps;
  int32_t* counts;

  explicit SequenceCall(const Napi::Object& args) {
    tokens = readTokens(args);
    average = args.Get("average").ToBoolean() ? 1 : 0;
    threads = (int32_t)integer(args, "threads", 0, 4096);
    const size_t seqs = (size_t)tokens.num_seqs;
    logps = checkedData<double>(args, "logps", napi_float64_array, seqs);
    counts = checkedData<int32_t>(args, "counts", napi_int32_array, seqs);
  }
  int32_t run(char* error, size_t size) { return fdpo_sequence_logps(&tokens, average, logps, counts, threads, error, size); }
};

struct LossCall {
  fdpo_tokens tokens;
  fdpo_loss_config config;
  fdpo_loss_outputs outputs;
  int32_t threads;

  explicit LossCall(const Napi::Object& args) : config{}, outputs{} {
    Napi::Env env = args.Env();
    tokens = readTokens(args);
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
    config.beta = number(args, "beta");
    config.label_smoothing = number(args, "labelSmoothing");
    config.simpo_gamma = number(args, "simpoGamma");
    config.discopop_tau = number(args, "discopopTau");
    config.scale = number(args, "scale");
    if (!args.Get("refChosen").IsNull()) {
      config.ref_chosen = checkedData<double>(args, "refChosen", napi_float64_array, pairs);
      config.ref_rejected = checkedData<double>(args, "refRejected", napi_float64_array, pairs);
    }

    outputs.seq_logps = checkedData<double>(args, "seqLogps", napi_float64_array, seqs);
    outputs.seq_counts = checkedData<int32_t>(args, "seqCounts", napi_int32_array, seqs);
    outputs.seq_grad = checkedData<double>(args, "seqGrad", napi_float64_array, seqs);
    outputs.pair_losses = checkedData<double>(args, "pairLosses", napi_float64_array, pairs);
    outputs.chosen_rewards = checkedData<double>(args, "chosenRewards", napi_float64_array, pairs);
    outputs.rejected_rewards = checkedData<double>(args, "rejectedRewards", napi_float64_array, pairs);
    outputs.stats = checkedData<double>(args, "stats", napi_float64_array, FDPO_STAT_COUNT);
    if (!args.Get("grad").IsNull()) {
      outputs.grad = checkedData<void>(args, "grad", logitsArrayType(tokens.dtype), (size_t)(tokens.rows * tokens.vocab));
    }
    if (!args.Get("rowScale").IsNull()) {
      outputs.row_scale = checkedData<float>(args, "rowScale", napi_float32_array, (size_t)tokens.rows);
    }
  }
  int32_t run(char* error, size_t size) { return fdpo_dpo_loss(&tokens, &config, &outputs, threads, error, size); }
};

// The unfused baseline, for the benchmark only.
struct UnfusedLossCall : LossCall {
  using LossCall::LossCall;
  int32_t run(char* error, size_t size) { return fdpo_dpo_loss_unfused(&tokens, &config, &outputs, threads, error, size); }
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
  AsyncCall(Napi::Env env, const Napi::Object& args)
      : Napi::AsyncWorker(env, "fused-dpo"), call_(args), deferred_(Napi::Promise::Deferred::New(env)) {
    keep_ = Napi::Persistent(args);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  // On a libuv pool thread: no N-API here.
  void Execute() override { status_ = call_.run(error_, sizeof error_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (status_ == FDPO_OK) {
      deferred_.Resolve(env.Undefined());
    } else {
      deferred_.Reject(makeError(env, status_, error_).Value());
    }
  }

 private:
  Call call_;
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  int32_t status_ = FDPO_OK;
  char error_[512] = {0};
};

template <class Call>
Napi::Value runAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) invalid(env, "expected an argument object");
  auto* worker = new AsyncCall<Call>(env, info[0].As<Napi::Object>());
  Napi::Promise promise = worker->promise();
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("sequenceLogps", Napi::Function::New(env, runSync<SequenceCall>));
  exports.Set("sequenceLogpsAsync", Napi::Function::New(env, runAsync<SequenceCall>));
  exports.Set("dpoLoss", Napi::Function::New(env, runSync<LossCall>));
  exports.Set("dpoLossAsync", Napi::Function::New(env, runAsync<LossCall>));
  exports.Set("dpoLossUnfused", Napi::Function::New(env, runSync<UnfusedLossCall>));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setSimdLevel", Napi::Function::New(env, SetSimdLevel));
  exports.Set("copy", Napi::Function::New(env, Copy));
  exports.Set("expThroughput", Napi::Function::New(env, ExpThroughput));
  exports.Set("vectorExp", Napi::Function::New(env, VectorExp));
  return exports;
}

}  // namespace

NODE_API_MODULE(fused_dpo, Init)
