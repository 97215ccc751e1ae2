// The unfused baseline (fdpo_dpo_loss_unfused): one op per pass over a full-size log-softmax
// buffer, as a direct port of the PyTorch recipe would compute it. It exists so the benchmark can
// show what fusion buys; it is plain scalar C++ on purpose.
#ifndef FUSED_DPO_UNFUSED_PASSES_H
#define FUSED_DPO_UNFUSED_PASSES_H

#include <vector>

#include "fused_dpo.h"
#include "row_kernels.h"

namespace fdpo {

struct UnfusedPasses {
  std::vector<float> logSoftmax;  // rows x vocab: the temporary the fused path never makes

  // log_softmax into the buffer (read logits, write buffer), then per row the gather, entropy,
  // argmax and mean logit (read buffer and logits again).
  void forward(const fdpo_tokens& t, RowForward* rows, int threads);
  // Deferred scale, unfused: the forward, then onehot - exp(logSoftmax) as its own pass.
  void forwardDeferred(const fdpo_tokens& t, RowForward* rows, void* grad, int threads);
  // grad = scale * (onehot - exp(logSoftmax)) (read buffer, write grad).
  void backward(const fdpo_tokens& t, const float* rowScale, const RowForward* rows, void* grad, int threads);
};

}  // namespace fdpo

#endif
