"""A tiny torch policy (embedding -> linear -> logits) trained a few SGD steps with fused-dpo's loss
and with TRL's formula in plain autograd ends with the same weights."""

import copy
import unittest

import torch

import trl_reference
from cases import SEED
from fused_dpo.torch import dpo_loss, sequence_logps

PAIRS, STEPS, VOCAB, HIDDEN, SGD_STEPS = 4, 9, 53, 16, 8


class TinyLm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens):
        return self.head(torch.tanh(self.embed(tokens)))


def data():
    g = torch.Generator().manual_seed(SEED)
    tokens = torch.randint(0, VOCAB, (2 * PAIRS, STEPS + 1), generator=g)
    tokens[PAIRS:, :3] = tokens[:PAIRS, :3]  # chosen and rejected share a 3-token prompt
    labels = tokens[:, 1:].clone()  # pre-shifted: labels[t] is the token after inputs[t]
    labels[:, :2] = -100  # the prompt's next tokens are not scored
    return tokens[:, :-1], labels


def train(loss_type, use_fused, logits_dtype, **options):
    torch.manual_seed(SEED)
    policy = TinyLm()
    reference = copy.deepcopy(policy).requires_grad_(False)
    inputs, labels = data()
    with torch.no_grad():
        if use_fused:
            ref_logps, _ = sequence_logps(reference(inputs), labels)
        else:
            ref_logps, _ = trl_reference.sequence_sums(reference(inputs).double(), labels)
    free = loss_type in trl_reference.REFERENCE_FREE
    ref_c, ref_r = (None, None) if free else (ref_logps[:PAIRS], ref_logps[PAIRS:])
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    for _ in range(SGD_STEPS):
        optimizer.zero_grad()
        logits = policy(inputs).to(logits_dtype)
        if use_fused:
            loss, _ = dpo_loss(logits, labels, ref_c, ref_r, loss_type=loss_type, **options)
        else:
            loss, _ = trl_reference.dpo_loss(logits.double(), labels, ref_c, ref_r, [loss_type], **options)
        loss.backward()
        optimizer.step()
    return policy, loss.item()


class TrainsLikeTrl(unittest.TestCase):
    def test_sgd_steps_end_at_the_same_weights(self):
        for loss_type, dtype, tolerance, options in (
            ("sigmoid", torch.float32, 1e-5, {"beta": 0.5}),
            ("ipo", torch.float32, 1e-5, {"beta": 0.5}),
            ("simpo", torch.float32, 1e-5, {"beta": 2.0, "simpo_gamma": 0.5}),
            ("sigmoid", torch.bfloat16, 1e-2, {"beta": 0.5}),
        ):
            with self.subTest(loss_type=loss_type, dtype=dtype):
                fused, fused_loss = train(loss_type, True, dtype, **options)
                plain, plain_loss = train(loss_type, False, dtype, **options)
                torch.manual_seed(SEED)
                start = TinyLm()  # the weights both runs began from
                for (name, a), b, s in zip(fused.named_parameters(), plain.parameters(), start.parameters()):
                    moved = (b - s).norm().item()
                    self.assertGreater(moved, 1e-3, f"{name} moved in training ({loss_type})")
                    error = (a - b).norm().item() / moved
                    self.assertLessEqual(error, tolerance, f"{name}: {loss_type} {dtype} seed={SEED}")
                self.assertLessEqual(abs(fused_loss - plain_loss), 1e-2 * abs(plain_loss) + 1e-5)


if __name__ == "__main__":
    unittest.main()
