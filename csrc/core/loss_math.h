// The DPO-family pair losses and their derivatives, written once for every backend (the CPU
// backend includes this as plain C++, the CUDA backend as __host__ __device__). Each function
// is a formula of SPEC.md's table in fp64, evaluated in log space where the textbook form
// overflows. Derivatives are with respect to the SUM scores pi_c, pi_r; averaged losses fold
// the 1/max(N,1) in here so callers never care which score a loss uses.
#ifndef FUSED_DPO_LOSS_MATH_H
#define FUSED_DPO_LOSS_MATH_H

#include <math.h>

#include "fused_dpo.h"
#include "host_device.h"

namespace fdpo {

// What one pair contributes: its loss and the derivatives with respect to pi_c and pi_r.
struct PairTerm {
  double loss;
  double dChosen;
  double dRejected;
};

// Per-pair scores (SPEC.md, "Per pair").
struct PairScores {
  double piChosen, piRejected;    // policy sums
  double refChosen, refRejected;  // reference sums (0 when absent)
  double nChosen, nRejected;      // max(N, 1)
  double lengthChosen, lengthRejected;  // N (completion tokens)
  // The log-ratios a = pi_c - rho_c, b = pi_r - rho_r: the difference of the sums, or with per-token
  // references the sum of the per-token differences (Batch::ratioChosen).
  double ratioChosen, ratioRejected;
};


FDPO_HD double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  const double e = exp(x);
  return e / (1.0 + e);
}

// sigmoid'(x) = sigmoid(x)·sigmoid(−x): no cancellation where sigmoid(x) is near 1 (unlike s·(1 − s)).
FDPO_HD double sigmoidPrime(double x) { return sigmoid(x) * sigmoid(-x); }

// log(1 + e^x) without overflow or loss of small values.
FDPO_HD double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

FDPO_HD double logSigmoid(double x) { return -softplus(-x); }

// log(1 - e^x) for x < 0, accurate near 0 and for very negative x.
FDPO_HD double log1mExp(double x) { return x > -0.6931471805599453 ? log(-expm1(x)) : log1p(-exp(x)); }

// The margin Delta of log-ratios x (chosen) and y (rejected) under an f-divergence, and its
// partial derivatives. TRL's alpha_divergence caps each exponent at log(FLT_MAX) (its cap_exp
// for fp32 log-probs, floored to 4 decimals), with zero derivative past the cap.
struct Margin {
  double value, dX, dY;
};

FDPO_HD double cappedExp(double x, double& slope) {
  const double kCap = 88.7228;
  const double e = exp(x < kCap ? x : kCap);
  slope = x < kCap ? e : 0.0;
  return e;
}

FDPO_HD Margin fMargin(int divergence, double alpha, double x, double y) {
  Margin m = {x - y, 1.0, -1.0};
  if (divergence == FDPO_F_JS_DIVERGENCE) {
    // log(2u/(1+u)) per side: Delta - (softplus(x) - softplus(y)); d/dx = 1 - sigmoid(x) = sigmoid(-x).
    m.value -= softplus(x) - softplus(y);
    m.dX = sigmoid(-x);
    m.dY = -sigmoid(-y);
  } else if (divergence == FDPO_F_FORWARD_KL || divergence == FDPO_F_ALPHA_DIVERGENCE) {
    const double a = divergence == FDPO_F_FORWARD_KL ? 1.0 : alpha;
    double slopeX = 0.0, slopeY = 0.0;
    const double ex = cappedExp(-a * x, slopeX), ey = cappedExp(-a * y, slopeY);
    m.value = (ey - ex) / a;
    m.dX = slopeX;
    m.dY = -slopeY;
  }
  return m;
}

// AlphaPO's reward of an averaged log-prob x, (1 - p^(-alpha))/alpha with p = e^x, and its slope
// e^(-alpha x); alpha = 0 is x itself (SimPO).
struct Reward {
  double value, slope;
};

FDPO_HD Reward alphaReward(double alpha, double x) {
  if (alpha == 0.0) return {x, 1.0};
  return {-expm1(-alpha * x) / alpha, exp(-alpha * x)};
}

// The label-smoothed logistic loss -(1-eps)*log sig(u) - eps*log sig(-u) and d/du.
struct UnaryTerm {
  double loss;
  double dU;
};

FDPO_HD UnaryTerm smoothedLogistic(double u, double eps) {
  UnaryTerm t;
  t.loss = -(1.0 - eps) * logSigmoid(u) - eps * logSigmoid(-u);
  t.dU = -(1.0 - eps) * sigmoid(-u) + eps * sigmoid(u);
  return t;
}

// ORPO's log-odds ratio term -beta*log sig(lo(x_c) - lo(x_r)), lo(x) = x - log(1 - e^x), on the
// averaged log-probs. x is clamped below 0 so a certain (or empty) sequence stays finite.
FDPO_HD PairTerm orpoOddsTerm(double beta, double xc, double xr) {
  const double kMaxLogp = -1e-15;
  xc = xc < kMaxLogp ? xc : kMaxLogp;
  xr = xr < kMaxLogp ? xr : kMaxLogp;
  const double d = (xc - log1mExp(xc)) - (xr - log1mExp(xr));
  PairTerm t;
  t.loss = -beta * logSigmoid(d);
  const double dD = -beta * sigmoid(-d);
  // d lo(x)/dx = 1 / (1 - e^x) = -1 / expm1(x)
  t.dChosen = dD * (-1.0 / expm1(xc));
  t.dRejected = -dD * (-1.0 / expm1(xr));
  return t;
}

// Unlikelihood (Welleck et al. 2020) on the token-mean scores: -x_c - alpha*log(1 - e^{x_r}), the
// likelihood of the chosen completion and the unlikelihood of the rejected one. x_r is clamped
// below 0 as ORPO's is, so a certain (or empty) rejected sequence stays finite.
FDPO_HD PairTerm unlikelihoodTerm(double alpha, double xc, double xr) {
  const double kMaxLogp = -1e-15;
  xr = xr < kMaxLogp ? xr : kMaxLogp;
  PairTerm t;
  t.loss = -xc - alpha * log1mExp(xr);
  t.dChosen = -1.0;
  // d/dx log(1 - e^x) = -1 / expm1(-x)
  t.dRejected = alpha / expm1(-xr);
  return t;
}

// A pair-local loss (the kinds with FDPO_KIND_PAIR_TERM; orpo without its NLL part). params is
// fdpo_loss_config.params, indexed by fdpo_loss_param; divergence a fdpo_f_divergence, which makes
// the margin Delta (and its averaged form) of the kinds that read one, as TRL does.
FDPO_HD PairTerm pairLoss(int kind, const double* params, int divergence, const PairScores& s) {
  const double beta = params[FDPO_PARAM_BETA], eps = params[FDPO_PARAM_LABEL_SMOOTHING];
  const double alpha = params[FDPO_PARAM_F_ALPHA_DIVERGENCE_COEF];
  const double a = s.ratioChosen;
  const double b = s.ratioRejected;
  const Margin margin = fMargin(divergence, alpha, a, b);
  const Margin marginAvg = fMargin(divergence, alpha, a / s.nChosen, b / s.nRejected);
  const double delta = margin.value;
  // R-DPO: the length difference explains part of the preference, for the losses of u = beta*Delta.
  const double u = beta * delta + params[FDPO_PARAM_LENGTH_PENALTY] * (s.lengthChosen - s.lengthRejected);
  const double deltaAvg = marginAvg.value;
  PairTerm t = {0.0, 0.0, 0.0};
  // For losses of u = beta*Delta: dC = beta*dU*dDelta/da, dR = beta*dU*dDelta/db.
  double dU = 0.0;
  bool ofU = true;
  switch (kind) {
    case FDPO_LOSS_SIGMOID: {
      const UnaryTerm l = smoothedLogistic(u, eps);
      t.loss = l.loss;
      dU = l.dU;
      break;
    }
    case FDPO_LOSS_HINGE:
      // Written so a NaN u gives a NaN loss, not 0.
      t.loss = u >= 1.0 ? 0.0 : 1.0 - u;
      dU = u >= 1.0 ? 0.0 : -1.0;
      break;
    case FDPO_LOSS_ROBUST:
      t.loss = (-(1.0 - eps) * logSigmoid(u) + eps * logSigmoid(-u)) / (1.0 - 2.0 * eps);
      dU = (-(1.0 - eps) * sigmoid(-u) - eps * sigmoid(u)) / (1.0 - 2.0 * eps);
      break;
    case FDPO_LOSS_EXO_PAIR: {
      const double e = eps == 0.0 ? 1e-3 : eps;
      const double sp = sigmoid(u), sn = sigmoid(-u);
      t.loss = sp * (logSigmoid(u) - log1p(-e)) + sn * (logSigmoid(-u) - log(e));
      dU = sp * sn * (u - log1p(-e) + log(e));
      break;
    }
    case FDPO_LOSS_APO_DOWN: {
      // TRL's apo_down reads the log-ratios themselves, not the f-divergence margin.
      const double uPlain = beta * (a - b);
      t.loss = sigmoid(beta * a) + sigmoid(-uPlain);
      ofU = false;
      t.dChosen = beta * sigmoidPrime(beta * a) - beta * sigmoidPrime(uPlain);
      t.dRejected = beta * sigmoidPrime(uPlain);
      break;
    }
    case FDPO_LOSS_DISCOPOP: {
      const double tau = params[FDPO_PARAM_DISCOPOP_TAU];
      const double modN = sigmoid(-u / tau);  // 1 - sigmoid(u/tau)
      const double modP = sigmoid(u / tau);
      const double sp = softplus(-u);         // -log sig(u)
      const double expTerm = exp(-u + logSigmoid(u / tau));
      t.loss = sp * modN + expTerm;
      dU = -sigmoid(-u) * modN - sp * modP * modN / tau + expTerm * (-1.0 + modN / tau);
      break;
    }
    case FDPO_LOSS_IPO: {
      const double r = deltaAvg - 1.0 / (2.0 * beta);
      t.loss = r * r;
      ofU = false;
      t.dChosen = 2.0 * r * marginAvg.dX / s.nChosen;
      t.dRejected = 2.0 * r * marginAvg.dY / s.nRejected;
      break;
    }
    case FDPO_LOSS_SIGMOID_NORM: {
      const double v = beta * deltaAvg;
      t.loss = softplus(-v);
      ofU = false;
      const double dV = -sigmoid(-v);
      t.dChosen = beta * dV * marginAvg.dX / s.nChosen;
      t.dRejected = beta * dV * marginAvg.dY / s.nRejected;
      break;
    }
    case FDPO_LOSS_NCA_PAIR: {
      const double ra = beta * a, rb = beta * b;
      t.loss = -logSigmoid(ra) - 0.5 * logSigmoid(-ra) - 0.5 * logSigmoid(-rb);
      ofU = false;
      t.dChosen = beta * (-sigmoid(-ra) + 0.5 * sigmoid(ra));
      t.dRejected = beta * 0.5 * sigmoid(rb);
      break;
    }
    case FDPO_LOSS_BCO_PAIR: {
      const double ra = beta * a, rb = beta * b;
      t.loss = -logSigmoid(ra) - logSigmoid(-rb);
      ofU = false;
      t.dChosen = -beta * sigmoid(-ra);
      t.dRejected = beta * sigmoid(rb);
      break;
    }
    case FDPO_LOSS_SPPO_HARD: {
      const double rc = a - 0.5 / beta, rr = b + 0.5 / beta;
      t.loss = rc * rc + rr * rr;
      ofU = false;
      t.dChosen = 2.0 * rc;
      t.dRejected = 2.0 * rr;
      break;
    }
    case FDPO_LOSS_APO_ZERO: {
      t.loss = sigmoid(-beta * a) + sigmoid(beta * b);
      ofU = false;
      t.dChosen = -beta * sigmoidPrime(beta * a);
      t.dRejected = beta * sigmoidPrime(beta * b);
      break;
    }
    case FDPO_LOSS_SIMPO: {
      // AlphaPO (TRL's CPO alpha): the scores r(x) = (1 - e^(-alpha x))/alpha of the averaged log-probs
      // x; r(x) = x at alpha = 0 (SimPO exactly).
      const Reward rc = alphaReward(params[FDPO_PARAM_ALPHA], s.piChosen / s.nChosen);
      const Reward rr = alphaReward(params[FDPO_PARAM_ALPHA], s.piRejected / s.nRejected);
      const double v = beta * (rc.value - rr.value) - params[FDPO_PARAM_SIMPO_GAMMA];
      const UnaryTerm l = smoothedLogistic(v, eps);
      t.loss = l.loss;
      ofU = false;
      t.dChosen = beta * l.dU * rc.slope / s.nChosen;
      t.dRejected = -beta * l.dU * rr.slope / s.nRejected;
      break;
    }
    case FDPO_LOSS_UNLIKELIHOOD: {
      t = unlikelihoodTerm(params[FDPO_PARAM_UNLIKELIHOOD_ALPHA], s.piChosen / s.nChosen, s.piRejected / s.nRejected);
      t.dChosen /= s.nChosen;
      t.dRejected /= s.nRejected;
      ofU = false;
      break;
    }
    case FDPO_LOSS_ORPO: {
      t = orpoOddsTerm(beta, s.piChosen / s.nChosen, s.piRejected / s.nRejected);
      t.dChosen /= s.nChosen;
      t.dRejected /= s.nRejected;
      ofU = false;
      break;
    }
    default:
      ofU = false;
      break;
  }
  if (ofU) {
    t.dChosen = beta * dU * margin.dX;
    t.dRejected = beta * dU * margin.dY;
  }
  return t;
}

}  // namespace fdpo

#endif  // FUSED_DPO_LOSS_MATH_H
