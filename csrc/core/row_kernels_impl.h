// The row kernels, written once over a vector-ops type O (AVX-512, AVX2 or scalar). Included by
// exactly one translation unit per SIMD level, inside an anonymous namespace and under that
// level's target pragma: nothing here has external linkage, so no code compiled for a wider ISA
// can leak into a caller on a narrower CPU.
//
// Every level gives the same bits: each runs kLanes = 16 lanes (AVX-512 natively, AVX2 as two
// 8-lane halves, the baseline as 16 scalars: LanesOf), so a row's sums are added in the same
// order; lanes are summed in one fixed tree (laneSum); every multiply-add is fused (the baseline
// calls fmaf; on an x86-64 CPU without FMA, where fmaf is software, it multiplies and adds
// instead: kBaselineMulAddKernels); and scalar code writes each fma it means (the build passes
// -ffp-contract=off, so GCC fuses no product into an add in the AVX files: the transforms' t - m
// would otherwise round once there and twice in the baseline).
//
// O provides: Tail (the scalar ops of row heads and tails, which round as O's lanes do), W (lanes), F (float vector), set1, add, sub, mul, div, fma (a*b+c), min, max, exp,
// expBelowClamp (exp for x <= kExpClamp or NaN: a softmax's z - max, without the upper clamp),
// exp2i (2^n for integral n), scalePow2 (e*2^n by adding n to e's exponent field, for integral
// n and a normal result; NaN n keeps e), hmax, firstEqual (first lane equal to a value, or -1), setLane,
// fence, load per element type, store and stream (fp32), streamPair (two vectors as 16-bit
// elements, in one cache line's stores), stagesWidened<DT>() (whether forwardRow keeps a chunk's
// widened 16-bit logits for its second sweep); levels whose exp is expPortable also M (lane mask),
// lessThan and zeroWhere.
//
// The model-head transforms (token_math.h's headValue) are a template parameter Mode of the row
// functions: kHeadIdentity compiles to the kernels without transforms, so their bits and speed do
// not change; Squares (useWeighting's sum of exp(2(z - m))) likewise.
//
// Requires: <math.h>, <stdint.h>, <string.h>, "row_kernels.h", "half_convert.h",
// "token_math.h" (the per-token formulas and the exp's constants, shared with the CUDA kernels).

// Rows are processed in chunks that stay in L1: each chunk is read once from memory for its max,
// then again from L1 for the exps, so the online max costs one rescale per chunk, not per element.
constexpr int64_t kChunk = 2048;

// exp(x) = 2^n * e^r (token_math.h's reduction), and e^r = 1 + r*expRatio(r) (within 1 ulp).
// Below kExpFlushBelow the result is 0. NaN stays NaN.

// e^r for |r| <= ln2/2, given n = round(x*log2(e)). Shared by every level's exp.
template <class O>
inline typename O::F expReduced(typename O::F x, typename O::F n) {
  const typename O::F r = expRemainder<O>(x, n);
  return O::fma(expRatio<O>(r), r, O::set1(1.0f));
}

// The portable exp: e^r times 2^n by an integer add to e^r's exponent field (scalePow2), not a
// multiply: the same bits (from kExpFlushBelow to kExpClamp the result is normal, so the multiply
// was exact), and one operation fewer on the multiply-add ports, which bound this loop. No lower
// clamp: below kExpFlushBelow the sum is garbage and zeroed, and e^r is finite or NaN (x = -inf),
// also zeroed. Clamped: x is clamped above at kExpClamp, so n <= 127; without it (Clamped false,
// for arguments that cannot exceed kExpClamp) one operation fewer again.
template <class O, bool Clamped = true>
inline typename O::F expPortable(typename O::F x) {
  const typename O::M below = O::lessThan(x, O::set1(kExpFlushBelow));
  // (x86 min returns its second operand for NaN: x stays NaN.)
  if (Clamped) x = O::min(O::set1(kExpClamp), x);
  const typename O::F n = expExponent<O>(x);
  return O::zeroWhere(below, O::scalePow2(expReduced<O>(x, n), n));
}

template <class O>
inline typename O::F vexp(typename O::F x) {
  return O::exp(x);
}

constexpr int kLanes = 16;

// Scalar twin of the vector ops: row tails in every level, and the baseline's lanes. Fused: fma
// rounds once, as the vector lanes do. Not Fused: a*b + c, for the baseline on an x86-64 CPU
// without FMA, where fmaf is software and made that baseline about 45 times slower (measured
// with glibc's software fmaf); its results may differ from other CPUs' in the last bits.
template <bool Fused>
struct ScalarOpsOf {
  using Tail = ScalarOpsOf;
  static constexpr int W = 1;
  // Whether forwardRow widens a chunk of DT logits once and keeps the floats for its second sweep.
  // Measured: fp16 always (its conversion is a dozen operations); bf16 (a shift) only in the fused
  // baseline, whose loops the compiler vectorises (x86: compiled for FMA, so AVX; 97 ms without
  // the staging, 55 ms for fp32 at 2048 x 32000), not in the mul-add one, which stays scalar and
  // where a store and a load more made bfloat16's forward pass 7-10% slower than widening again.
  template <int DT>
  static constexpr bool stagesWidened() {
    return DT == FDPO_FLOAT16 || (Fused && DT == FDPO_BFLOAT16);
  }
  using F = float;
  using M = bool;
  static F set1(float v) { return v; }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F div(F a, F b) { return a / b; }
  static F fma(F a, F b, F c) { return Fused ? __builtin_fmaf(a, b, c) : a * b + c; }
  // Same NaN behaviour as x86 minps/maxps: the second operand when either is NaN.
  static F min(F a, F b) { return a < b ? a : b; }
  static F max(F a, F b) { return a > b ? a : b; }
  static M lessThan(F a, F b) { return a < b; }
  static F zeroWhere(M m, F v) { return m ? 0.0f : v; }
  static F exp2i(F n) {
    const int32_t k = n == n ? (int32_t)n : 0;  // NaN would be undefined behaviour; p is NaN anyway
    const uint32_t bits = (uint32_t)(k + 127) << 23;
    float out;
    memcpy(&out, &bits, 4);
    return out;
  }
  static F scalePow2(F e, F n) {
    // (Outside [-127, 127], NaN included, n comes only with results that are zeroed or NaN.)
    const int32_t k = n >= -127.0f && n <= 127.0f ? (int32_t)n : 0;
    uint32_t bits;
    memcpy(&bits, &e, 4);
    bits += (uint32_t)k << 23;
    float out;
    memcpy(&out, &bits, 4);
    return out;
  }
  static float hmax(F v) { return v; }
  static int firstEqual(F z, float m) { return z == m ? 0 : -1; }
  static F exp(F x) { return expPortable<ScalarOpsOf>(x); }
  static F expBelowClamp(F x) { return expPortable<ScalarOpsOf, false>(x); }
  static F setLane(F, int, float value) { return value; }
  static void fence() {}
  template <int DT>
  static F load(const void* p, int64_t i) {
    return loadElement<DT>(p, i);
  }
  static void store(float* p, int64_t i, F v) { p[i] = v; }
  static void stream(float* p, int64_t i, F v) { p[i] = v; }
  template <int DT>
  static void streamPair(void* p, int64_t i, F a, F b) {
    storeElement<DT>(p, i, a);
    storeElement<DT>(p, i + 1, b);
  }
};

using ScalarOps = ScalarOpsOf<true>;

// N vectors of S as one vector of N * S::W lanes: lane k is lane k % S::W of part k / S::W.
template <class S, int N>
struct LanesOf {
  using Tail = typename S::Tail;
  static constexpr int W = N * S::W;
  template <int DT>
  static constexpr bool stagesWidened() {
    return S::template stagesWidened<DT>();
  }
  struct F {
    typename S::F part[N];
  };
  // (Loops, not lambdas: GCC does not give a lambda the target of the pragma around it.)
  static F set1(float v) {
    F r;
    for (int k = 0; k < N; ++k) r.part[k] = S::set1(v);
    return r;
  }
  static F add(F a, F b) {
    for (int k = 0; k < N; ++k) a.part[k] = S::add(a.part[k], b.part[k]);
    return a;
  }
  static F sub(F a, F b) {
    for (int k = 0; k < N; ++k) a.part[k] = S::sub(a.part[k], b.part[k]);
    return a;
  }
  static F mul(F a, F b) {
    for (int k = 0; k < N; ++k) a.part[k] = S::mul(a.part[k], b.part[k]);
    return a;
  }
  static F div(F a, F b) {
    for (int k = 0; k < N; ++k) a.part[k] = S::div(a.part[k], b.part[k]);
    return a;
  }
  static F fma(F a, F b, F c) {
    for (int k = 0; k < N; ++k) a.part[k] = S::fma(a.part[k], b.part[k], c.part[k]);
    return a;
  }
  static F min(F a, F b) {
    for (int k = 0; k < N; ++k) a.part[k] = S::min(a.part[k], b.part[k]);
    return a;
  }
  static F max(F a, F b) {
    for (int k = 0; k < N; ++k) a.part[k] = S::max(a.part[k], b.part[k]);
    return a;
  }
  static F exp(F x) {
    for (int k = 0; k < N; ++k) x.part[k] = S::exp(x.part[k]);
    return x;
  }
  static F expBelowClamp(F x) {
    for (int k = 0; k < N; ++k) x.part[k] = S::expBelowClamp(x.part[k]);
    return x;
  }
  static F exp2i(F n) {
    for (int k = 0; k < N; ++k) n.part[k] = S::exp2i(n.part[k]);
    return n;
  }
  static F scalePow2(F e, F n) {
    for (int k = 0; k < N; ++k) e.part[k] = S::scalePow2(e.part[k], n.part[k]);
    return e;
  }
  static float hmax(F v) {
    float m = S::hmax(v.part[0]);
    for (int k = 1; k < N; ++k) m = ScalarOps::max(S::hmax(v.part[k]), m);
    return m;
  }
  static int firstEqual(F z, float m) {
    for (int k = 0; k < N; ++k) {
      const int lane = S::firstEqual(z.part[k], m);
      if (lane >= 0) return k * S::W + lane;
    }
    return -1;
  }
  static F setLane(F v, int lane, float value) {
    v.part[lane / S::W] = S::setLane(v.part[lane / S::W], lane % S::W, value);
    return v;
  }
  static void fence() { S::fence(); }
  template <int DT>
  static F load(const void* p, int64_t i) {
    F r;
    for (int k = 0; k < N; ++k) r.part[k] = S::template load<DT>(p, i + k * S::W);
    return r;
  }
  static void store(float* p, int64_t i, F v) {
    for (int k = 0; k < N; ++k) S::store(p, i + k * S::W, v.part[k]);
  }
  static void stream(float* p, int64_t i, F v) {
    for (int k = 0; k < N; ++k) S::stream(p, i + k * S::W, v.part[k]);
  }
  // a's lanes then b's, as 16-bit elements: the parts in order, two per store of S.
  template <int DT>
  static void streamPair(void* p, int64_t i, F a, F b) {
    static_assert(N % 2 == 0, "parts are stored in pairs");
    for (int k = 0; k < N; k += 2) S::template streamPair<DT>(p, i + k * S::W, a.part[k], a.part[k + 1]);
    for (int k = 0; k < N; k += 2) S::template streamPair<DT>(p, i + W + k * S::W, b.part[k], b.part[k + 1]);
  }
};

// The sum of a vector's kLanes lanes, in the same tree at every level: lanes 8 apart, then 4, 2, 1.
template <class O>
inline float laneSum(typename O::F v) {
  static_assert(O::W == kLanes, "every level sums kLanes lanes");
  alignas(64) float lanes[kLanes];
  O::store(lanes, 0, v);
  for (int half = kLanes / 2; half >= 1; half /= 2) {
    for (int k = 0; k < half; ++k) lanes[k] += lanes[k + half];
  }
  return lanes[0];
}

template <int DT>
constexpr int64_t elementSize() {
  return DT == FDPO_FLOAT32 ? 4 : 2;
}

// A cache line: the unit the streaming stores write.
constexpr int64_t kLineBytes = 64;

// Elements before p + i starts a cache line (p is aligned to its element).
template <int DT>
inline int64_t headToLine(const void* p, int64_t n) {
  const int64_t mis = (int64_t)((uintptr_t)p % (uintptr_t)kLineBytes);
  const int64_t head = mis == 0 ? 0 : (kLineBytes - mis) / elementSize<DT>();
  return head < n ? head : n;
}

// NaN when a logit of the row is inf or NaN, else 0 (RowSums::nonFinite): the rescan behind an
// identity row whose logit sum is not finite (a sum of finite logits can also overflow).
template <int DT>
float nonFiniteOf(const void* row, int64_t vocab) {
  for (int64_t i = 0; i < vocab; ++i) {
    const float z = loadElement<DT>(row, i);
    if (z - z != 0.0f) return z - z;  // (inf - inf and NaN - NaN are NaN)
  }
  return 0.0f;
}

// First index in [begin, end) whose logit equals m, or -1.
template <class O, int DT>
int32_t firstIndexOf(const void* row, int64_t begin, int64_t end, float m) {
  int64_t i = begin;
  for (; i + O::W <= end; i += O::W) {
    const int lane = O::firstEqual(O::template load<DT>(row, i), m);
    if (lane >= 0) return (int32_t)(i + lane);
  }
  for (; i < end; ++i) {
    if (loadElement<DT>(row, i) == m) return (int32_t)i;
  }
  return -1;
}

// Keep (the deferred scale): sweep 2 also stores each exp(t - m_c) (times t' with a transform) into
// kept[v] and the base m_c of each chunk into chunkBase[c], so the row's t'*(onehot - p) costs one
// multiply per element later. With a transform, sweep 1 finds the raw max (t is increasing, so
// t(max) is the max of t: it and the argmax need no transform), and sweep 2 sums t for the mean.
template <class O, int DT, int Mode, bool Squares, bool Keep = false>
void forwardRow(const void* row, int64_t vocab, int32_t label, const HeadConstants& head, RowForward& out,
                float* kept = nullptr, float* chunkBase = nullptr) {
  using F = typename O::F;
  using S = typename O::Tail;
  constexpr bool kTransformed = Mode != kHeadIdentity;
  const float inf = __builtin_inff();
  const int64_t vecEnd = vocab - vocab % O::W;

  F best = O::set1(-inf), sum = O::set1(0.0f), nonFinite = O::set1(0.0f);
  F best2 = O::set1(-inf), sum2 = O::set1(0.0f), nonFinite2 = O::set1(0.0f);  // sweep 1's second set
  F sumExp = O::set1(0.0f), sumExpX = O::set1(0.0f), sumSq = O::set1(0.0f);
  float tBest = -inf, tSum = 0.0f, tNonFinite = 0.0f, tSumExp = 0.0f, tSumExpX = 0.0f, tSumSq = 0.0f;
  float m = -inf;   // the raw max so far
  float mt = -inf;  // t(m), what the sums are relative to
  int64_t maxChunk = 0;  // the first chunk that holds the row max: the argmax is found there at the end
  // 16-bit logits: sweep 1 leaves the chunk's widened vectors here (8 KB, in L1) and sweep 2 reads
  // them back, so the widening (two vector ops per vector, on the ports the exp needs) runs once,
  // where that is cheaper than widening again (O::stagesWidened).
  constexpr bool kStaged = DT != FDPO_FLOAT32 && O::template stagesWidened<DT>();
  alignas(64) float staged[kStaged ? kChunk : 1];

  for (int64_t c0 = 0; c0 < vocab; c0 += kChunk) {
    const int64_t c1 = c0 + kChunk < vocab ? c0 + kChunk : vocab;
    const int64_t v1 = c1 < vecEnd ? c1 : vecEnd;
    // Sweep 1 (from memory): the max, the logit sum, and with a transform z*0 (NaN exactly for
    // inf/NaN logits; without one the logit sum says the same: the row is rescanned when it is not
    // finite, and the fma it saves is 5% of the bfloat16 forward pass). Two vectors at a time into
    // two sets of accumulators: with one, each step waited for the latency of the step before (a
    // max, an add and an fma, each a dependency chain).
    int64_t i = c0;
    for (; i + 2 * O::W <= v1; i += 2 * O::W) {
      const F z = O::template load<DT>(row, i), z2 = O::template load<DT>(row, i + O::W);
      if (kStaged) {
        O::store(staged, i - c0, z);
        O::store(staged, i - c0 + O::W, z2);
      }
      best = O::max(z, best);
      best2 = O::max(z2, best2);
      if (kTransformed) {
        nonFinite = O::fma(z, O::set1(0.0f), nonFinite);
        nonFinite2 = O::fma(z2, O::set1(0.0f), nonFinite2);
      } else {
        sum = O::add(sum, z);
        sum2 = O::add(sum2, z2);
      }
    }
    for (; i < v1; i += O::W) {
      const F z = O::template load<DT>(row, i);
      if (kStaged) O::store(staged, i - c0, z);
      best = O::max(z, best);
      if (kTransformed) {
        nonFinite = O::fma(z, O::set1(0.0f), nonFinite);
      } else {
        sum = O::add(sum, z);
      }
    }
    for (int64_t i = c0 > vecEnd ? c0 : vecEnd; i < c1; ++i) {
      const float z = S::template load<DT>(row, i);
      tBest = S::max(z, tBest);
      if (kTransformed) {
        tNonFinite = S::fma(z, 0.0f, tNonFinite);
      } else {
        tSum += z;
      }
    }
    const float runningMax = S::max(O::hmax(O::max(best2, best)), tBest);
    if (c0 == 0) {
      m = runningMax;
      mt = headValue<Mode, S>(head, m);
    } else if (runningMax > m) {
      // Rebase the running sums from m to the new max: e' = e*alpha and (z - m') = (z - m) + d.
      const float newMt = headValue<Mode, S>(head, runningMax);
      const float d = mt - newMt;
      const float alpha = expf(d);
      sumExpX = O::mul(O::set1(alpha), O::fma(O::set1(d), sumExp, sumExpX));
      sumExp = O::mul(O::set1(alpha), sumExp);
      tSumExpX = alpha * S::fma(d, tSumExp, tSumExpX);
      tSumExp = alpha * tSumExp;
      if (Squares) {
        sumSq = O::mul(O::set1(alpha), O::mul(O::set1(alpha), sumSq));
        tSumSq = alpha * (alpha * tSumSq);
      }
      m = runningMax;
      mt = newMt;
      maxChunk = c0;
    }
    // Sweep 2 (from L1): over v != label, sum exp(z - m) and exp(z - m)*(z - m) (for the
    // entropy). The label's own terms are added at the end, so a confident token's 1 - p_y is not
    // lost next to e_y = 1. Per-chunk partial sums keep rounding error growing with the chunk.
    const F vm = O::set1(mt);
    F chunkExp = O::set1(0.0f), chunkExpX = O::set1(0.0f), chunkSq = O::set1(0.0f);
    for (int64_t i = c0; i < v1; i += O::W) {
      // Ask for the next chunk while this one's exps keep the core busy.
      __builtin_prefetch((const char*)row + (i + kChunk) * elementSize<DT>());
      F slope;
      const F z = kStaged ? O::template load<FDPO_FLOAT32>(staged, i - c0) : O::template load<DT>(row, i);
      const F t = headValue<Mode, O>(head, z, Keep ? &slope : nullptr);
      if (kTransformed) sum = O::add(sum, t);
      const F x = O::sub(t, vm);
      F e = O::expBelowClamp(x);  // x = t - max <= 0
      if (Keep) O::store(kept, i, kTransformed ? O::mul(e, slope) : e);
      if (label >= i && label < i + O::W) e = O::setLane(e, (int)(label - i), 0.0f);
      chunkExp = O::add(chunkExp, e);
      chunkExpX = O::fma(e, x, chunkExpX);
      if (Squares) chunkSq = O::fma(e, e, chunkSq);
    }
    sumExp = O::add(sumExp, chunkExp);
    sumExpX = O::add(sumExpX, chunkExpX);
    if (Squares) sumSq = O::add(sumSq, chunkSq);
    for (int64_t i = c0 > vecEnd ? c0 : vecEnd; i < c1; ++i) {
      float slope;
      const float t = headValue<Mode, S>(head, S::template load<DT>(row, i), Keep ? &slope : nullptr);
      if (kTransformed) tSum += t;
      if (i == label) continue;
      const float x = t - mt;
      const float e = S::expBelowClamp(x);
      if (Keep) kept[i] = kTransformed ? e * slope : e;
      tSumExp += e;
      tSumExpX = S::fma(e, x, tSumExpX);
      if (Squares) tSumSq = S::fma(e, e, tSumSq);
    }
    if (Keep) chunkBase[c0 / kChunk] = mt;
  }

  const int64_t maxChunkEnd = maxChunk + kChunk < vocab ? maxChunk + kChunk : vocab;
  if (!kTransformed) sum = O::add(sum, sum2);
  const float logitSum = laneSum<O>(sum) + tSum;
  const float nonFiniteSum = kTransformed ? laneSum<O>(O::add(nonFinite, nonFinite2)) + tNonFinite
                             : logitSum - logitSum == 0.0f ? 0.0f
                                                           : nonFiniteOf<DT>(row, vocab);
  const RowSums sums{mt,
                     laneSum<O>(sumExp) + tSumExp,
                     laneSum<O>(sumExpX) + tSumExpX,
                     logitSum,
                     nonFiniteSum,
                     Squares ? laneSum<O>(sumSq) + tSumSq : 0.0f};
  float labelSlope;
  const float labelT = headValue<Mode, S>(head, S::template load<DT>(row, label), &labelSlope);
  out = finishRow(sums, labelT, vocab, firstIndexOf<O, DT>(row, maxChunk, maxChunkEnd, m) == label, Squares);
  out.labelSlope = labelSlope;
}

// Writes one row of the output through O's streaming stores, a cache line at a time: a scalar
// head up to a line, full lines, a scalar tail. A line of 16-bit elements is two vectors, narrowed
// together (one pack and one permute per line: 2-5% faster than narrowing each vector). (Functors,
// not lambdas: GCC does not give a lambda the target of the pragma around it.)
template <class O, int DT, class Values>
inline void writeRow(void* dst, int64_t vocab, const Values& values) {
  constexpr int64_t kPerLine = kLineBytes / elementSize<DT>();
  static_assert(kPerLine == (DT == FDPO_FLOAT32 ? 1 : 2) * O::W, "a line is one fp32 vector or two 16-bit ones");
  const int64_t head = headToLine<DT>(dst, vocab);
  int64_t i = 0;
  for (; i < head; ++i) storeElement<DT>(dst, i, values.scalar(i));
  for (; i + kPerLine <= vocab; i += kPerLine) {
    if constexpr (DT == FDPO_FLOAT32) {
      O::stream((float*)dst, i, values.vector(i));
    } else {
      O::template streamPair<DT>(dst, i, values.vector(i), values.vector(i + O::W));
    }
  }
  for (; i < vocab; ++i) storeElement<DT>(dst, i, values.scalar(i));
}

template <class O>
struct ZeroValues {
  typename O::F vector(int64_t) const { return O::set1(0.0f); }
  float scalar(int64_t) const { return 0.0f; }
};

// How far ahead of its loads pass B asks for the logits. With the hardware prefetcher alone, pass B
// spent most of its time waiting for its loads (perf: the instruction after the load), likely
// because the gradient's streaming stores hold the fill buffers the prefetcher needs. Measured on
// an AVX-512 Xeon, each level forced: pass B 1.6-1.9x faster at AVX2, 1.1-2x at AVX-512; 2 KB was
// the best of 0.5-8 KB.
constexpr int64_t kBackwardPrefetchBytes = 2048;

// scale * t'(z) * (onehot - p) for one row; the label lane is the precomputed labelGrad. Entropy:
// plus t'(z) times the entropy bonus's term (token_math.h's otherGradientWithEntropy), with the
// row's entropy scale E; without it the code (and bits) are those of before.
template <class O, int DT, int Mode, bool Entropy = false>
struct GradValues {
  using F = typename O::F;
  const void* row;
  int64_t label;
  const HeadConstants& head;
  float m, logSum, negScale, labelGrad, entropyScale, entropy;
  F vm, vLogSum, vNegScale, vEntropyScale, vEntropy;
  GradValues(const void* row_, int32_t label_, float scale, const RowForward& f, const HeadConstants& head_,
             float entropyScale_ = 0.0f)
      : row(row_), label(label_), head(head_), m(f.max), logSum(f.logSum), negScale(-scale),
        labelGrad(Entropy ? labelGradientWithEntropy(Mode == kHeadIdentity ? scale : scale * f.labelSlope,
                                                     Mode == kHeadIdentity ? entropyScale_ : entropyScale_ * f.labelSlope,
                                                     f.logp, f.entropy)
                          : labelGradient(Mode == kHeadIdentity ? scale : scale * f.labelSlope, f.logp)),
        entropyScale(entropyScale_), entropy(f.entropy), vm(O::set1(f.max)), vLogSum(O::set1(f.logSum)),
        vNegScale(O::set1(-scale)), vEntropyScale(O::set1(entropyScale_)), vEntropy(O::set1(f.entropy)) {}
  template <class P>
  typename P::F element(typename P::F t, typename P::F vNeg, typename P::F vMax, typename P::F vLog, typename P::F vE,
                        typename P::F vH) const {
    if (Entropy) return otherGradientWithEntropy<P>(vNeg, vE, vH, t, vMax, vLog);
    return otherGradient<P>(vNeg, t, vMax, vLog);
  }
  template <class P>
  typename P::F at(typename P::F z, typename P::F vNeg, typename P::F vMax, typename P::F vLog, typename P::F vE,
                   typename P::F vH) const {
    if (Mode == kHeadIdentity) return element<P>(z, vNeg, vMax, vLog, vE, vH);
    typename P::F slope;
    const typename P::F t = headValue<Mode, P>(head, z, &slope);
    return P::mul(element<P>(t, vNeg, vMax, vLog, vE, vH), slope);
  }
  F vector(int64_t i) const {
    __builtin_prefetch((const char*)row + i * elementSize<DT>() + kBackwardPrefetchBytes);
    F g = at<O>(O::template load<DT>(row, i), vNegScale, vm, vLogSum, vEntropyScale, vEntropy);
    if (label >= i && label < i + O::W) g = O::setLane(g, (int)(label - i), labelGrad);
    return g;
  }
  float scalar(int64_t i) const {
    if (i == label) return labelGrad;
    return at<typename O::Tail>(loadElement<DT>(row, i), negScale, m, logSum, entropyScale, entropy);
  }
};

template <class O, int DT, int Mode, bool Entropy = false>
void backwardRow(const void* row, void* dst, int64_t vocab, int32_t label, float scale, const RowForward& f,
                 const HeadConstants& head, float entropyScale = 0.0f) {
  // Ignored token or a pair with zero gradient: exact zeros, and the logits are not read.
  if (scale == 0.0f && (!Entropy || entropyScale == 0.0f)) return writeRow<O, DT>(dst, vocab, ZeroValues<O>());
  writeRow<O, DT>(dst, vocab, GradValues<O, DT, Mode, Entropy>(row, label, scale, f, head, entropyScale));
}

template <int DT>
const void* rowPointer(const void* base, int64_t row, int64_t vocab) {
  return (const char*)base + row * vocab * elementSize<DT>();
}

template <class O, int DT, int Mode, bool Squares>
void forwardRowsTyped(const void* logits, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                      const HeadConstants& head, int64_t begin, int64_t end, RowForward* out) {
  for (int64_t r = begin; r < end; ++r) {
    if (labels[r] == ignoreIndex) continue;
    forwardRow<O, DT, Mode, Squares>(rowPointer<DT>(logits, r, vocab), vocab, labels[r], head, out[r]);
  }
}

// t'*(onehot - p) for one row from the exps forwardRow<..., true> kept (times t'): p_v*t'_v =
// kept[v] * factor[chunk of v], factor = exp((m_c - m) - log(s)); the label's t'_y*(1 - p_y) as in pass B.
template <class O>
struct KeptValues {
  using F = typename O::F;
  const float* kept;
  const float* factor;
  int64_t label;
  float labelValue;
  F vector(int64_t i) const {
    F g;
    if ((i / kChunk) == ((i + O::W - 1) / kChunk)) {
      g = O::mul(O::set1(-factor[i / kChunk]), O::template load<FDPO_FLOAT32>(kept, i));
    } else {
      // A vector across a chunk boundary (only when the output row starts unaligned).
      alignas(64) float lanes[O::W];
      for (int k = 0; k < O::W; ++k) lanes[k] = -factor[(i + k) / kChunk] * kept[i + k];
      g = O::template load<FDPO_FLOAT32>(lanes, 0);
    }
    if (label >= i && label < i + O::W) g = O::setLane(g, (int)(label - i), labelValue);
    return g;
  }
  float scalar(int64_t i) const { return i == label ? labelValue : -factor[i / kChunk] * kept[i]; }
};

// A float buffer that grows, contents not kept. Not std::vector: its out-of-line members (the
// resize's fill) are weak symbols, of which the linker keeps one copy for the whole library, so a
// copy compiled in a wider level's file could run on a CPU without that ISA; this type's members
// are this translation unit's own.
struct FloatScratch {
  float* data = nullptr;
  size_t size = 0;
  FloatScratch() = default;
  FloatScratch(const FloatScratch&) = delete;
  FloatScratch& operator=(const FloatScratch&) = delete;
  ~FloatScratch() { delete[] data; }
  void fit(size_t n) {
    if (n <= size) return;
    delete[] data;
    data = nullptr;
    size = 0;
    data = new float[n];
    size = n;
  }
};

// Per-thread scratch for the deferred scale: one row of exps and the chunk factors, reused (each
// written before it is read).
struct DeferredScratch {
  FloatScratch kept, chunkBase, factor;
  void fit(int64_t vocab) {
    const size_t chunks = (size_t)((vocab + kChunk - 1) / kChunk);
    kept.fit((size_t)vocab);
    chunkBase.fit(chunks);
    factor.fit(chunks);
  }
};

template <class O, int DT, int Mode, bool Squares>
void forwardDeferredRowsTyped(const void* logits, void* grad, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                              const HeadConstants& head, int64_t begin, int64_t end, RowForward* out) {
  for (int64_t r = begin; r < end; ++r) {
    const void* row = rowPointer<DT>(logits, r, vocab);
    void* dst = (char*)grad + r * vocab * elementSize<DT>();
    if (labels[r] == ignoreIndex) {
      writeRow<O, DT>(dst, vocab, ZeroValues<O>());
      continue;
    }
    static thread_local DeferredScratch scratch;
    scratch.fit(vocab);
    const RowForward& f = out[r];
    forwardRow<O, DT, Mode, Squares, true>(row, vocab, labels[r], head, out[r], scratch.kept.data, scratch.chunkBase.data);
    const int64_t chunks = (vocab + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < chunks; ++c) scratch.factor.data[c] = expf((scratch.chunkBase.data[c] - f.max) - f.logSum);
    const float labelValue = Mode == kHeadIdentity ? unscaledLabelGradient(f.logp) : f.labelSlope * unscaledLabelGradient(f.logp);
    writeRow<O, DT>(dst, vocab, KeptValues<O>{scratch.kept.data, scratch.factor.data, labels[r], labelValue});
  }
}

template <class O, int DT, int Mode, bool Entropy = false>
void backwardRowsTyped(const void* logits, void* grad, int64_t vocab, const int32_t* labels, const HeadConstants& head,
                       const float* rowScale, const RowForward* rows, int64_t begin, int64_t end,
                       const float* entropyScale = nullptr) {
  for (int64_t r = begin; r < end; ++r) {
    void* dst = (char*)grad + r * vocab * elementSize<DT>();
    backwardRow<O, DT, Mode, Entropy>(rowPointer<DT>(logits, r, vocab), dst, vocab, labels[r], rowScale[r], rows[r], head,
                                      Entropy ? entropyScale[r] : 0.0f);
  }
}

// The run-time options to the template parameters: a switch per choice (no lambdas: GCC does not
// give a lambda the target of the pragma around it).
template <class O, int DT, bool Deferred, int Mode, bool Squares>
void forwardRowsOf(const void* logits, void* grad, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                   const HeadConstants& head, int64_t begin, int64_t end, RowForward* out) {
  if (Deferred) {
    forwardDeferredRowsTyped<O, DT, Mode, Squares>(logits, grad, vocab, labels, ignoreIndex, head, begin, end, out);
  } else {
    forwardRowsTyped<O, DT, Mode, Squares>(logits, vocab, labels, ignoreIndex, head, begin, end, out);
  }
}

template <class O, int DT, bool Deferred, int Mode>
void forwardRowsMode(const void* logits, void* grad, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                     const RowOptions& o, int64_t begin, int64_t end, RowForward* out) {
  if (o.squares) {
    forwardRowsOf<O, DT, Deferred, Mode, true>(logits, grad, vocab, labels, ignoreIndex, o.head, begin, end, out);
  } else {
    forwardRowsOf<O, DT, Deferred, Mode, false>(logits, grad, vocab, labels, ignoreIndex, o.head, begin, end, out);
  }
}

template <class O, int DT, bool Deferred>
void forwardRowsDtype(const void* logits, void* grad, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                      const RowOptions& o, int64_t begin, int64_t end, RowForward* out) {
  switch (o.headMode) {
    case kHeadIdentity:
      return forwardRowsMode<O, DT, Deferred, kHeadIdentity>(logits, grad, vocab, labels, ignoreIndex, o, begin, end, out);
    case kHeadLinear:
      return forwardRowsMode<O, DT, Deferred, kHeadLinear>(logits, grad, vocab, labels, ignoreIndex, o, begin, end, out);
    case kHeadCapped:
      return forwardRowsMode<O, DT, Deferred, kHeadCapped>(logits, grad, vocab, labels, ignoreIndex, o, begin, end, out);
  }
}

template <class O, bool Deferred>
void forwardRowsAny(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                    int32_t ignoreIndex, const RowOptions& o, int64_t begin, int64_t end, RowForward* out) {
  switch (dtype) {
    case FDPO_FLOAT32:
      return forwardRowsDtype<O, FDPO_FLOAT32, Deferred>(logits, grad, vocab, labels, ignoreIndex, o, begin, end, out);
    case FDPO_BFLOAT16:
      return forwardRowsDtype<O, FDPO_BFLOAT16, Deferred>(logits, grad, vocab, labels, ignoreIndex, o, begin, end, out);
    case FDPO_FLOAT16:
      return forwardRowsDtype<O, FDPO_FLOAT16, Deferred>(logits, grad, vocab, labels, ignoreIndex, o, begin, end, out);
  }
}

template <class O>
void forwardRows(const void* logits, int32_t dtype, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                 const RowOptions& options, int64_t begin, int64_t end, RowForward* out) {
  forwardRowsAny<O, false>(logits, nullptr, dtype, vocab, labels, ignoreIndex, options, begin, end, out);
}

template <class O>
void forwardDeferredRows(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                         int32_t ignoreIndex, const RowOptions& options, int64_t begin, int64_t end, RowForward* out) {
  forwardRowsAny<O, true>(logits, grad, dtype, vocab, labels, ignoreIndex, options, begin, end, out);
  O::fence();
}

template <class O, int DT, bool Entropy = false>
void backwardRowsDtype(const void* logits, void* grad, int64_t vocab, const int32_t* labels, const RowOptions& o,
                       const float* rowScale, const RowForward* rows, int64_t begin, int64_t end,
                       const float* entropyScale = nullptr) {
  switch (o.headMode) {
    case kHeadIdentity:
      return backwardRowsTyped<O, DT, kHeadIdentity, Entropy>(logits, grad, vocab, labels, o.head, rowScale, rows, begin, end, entropyScale);
    case kHeadLinear:
      return backwardRowsTyped<O, DT, kHeadLinear, Entropy>(logits, grad, vocab, labels, o.head, rowScale, rows, begin, end, entropyScale);
    case kHeadCapped:
      return backwardRowsTyped<O, DT, kHeadCapped, Entropy>(logits, grad, vocab, labels, o.head, rowScale, rows, begin, end, entropyScale);
  }
}

template <class O, bool Entropy = false>
void backwardRowsAny(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                     const RowOptions& options, const float* rowScale, const RowForward* rows, int64_t begin, int64_t end,
                     const float* entropyScale = nullptr) {
  switch (dtype) {
    case FDPO_FLOAT32:
      backwardRowsDtype<O, FDPO_FLOAT32, Entropy>(logits, grad, vocab, labels, options, rowScale, rows, begin, end, entropyScale);
      break;
    case FDPO_BFLOAT16:
      backwardRowsDtype<O, FDPO_BFLOAT16, Entropy>(logits, grad, vocab, labels, options, rowScale, rows, begin, end, entropyScale);
      break;
    case FDPO_FLOAT16:
      backwardRowsDtype<O, FDPO_FLOAT16, Entropy>(logits, grad, vocab, labels, options, rowScale, rows, begin, end, entropyScale);
      break;
  }
  O::fence();
}

template <class O>
void backwardRows(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                  const RowOptions& options, const float* rowScale, const RowForward* rows, int64_t begin, int64_t end) {
  backwardRowsAny<O>(logits, grad, dtype, vocab, labels, options, rowScale, rows, begin, end);
}

// Pass B with the entropy bonus's term (policyLoss's entropyCoef).
template <class O>
void backwardEntropyRows(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                         const RowOptions& options, const float* rowScale, const float* entropyScale,
                         const RowForward* rows, int64_t begin, int64_t end) {
  backwardRowsAny<O, true>(logits, grad, dtype, vocab, labels, options, rowScale, rows, begin, end, entropyScale);
}

template <class O>
void expValues(const float* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + O::W <= n; i += O::W) O::store(out, i, vexp<O>(O::template load<FDPO_FLOAT32>(in, i)));
  for (; i < n; ++i) out[i] = vexp<typename O::Tail>(in[i]);
}

template <class O>
constexpr RowKernels makeRowKernels(const char* name) {
  return RowKernels{name, &forwardRows<O>, &forwardDeferredRows<O>, &backwardRows<O>, &expValues<O>, &backwardEntropyRows<O>};
}
