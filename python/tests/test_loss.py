"""fused_dpo.torch.dpo_loss against PyTorch autograd of TRL's formula in float64: the loss, the
gradient with respect to the logits and TRL's metrics, for every loss type, in float32, bfloat16
and float16; and the autograd contract (grad_output scaling, in place, one backward)."""

import math
import unittest

import torch

import trl_reference
from cases import SEED, batch
from fused_dpo.torch import dpo_loss, kto_loss, loss_types, sequence_logps

# Relative L2 error of the gradient, by dtype: the kernels compute in fp32 and round the gradient
# to the logits' dtype (bf16 keeps 8 bits, fp16 11).
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}

# Hyperparameters away from the defaults where a kind reads them.
SETTINGS = {
    "sigmoid": {"label_smoothing": 0.1},
    "robust": {"label_smoothing": 0.2},
    "exo_pair": {"label_smoothing": 0.1},
    "aot": {"label_smoothing": 0.1},
    "discopop": {"beta": 0.5, "discopop_tau": 0.1},
    "simpo": {"beta": 2.0, "simpo_gamma": 0.3, "label_smoothing": 0.05},
    "orpo": {"beta": 0.5},
    "ipo": {"beta": 0.5},
    "unlikelihood": {"unlikelihood_alpha": 0.7},
}


def fused(kinds, logits, labels, ref_c, ref_r, **options):
    x = logits.clone().requires_grad_(True)
    free = all(k in trl_reference.REFERENCE_FREE for k in kinds)
    loss, metrics = dpo_loss(x, labels, None if free else ref_c, None if free else ref_r, loss_type=kinds, **options)
    loss.backward()
    return loss, x.grad, metrics


def reference(kinds, logits, labels, ref_c, ref_r, **options):
    x = logits.double().requires_grad_(True)
    free = all(k in trl_reference.REFERENCE_FREE for k in kinds)
    loss, metrics = trl_reference.dpo_loss(
        x, labels, None if free else ref_c, None if free else ref_r, kinds, options.pop("loss_weights", None), **options
    )
    loss.backward()
    return loss, x.grad, metrics


def logp_rounding(logits, labels, want_grad):
    """Each token's float32 rounding of its log-prob, signed as it moves the loss: two ulps of the
    log-softmax's terms (|lse| and |z_y|) times the sign of dL/dlogp_t, and 1 - p_y. For a loss of
    the log-probs alone, dL/dz_y = dL/dlogp_t * (1 - p_y) gives dL/dlogp_t from the float64 gradient."""
    x = logits.double()
    mask = labels != -100
    safe = torch.where(mask, labels, torch.zeros_like(labels)).unsqueeze(-1)
    lse = torch.logsumexp(x, -1)
    z_y = torch.gather(x, -1, safe).squeeze(-1)
    one_minus_p = (-torch.expm1(z_y - lse)).clamp(min=1e-12)
    dl_dlogp = torch.gather(want_grad, -1, safe).squeeze(-1) / one_minus_p
    ulps = 2 * 2.0**-24 * (1 + lse.abs() + z_y.abs()) * mask
    return ulps * torch.sign(dl_dlogp), dl_dlogp, one_minus_p


def logp_rounding_bound(logits, labels, want_grad):
    """How far the loss can move when each token's log-prob is off by its float32 rounding: the sum
    over tokens of |dL/dlogp_t| times that rounding. The exponential margins (alpha_divergence,
    forward_kl) subtract exps of log-ratios: their loss is ill-conditioned there, and float32 logits
    cannot do better (torch's own float32 log_softmax is off by as much)."""
    rounding, dl_dlogp, _ = logp_rounding(logits, labels, want_grad)
    return float((dl_dlogp * rounding).abs().sum())


def gradient_rounding_bound(kinds, logits, labels, ref_c, ref_r, want_grad, options):
    """How far (relative L2) the float64 gradient moves when every token's log-prob moves by its
    float32 rounding in the direction that moves the loss most, either way: the gradient's
    conditioning (large where the loss bends sharply, e.g. discopop's tau = 0.1 or the exponential
    margins), which no float32 kernel can beat."""
    rounding, _, one_minus_p = logp_rounding(logits, labels, want_grad)
    safe = torch.where(labels != -100, labels, torch.zeros_like(labels)).unsqueeze(-1)
    worst = 0.0
    for sign in (1.0, -1.0):
        # (A shift of z_y by d moves log p_y by d * (1 - p_y).)
        shifted = logits.double().scatter_add(-1, safe, (sign * rounding / one_minus_p).unsqueeze(-1))
        _, grad, _ = reference(kinds, shifted, labels, ref_c, ref_r, **dict(options))
        worst = max(worst, relative_l2(grad, want_grad))
    return worst


def grad_tolerance(dtype, want_grad):
    """GRAD_TOLERANCE plus the dtype's own rounding of the float64 gradient, which no kernel can
    beat: float16's subnormals below 6.1e-5 keep few bits (WPO's weights push gradients there)."""
    return GRAD_TOLERANCE[dtype] + relative_l2(want_grad.to(dtype), want_grad)


def relative_l2(got, want):
    """||got - want|| / ||want||; where want is all zeros (a hinge whose every pair is past its
    margin), ||got||, which must then be 0 too."""
    error = (got.double() - want).norm()
    return (error / want.norm() if want.norm() > 0 else error).item()


class MatchesTrl(unittest.TestCase):
    def check(self, kinds, dtype, prompt_rows=True, conditioned=False, **options):
        """conditioned: the loss's tolerance also allows for the log-probs' float32 rounding
        (logp_rounding_bound), for losses whose conditioning needs it."""
        logits, labels, ref_c, ref_r = batch(dtype=dtype, prompt_rows=prompt_rows)
        loss, grad, metrics = fused(kinds, logits, labels, ref_c, ref_r, **options)
        want_loss, want_grad, want_metrics = reference(kinds, logits, labels, ref_c, ref_r, **dict(options))
        what = f"{kinds} {dtype} seed={SEED}"
        self.assertEqual(loss.dtype, torch.float32)
        self.assertEqual(grad.dtype, dtype)
        tolerance = 2e-6 * abs(want_loss.item()) + 1e-6
        if conditioned:
            tolerance += logp_rounding_bound(logits, labels, want_grad)
        self.assertLessEqual(abs(loss.item() - want_loss.item()), tolerance, what)
        tolerance = grad_tolerance(dtype, want_grad) + gradient_rounding_bound(kinds, logits, labels, ref_c, ref_r, want_grad, options)
        self.assertLessEqual(relative_l2(grad, want_grad), tolerance, what)
        # Ignored rows get exactly zero.
        self.assertTrue(bool((grad[labels == -100] == 0).all()), what)
        self.assertEqual(set(metrics), set(want_metrics), what)
        for key, value in want_metrics.items():
            # The margin is the chosen reward minus the rejected one: its error is theirs, on their
            # scale (AlphaPO's alpha = 1 makes them exps near -440 whose margin is -2.7).
            scale = abs(want_metrics["rewards/chosen"]) + abs(want_metrics["rewards/rejected"]) if key == "rewards/margins" else abs(value)
            self.assertLessEqual(abs(metrics[key] - value), 1e-5 * scale + 1e-6, f"{key}: {what}")

    def test_every_loss_type_in_float32(self):
        self.assertEqual(loss_types(), trl_reference.KINDS, "the reference covers every kind the library has")
        for kind in loss_types():
            with self.subTest(kind=kind):
                self.check([kind], torch.float32, **SETTINGS.get(kind, {}))

    def test_ld_alpha_matches_trl_on_rows_without_a_prompt(self):
        # TRL counts LD positions from the row start: the same as fused-dpo's completion-token count
        # when the rows hold no prompt prefix (completion, then right padding).
        for kind in loss_types():
            for ld_alpha in (0.0, 0.4):
                with self.subTest(kind=kind, ld_alpha=ld_alpha):
                    self.check([kind], torch.float32, prompt_rows=False, ld_alpha=ld_alpha, **SETTINGS.get(kind, {}))
        for dtype in (torch.bfloat16, torch.float16):
            with self.subTest(dtype=dtype):
                self.check(["sigmoid", "sft"], dtype, prompt_rows=False, ld_alpha=0.5, loss_weights=[1.0, 0.5])

    def test_half_precision_logits(self):
        for dtype in (torch.bfloat16, torch.float16):
            for kind in ("sigmoid", "ipo", "simpo", "aot", "orpo"):
                with self.subTest(kind=kind, dtype=dtype):
                    self.check([kind], dtype, **SETTINGS.get(kind, {}))

    def test_weighted_loss_list(self):
        # TRL's MPO style: several losses with weights.
        self.check(["sigmoid", "sft"], torch.float32, loss_weights=[0.8, 0.2])
        self.check(["sigmoid", "bco_pair", "sft"], torch.bfloat16, loss_weights=[1.0, 0.5, 0.25], beta=0.3)
        # ipo in the list: DPOTrainer averages every kind's log-probs (sft's NLL aside).
        self.check(["sigmoid", "ipo", "sft"], torch.float32, loss_weights=[1.0, 0.5, 0.25], beta=0.3)


class MatchesTrlOptions(unittest.TestCase):
    """DPOConfig's other options, CPOConfig's alpha and the model-head transforms, alone and combined."""

    HEAD = {"logit_scale": 1.5, "softcap": 4.0, "temperature": 0.8}
    check = MatchesTrl.check

    def test_f_divergences(self):
        for divergence, coef in (("js_divergence", None), ("alpha_divergence", 0.3), ("alpha_divergence", 0.5), ("forward_kl", None)):
            extra = {} if coef is None else {"f_alpha_divergence_coef": coef}
            # TRL's discopop forms exp(-u) * sigmoid(u / tau), NaN (inf * 0) once the exponential
            # margins make u large: compared under js_divergence only (fused-dpo's is in log space).
            kinds = ("sigmoid", "ipo", "hinge", "sigmoid_norm") + (("discopop",) if divergence == "js_divergence" else ())
            for kind in kinds:
                with self.subTest(divergence=divergence, coef=coef, kind=kind):
                    # (Exponential margins: a difference of exps of the log-ratios, as ill-conditioned
                    # as those exps are large, e.g. hinge's e^14.39 - e^14.48 at one seed.)
                    self.check([kind], torch.float32, conditioned=divergence != "js_divergence",
                               f_divergence_type=divergence, **extra, **SETTINGS.get(kind, {}))

    def test_use_weighting(self):
        self.check(["sigmoid"], torch.float32, use_weighting=True)
        self.check(["sigmoid", "sft"], torch.bfloat16, loss_weights=[1.0, 0.5], use_weighting=True)
        self.check(["aot", "ipo"], torch.float32, use_weighting=True, beta=0.5)
        self.check(["sigmoid"], torch.float16, use_weighting=True)

    def test_head_transforms_alone_and_composed(self):
        for transforms in ({"logit_scale": 2.5}, {"softcap": 3.0}, {"temperature": 0.7}, self.HEAD):
            with self.subTest(**transforms):
                self.check(["sigmoid"], torch.float32, **transforms)
        self.check(["simpo"], torch.float16, **self.HEAD, **SETTINGS["simpo"])

    def test_length_penalty_and_alpha(self):
        self.check(["sigmoid"], torch.float32, length_penalty=0.05)
        self.check(["hinge"], torch.float32, length_penalty=-0.1, beta=0.5)
        for alpha in (-0.5, 0.25, 1.0):
            with self.subTest(alpha=alpha):
                self.check(["simpo"], torch.float32, alpha=alpha, **SETTINGS["simpo"])

    def test_combined(self):
        self.check(["sigmoid", "sft"], torch.float32, loss_weights=[1.0, 0.3], f_divergence_type="js_divergence",
                   use_weighting=True, length_penalty=0.02, label_smoothing=0.1, **self.HEAD)
        self.check(["simpo", "sft"], torch.bfloat16, alpha=0.5, use_weighting=True, logit_scale=0.5, softcap=6.0, beta=2.0)


class PerTokenReference(unittest.TestCase):
    """ref_token_logps: the reference's per-token log-probs instead of its two sums. The log-ratios
    are then sum_t w_t (logp_t - ref_t): the loss of TRL's formula given the reference sums
    sum_t w_t ref_t (w_t: ld_alpha's weights, 1 without it)."""

    @staticmethod
    def per_token(labels):
        g = torch.Generator().manual_seed(SEED + 11)
        # Ignored positions hold NaN: the library must not read them.
        return torch.where(labels != -100, -2.5 + torch.randn(labels.shape, generator=g, dtype=torch.float64), math.nan)

    @staticmethod
    def sums(per_token, labels, ld_alpha):
        """The reference sums that ref_token_logps stands for: sum_t w_t ref_t per sequence."""
        mask = labels != -100
        weights = mask.double() if ld_alpha is None else trl_reference.ld_token_weights(labels, ld_alpha)
        sums = (torch.where(mask, per_token.double(), 0.0) * weights).sum(dim=1)
        pairs = labels.shape[0] // 2
        return sums[:pairs], sums[pairs:]

    def check(self, kinds, dtype, ld_alpha=None, ref_dtype=torch.float64, **options):
        logits, labels, _, _ = batch(dtype=dtype, prompt_rows=ld_alpha is None)
        per_token = self.per_token(labels).to(ref_dtype)
        x = logits.clone().requires_grad_(True)
        loss, metrics = dpo_loss(x, labels, loss_type=kinds, ref_token_logps=per_token, ld_alpha=ld_alpha, **options)
        loss.backward()
        ref_c, ref_r = self.sums(per_token, labels, ld_alpha)
        want_loss, want_grad, want_metrics = reference(kinds, logits, labels, ref_c, ref_r, ld_alpha=ld_alpha, **dict(options))
        what = f"ref_token_logps {kinds} {dtype} ld_alpha={ld_alpha} seed={SEED}"
        self.assertLessEqual(abs(loss.item() - want_loss.item()), 2e-6 * abs(want_loss.item()) + 1e-6, what)
        self.assertLessEqual(relative_l2(x.grad, want_grad), grad_tolerance(dtype, want_grad), what)
        for key, value in want_metrics.items():
            scale = abs(want_metrics["rewards/chosen"]) + abs(want_metrics["rewards/rejected"]) if key == "rewards/margins" else abs(value)
            self.assertLessEqual(abs(metrics[key] - value), 1e-5 * scale + 1e-6, f"{key}: {what}")
        return loss

    def test_matches_the_reference_sums(self):
        for kinds in (["sigmoid"], ["ipo"], ["aot"], ["hinge"], ["sigmoid", "sft"], ["sigmoid", "ipo"]):
            with self.subTest(kinds=kinds):
                self.check(kinds, torch.float32, **SETTINGS.get(kinds[0], {}))
        self.check(["sigmoid"], torch.bfloat16, label_smoothing=0.1)
        self.check(["sigmoid"], torch.float16, use_weighting=True)
        self.check(["sigmoid"], torch.float32, ref_dtype=torch.float32)

    def test_with_ld_alpha_the_reference_is_weighted_too(self):
        for kinds in (["sigmoid"], ["ipo"], ["sigmoid", "sft"]):
            with self.subTest(kinds=kinds):
                self.check(kinds, torch.float32, ld_alpha=0.4)

    def test_packed_rows_equal_the_padded_batch(self):
        logits, labels, _, _ = batch()
        per_token = self.per_token(labels)
        seqs, steps, vocab = logits.shape
        cu = [s * steps for s in range(seqs + 1)]
        packed, _ = dpo_loss(logits.reshape(-1, vocab), labels.reshape(-1), ref_token_logps=per_token.reshape(-1), cu_seqlens=cu)
        padded, _ = dpo_loss(logits, labels, ref_token_logps=per_token)
        self.assertEqual(packed.item(), padded.item())

    def test_bad_per_token_references_are_named(self):
        logits, labels, ref_c, ref_r = batch()
        per_token = self.per_token(labels)
        with self.assertRaisesRegex(TypeError, "ref_token_logps replaces ref_chosen_logps and ref_rejected_logps"):
            dpo_loss(logits, labels, ref_c, ref_r, ref_token_logps=per_token)
        with self.assertRaisesRegex(ValueError, r"ref_token_logps must have 56 values \(one per token"):
            dpo_loss(logits, labels, ref_token_logps=per_token[:, :-1])
        with self.assertRaisesRegex(TypeError, "ref_token_logps must be a floating-point torch.Tensor, got list"):
            dpo_loss(logits, labels, ref_token_logps=per_token.tolist())
        scored = (labels != -100).nonzero()[0].tolist()
        bad = per_token.clone()
        bad[scored[0], scored[1]] = math.inf
        row = scored[0] * labels.shape[1] + scored[1]
        with self.assertRaisesRegex(ValueError, rf"ref_token_logps\[{row}\] must be a finite number \(row {row} is scored\), got inf"):
            dpo_loss(logits, labels, ref_token_logps=bad)
        bad_sum = ref_c.clone()
        bad_sum[1] = math.nan
        with self.assertRaisesRegex(ValueError, r"ref_chosen_logps\[1\] must be a finite number, got nan"):
            dpo_loss(logits, labels, bad_sum, ref_r)


class MatchesTrlKto(unittest.TestCase):
    def check(self, dtype, desirable, **options):
        logits, labels, ref_c, ref_r = batch(dtype=dtype)
        ref = torch.cat([ref_c, ref_r])
        g = torch.Generator().manual_seed(SEED + 7)
        kl_logps = -15 + 3 * torch.randn(5, generator=g, dtype=torch.float64)
        ref_kl = kl_logps - 1.0 - torch.randn(5, generator=g, dtype=torch.float64)
        kl = {} if options.get("loss_type") == "apo_zero_unpaired" else {"kl_logps": kl_logps, "ref_kl_logps": ref_kl}
        x = logits.clone().requires_grad_(True)
        loss, metrics = kto_loss(x, labels, desirable, ref, **kl, **options)
        loss.backward()
        y = logits.double().requires_grad_(True)
        want, want_metrics = trl_reference.kto_loss(y, labels, desirable, ref, kl_logps, ref_kl, **options)
        want.backward()
        what = f"kto {options} {dtype} seed={SEED}"
        self.assertLessEqual(abs(loss.item() - want.item()), 2e-6 * abs(want.item()) + 1e-7, what)
        self.assertLessEqual(relative_l2(x.grad, y.grad), GRAD_TOLERANCE[dtype], what)
        self.assertEqual(set(metrics), set(want_metrics), what)
        # The logit sums add many values of either sign (the sum is small, its terms are not): a
        # float32 sum's error is on the scale of the sum of their magnitudes.
        head = trl_reference.head(logits.double(), options.get("logit_scale"), options.get("softcap"), options.get("temperature"))
        magnitudes = float((head.abs() * (labels != -100).unsqueeze(-1)).sum())
        for key, value in want_metrics.items():
            tolerance = 1e-5 * abs(value) + 1e-5 + (4 * 2.0**-24 * magnitudes if key.startswith("logits/") else 0)
            self.assertLessEqual(abs(metrics[key] - value), tolerance, f"{key}: {what}")

    def test_both_loss_types_weights_and_the_kl_term(self):
        desirable = [True, False, True, True, False, False, True, False]
        for loss_type in ("kto", "apo_zero_unpaired"):
            with self.subTest(loss_type=loss_type):
                self.check(torch.float32, desirable, loss_type=loss_type)
                self.check(torch.float32, desirable, loss_type=loss_type, beta=0.5, desirable_weight=1.33, undesirable_weight=0.7)
        self.check(torch.bfloat16, desirable, beta=0.3, **MatchesTrlOptions.HEAD)

    def test_one_sided_batches(self):
        self.check(torch.float32, [True] * 8, beta=0.5)
        self.check(torch.float16, [False] * 8, desirable_weight=2.0)


class AutogradContract(unittest.TestCase):
    def setUp(self):
        self.logits, self.labels, self.ref_c, self.ref_r = batch()

    def grad_of(self, x, scale=1.0, **options):
        loss, _ = dpo_loss(x, self.labels, self.ref_c, self.ref_r, **options)
        (loss * scale).backward()
        return x.grad

    def test_backward_scales_by_grad_output(self):
        base = self.grad_of(self.logits.clone().requires_grad_(True))
        half = self.grad_of(self.logits.clone().requires_grad_(True), scale=0.5)
        self.assertTrue(torch.equal(half, base * 0.5))

    def test_gradients_accumulate_across_calls(self):
        x = self.logits.clone().requires_grad_(True)
        first = self.grad_of(x).clone()
        self.grad_of(x)
        self.assertTrue(torch.equal(x.grad, 2 * first))

    def test_inplace_writes_the_gradient_over_the_logits_with_the_same_bits(self):
        want = self.grad_of(self.logits.clone().requires_grad_(True))
        x = self.logits.clone().requires_grad_(True)
        h = x * 1.0  # a non-leaf whose values nothing else needs, as logits out of a matmul
        loss, _ = dpo_loss(h, self.labels, self.ref_c, self.ref_r, inplace=True)
        loss.backward()
        self.assertTrue(torch.equal(x.grad, want))
        self.assertTrue(torch.equal(h.detach(), want), "the gradient is in the logits' memory")

    def test_non_contiguous_logits_are_copied(self):
        # TRL slices logits[:, :-1]: a non-contiguous view.
        wide = torch.cat([self.logits, torch.zeros(self.logits.shape[0], 1, self.logits.shape[2])], 1)
        x = wide.clone().requires_grad_(True)
        view = x[:, :-1]
        self.assertFalse(view.is_contiguous())
        loss, _ = dpo_loss(view, self.labels, self.ref_c, self.ref_r)
        loss.backward()
        want = self.grad_of(self.logits.clone().requires_grad_(True))
        self.assertTrue(torch.equal(x.grad[:, :-1], want))
        self.assertTrue(bool((x.grad[:, -1] == 0).all()))
        with self.assertRaisesRegex(ValueError, "inplace=True needs contiguous logits"):
            dpo_loss(view, self.labels, self.ref_c, self.ref_r, inplace=True)

    def test_a_second_backward_raises(self):
        x = self.logits.clone().requires_grad_(True)
        loss, _ = dpo_loss(x, self.labels, self.ref_c, self.ref_r)
        loss.backward(retain_graph=True)
        with self.assertRaisesRegex(RuntimeError, "backward ran a second time"):
            loss.backward()

    def test_without_grad_the_loss_and_metrics_are_the_same(self):
        x = self.logits.clone().requires_grad_(True)
        loss, metrics = dpo_loss(x, self.labels, self.ref_c, self.ref_r)
        with torch.no_grad():
            loss2, metrics2 = dpo_loss(x, self.labels, self.ref_c, self.ref_r)
        self.assertFalse(loss2.requires_grad)
        self.assertEqual(loss.item(), loss2.item())
        self.assertEqual(metrics, metrics2)

    def test_metrics_are_trls_keys(self):
        _, metrics = dpo_loss(self.logits, self.labels, self.ref_c, self.ref_r)
        self.assertEqual(
            sorted(metrics),
            sorted([
                "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy", "num_tokens",
            ]),
        )
        self.assertTrue(all(isinstance(v, float) for v in metrics.values()))

    def test_packed_rows_equal_the_padded_batch(self):
        seqs, steps, vocab = self.logits.shape
        cu = [s * steps for s in range(seqs + 1)]
        packed, _ = dpo_loss(self.logits.reshape(-1, vocab), self.labels.reshape(-1), self.ref_c, self.ref_r, cu_seqlens=cu)
        padded, _ = dpo_loss(self.logits, self.labels, self.ref_c, self.ref_r)
        self.assertEqual(packed.item(), padded.item())

    def test_sum_reduction_and_normalizer(self):
        mean, _ = dpo_loss(self.logits, self.labels, self.ref_c, self.ref_r)
        total, _ = dpo_loss(self.logits, self.labels, self.ref_c, self.ref_r, reduction="sum")
        shard, _ = dpo_loss(self.logits, self.labels, self.ref_c, self.ref_r, normalizer=12)
        pairs = self.ref_c.numel()
        self.assertTrue(math.isclose(total.item(), mean.item() * pairs, rel_tol=1e-6))
        self.assertTrue(math.isclose(shard.item(), mean.item() * pairs / 12, rel_tol=1e-6))


class SequenceLogps(unittest.TestCase):
    def test_sums_and_means_match_the_selective_log_softmax(self):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            logits, labels, _, _ = batch(dtype=dtype)
            want, counts = trl_reference.sequence_sums(logits.double(), labels)
            got, got_counts = sequence_logps(logits, labels)
            self.assertEqual(got.dtype, torch.float64)
            self.assertTrue(torch.equal(got_counts, counts.to(torch.int32)))
            self.assertLessEqual((got - want).abs().max().item(), 1e-5 * want.abs().max().item(), str(dtype))
            means, _ = sequence_logps(logits, labels, average=True)
            self.assertLessEqual((means - want / counts.clamp(min=1)).abs().max().item(), 1e-5, str(dtype))

    def test_the_model_head_transforms_as_dpo_loss_applies_them(self):
        logits, labels, _, _ = batch()
        head = {"logit_scale": 1.5, "softcap": 3.0, "temperature": 0.8}
        want, _ = trl_reference.sequence_sums(trl_reference.head(logits.double(), **head), labels)
        got, _ = sequence_logps(logits, labels, **head)
        self.assertLessEqual((got - want).abs().max().item(), 1e-5 * want.abs().max().item())
        plain, _ = sequence_logps(logits, labels)
        self.assertGreater((plain - want).abs().max().item(), 1e-2, "the transforms change the sums")
        with self.assertRaisesRegex(ValueError, "sequence_logps: softcap must be a finite number > 0"):
            sequence_logps(logits, labels, softcap=-1.0)

    def test_a_tensor_that_requires_grad_is_read_without_a_graph(self):
        logits, labels, _, _ = batch()
        got, _ = sequence_logps(logits.requires_grad_(True), labels)
        self.assertFalse(got.requires_grad)


if __name__ == "__main__":
    unittest.main()
