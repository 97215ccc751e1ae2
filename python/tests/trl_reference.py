"""TRL's way, in plain PyTorch autograd: the selective log-softmax (log_softmax then gather), masked
sums over the completion tokens, and DPOTrainer's (CPOTrainer's for simpo, ORPOTrainer's for orpo,
KTOTrainer's for kto) loss formulas, as SPEC.md states them; DPOTrainer's f_divergence_type (its
cap_exp), use_weighting (WPO: policy_weights, clamped at 1, detached), CPOTrainer's alpha (AlphaPO),
and the model head's transforms in the order a model applies them before TRL sees the logits (Cohere's
logit_scale, Gemma's final_logit_softcapping, then TRL's temperature). Where fused-dpo goes beyond
TRL (forward_kl, R-DPO's length_penalty) the formula is fused-dpo's, marked so; unlikelihood, which
TRL lacks, as SPEC.md states it. What fused-dpo's results are checked against."""

import math

import torch
import torch.nn.functional as F


def head(logits, logit_scale=None, softcap=None, temperature=None):
    """The model head's transforms, in the order the logits meet them: Cohere's logits * logit_scale,
    Gemma's final_logit_softcapping (logits / cap, tanh, * cap), then TRL's logits / temperature."""
    if logit_scale is not None:
        logits = logits * logit_scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature is not None:
        logits = logits / temperature
    return logits


def sequence_sums(logits, labels, ignore_index=-100):
    """Per-sequence log-prob sums and completion-token counts of [S, T, V] logits."""
    mask = labels != ignore_index
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    per_token = torch.gather(logits.log_softmax(-1), -1, safe.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1), mask.sum(-1)


def wpo_weights(logits, labels, pairs, ignore_index=-100):
    """DPOTrainer's use_weighting (WPO eq. 2), under no_grad: per sequence the mean over completion
    tokens of logp - logsumexp(2 * log_softmax), exp of the chosen + rejected sum, clamped at 1."""
    with torch.no_grad():
        mask = labels != ignore_index
        safe = torch.where(mask, labels, torch.zeros_like(labels))
        logprobs = logits.log_softmax(-1)
        per_token = torch.gather(logprobs, -1, safe.unsqueeze(-1)).squeeze(-1)
        adjustment = torch.logsumexp(2 * logprobs, dim=-1)
        weights = ((per_token - adjustment) * mask).sum(-1) / mask.sum(-1)
        return torch.clamp(torch.exp(weights[:pairs] + weights[pairs:]), max=1)


def get_exp_cap(value, decimal=4):
    # TRL's trl.trainer.utils.get_exp_cap: log of the dtype's largest value, floored to 4 decimals.
    log_max = math.log(torch.finfo(value.dtype).max)
    return math.floor(log_max * 10**decimal) / 10**decimal


def cap_exp(value, cap=-1):
    # TRL's trl.trainer.utils.cap_exp (fused-dpo caps at float32's 88.7228, TRL's for its float32
    # log-probs; these float64 tests stay far below either cap).
    cap = get_exp_cap(value) if cap < 0 else cap
    return torch.exp(torch.clamp(value, max=cap))


def margin(chosen_logratios, rejected_logratios, f_divergence_type, alpha_coef):
    """DPOTrainer.dpo_loss's `logits` from the log-ratios (forward_kl: fused-dpo's, alpha_divergence at 1)."""
    if f_divergence_type in ("alpha_divergence", "forward_kl"):
        coef = 1.0 if f_divergence_type == "forward_kl" else alpha_coef
        return (cap_exp(rejected_logratios * -coef) - cap_exp(chosen_logratios * -coef)) / coef
    logits = chosen_logratios - rejected_logratios
    if f_divergence_type == "js_divergence":
        logits = logits - (F.softplus(chosen_logratios) - F.softplus(rejected_logratios))
    return logits


def ld_token_weights(labels, ld_alpha, ignore_index=-100):
    """TRL's DPOTrainer.concatenated_forward with ld_alpha, its weights per token (the policy's
    side; TRL leaves the reference's logps unweighted): positions counted from the start of the
    row, the first min(N_c, N_r) weigh 1, later ones up to the completion length ld_alpha, the rest
    (and ignored tokens) 0."""
    mask = labels != ignore_index
    num_examples = labels.shape[0] // 2
    completion_lengths = mask.sum(dim=1)
    public_lengths = torch.min(completion_lengths[:num_examples], completion_lengths[num_examples:])
    public_lengths = torch.cat([public_lengths, public_lengths], dim=0)
    position_ids = torch.arange(labels.size(1)).expand_as(labels)
    ld_mask = position_ids < public_lengths.unsqueeze(1)
    within = position_ids < completion_lengths.unsqueeze(1)
    front, rear = (ld_mask & within & mask).double(), (~ld_mask & within & mask).double()
    return front + ld_alpha * rear


def ld_sequence_sums(logits, labels, ld_alpha, ignore_index=-100):
    """The policy's LD-weighted sequence sums, as TRL forms them."""
    mask = labels != ignore_index
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    per_token_logps = torch.gather(logits.log_softmax(-1), -1, safe.unsqueeze(-1)).squeeze(-1) * mask
    return (per_token_logps * ld_token_weights(labels, ld_alpha, ignore_index).to(per_token_logps.dtype)).sum(dim=1)


def _sigmoid_family(u, eps):
    return -(1 - eps) * F.logsigmoid(u) - eps * F.logsigmoid(-u)


def alpha_reward(avg_logps, alpha):
    # CPOTrainer with alpha != 0 (AlphaPO): (1 - p^(-alpha)) / alpha of p = exp(average log-prob)
    probs = torch.exp(avg_logps)
    return (1 - probs.pow(-alpha)) / alpha


def pair_losses(kind, pi_c, pi_r, n_c, n_r, ref_c, ref_r, beta, eps, gamma, tau, f_divergence_type="reverse_kl",
                f_alpha_divergence_coef=0.5, length_penalty=0.0, alpha=0.0, plain_c=None,
                unlikelihood_alpha=1.0):
    """Per-pair losses of one kind: pi the policy's sequence sums, n the token counts, ref the
    reference sums (zeros for the reference-free kinds); plain_c the unweighted chosen sums that
    TRL's nll_loss reads (pi_c unless ld_alpha weighs pi)."""
    plain_c = pi_c if plain_c is None else plain_c
    a, b = pi_c - ref_c, pi_r - ref_r
    avg_c, avg_r = n_c.clamp(min=1).to(pi_c.dtype), n_r.clamp(min=1).to(pi_c.dtype)
    delta = margin(a, b, f_divergence_type, f_alpha_divergence_coef)
    # ipo and sigmoid_norm: TRL averages the log-probs (policy and reference) before dpo_loss
    delta_avg = margin(a / avg_c, b / avg_r, f_divergence_type, f_alpha_divergence_coef)
    # R-DPO (beyond TRL): the length difference explains part of the preference
    u = beta * delta + length_penalty * (n_c - n_r).to(pi_c.dtype)
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
        x_c, x_r = pi_c / avg_c, pi_r / avg_r
        if alpha != 0.0:
            x_c, x_r = alpha_reward(x_c, alpha), alpha_reward(x_r, alpha)
        # CPOTrainer: logits = chosen - rejected; logits - simpo_gamma / beta, times beta
        return _sigmoid_family(beta * ((x_c - x_r) - gamma / beta), eps)
    if kind == "orpo":
        def log_odds(x):
            x = x.clamp(max=-1e-15)
            return x - torch.log1p(-torch.exp(x))

        nll = -plain_c.sum() / n_c.sum().clamp(min=1)
        return nll - beta * F.logsigmoid(log_odds(pi_c / avg_c) - log_odds(pi_r / avg_r))
    if kind == "unlikelihood":
        # not in TRL: the likelihood of the chosen, the unlikelihood of the rejected (token means)
        x_r = (pi_r / avg_r).clamp(max=-1e-15)
        return -pi_c / avg_c - unlikelihood_alpha * torch.log1p(-torch.exp(x_r))
    raise KeyError(kind)


KINDS = [
    "sigmoid", "hinge", "ipo", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "apo_zero",
    "apo_down", "discopop", "sigmoid_norm", "aot", "aot_unpaired", "sft", "simpo", "orpo",
    "unlikelihood",
]
REFERENCE_FREE = {"sft", "simpo", "orpo", "unlikelihood"}
# TRL reports these kinds' rewards and logps on the token-mean log-probs: CPOTrainer (simpo, orpo)
# and DPOTrainer, which divides every log-prob by its token count when ipo is in the list.
REPORTS_AVERAGED = {"simpo", "orpo", "ipo"}
# The kinds whose own formula reads token means (the others read sums, unless the list averages).
AVERAGED_SCORES = {"ipo", "sigmoid_norm", "simpo", "orpo", "unlikelihood"}


def dpo_loss(logits, labels, ref_chosen, ref_rejected, loss_types, loss_weights=None, beta=0.1,
             label_smoothing=0.0, simpo_gamma=0.5, discopop_tau=0.05, ignore_index=-100,
             f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5, length_penalty=0.0, alpha=0.0,
             use_weighting=False, logit_scale=None, softcap=None, temperature=None, ld_alpha=None,
             unlikelihood_alpha=1.0):
    """TRL's loss (mean over pairs) and metrics of [2B, T, V] logits, differentiable in them."""
    logits = head(logits, logit_scale, softcap, temperature)
    plain, counts = sequence_sums(logits, labels, ignore_index)
    sums = plain if ld_alpha is None else ld_sequence_sums(logits, labels, ld_alpha, ignore_index)
    pairs = logits.shape[0] // 2
    pi_c, pi_r, n_c, n_r = sums[:pairs], sums[pairs:], counts[:pairs], counts[pairs:]
    zeros = torch.zeros_like(pi_c)
    ref_c = zeros if ref_chosen is None else ref_chosen.to(sums.dtype)
    ref_r = zeros if ref_rejected is None else ref_rejected.to(sums.dtype)
    weights = loss_weights or [1.0] * len(loss_types)
    # DPOTrainer divides every log-prob (policy and reference) by its token count when ipo is in the
    # list, so every kind of the list reads token means; the NLL (sft) reads its own either way.
    averages_every_kind = any(k in REPORTS_AVERAGED for k in loss_types)

    def scores(kind):
        if not averages_every_kind or kind in AVERAGED_SCORES:
            return pi_c, pi_r, ref_c, ref_r
        avg_c, avg_r = n_c.clamp(min=1).to(sums.dtype), n_r.clamp(min=1).to(sums.dtype)
        return pi_c / avg_c, pi_r / avg_r, ref_c / avg_c, ref_r / avg_r

    losses = sum(
        w * pair_losses(k, *scores(k)[:2], n_c, n_r, *scores(k)[2:], beta, label_smoothing, simpo_gamma, discopop_tau,
                        f_divergence_type, f_alpha_divergence_coef, length_penalty, alpha, plain[:pairs],
                        unlikelihood_alpha)
        for k, w in zip(loss_types, weights)
    )
    if use_weighting:
        losses = losses * wpo_weights(logits, labels, pairs, ignore_index)
    loss = losses.mean()

    with torch.no_grad():
        averaged = any(k in REPORTS_AVERAGED for k in loss_types)
        if averaged:
            chosen_logps, rejected_logps = pi_c / n_c.clamp(min=1), pi_r / n_r.clamp(min=1)
            # (the reference-free kinds' reference is zero: their rewards are beta times the mean log-probs)
            chosen_rewards = beta * (pi_c - ref_c) / n_c.clamp(min=1)
            rejected_rewards = beta * (pi_r - ref_r) / n_r.clamp(min=1)
            if alpha != 0.0 and "simpo" in loss_types:
                chosen_rewards, rejected_rewards = beta * alpha_reward(chosen_logps, alpha), beta * alpha_reward(rejected_logps, alpha)
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


def kto_loss(logits, labels, desirable, ref_logps, kl_logps, ref_kl_logps, loss_type="kto", beta=0.1,
             desirable_weight=1.0, undesirable_weight=1.0, ignore_index=-100, logit_scale=None, softcap=None,
             temperature=None):
    """KTOTrainer.kto_loss and get_batch_loss_metrics on [S, T, V] logits: the KL term
    (policy_KL_logps - reference_KL_logps).mean().detach().clamp(min=0) (none for
    apo_zero_unpaired), the chosen and rejected losses concatenated with their weights, and
    losses.nanmean(); TRL's metric keys (a side's only when the batch has it)."""
    logits = head(logits, logit_scale, softcap, temperature)
    sums, counts = sequence_sums(logits, labels, ignore_index)
    desirable = torch.as_tensor(desirable, dtype=torch.bool)
    if loss_type == "kto":
        kl = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    else:
        kl = torch.zeros(1, dtype=sums.dtype)
    policy_chosen, policy_rejected = sums[desirable], sums[~desirable]
    ref_chosen, ref_rejected = ref_logps[desirable], ref_logps[~desirable]
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    if loss_type == "kto":
        chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
        rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    else:  # apo_zero_unpaired
        chosen_losses = 1 - F.sigmoid(beta * chosen_logratios)
        rejected_losses = F.sigmoid(beta * rejected_logratios)
    chosen_rewards, rejected_rewards = beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    loss = losses.nanmean()
    with torch.no_grad():
        mask = labels != ignore_index
        # TRL sums the logits at every position; fused-dpo at the completion tokens (the only rows it reads)
        completion_logits = logits * mask.unsqueeze(-1)
        metrics = {"kl": kl.item()}
        for side, picked, rewards in (("chosen", desirable, chosen_rewards), ("rejected", ~desirable, rejected_rewards)):
            if int(picked.sum()) == 0:
                continue
            metrics[f"rewards/{side}_sum"] = rewards.nansum().item()
            metrics[f"logps/{side}_sum"] = sums[picked].nansum().item()
            metrics[f"logits/{side}_sum"] = completion_logits[picked].nansum().item()
            metrics[f"count/{side}"] = float(picked.sum().item())
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
