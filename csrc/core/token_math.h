// The per-token math of pass A and pass B, written once for the CPU kernels (every SIMD level)
// and the CUDA kernels, as loss_math.h is for the pairs: the exp's constants and range
// reduction, a row's results from its sums (the confident-token rule), and the gradient
// elements. A fragment like half_convert.h: row_kernels_{avx512,avx2,baseline}.cpp include it
// inside an anonymous namespace under their target pragma (so each level rounds with its own
// fma), after "half_convert.h" and "row_kernels.h" (RowForward); cuda_row_kernels.cu includes it
// too. The templates take an ops type O (F, set1, sub, mul, fma, exp): a SIMD level's vector
// ops, the CPU's ScalarOps, or the CUDA kernels' DeviceOps.

// exp(x) = 2^n * e^r with n = round(x*log2(e)) and r = x - n*ln2, |r| <= ln2/2.
constexpr float kLog2e = 1.44269504088896341f;
// Cody-Waite: ln2 = kLn2Hi + kLn2Lo, with few enough bits in kLn2Hi that n*kLn2Hi is exact.
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
// 1.5*2^23: (y + kRoundMagic) - kRoundMagic is y rounded to an integer, for |y| < 2^22.
constexpr float kRoundMagic = 12582912.0f;
// Below this, exp gives 0: the result would be subnormal, and adds nothing next to a row's s >= 1.
constexpr float kExpFlushBelow = -87.3f;
// x is clamped to [-kExpClamp, kExpClamp] so n stays a small integer.
constexpr float kExpClamp = 88.0f;

// x*log2(e) + kRoundMagic rounded to an integer, from the exact product (one fma): n plus the magic,
// whose low bits hold n (two's complement) for the levels that build 2^n from them. Rounding the
// product first would pick the other n when x*log2(e) lies within half an ulp of k + 1/2, and exp
// would differ by an ulp.
template <class O>
FDPO_HD typename O::F expShifted(typename O::F x) {
  return O::fma(x, O::set1(kLog2e), O::set1(kRoundMagic));
}

// n = round(x*log2(e)).
template <class O>
FDPO_HD typename O::F expExponent(typename O::F x) {
  return O::sub(expShifted<O>(x), O::set1(kRoundMagic));
}

// r = x - n*ln2, in two fmas.
template <class O>
FDPO_HD typename O::F expRemainder(typename O::F x, typename O::F n) {
  const typename O::F r = O::fma(n, O::set1(-kLn2Hi), x);
  return O::fma(n, O::set1(-kLn2Lo), r);
}

// (e^r - 1)/r for |r| <= ln2/2: e^r = 1 + r*expRatio(r), and e^r - 1 = r*expRatio(r) without
// cancellation. A degree-5 polynomial fitted to minimise the relative error of 1 + r*q(r) (Remez,
// then rounded to fp32): truncation 2e-9 relative, a sixtieth of an ulp, so the exp stays within
// 1 ulp on [-87, 88] with one fma fewer than a degree-7 Taylor polynomial.
template <class O>
FDPO_HD typename O::F expRatio(typename O::F r) {
  typename O::F p = O::set1(1.384360669e-3f);
  p = O::fma(p, r, O::set1(8.374195613e-3f));
  p = O::fma(p, r, O::set1(4.166800473e-2f));
  p = O::fma(p, r, O::set1(1.666643080e-1f));
  p = O::fma(p, r, O::set1(4.999999419e-1f));
  return O::fma(p, r, O::set1(1.0f));
}

// Model-head transforms (row_kernels.h's HeadMode and HeadConstants): t(z), and with it t'(z).
// Beyond |x| = 40 (|u| = 20) tanh is +-1 in fp32 and t' ~ 1e-17: x is clamped there, which keeps
// 1/(1 + w) a normal number.
constexpr float kTanhClamp = 40.0f;

template <int Mode, class O>
FDPO_HD typename O::F headValue(const HeadConstants& h, typename O::F z, typename O::F* slope = nullptr) {
  using F = typename O::F;
  if (Mode == kHeadIdentity) {
    if (slope) *slope = O::set1(1.0f);
    return z;
  }
  if (Mode == kHeadLinear) {
    if (slope) *slope = O::set1(h.slope);
    return O::mul(O::set1(h.slope), z);
  }
  // x = -2u; w = e^x and E = e^x - 1 from one reduction (e^x = 2^n e^r, e^x - 1 = 2^n (e^r - 1) +
  // 2^n - 1), so tanh(u) = -E/(1 + w) keeps its digits near 0 and sech^2(u) = 4w/(1 + w)^2 its
  // digits in the tails. (Clamp order: x86 min/max return the second operand for NaN.)
  F x = O::mul(O::set1(h.inner), z);
  x = O::max(O::set1(-kTanhClamp), O::min(O::set1(kTanhClamp), x));
  const F n = expExponent<O>(x);
  const F r = expRemainder<O>(x, n);
  const F q = O::mul(expRatio<O>(r), r);
  const F p2 = O::exp2i(n);
  const F em1 = O::fma(p2, q, O::sub(p2, O::set1(1.0f)));
  const F w = O::fma(p2, q, p2);
  const F inv = O::div(O::set1(1.0f), O::add(O::set1(1.0f), w));
  if (slope) *slope = O::mul(O::mul(O::set1(h.slope), O::mul(w, inv)), inv);
  return O::mul(O::mul(O::set1(h.outer), em1), inv);
}

// What pass A's sweeps sum over a row, the label's own terms left out.
struct RowSums {
  float max;        // m
  float others;     // sum over v != label of exp(z - m)
  float othersX;    // sum over v != label of exp(z - m)(z - m)
  float logitSum;   // sum z
  float nonFinite;  // sum z*0: NaN exactly when a logit is inf or NaN, else 0
  float othersSq;   // sum over v != label of exp(2(z - m)), when the squares are asked for
};

// A row's results from its sums, with the label's terms added here, so a confident token's
// 1 - p_y is not lost next to e_y = 1: s = e_y + others. When the label holds the max (e_y = 1),
// log p_y = -log1p(others) keeps every digit; otherwise p_y <= 1/2 and (z_y - m) - log(s) is exact.
FDPO_HD RowForward finishRow(const RowSums& sums, float labelLogit, int64_t vocab, bool labelIsArgmax,
                             bool squares = false) {
  const float labelX = labelLogit - sums.max;
  const float labelExp = expf(labelX);
  const float s = sums.others + labelExp;
  const float logSum = logf(s);
  RowForward f;
  f.max = sums.max;
  f.logSum = logSum;
  f.logp = sums.nonFinite != 0.0f ? bitsToFloat(0x7fc00000u) : labelX == 0.0f ? -log1pf(sums.others) : labelX - logSum;
  f.entropy = logSum - fmaf(labelExp, labelX, sums.othersX) / s;
  f.meanLogit = sums.logitSum / (float)vocab;
  f.correct = labelIsArgmax ? 1 : 0;
  f.labelSlope = 1.0f;
  f.squares = squares ? fmaf(labelExp, labelExp, sums.othersSq) : 0.0f;
  return f;
}

// The label's gradient, scale*(1 - p_y) = -scale*expm1(logp): exact for confident tokens.
FDPO_HD float labelGradient(float scale, float logp) { return -scale * expm1f(logp); }

// The deferred scale's label value: the unscaled 1 - p_y.
FDPO_HD float unscaledLabelGradient(float logp) { return -expm1f(logp); }

// The gradient of v != label, -scale*p_v = negScale*exp((z - m) - log(s)).
template <class O>
FDPO_HD typename O::F otherGradient(typename O::F negScale, typename O::F z, typename O::F m, typename O::F logSum) {
  return O::mul(negScale, O::expBelowClamp(O::sub(O::sub(z, m), logSum)));
}

// The entropy bonus's pass-B terms (policyLoss's entropyCoef): with E the row's entropy scale and
// H its entropy, dloss/dz_v gains E*p_v*(log p_v + H) (= -E dH/dz_v). v != label: with
// lp = (z - m) - log(s) = log p_v, p_v*(E*(lp + H) - scale) in one exp.
template <class O>
FDPO_HD typename O::F otherGradientWithEntropy(typename O::F negScale, typename O::F entropyScale, typename O::F entropy,
                                               typename O::F z, typename O::F m, typename O::F logSum) {
  const typename O::F lp = O::sub(O::sub(z, m), logSum);
  return O::mul(O::expBelowClamp(lp), O::fma(entropyScale, O::add(lp, entropy), negScale));
}

// The label's: scale*(1 - p_y) + E*p_y*(logp + H).
FDPO_HD float labelGradientWithEntropy(float scale, float entropyScale, float logp, float entropy) {
  return fmaf(entropyScale * expf(logp), logp + entropy, labelGradient(scale, logp));
}
