"""TRL's way, in plain PyTorch autograd: the selective log-softmax (log_softmax then gather), masked
sums over the completion tokens, and DPOTrainer's (CPOTrainer's for simpo, ORPOTrainer's for orpo)
loss formulas, as SPEC.md states them; unlikelihood, which TRL lacks, as SPEC.md states it. What
fused-dpo's results are checked against."""

import math

import torch
import torch.nn.functional as F


def sequence_sums(logits, labels, ignore_index=-100):
    """Per-sequence log-prob sums and completion-token counts of [S, T, V] logits."""
    mask = labels != ignore_index
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    per_token = torch.gather(logits.log_softmax(-1), -1, safe.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1), mask.sum(-1)


def ld_sequence_sums(logits, labels, ld_alpha, ignore_index=-100):
    """TRL's DPOTrainer.concatenated_forward with ld_alpha (the policy's side; TRL leaves the
    reference's logps unweighted): positions counted from the start of the row, the first
    min(N_c, N_r) weigh 1, later ones up to the completion length ld_alpha, the rest dropped."""
    mask = labels != ignore_index
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    per_token_logps = torch.gather(logits.log_softmax(-1), -1, safe.unsqueeze(-1)).squeeze(-1) * mask
    num_examples = logits.shape[0] // 2
    completion_lengths = mask.sum(dim=1)
    public_lengths = torch.min(completion_lengths[:num_examples], completion_lengths[num_examples:])
    public_lengths = torch.cat([public_lengths, public_lengths], dim=0)
    position_ids = torch.arange(per_token_logps.size(1)).expand_as(per_token_logps)
    ld_mask = position_ids < public_lengths.unsqueeze(1)
    within = position_ids < completion_lengths.unsqueeze(1)
    front_logps = (per_token_logps * (ld_mask & within).to(per_token_logps.dtype)).sum(dim=1)
    rear_logps = (per_token_logps * (~ld_mask & within).to(per_token_logps.dtype)).sum(dim=1)
    return front_logps + ld_alpha * rear_logps


def _sigmoid_family(u, eps):
    return -(1 - eps) * F.logsigmoid(u) - eps * F.logsigmoid(-u)


def pair_losses(kind, pi_c, pi_r, n_c, n_r, ref_c, ref_r, beta, eps, gamma, tau, plain_c=None, alpha=1.0):
    """Per-pair losses of one kind: pi the policy's sequence sums, n the token counts, ref the
    reference sums (zeros for the reference-free kinds); plain_c the unweighted chosen sums that
    TRL's nll_loss reads (pi_c unless ld_alpha weighs pi)."""
    plain_c = pi_c if plain_c is None else plain_c
    a, b = pi_c - ref_c, pi_r - ref_r
    delta = a - b
    avg_c, avg_r = n_c.clamp(min=1).to(pi_c.dtype), n_r.clamp(min=1).to(pi_c.dtype)
    delta_avg = a / avg_c - b / avg_r
    u = beta * delta
    if kind == "sigmoid":
        return _sigmoid_family(u, eps)
    if kind == "hinge":
        return torch.relu(1 - u)
    if kind == "ipo":
        return (delta_avg - 1 / (2 * beta)) ** 2
    if kind == "robust":
        return (-(1 - eps) * F.logsigmoid(u) + eps * F.logsigmoid(-u)) / (1 - 2 * eps)
    if kind == "exo_pair":
        e = eps if eps > 0 else 1e-3
        return torch.sigmoid(u) * (F.logsigmoid(u) - math.log(1 - e)) + torch.sigmoid(-u) * (F.logsigmoid(-u) - math.log(e))
    if kind == "nca_pair":
        return -F.logsigmoid(beta * a) - 0.5 * F.logsigmoid(-beta * a) - 0.5 * F.logsigmoid(-beta * b)
    if kind == "bco_pair":
        return -F.logsigmoid(beta * a) - F.logsigmoid(-beta * b)
    if kind == "sppo_hard":
        return (a - 1 / (2 * beta)) ** 2 + (b + 1 / (2 * beta)) ** 2
    if kind == "apo_zero":
        return (1 - torch.sigmoid(beta * a)) + torch.sigmoid(beta * b)
    if kind == "apo_down":
        return torch.sigmoid(beta * a) + (1 - torch.sigmoid(u))
    if kind == "discopop":
        modulation = torch.sigmoid(u / tau)
        return -F.logsigmoid(u) * (1 - modulation) + torch.exp(-u) * modulation
    if kind == "sigmoid_norm":
        return -F.logsigmoid(beta * delta_avg)
    if kind == "aot":
        sorted_policy, _ = torch.sort(pi_c - pi_r)
        sorted_ref, _ = torch.sort(ref_c - ref_r)
        return _sigmoid_family(beta * (sorted_policy - sorted_ref), eps)
    if kind == "aot_unpaired":
        sorted_a, _ = torch.sort(a)
        sorted_b, _ = torch.sort(b)
        return _sigmoid_family(beta * (sorted_a - sorted_b), eps)
    if kind == "sft":
        return (-plain_c.sum() / n_c.sum().clamp(min=1)).expand_as(pi_c)
    if kind == "simpo":
        return _sigmoid_family(beta * (pi_c / avg_c - pi_r / avg_r) - gamma, eps)
    if kind == "orpo":
        def log_odds(x):
            x = x.clamp(max=-1e-15)
            return x - torch.log1p(-torch.exp(x))

        nll = -plain_c.sum() / n_c.sum().clamp(min=1)
        return nll - beta * F.logsigmoid(log_odds(pi_c / avg_c) - log_odds(pi_r / avg_r))
    if kind == "unlikelihood":
        # not in TRL: the likelihood of the chosen, the unlikelihood of the rejected (token means)
        x_r = (pi_r / avg_r).clamp(max=-1e-15)
        return -pi_c / avg_c - alpha * torch.log1p(-torch.exp(x_r))
    raise KeyError(kind)


KINDS = [
    "sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "apo_zero",
    "apo_down", "discopop", "sigmoid_norm", "aot", "aot_unpaired", "sft", "simpo", "orpo",
    "unlikelihood",
]
REFERENCE_FREE = {"sft", "simpo", "orpo", "unlikelihood"}
REPORTS_AVERAGED = {"simpo", "orpo"}


def dpo_loss(logits, labels, ref_chosen, ref_rejected, loss_types, loss_weights=None, beta=0.1,
             label_smoothing=0.0, simpo_gamma=0.5, discopop_tau=0.05, unlikelihood_alpha=1.0, ignore_index=-100, ld_alpha=None):
    """TRL's loss (mean over pairs) and metrics of [2B, T, V] logits, differentiable in them."""
    plain, counts = sequence_sums(logits, labels, ignore_index)
    sums = plain if ld_alpha is None else ld_sequence_sums(logits, labels, ld_alpha, ignore_index)
    pairs = logits.shape[0] // 2
    pi_c, pi_r, n_c, n_r = sums[:pairs], sums[pairs:], counts[:pairs], counts[pairs:]
    zeros = torch.zeros_like(pi_c)
    ref_c = zeros if ref_chosen is None else ref_chosen.to(sums.dtype)
    ref_r = zeros if ref_rejected is None else ref_rejected.to(sums.dtype)
    weights = loss_weights or [1.0] * len(loss_types)
    losses = sum(
        w * pair_losses(k, pi_c, pi_r, n_c, n_r, ref_c, ref_r, beta, label_smoothing, simpo_gamma, discopop_tau, plain[:pairs], unlikelihood_alpha)
        for k, w in zip(loss_types, weights)
    )
    loss = losses.mean()

    with torch.no_grad():
        averaged = any(k in REPORTS_AVERAGED for k in loss_types)
        if averaged:
            chosen_logps, rejected_logps = pi_c / n_c.clamp(min=1), pi_r / n_r.clamp(min=1)
            chosen_rewards, rejected_rewards = beta * chosen_logps, beta * rejected_logps
        else:
            chosen_logps, rejected_logps = pi_c, pi_r
            chosen_rewards, rejected_rewards = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
        mask = labels != ignore_index
        row_mean_logits = logits.mean(-1)
        probs = logits.softmax(-1)
        entropy = -(probs * logits.log_softmax(-1)).sum(-1)
        correct = (logits.argmax(-1) == labels) & mask
        metrics = {
            "rewards/chosen": chosen_rewards.mean().item(),
            "rewards/rejected": rejected_rewards.mean().item(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).double().mean().item(),
            "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
            "logps/chosen": chosen_logps.mean().item(),
            "logps/rejected": rejected_logps.mean().item(),
            "logits/chosen": row_mean_logits[:pairs][mask[:pairs]].mean().item(),
            "logits/rejected": row_mean_logits[pairs:][mask[pairs:]].mean().item(),
            "entropy": entropy[mask].mean().item(),
            "mean_token_accuracy": (correct[:pairs].sum() / mask[:pairs].sum()).item(),
            "num_tokens": float(mask.sum().item()),
        }
    return loss, metrics


def grpo_loss(logits, labels, advantages, old_logps, ref_logps, beta, epsilon, epsilon_high, loss_type,
              max_completion_length=None, num_items_in_batch=None, temperature=1.0, entropy_coef=0.0, ignore_index=-100):
    """GRPOTrainer._compute_loss on [S, T, V] logits (labels [S, T], advantages [S] or [S, T],
    old/ref log-probs [S, T] or None), as TRL writes it: logits / temperature, the selective
    log-softmax, coef_1 = exp(logp - old), coef_2 = clamp(coef_1, 1 - eps, 1 + eps_high),
    -min(coef_1 A, coef_2 A) + beta k3, and the loss_type's aggregation. Plus, beyond TRL, minus
    entropy_coef times the entropy (differentiated: TRL computes it under no_grad). Returns
    (loss, metrics, per-token logps)."""
    logits = logits / temperature
    mask = (labels != ignore_index).to(logits.dtype)
    safe = torch.where(labels != ignore_index, labels, torch.zeros_like(labels))
    log_probs = logits.log_softmax(-1)
    per_token_logps = torch.gather(log_probs, -1, safe.unsqueeze(-1)).squeeze(-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    old = per_token_logps.detach() if old_logps is None else old_logps
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    coef_1 = torch.exp(per_token_logps - old)
    coef_2 = torch.clamp(coef_1, 1 - epsilon, 1 + epsilon_high)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if ref_logps is not None:
        per_token_kl = torch.exp(ref_logps - per_token_logps) - (ref_logps - per_token_logps) - 1
        if beta != 0.0:
            per_token_loss = per_token_loss + beta * per_token_kl
    per_token_loss = per_token_loss - entropy_coef * entropies
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    else:
        normalizer = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1.0)
        loss = (per_token_loss * mask).sum() / normalizer
    count = mask.sum().clamp(min=1.0)

    def masked_mean(x):
        return ((x * mask).sum() / count).item()

    low = ((coef_1 < 1 - epsilon) & (adv < 0)).to(logits.dtype)
    high = ((coef_1 > 1 + epsilon_high) & (adv > 0)).to(logits.dtype)
    metrics = {
        "clip_ratio/low_mean": masked_mean(low),
        "clip_ratio/high_mean": masked_mean(high),
        "clip_ratio/region_mean": masked_mean(torch.maximum(low, high)),
        "entropy": masked_mean(entropies.detach()),
    }
    if ref_logps is not None:
        metrics["kl"] = masked_mean(per_token_kl.detach())
    return loss, metrics, per_token_logps.detach() * mask
