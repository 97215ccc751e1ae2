"""fused-dpo as a PyTorch loss: TRL's DPO loss family and its metrics from the logits, with the
gradient computed in the same pass (no [2B, T, V] log-softmax temporaries).

CPU tensors run on the library's CPU backend, CUDA tensors on its CUDA backend with their
data_ptr() and the current stream (the logits and the gradient stay on the device). Non-contiguous
logits are copied once into a contiguous tensor first; int64 labels are converted to int32 (a copy
of [2B, T] ints).
"""

import ctypes
import math
import warnings

import torch

from ._abi import (
    BFLOAT16,
    FLOAT16,
    FLOAT32,
    MAX_LOSSES,
    STAT_CHOSEN_CORRECT,
    STAT_CHOSEN_LOGIT_SUM,
    STAT_CHOSEN_TOKENS,
    STAT_COUNT,
    STAT_ENTROPY_SUM,
    STAT_LOSS,
    STAT_REJECTED_LOGIT_SUM,
    STAT_REJECTED_TOKENS,
    F_DIVERGENCES,
    POLICY_LOSS_TYPES,
    POLICY_STAT_COUNT,
    POLICY_STAT_ENTROPY_SUM,
    POLICY_STAT_HIGH_CLIPPED,
    POLICY_STAT_KL_SUM,
    POLICY_STAT_LOSS,
    POLICY_STAT_LOW_CLIPPED,
    POLICY_STAT_REGION_CLIPPED,
    POLICY_STAT_TOKENS,
    CudaLaunch,
    PolicyConfig,
    PolicyOutputs,
    FusedDpoUnavailable,
    KTO_LOSS_TYPES,
    KtoConfig,
    KtoOutputs,
    LossConfig,
    LossOutputs,
    NonFiniteLogitsWarning,
    Tokens,
    library,
    new_struct,
)

__all__ = ["dpo_loss", "kto_loss", "policy_loss", "sequence_logps", "loss_types", "hyperparameters"]

_DTYPE_CODES = {torch.float32: FLOAT32, torch.bfloat16: BFLOAT16, torch.float16: FLOAT16}

# What each hyperparameter accepts (lib/loss-kinds.ts's rules; the C ABI does not check them).
_RULES = {
    "beta": ("a finite number > 0", lambda v: v > 0),
    "label_smoothing": ("a number in [0, 0.5]", lambda v: 0 <= v <= 0.5),
    "discopop_tau": ("a finite number > 0", lambda v: v > 0),
    "f_alpha_divergence_coef": ("a finite number > 0", lambda v: v > 0),
}


# The largest logit magnitude for which z - max stays finite in fp32 (lib/non-finite.ts).
_MAX_LOGIT = 1.7e38


def _warn_if_non_finite(where, seq_logps, keep, ignore_index, overwritten=False):
    """Warn (NonFiniteLogitsWarning) naming the first sequence whose log-prob is not finite and its
    first scored row holding an inf, a NaN or a logit beyond +-_MAX_LOGIT, as lib/non-finite.ts
    finds them. Reads that sequence's rows again only then: the common call pays nothing."""
    bad = (~torch.isfinite(seq_logps)).nonzero()
    if bad.numel() == 0:
        return
    s = int(bad[0, 0])
    data, labels32, cu = keep
    start, end = int(cu[s]), int(cu[s + 1])
    if overwritten:
        where_row = "its row is not known (inplace=True wrote the gradient over the logits)"
    else:
        rows = data.reshape(-1, data.shape[-1])[start:end].float()
        unusable = ~(rows.abs() <= _MAX_LOGIT).all(-1) & (labels32.reshape(-1)[start:end] != ignore_index)
        found = unusable.nonzero()
        where_row = (
            f"row {start + int(found[0, 0])} holds an inf, a NaN or a logit beyond +-{_MAX_LOGIT:g}"
            if found.numel() > 0
            else "no scored row of it holds a non-finite logit"
        )
    warnings.warn(
        f"{where}: sequence {s}'s log-prob is {seq_logps[s].item()}, so the loss cannot be trusted: {where_row}",
        NonFiniteLogitsWarning,
        stacklevel=3,
    )


def loss_types():
    """The loss type names the loaded library knows, in ABI-code order."""
    return list(library().loss_kinds)


def hyperparameters():
    """{TRL name: default} for every loss hyperparameter the loaded library knows."""
    return {name: default for name, (_, default) in library().hyperparameters.items()}


def _int32_labels(labels, expected_shape, where):
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{where}: labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype not in (torch.int32, torch.int64, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"{where}: labels must be an integer tensor, got {labels.dtype}")
    if tuple(labels.shape) != tuple(expected_shape):
        raise ValueError(f"{where}: labels must have shape {list(expected_shape)} (the logits' without V), got {list(labels.shape)}")
    labels = labels.detach()
    if labels.dtype == torch.int64 and labels.numel() > 0:
        low, high = torch.aminmax(labels)
        if low.item() < -(2**31) or high.item() >= 2**31:
            raise ValueError(f"{where}: labels hold values outside int32 ([{low.item()}, {high.item()}])")
    return labels.to(torch.int32).contiguous()


def _cu_seqlens(cu_seqlens, where):
    values = cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor) else list(cu_seqlens)
    if len(values) < 1 or not all(isinstance(v, int) for v in values):
        raise TypeError(f"{where}: cu_seqlens must be a sequence of ints (S + 1 row offsets), got {cu_seqlens!r}")
    return torch.tensor(values, dtype=torch.int32)


def _head(logit_scale, softcap, temperature, where):
    """The model-head transforms as fdpo_tokens takes them: 0 = off; each given one finite and > 0."""
    values = {"logit_scale": logit_scale, "softcap": softcap, "temperature": temperature}
    for name, value in values.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{where}: {name} must be a finite number > 0 (or None for none), got {value!r}")
    return {name: float(value or 0.0) for name, value in values.items()}


def _tokens(logits, labels, cu_seqlens, ignore_index, where, head=None):
    """The fdpo_tokens for these tensors, and the tensors it points into (keep them alive)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{where}: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in _DTYPE_CODES:
        raise TypeError(f"{where}: logits must be float32, bfloat16 or float16, got {logits.dtype}")
    if logits.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: logits are on device '{logits.device}': fused-dpo runs CPU and CUDA tensors")
    if cu_seqlens is None:
        if logits.dim() != 3:
            raise ValueError(f"{where}: logits must be [2B, T, V] (or [N, V] with cu_seqlens), got shape {list(logits.shape)}")
        seqs, steps, vocab = logits.shape
        cu = (torch.arange(seqs + 1, dtype=torch.int64) * steps).to(torch.int32)
    else:
        if logits.dim() != 2:
            raise ValueError(f"{where}: with cu_seqlens, logits must be [N, V], got shape {list(logits.shape)}")
        cu = _cu_seqlens(cu_seqlens, where)
        seqs, vocab = cu.numel() - 1, logits.shape[1]
    labels32 = _int32_labels(labels, logits.shape[:-1], where)
    if labels32.device != logits.device:
        raise ValueError(f"{where}: labels are on {labels32.device}, the logits on {logits.device}")
    data = logits.detach()
    if not data.is_contiguous():
        data = data.contiguous()  # a copy: the kernels read rows of V contiguous elements
    tokens = new_struct(Tokens)
    tokens.logits = data.data_ptr()
    tokens.dtype = _DTYPE_CODES[logits.dtype]
    tokens.rows = data.numel() // vocab if vocab > 0 else 0
    tokens.vocab = vocab
    tokens.labels = labels32.data_ptr()
    tokens.cu_seqlens = cu.data_ptr()
    tokens.num_seqs = seqs
    tokens.ignore_index = ignore_index
    for name, value in (head or {}).items():
        setattr(tokens, name, value)
    return tokens, (data, labels32, cu)


def _cuda_launch(device):
    """The fdpo_cuda_launch for a CUDA tensor's device and the current stream; raises when the
    library cannot run CUDA (checked before torch.cuda is touched)."""
    lib = library()
    status = lib.cuda_status()
    if not status.compiled or not status.available:
        raise FusedDpoUnavailable(
            f"the tensors are on {device} but {lib.path} cannot run CUDA: {status.reason.decode(errors='replace')}"
            + ("" if status.compiled else " (rebuild it with `npm run build:c` where nvcc is found)"),
            4,
        )
    launch = new_struct(CudaLaunch)
    launch.device = device.index if device.index is not None else torch.cuda.current_device()
    launch.stream = torch.cuda.current_stream(device).cuda_stream
    return launch


def _threads(threads):
    return torch.get_num_threads() if threads is None else int(threads)


def _loss_config(loss_type, loss_weights, values, num_pairs, reduction, normalizer, ref_chosen_logps, ref_rejected_logps, ref_tokens):
    lib = library()
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    if not 1 <= len(types) <= MAX_LOSSES:
        raise ValueError(f"dpo_loss: loss_type must name 1 to {MAX_LOSSES} loss types, got {len(types)}")
    for t in types:
        if t not in lib.loss_kinds:
            raise ValueError(f"dpo_loss: unknown loss_type {t!r}; this library has {', '.join(lib.loss_kinds)}")
    weights = [1.0] * len(types) if loss_weights is None else [float(w) for w in loss_weights]
    if len(weights) != len(types) or not all(math.isfinite(w) for w in weights):
        raise ValueError(f"dpo_loss: loss_weights must be {len(types)} finite numbers (one per loss_type), got {loss_weights!r}")
    config = new_struct(LossConfig)
    config.num_losses = len(types)
    for k, (t, w) in enumerate(zip(types, weights)):
        config.kinds[k] = lib.loss_kinds[t].code
        config.weights[k] = w
    config.num_params = len(lib.hyperparameters)
    for name, (index, _) in lib.hyperparameters.items():
        value = float(values[name])
        rule, ok = _RULES.get(name, ("a finite number", lambda v: True))
        if not math.isfinite(value) or not ok(value):
            raise ValueError(f"dpo_loss: {name} must be {rule}, got {values[name]!r}")
        config.params[index] = value
    if "robust" in types and values["label_smoothing"] >= 0.5:
        raise ValueError("dpo_loss: label_smoothing must be below 0.5 for loss_type 'robust' (it divides by 1 - 2*label_smoothing)")
    if normalizer is not None:
        if not (math.isfinite(normalizer) and normalizer > 0):
            raise ValueError(f"dpo_loss: normalizer must be a finite number > 0, got {normalizer!r}")
        config.scale = 1.0 / normalizer
    elif reduction in ("mean", "sum"):
        config.scale = 1.0 / num_pairs if reduction == "mean" else 1.0
    else:
        raise ValueError(f"dpo_loss: reduction must be 'mean' or 'sum', got {reduction!r}")

    needing = next((t for t in types if lib.loss_kinds[t].needs_ref), None)
    refs = []
    if ref_tokens is not None:
        if ref_chosen_logps is not None or ref_rejected_logps is not None:
            raise TypeError("dpo_loss: ref_token_logps replaces ref_chosen_logps and ref_rejected_logps: pass one or the other")
        refs.append(ref_tokens)
        config.ref_token_logps = ref_tokens.data_ptr()
    elif ref_chosen_logps is None or ref_rejected_logps is None:
        if needing:
            raise TypeError(
                f"dpo_loss: loss_type {needing!r} needs ref_chosen_logps and ref_rejected_logps "
                f"(B reference sums each, from sequence_logps on the reference model; zeros for reference-free) "
                f"or ref_token_logps"
            )
    else:
        for name, side in (("ref_chosen_logps", ref_chosen_logps), ("ref_rejected_logps", ref_rejected_logps)):
            values64 = torch.as_tensor(side.detach() if isinstance(side, torch.Tensor) else side, dtype=torch.float64)
            if values64.dim() != 1 or values64.numel() != num_pairs:
                raise ValueError(f"dpo_loss: {name} must hold B = {num_pairs} values (shape [B]), got shape {list(values64.shape)}")
            _all_finite(name, values64, "dpo_loss")
            refs.append(values64.cpu().contiguous())
        config.ref_chosen = refs[0].data_ptr()
        config.ref_rejected = refs[1].data_ptr()
    averaged = any(lib.loss_kinds[t].reports_averaged for t in types)
    return config, refs, averaged


def _mean(values):
    # Left to right, as lib/loss.ts sums (Python 3.12's sum() of floats is compensated).
    total = 0.0
    for v in values:
        total += v
    return total / len(values) if values else 0.0


def _ratio(numerator, denominator):
    return numerator / denominator if denominator > 0 else 0.0


def _metrics(stats, seq_logps, seq_counts, chosen_rewards, rejected_rewards, num_pairs, averaged):
    """TRL's metrics from the C ABI's outputs, computed as lib/loss.ts's metricsOf does."""
    s = stats.tolist()
    sums, counts = seq_logps.tolist(), seq_counts.tolist()
    logps = [x / max(n, 1) for x, n in zip(sums, counts)] if averaged else sums
    chosen, rejected = chosen_rewards.tolist(), rejected_rewards.tolist()
    tokens = s[STAT_CHOSEN_TOKENS] + s[STAT_REJECTED_TOKENS]
    return {
        "rewards/chosen": _mean(chosen),
        "rewards/rejected": _mean(rejected),
        "rewards/accuracies": _mean([1.0 if c > r else 0.0 for c, r in zip(chosen, rejected)]),
        "rewards/margins": _mean([c - r for c, r in zip(chosen, rejected)]),
        "logps/chosen": _mean(logps[:num_pairs]),
        "logps/rejected": _mean(logps[num_pairs:]),
        "logits/chosen": _ratio(s[STAT_CHOSEN_LOGIT_SUM], s[STAT_CHOSEN_TOKENS]),
        "logits/rejected": _ratio(s[STAT_REJECTED_LOGIT_SUM], s[STAT_REJECTED_TOKENS]),
        "entropy": _ratio(s[STAT_ENTROPY_SUM], tokens),
        "mean_token_accuracy": _ratio(s[STAT_CHOSEN_CORRECT], s[STAT_CHOSEN_TOKENS]),
        "num_tokens": tokens,
    }


class _PrecomputedGradient(torch.autograd.Function):
    """The loss as an autograd node whose backward is the gradient the library already wrote."""

    @staticmethod
    def forward(ctx, logits, grad, loss_value):
        ctx.grad = grad
        return torch.tensor(loss_value, dtype=torch.float32, device=logits.device)

    @staticmethod
    def backward(ctx, grad_output):
        grad = ctx.grad
        if grad is None:
            raise RuntimeError(
                "fused_dpo.torch.dpo_loss: backward ran a second time on one loss; its gradient buffer was "
                "scaled in place and released by the first (call dpo_loss again instead of retain_graph=True)"
            )
        ctx.grad = None
        # The buffer belongs to this call, so scaling it in place costs no [2B, T, V] allocation.
        # On the CPU a factor of exactly 1 (a plain loss.backward()) skips the pass; x * 1 == x, so
        # the bits are the same either way. On CUDA reading the factor would synchronise.
        if grad.is_cuda or grad_output.item() != 1.0:
            grad.mul_(grad_output)
        return grad, None, None


def dpo_loss(
    logits,
    labels,
    ref_chosen_logps=None,
    ref_rejected_logps=None,
    *,
    beta=0.1,
    loss_type="sigmoid",
    loss_weights=None,
    label_smoothing=0.0,
    simpo_gamma=0.5,
    discopop_tau=0.05,
    f_divergence_type="reverse_kl",
    f_alpha_divergence_coef=0.5,
    length_penalty=0.0,
    alpha=0.0,
    use_weighting=False,
    logit_scale=None,
    softcap=None,
    temperature=None,
    ld_alpha=None,
    unlikelihood_alpha=1.0,
    ignore_index=-100,
    reduction="mean",
    normalizer=None,
    cu_seqlens=None,
    ref_token_logps=None,
    inplace=False,
    threads=None,
):
    """TRL's DPO loss (and its variants) from the policy's logits, and TRL's metrics.

    logits: [2B, T, V] float32/bfloat16/float16, the B chosen sequences then the B rejected ones
    (or [N, V] rows with cu_seqlens, 2B + 1 row offsets). labels: [2B, T] (or [N]) token ids,
    already shifted (labels[t] is the token logits[t] predicts), ignore_index on prompt and
    padding tokens. ref_chosen_logps, ref_rejected_logps: the reference model's B sequence
    log-prob sums each (sequence_logps on the reference logits); None for reference-free losses.

    Returns (loss, metrics): loss a float32 scalar on the logits' device whose backward is the
    gradient computed in this call (scaled by the incoming gradient in place, once: a second
    backward through the same loss raises); metrics TRL's dict of floats. The gradient is only
    computed when the logits require grad and grad mode is on. inplace=True writes the gradient
    over the logits' own memory (contiguous logits only): no [2B, T, V] buffer is allocated, and
    the logits' values are gone, so use it only when nothing else reads them (logits straight out
    of the lm_head matmul). threads: CPU threads, default torch.get_num_threads().
    alpha: AlphaPO's alpha of simpo (TRL CPOConfig's alpha). use_weighting: WPO (TRL's). logit_scale,
    softcap, temperature: the model-head transforms, applied in that order (TRL's) inside the kernels.
    ld_alpha: LD-DPO (TRL's ld_alpha, in [0, 1]; None: off): per pair, the completion tokens past the
    shorter completion weigh ld_alpha in the policy's scores (SPEC.md, "LD-DPO"); pass reference sums
    from sequence_logps without it (TRL) or with it (the paper).
    ref_token_logps: instead of the two sums, the reference's per-token log-probs, one float per
    label (the labels' shape; read only where the label is not ignore_index, and finite there):
    each log-ratio is then sum_t w_t (logp_t - ref_t) in float64, with ld_alpha's weights w_t (1
    without it). Beyond TRL, whose reference is per sequence.
    """
    where = "dpo_loss"
    tokens, keep = _tokens(logits, labels, cu_seqlens, ignore_index, where, _head(logit_scale, softcap, temperature, where))
    _set_ld_alpha(tokens, ld_alpha, where)
    num_seqs = tokens.num_seqs
    if num_seqs < 2 or num_seqs % 2 != 0:
        raise ValueError(f"{where}: the logits must hold 2B sequences (B chosen then B rejected, B >= 1), got {num_seqs}")
    num_pairs = num_seqs // 2
    values = {
        "beta": beta,
        "label_smoothing": label_smoothing,
        "simpo_gamma": simpo_gamma,
        "discopop_tau": discopop_tau,
        "f_alpha_divergence_coef": f_alpha_divergence_coef,
        "length_penalty": length_penalty,
        "alpha": alpha,
        "unlikelihood_alpha": unlikelihood_alpha,
    }
    if not isinstance(use_weighting, bool):
        raise TypeError(f"{where}: use_weighting must be a bool, got {use_weighting!r}")
    if alpha != 0 and "simpo" not in ([loss_type] if isinstance(loss_type, str) else list(loss_type)):
        raise ValueError(f"{where}: alpha (AlphaPO) is read by loss_type 'simpo' only; leave it 0 for {loss_type!r}")
    if f_divergence_type not in F_DIVERGENCES:
        raise ValueError(f"{where}: f_divergence_type must be one of {', '.join(F_DIVERGENCES)}, got {f_divergence_type!r}")
    missing = set(library().hyperparameters) - set(values)
    if missing:
        raise TypeError(f"{where}: this binding has no keyword for the library's hyperparameters {sorted(missing)}: update fused_dpo")
    ref_tokens = _per_token("ref_token_logps", ref_token_logps, tokens.rows, where)
    if ref_tokens is not None:
        _finite_where_scored("ref_token_logps", ref_tokens, keep[1], ignore_index, where)
    config, refs, averaged = _loss_config(
        loss_type, loss_weights, values, num_pairs, reduction, normalizer, ref_chosen_logps, ref_rejected_logps, ref_tokens
    )
    config.f_divergence = F_DIVERGENCES[f_divergence_type]
    config.use_weighting = 1 if use_weighting else 0

    data = keep[0]
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    if inplace and not logits.is_contiguous():
        raise ValueError(f"{where}: inplace=True needs contiguous logits (these would be copied first, so nothing is saved)")
    grad = None
    if wants_grad:
        grad = data if inplace else torch.empty_like(data)

    def host(n, dtype):
        return torch.zeros(n, dtype=dtype)

    seq_logps, seq_counts, seq_grad = host(num_seqs, torch.float64), host(num_seqs, torch.int32), host(num_seqs, torch.float64)
    pair_losses, chosen_rewards, rejected_rewards = (host(num_pairs, torch.float64) for _ in range(3))
    stats = host(STAT_COUNT, torch.float64)
    outputs = new_struct(LossOutputs)
    for field, tensor in (
        ("seq_logps", seq_logps),
        ("seq_counts", seq_counts),
        ("seq_grad", seq_grad),
        ("pair_losses", pair_losses),
        ("chosen_rewards", chosen_rewards),
        ("rejected_rewards", rejected_rewards),
        ("stats", stats),
    ):
        setattr(outputs, field, tensor.data_ptr())
    outputs.grad = grad.data_ptr() if grad is not None else None

    lib = library()
    if data.is_cuda:
        launch = _cuda_launch(data.device)
        lib.call(where, lib.lib.fdpo_cuda_dpo_loss, ctypes.byref(tokens), ctypes.byref(config), ctypes.byref(outputs), ctypes.byref(launch))
    else:
        lib.call(where, lib.lib.fdpo_dpo_loss, ctypes.byref(tokens), ctypes.byref(config), ctypes.byref(outputs), _threads(threads))
    _warn_if_non_finite(where, seq_logps, keep, ignore_index, overwritten=inplace and grad is not None)
    del refs, keep  # alive until here: the call read them

    loss_value = stats[STAT_LOSS].item()
    metrics = _metrics(stats, seq_logps, seq_counts, chosen_rewards, rejected_rewards, num_pairs, averaged)
    if grad is None:
        return torch.tensor(loss_value, dtype=torch.float32, device=logits.device), metrics
    return _PrecomputedGradient.apply(logits, grad, loss_value), metrics


def kto_loss(
    logits,
    labels,
    desirable,
    ref_logps,
    kl_logps=None,
    ref_kl_logps=None,
    *,
    beta=0.1,
    loss_type="kto",
    desirable_weight=1.0,
    undesirable_weight=1.0,
    logit_scale=None,
    softcap=None,
    temperature=None,
    ignore_index=-100,
    reduction="mean",
    normalizer=None,
    cu_seqlens=None,
    inplace=False,
    threads=None,
):
    """TRL's KTO loss (KTOTrainer.kto_loss) over S unpaired sequences, and TRL's metrics.

    logits: [S, T, V] (or [N, V] with cu_seqlens); desirable: S bools (TRL's label); ref_logps: the
    reference model's S sequence sums; kl_logps, ref_kl_logps: the KL batch's policy and reference
    sums (detached; loss_type 'kto' needs them, 'apo_zero_unpaired' takes none), from which
    z0 = max(0, mean(kl_logps - ref_kl_logps)). The loss is TRL's mean over all S sequences
    (reduction='sum' or normalizer as dpo_loss). Returns (loss, metrics) as dpo_loss does.
    """
    where = "kto_loss"
    tokens, keep = _tokens(logits, labels, cu_seqlens, ignore_index, where, _head(logit_scale, softcap, temperature, where))
    seqs = tokens.num_seqs
    if seqs < 1:
        raise ValueError(f"{where}: the logits must hold at least one sequence")
    if loss_type not in KTO_LOSS_TYPES:
        raise ValueError(f"{where}: loss_type must be one of {', '.join(KTO_LOSS_TYPES)}, got {loss_type!r}")
    config = new_struct(KtoConfig)
    config.loss_type = KTO_LOSS_TYPES[loss_type]
    for name, value, ok in (("beta", beta, lambda v: v > 0), ("desirable_weight", desirable_weight, lambda v: v >= 0),
                            ("undesirable_weight", undesirable_weight, lambda v: v >= 0)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and ok(value)):
            raise ValueError(f"{where}: {name} must be a finite number {'> 0' if name == 'beta' else '>= 0'}, got {value!r}")
        setattr(config, name, float(value))
    if normalizer is not None:
        if not (math.isfinite(normalizer) and normalizer > 0):
            raise ValueError(f"{where}: normalizer must be a finite number > 0, got {normalizer!r}")
        config.scale = 1.0 / normalizer
    elif reduction in ("mean", "sum"):
        config.scale = 1.0 / seqs if reduction == "mean" else 1.0
    else:
        raise ValueError(f"{where}: reduction must be 'mean' or 'sum', got {reduction!r}")

    def doubles(name, value, count=None):
        t = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value, dtype=torch.float64).cpu().contiguous()
        if t.dim() != 1 or (count is not None and t.numel() != count):
            raise ValueError(f"{where}: {name} must hold {count if count is not None else 'the'} values (shape [n]), got shape {list(t.shape)}")
        _all_finite(name, t, where)
        return t

    flags = torch.as_tensor(desirable.detach() if isinstance(desirable, torch.Tensor) else desirable).cpu()
    if flags.dim() != 1 or flags.numel() != seqs or not bool(((flags == 0) | (flags == 1)).all()):
        raise ValueError(f"{where}: desirable must be {seqs} bools (one per sequence, TRL's label), got {desirable!r}")
    flags = flags.to(torch.uint8).contiguous()
    ref = doubles("ref_logps", ref_logps, seqs)
    kept = [flags, ref]
    config.desirable, config.ref_logps = flags.data_ptr(), ref.data_ptr()
    if loss_type == "kto":
        if kl_logps is None or ref_kl_logps is None:
            raise TypeError(f"{where}: loss_type 'kto' needs kl_logps and ref_kl_logps (the KL batch's sums)")
        kl_policy = doubles("kl_logps", kl_logps)
        kl_ref = doubles("ref_kl_logps", ref_kl_logps, kl_policy.numel())
        if kl_policy.numel() < 1:
            raise ValueError(f"{where}: kl_logps must hold at least one value")
        kept += [kl_policy, kl_ref]
        config.kl_logps, config.kl_ref_logps, config.kl_count = kl_policy.data_ptr(), kl_ref.data_ptr(), kl_policy.numel()
    elif kl_logps is not None or ref_kl_logps is not None:
        raise ValueError(f"{where}: loss_type 'apo_zero_unpaired' has no KL term: leave kl_logps and ref_kl_logps out")

    data = keep[0]
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    if inplace and not logits.is_contiguous():
        raise ValueError(f"{where}: inplace=True needs contiguous logits (these would be copied first, so nothing is saved)")
    grad = (data if inplace else torch.empty_like(data)) if wants_grad else None
    seq_logps, seq_grad, seq_losses, rewards = (torch.zeros(seqs, dtype=torch.float64) for _ in range(4))
    seq_counts = torch.zeros(seqs, dtype=torch.int32)
    stats, kl = torch.zeros(STAT_COUNT, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    outputs = new_struct(KtoOutputs)
    for field, tensor in (("seq_logps", seq_logps), ("seq_counts", seq_counts), ("seq_grad", seq_grad),
                          ("seq_losses", seq_losses), ("rewards", rewards), ("stats", stats), ("kl", kl)):
        setattr(outputs, field, tensor.data_ptr())
    outputs.grad = grad.data_ptr() if grad is not None else None
    lib = library()
    if data.is_cuda:
        lib.call(where, lib.lib.fdpo_cuda_kto_loss, ctypes.byref(tokens), ctypes.byref(config), ctypes.byref(outputs),
                 ctypes.byref(_cuda_launch(data.device)))
    else:
        lib.call(where, lib.lib.fdpo_kto_loss, ctypes.byref(tokens), ctypes.byref(config), ctypes.byref(outputs), _threads(threads))
    _warn_if_non_finite(where, seq_logps, keep, ignore_index, overwritten=inplace and grad is not None)
    del kept, keep

    # TRL's metrics: sums per side (nansum), the keys of a side only when the batch has it.
    s = stats.tolist()
    metrics = {"kl": kl.item()}
    for side, flag, logit_stat in (("chosen", 1, STAT_CHOSEN_LOGIT_SUM), ("rejected", 0, STAT_REJECTED_LOGIT_SUM)):
        picked = flags == flag
        count = int(picked.sum().item())
        if count == 0:
            continue
        metrics[f"rewards/{side}_sum"] = rewards[picked].nansum().item()
        metrics[f"logps/{side}_sum"] = seq_logps[picked].nansum().item()
        metrics[f"logits/{side}_sum"] = s[logit_stat] * tokens.vocab
        metrics[f"count/{side}"] = float(count)
    loss_value = s[STAT_LOSS]
    if grad is None:
        return torch.tensor(loss_value, dtype=torch.float32, device=logits.device), metrics
    return _PrecomputedGradient.apply(logits, grad, loss_value), metrics


def _set_ld_alpha(tokens, ld_alpha, where):
    if ld_alpha is None:
        return
    if isinstance(ld_alpha, bool) or not isinstance(ld_alpha, (int, float)) or not 0.0 <= ld_alpha <= 1.0:
        raise ValueError(f"{where}: ld_alpha must be a number in [0, 1] (or None: off), got {ld_alpha!r}")
    if tokens.num_seqs % 2 != 0:
        raise ValueError(f"{where}: ld_alpha pairs the sequences (B chosen then B rejected): got {tokens.num_seqs}")
    tokens.ld_alpha = float(ld_alpha)
    tokens.ld_weighting = 1


def sequence_logps(logits, labels, *, average=False, ld_alpha=None, logit_scale=None, softcap=None, temperature=None,
                   ignore_index=-100, cu_seqlens=None, threads=None):
    """Per-sequence sums (or, with average=True, means) of the labels' log-probs, forward only:
    the reference pass. Returns (logps float64 [S], counts int32 [S]) on the logits' device;
    not differentiable. For dpo_loss: ref_chosen_logps = logps[:B], ref_rejected_logps = logps[B:].
    ld_alpha: the pair-aware form (2B sequences, chosen then rejected), weighted as dpo_loss's
    ld_alpha weighs the policy's. logit_scale, softcap, temperature: the model-head transforms,
    as dpo_loss applies them (a softcapped reference model needs its softcap here too).
    """
    where = "sequence_logps"
    tokens, keep = _tokens(logits, labels, cu_seqlens, ignore_index, where, _head(logit_scale, softcap, temperature, where))
    _set_ld_alpha(tokens, ld_alpha, where)
    logps = torch.zeros(tokens.num_seqs, dtype=torch.float64)
    counts = torch.zeros(tokens.num_seqs, dtype=torch.int32)
    lib = library()
    args = (ctypes.byref(tokens), 1 if average else 0, logps.data_ptr(), counts.data_ptr())
    if keep[0].is_cuda:
        lib.call(where, lib.lib.fdpo_cuda_sequence_logps, *args, ctypes.byref(_cuda_launch(keep[0].device)))
    else:
        lib.call(where, lib.lib.fdpo_sequence_logps, *args, _threads(threads))
    _warn_if_non_finite(where, logps, keep, ignore_index)
    del keep
    return logps.to(logits.device), counts.to(logits.device)


def _all_finite(name, values, where, rule="a finite number"):
    """Every entry of a 1-D tensor finite, else a ValueError naming the first that is not."""
    bad = (~torch.isfinite(values)).nonzero()
    if bad.numel() > 0:
        i = int(bad[0, 0])
        raise ValueError(f"{where}: {name}[{i}] must be {rule}, got {values[i].item()!r}")


def _finite_where_scored(name, values, labels32, ignore_index, where):
    """Per-token values must be finite wherever the label is scored (ignored rows are never read)."""
    scored = labels32.reshape(-1).cpu() != ignore_index
    bad = (scored & ~torch.isfinite(values)).nonzero()
    if bad.numel() > 0:
        r = int(bad[0, 0])
        raise ValueError(f"{where}: {name}[{r}] must be a finite number (row {r} is scored), got {values[r].item()!r}")


def _per_token(name, values, rows, where):
    """A float tensor of one value per row (the labels' size), as a contiguous float64 CPU copy."""
    if values is None:
        return None
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating-point torch.Tensor, got {type(values).__name__}")
    if values.numel() != rows:
        raise ValueError(f"{where}: {name} must have {rows} values (one per token, the labels' size), got {values.numel()}")
    return values.detach().to("cpu", torch.float64).contiguous().reshape(-1)


def policy_loss(
    logits,
    labels,
    advantages,
    *,
    old_logps=None,
    ref_logps=None,
    beta=0.0,
    epsilon=0.2,
    epsilon_high=None,
    entropy_coef=0.0,
    loss_type="dapo",
    max_completion_length=None,
    num_items_in_batch=None,
    temperature=None,
    logit_scale=None,
    softcap=None,
    ignore_index=-100,
    cu_seqlens=None,
    threads=None,
):
    """TRL's GRPO-family loss (grpo, bnpo, dr_grpo, dapo) from the policy's logits: the clipped
    surrogate on per-token ratios exp(logp - old_logps), beta times the k3 KL to ref_logps, minus
    entropy_coef times the entropy (with its gradient), aggregated as TRL's loss_type (SPEC.md,
    "Policy loss").

    logits: [S, T, V] (or [N, V] with cu_seqlens); labels: [S, T] (or [N]); advantages: [S] (one
    per sequence) or the labels' shape (one per token); old_logps, ref_logps: the labels' shape, or
    None (on-policy; no KL). Returns (loss, metrics, logps): loss a float32 scalar whose backward is
    the gradient computed in this call; metrics TRL's dict (clip_ratio/low_mean, clip_ratio/high_mean,
    clip_ratio/region_mean, kl (only with ref_logps), entropy); logps the per-token log-probs
    (float64, the labels' shape, 0 where ignored): the next step's old_logps.
    """
    where = "policy_loss"
    tokens, keep = _tokens(logits, labels, cu_seqlens, ignore_index, where, _head(logit_scale, softcap, temperature, where))
    rows, seqs = tokens.rows, tokens.num_seqs
    if loss_type not in POLICY_LOSS_TYPES:
        raise ValueError(f"{where}: loss_type must be one of {', '.join(POLICY_LOSS_TYPES)}, got {loss_type!r}")
    if not isinstance(advantages, torch.Tensor) or not advantages.is_floating_point():
        raise TypeError(f"{where}: advantages must be a floating-point torch.Tensor, got {type(advantages).__name__}")
    # The labels' shape: one per token; else [S], one per sequence. (Packed with as many sequences
    # as rows, an [N] tensor is read per token: expand per-sequence values yourself there.)
    per_token = tuple(advantages.shape) == tuple(labels.shape)
    if not per_token and advantages.numel() != seqs:
        raise ValueError(f"{where}: advantages must have shape [{seqs}] (one per sequence) or the labels' {list(labels.shape)}, got {list(advantages.shape)}")
    adv = advantages.detach().to("cpu", torch.float64).contiguous().reshape(-1)
    old = _per_token("old_logps", old_logps, rows, where)
    ref = _per_token("ref_logps", ref_logps, rows, where)
    # Finite where read: per token on the scored rows, per sequence everywhere.
    for name, values in (("advantages", adv if per_token else None), ("old_logps", old), ("ref_logps", ref)):
        if values is not None:
            _finite_where_scored(name, values, keep[1], ignore_index, where)
    if not per_token:
        _all_finite("advantages", adv, where, "a finite number (one per sequence)")
    for name, value, rule, ok in (
        ("beta", beta, "a finite number >= 0", lambda v: v >= 0),
        ("epsilon", epsilon, "a number in [0, 1]", lambda v: 0 <= v <= 1),
        ("epsilon_high", epsilon if epsilon_high is None else epsilon_high, "a finite number >= 0", lambda v: v >= 0),
        ("entropy_coef", entropy_coef, "a finite number", lambda v: True),
    ):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and ok(value)):
            raise ValueError(f"{where}: {name} must be {rule}, got {value!r}")
    if beta != 0 and ref is None:
        raise ValueError(f"{where}: ref_logps (per-token reference log-probs) are needed when beta is not 0")
    if loss_type == "dr_grpo":
        if not isinstance(max_completion_length, int) or max_completion_length < 1:
            raise ValueError(f"{where}: loss_type 'dr_grpo' needs max_completion_length, an int >= 1, got {max_completion_length!r}")
    elif max_completion_length is not None:
        raise ValueError(f"{where}: max_completion_length is read only by loss_type 'dr_grpo' (loss_type is {loss_type!r})")
    if num_items_in_batch is not None:
        if loss_type != "dapo":
            raise ValueError(f"{where}: num_items_in_batch is read only by loss_type 'dapo' (loss_type is {loss_type!r})")
        if not (isinstance(num_items_in_batch, (int, float)) and math.isfinite(num_items_in_batch) and num_items_in_batch > 0):
            raise ValueError(f"{where}: num_items_in_batch must be a finite number > 0, got {num_items_in_batch!r}")

    config = new_struct(PolicyConfig)
    config.loss_type = POLICY_LOSS_TYPES[loss_type]
    config.advantages = adv.data_ptr()
    config.advantages_per_token = 1 if per_token else 0
    config.old_logps = old.data_ptr() if old is not None else None
    config.ref_logps = ref.data_ptr() if ref is not None else None
    config.beta = float(beta)
    config.epsilon = float(epsilon)
    config.epsilon_high = float(epsilon if epsilon_high is None else epsilon_high)
    config.entropy_coef = float(entropy_coef)
    config.max_completion_length = max_completion_length or 0
    config.num_items_in_batch = float(num_items_in_batch or 0)

    data = keep[0]
    wants_grad = torch.is_grad_enabled() and logits.requires_grad
    grad = torch.empty_like(data) if wants_grad else None
    token_logps = torch.zeros(rows, dtype=torch.float64)
    stats = torch.zeros(POLICY_STAT_COUNT, dtype=torch.float64)
    outputs = new_struct(PolicyOutputs)
    outputs.token_logps = token_logps.data_ptr()
    outputs.stats = stats.data_ptr()
    outputs.grad = grad.data_ptr() if grad is not None else None

    lib = library()
    if data.is_cuda:
        launch = _cuda_launch(data.device)
        lib.call(where, lib.lib.fdpo_cuda_policy_loss, ctypes.byref(tokens), ctypes.byref(config), ctypes.byref(outputs), ctypes.byref(launch))
    else:
        lib.call(where, lib.lib.fdpo_policy_loss, ctypes.byref(tokens), ctypes.byref(config), ctypes.byref(outputs), _threads(threads))
    # Per-sequence sums of the token log-probs: only to find a non-finite row.
    lengths = (keep[2][1:] - keep[2][:-1]).to(torch.int64)
    sequence_of_row = torch.repeat_interleave(torch.arange(seqs), lengths)
    _warn_if_non_finite(where, torch.zeros(seqs, dtype=torch.float64).index_add_(0, sequence_of_row, token_logps), keep, ignore_index)
    del keep, adv, old, ref  # alive until here: the call read them

    count = max(stats[POLICY_STAT_TOKENS].item(), 1.0)
    metrics = {
        "clip_ratio/low_mean": stats[POLICY_STAT_LOW_CLIPPED].item() / count,
        "clip_ratio/high_mean": stats[POLICY_STAT_HIGH_CLIPPED].item() / count,
        "clip_ratio/region_mean": stats[POLICY_STAT_REGION_CLIPPED].item() / count,
        "entropy": stats[POLICY_STAT_ENTROPY_SUM].item() / count,
        "num_tokens": stats[POLICY_STAT_TOKENS].item(),
    }
    if ref_logps is not None:
        metrics["kl"] = stats[POLICY_STAT_KL_SUM].item() / count
    logps = token_logps.reshape(labels.shape).to(logits.device)
    loss_value = stats[POLICY_STAT_LOSS].item()
    if grad is None:
        return torch.tensor(loss_value, dtype=torch.float32, device=logits.device), metrics, logps
    return _PrecomputedGradient.apply(logits, grad, loss_value), metrics, logps
