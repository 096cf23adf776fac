"""One optimizer step on a preset's transformer matrices: llmkit's Muon against torch.optim.Muon and AdamW, in
one run on this machine, beside one forward + backward pass of a training batch for scale.

    python benchmarks/muon_step.py [--depth 4] [--batch 8] [--seq 128] [--repeats 20] [--markdown]

torch 2.13's Muon runs its Newton–Schulz iteration in bfloat16 whatever the parameters' dtype; llmkit's runs
it in the gradient's dtype and stacks the matrices of one shape into one batched matmul. Each optimizer gets
the same gradients (one batch of random tokens through the preset's model, 2048-token vocabulary) on fresh
copies of the same matrices; the time is the median of `--repeats` steps (3 for torch's Muon, which is slow here) after two warm-ups.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from llmkit.model import build_model
from llmkit.muon import Muon


class _Vocab:  # build_model needs only these from a tokenizer
    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __len__(self):
        return 2048


def median_seconds(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(args.depth, _Vocab())
    x = torch.randint(3, 2048, (args.batch, args.seq))
    embeddings = {id(model.get_input_embeddings().weight)}

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()

    forward_backward()
    matrices = [p for p in model.parameters() if p.dim() == 2 and id(p) not in embeddings]
    grads = [p.grad.clone() for p in matrices]
    fb = median_seconds(forward_backward, max(3, args.repeats // 4))

    def timed(make, repeats: int = args.repeats) -> float:
        params = [torch.nn.Parameter(p.detach().clone()) for p in matrices]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = make(params)
        return median_seconds(opt.step, repeats)

    rows = [
        ("llmkit Muon (float32, one batched matmul per shape)", timed(lambda ps: Muon(ps, lr=3e-3, weight_decay=1.0))),
        ("torch.optim.Muon (bfloat16, one matrix at a time)",
         timed(lambda ps: torch.optim.Muon(ps, lr=3e-3, weight_decay=1.0, adjust_lr_fn="match_rms_adamw"),
               repeats=3)),  # seconds a step on a CPU without bf16 matrix units
        ("torch.optim.AdamW", timed(lambda ps: torch.optim.AdamW(ps, lr=3e-3, betas=(0.9, 0.95), weight_decay=1.0))),
    ]
    n = sum(p.numel() for p in matrices)
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; depth "
          f"{args.depth}: {len(matrices)} matrices, {n / 1e6:.2f} M weights; forward + backward of {args.batch} x "
          f"{args.seq} tokens: {fb * 1000:.0f} ms")
    ours = rows[0][1]
    if args.markdown:
        print("\n| optimizer step | ms | vs llmkit Muon | vs forward + backward |")
        print("|---|---:|---:|---:|")
    for name, seconds in rows:
        if args.markdown:
            print(f"| {name} | {seconds * 1000:.0f} | {seconds / ours:.2f}x | {seconds / fb:.2f}x |")
        else:
            print(f"{name}: {seconds * 1000:.1f} ms ({seconds / ours:.2f}x ours, {seconds / fb:.2f}x fwd+bwd)")


if __name__ == "__main__":
    main()
