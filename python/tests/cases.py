"""Random DPO batches for the tests: [2B, T, V] logits, pre-shifted labels with -100 on the prompt
and on right padding, and reference sums in the range of the policy's (uncorrelated with it, so aot sorts differently)."""

import os

import torch

SEED = int(os.environ.get("FDPO_TEST_SEED", "1234"))


def batch(pairs=4, steps=7, vocab=37, dtype=torch.float32, seed=SEED, scale=2.0, prompt_rows=True):
    g = torch.Generator().manual_seed(seed)
    seqs = 2 * pairs
    logits = (scale * torch.randn(seqs, steps, vocab, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, vocab, (seqs, steps), generator=g)
    prompt = torch.randint(1, 3, (seqs,), generator=g)
    padding = torch.randint(0, 3, (seqs,), generator=g)
    for s in range(seqs):
        if prompt_rows:
            labels[s, : prompt[s]] = -100
        if padding[s] > 0:
            labels[s, steps - padding[s] :] = -100
    ref = -10 - 10 * torch.rand(seqs, generator=g, dtype=torch.float64)
    return logits, labels, ref[:pairs].clone(), ref[pairs:].clone()
