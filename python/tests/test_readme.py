"""The README's PyTorch snippet, run as written: its python block under "### PyTorch", with a tiny
Hugging Face-shaped policy, reference model and batch in scope."""

import re
import types
import unittest
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"
PAIRS, STEPS, VOCAB = 2, 10, 41


def pytorch_snippet():
    text = README.read_text()
    section = text.split("\n### PyTorch\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    if len(blocks) != 1:
        raise AssertionError(f"README's PyTorch section should hold one python block, found {len(blocks)}")
    return blocks[0]


class TinyCausalLm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, VOCAB)

    def forward(self, input_ids, attention_mask=None):
        return types.SimpleNamespace(logits=self.head(self.embed(input_ids)))


class ReadmeSnippet(unittest.TestCase):
    def test_the_pytorch_snippet_runs_and_trains(self):
        torch.manual_seed(0)
        policy, ref_model = TinyCausalLm(), TinyCausalLm().requires_grad_(False)
        input_ids = torch.randint(0, VOCAB, (2 * PAIRS, STEPS))
        completion_mask = torch.zeros(2 * PAIRS, STEPS, dtype=torch.long)
        completion_mask[:, 4:] = 1
        scope = {
            "policy": policy,
            "ref_model": ref_model,
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "completion_mask": completion_mask,
            "optimizer": torch.optim.SGD(policy.parameters(), lr=0.1),
        }
        before = policy.head.weight.detach().clone()
        exec(compile(pytorch_snippet(), str(README), "exec"), scope)
        self.assertTrue(torch.isfinite(scope["loss"]).item())
        self.assertEqual(scope["metrics"]["num_tokens"], float(2 * PAIRS * (STEPS - 4)), "every completion token is scored once")
        self.assertFalse(torch.equal(policy.head.weight, before), "the optimizer step moved the weights")


if __name__ == "__main__":
    unittest.main()
