"""TRL's way of computing the DPO loss's gradient, timed on the GPU for test/gpu/check.ts.

Per row log-softmax and a gather of the label's log-prob (TRL's selective_log_softmax loops over
rows for bf16 logits), the per-sequence sums, the sigmoid loss, and autograd back to the logits.
Usage: python3 trl_way.py <2B> <T> <V>. Prints one JSON line: ms per forward+backward (median of
10 after 2 warm-ups, CUDA events), the peak extra memory, and the torch version.
"""
import json
import sys

import torch
import torch.nn.functional as F


def selective_log_softmax(logits, labels):
    # bf16: one row at a time, as TRL does, to bound the float32 temporaries
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        row_logps = F.log_softmax(row_logits, dim=-1)
        rows.append(row_logps.gather(dim=-1, index=row_labels.unsqueeze(-1)).squeeze(-1))
    return torch.stack(rows)


def main():
    seqs, T, V = (int(x) for x in sys.argv[1:4])
    B = seqs // 2
    torch.manual_seed(0)
    device = torch.device("cuda")
    logits = (3 * torch.randn(seqs, T, V, device=device)).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, V, (seqs, T), device=device)
    mask = torch.ones(seqs, T, device=device)
    mask[:, :64] = 0
    ref = torch.full((seqs,), -3000.0, device=device)
    beta = 0.1

    def step():
        logps = (selective_log_softmax(logits, labels) * mask).sum(-1)
        a = (logps[:B] - ref[:B]) - (logps[B:] - ref[B:])
        loss = -F.logsigmoid(beta * a).mean()
        (grad,) = torch.autograd.grad(loss, logits)
        return grad

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    peak = torch.cuda.max_memory_allocated() - base
    print(json.dumps({"ms": sorted(times)[len(times) // 2], "peakExtraGiB": peak / 2**30, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
