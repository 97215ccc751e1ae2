"""fused-dpo against PyTorch's TRL way on the CPU: one DPO (sigmoid) loss forward + backward
through [2B, T, V] float32 logits, time and peak memory, on the same inputs.

  PYTHONPATH=python /usr/bin/python3 python/bench_cpu.py [--pairs 4 --steps 256 --vocab 32000 --reps 5]

Each method runs in a fresh child process (same seed, so the same inputs), so that its peak
resident set (resource.getrusage's ru_maxrss, a per-process high-water mark) is its own; the
report gives the peak above the process's resident set once the inputs exist. tracemalloc would
not see torch's allocations (they bypass Python's allocator).
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

METHODS = {
    "trl": "TRL's selective_log_softmax (gather - logsumexp per row, fp32) + dpo_loss, autograd",
    "log_softmax_gather": "log_softmax over V + gather + masked sums + dpo_loss, autograd",
    "fused": "fused_dpo.torch.dpo_loss (gradient into a new tensor)",
    "fused_inplace": "fused_dpo.torch.dpo_loss(inplace=True) (gradient over the logits)",
}


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def inputs(pairs, steps, vocab):
    import torch

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * pairs, steps, vocab, generator=g)
    labels = torch.randint(0, vocab, (2 * pairs, steps), generator=g)
    labels[:, : steps // 4] = -100  # a prompt
    ref = -10.5 * steps - torch.rand(2 * pairs, generator=g, dtype=torch.float64)
    return logits, labels, ref[:pairs], ref[pairs:]


def trl_step(logits, labels, ref_c, ref_r, beta, per_row_logsumexp):
    import torch
    import torch.nn.functional as F

    mask = labels != -100
    index = labels.masked_fill(~mask, 0)
    if per_row_logsumexp:
        # TRL's selective_log_softmax for fp32/fp64: gather minus a logsumexp taken one row at a time.
        selected = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
        per_token = selected - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    else:
        per_token = torch.gather(logits.log_softmax(-1), -1, index.unsqueeze(-1)).squeeze(-1)
    sums = (per_token * mask).sum(-1)
    pairs = sums.shape[0] // 2
    delta = (sums[:pairs] - sums[pairs:]) - (ref_c - ref_r).to(sums.dtype)
    loss = -F.logsigmoid(beta * delta).mean()
    loss.backward()
    return loss.item()


def run_child(method, pairs, steps, vocab, reps):
    import torch

    from fused_dpo.torch import dpo_loss

    logits, labels, ref_c, ref_r = inputs(pairs, steps, vocab)
    times, losses = [], []
    for rep in range(reps + 1):
        # A fresh leaf each rep (inplace consumes its values), made outside the timing.
        x = logits.clone().requires_grad_(True)
        if rep == 0:
            baseline_rss = rss_kib()
            baseline_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        if method in ("trl", "log_softmax_gather"):
            losses.append(trl_step(x, labels, ref_c, ref_r, 0.1, method == "trl"))
        else:
            loss, _ = dpo_loss(x, labels, ref_c, ref_r, beta=0.1, inplace=method == "fused_inplace")
            loss.backward()
            losses.append(loss.item())
            del loss  # its graph holds x (and x.grad) alive
        times.append(time.perf_counter() - start)
        del x
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": method,
        "median_ms": 1e3 * statistics.median(times[1:]),
        "min_ms": 1e3 * min(times[1:]),
        "peak_above_inputs_mib": (peak - baseline_rss) / 1024,
        "inputs_rss_mib": baseline_rss / 1024,
        "peak_before_steps_mib": baseline_peak / 1024,
        "loss": losses[-1],
        "threads": torch.get_num_threads(),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--child", choices=list(METHODS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.pairs, args.steps, args.vocab, args.reps)))
        return
    import torch

    logits_mib = 2 * args.pairs * args.steps * args.vocab * 4 / 2**20
    print(f"B={args.pairs} T={args.steps} V={args.vocab} float32: logits {logits_mib:.0f} MiB; torch {torch.__version__}; "
          f"{args.reps} timed reps after one warm-up, each method in its own process")
    results = []
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--child", method, "--pairs", str(args.pairs), "--steps",
                              str(args.steps), "--vocab", str(args.vocab), "--reps", str(args.reps)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout))
    for r in results:
        print(f"{r['method']:>20}: median {r['median_ms']:8.1f} ms (min {r['min_ms']:8.1f}), peak RSS above inputs "
              f"{r['peak_above_inputs_mib']:7.0f} MiB, loss {r['loss']:.6f}, threads {r['threads']}  # {METHODS[r['method']]}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
