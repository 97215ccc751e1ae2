"""fused_dpo.torch.policy_loss against PyTorch autograd of TRL's GRPOTrainer loss in float64
(trl_reference.grpo_loss): the loss, the gradient with respect to the logits, TRL's metrics and
the per-token log-probs, for every loss_type, on- and off-policy, per-sequence and per-token
advantages, with the KL, temperature and the entropy bonus, in float32, bfloat16 and float16."""

import unittest

import torch

import trl_reference
from cases import SEED, batch
from fused_dpo.torch import policy_loss

GRAD_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def relative_l2(got, want):
    return ((got.double() - want).norm() / want.norm()).item()


class MatchesTrlGrpo(unittest.TestCase):
    def check(self, dtype, loss_type, per_token=False, on_policy=False, **options):
        logits, labels, _, _ = batch(dtype=dtype)
        g = torch.Generator().manual_seed(SEED + 7)
        seqs = logits.shape[0]
        mask = labels != -100
        temperature = options.get("temperature", 1.0)
        # Cohere's logit_scale and Gemma's softcap come before TRL's temperature (trl_reference.head).
        model_head = lambda z: trl_reference.head(z, options.get("logit_scale"), options.get("softcap"))
        with torch.no_grad():
            logp = trl_reference.grpo_loss(model_head(logits.double()), labels, torch.zeros(seqs, dtype=torch.float64), None, None,
                                           0.0, 0.2, 0.2, "bnpo", temperature=temperature)[2]
        old = None if on_policy else (logp + 0.3 * torch.randn(logp.shape, generator=g, dtype=torch.float64)) * mask
        ref = (logp + 0.5 * torch.randn(logp.shape, generator=g, dtype=torch.float64)) * mask
        advantages = torch.randn(labels.shape if per_token else (seqs,), generator=g, dtype=torch.float64)
        settings = {"beta": 0.1, "epsilon": 0.2, "epsilon_high": 0.28, **options}
        if loss_type == "dr_grpo":
            settings["max_completion_length"] = 9

        x = logits.clone().requires_grad_(True)
        loss, metrics, logps = policy_loss(x, labels, advantages, old_logps=old, ref_logps=ref, loss_type=loss_type, **settings)
        loss.backward()
        y = logits.double().requires_grad_(True)
        want_loss, want_metrics, want_logps = trl_reference.grpo_loss(
            model_head(y), labels, advantages, old, ref, settings["beta"], settings["epsilon"], settings["epsilon_high"], loss_type,
            max_completion_length=settings.get("max_completion_length"), temperature=temperature,
            entropy_coef=settings.get("entropy_coef", 0.0))
        want_loss.backward()
        what = f"{dtype} {loss_type} per_token={per_token} on_policy={on_policy} {options} seed={SEED}"
        self.assertLessEqual(abs(loss.item() - want_loss.item()), 1e-5 * (1 + abs(want_loss.item())), what)
        self.assertLessEqual(relative_l2(x.grad, y.grad), GRAD_TOLERANCE[dtype], what)
        self.assertLessEqual((logps - want_logps).abs().max().item(), 2e-5, what)
        for key, value in want_metrics.items():
            self.assertIn(key, metrics, what)
            self.assertLessEqual(abs(metrics[key] - value), 1e-4 * (1 + abs(value)) if "clip" not in key else 0.02, f"{what}: {key}")

    def test_every_loss_type_and_dtype(self):
        for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                self.check(dtype, loss_type, per_token=dtype == torch.bfloat16)

    def test_the_model_head_transforms(self):
        self.check(torch.float32, "dapo", logit_scale=1.5, softcap=3.0, temperature=0.8)
        self.check(torch.bfloat16, "grpo", softcap=2.5)

    def test_on_policy_temperature_and_entropy_bonus(self):
        for loss_type in ("grpo", "dapo"):
            self.check(torch.float32, loss_type, on_policy=True, temperature=0.7, entropy_coef=0.05)
            self.check(torch.float32, loss_type, per_token=True, entropy_coef=-0.1)

    def test_errors(self):
        logits, labels, _, _ = batch()
        adv = torch.zeros(logits.shape[0], dtype=torch.float64)
        with self.assertRaisesRegex(ValueError, "loss_type"):
            policy_loss(logits, labels, adv, loss_type="ppo")
        with self.assertRaisesRegex(ValueError, "ref_logps"):
            policy_loss(logits, labels, adv, beta=0.1)
        with self.assertRaisesRegex(ValueError, "max_completion_length"):
            policy_loss(logits, labels, adv, loss_type="dr_grpo")
        with self.assertRaisesRegex(ValueError, "advantages"):
            policy_loss(logits, labels, torch.zeros(3, dtype=torch.float64))


if __name__ == "__main__":
    unittest.main()
