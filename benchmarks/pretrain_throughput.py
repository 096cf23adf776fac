"""Pretraining throughput: llmkit's training loop against a plain hand-written PyTorch loop, same model,
same batch, same sequence length, in one run — and both as a fraction of this machine's measured matmul peak.

    python benchmarks/pretrain_throughput.py [--steps 60] [--depth 4] [--batch 32] [--seq 128] [--markdown]

The plain loop is the least a training step can do: forward, backward, AdamW step, zero_grad, on batches
sliced from one tensor; llmkit's runs with AdamW too, the tiny preset's default (Muon's step costs more and
saves steps instead: BENCHMARKS.md, "Muon step"). llmkit's loop adds accelerate, gradient clipping, the LR
schedule, re-packed epochs and logging; its tokens/s is the median over its logging windows (evaluation and checkpointing excluded,
as the plain loop has neither). The plain loop runs before and after llmkit's, and the two are averaged,
so drift on a shared machine hurts neither side. MFU = tokens/s × training FLOPs per token / peak, with
the peak measured as the best fp32 1024×1024 matmul rate (`llmkit.pretrain.measure_matmul_flops`).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from llmkit import data, pretrain
from llmkit.model import build_model, flops_per_token, parameter_counts
from llmkit.tokenizer import load_tokenizer


def plain_loop(tokenizer, blocks: torch.Tensor, depth: int, batch: int, steps: int, warmup: int = 5) -> float:
    model = build_model(depth, tokenizer)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        i = (step * batch) % (len(blocks) - batch)
        x = blocks[i:i + batch]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch * blocks.shape[1] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        data.run(data.config_for("tiny"), run_dir, progress=False)
        tokenizer = load_tokenizer(run_dir / "data" / "tokenizer")
        from datasets import load_from_disk

        stream = torch.tensor(load_from_disk(str(run_dir / "data" / "blocks"))["train"]["input_ids"]).flatten()
        blocks = stream[: len(stream) // args.seq * args.seq].view(-1, args.seq)

        peak = pretrain.measure_matmul_flops(torch.device("cpu"), seconds=2.0)
        plain_before = plain_loop(tokenizer, blocks, args.depth, args.batch, args.steps)
        cfg = pretrain.PretrainConfig(depth=args.depth, batch_size=args.batch, seq_len=args.seq,
                                      max_steps=args.steps + 10, eval_every=10, save_every=10_000,
                                      eval_limit=8, closed_world=False, optimizer="adamw")
        result = pretrain.run(cfg, run_dir, progress=False)
        plain_after = plain_loop(tokenizer, blocks, args.depth, args.batch, args.steps)

    model = build_model(args.depth, tokenizer)
    fpt = flops_per_token(model, args.seq)
    plain = (plain_before + plain_after) / 2
    ours = result.metrics["tokens_per_s"]
    rows = [
        ("plain PyTorch loop (mean of before/after)", plain, plain * fpt / peak),
        ("llmkit.pretrain", ours, ours * fpt / peak),
    ]
    n_params = parameter_counts(model)["total"]
    head = (f"Model: depth {args.depth} ({n_params / 1e6:.2f} M parameters), batch {args.batch} × {args.seq} tokens, "
            f"fp32, {torch.get_num_threads()} threads; measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s; "
            f"{fpt / 1e6:.1f} MFLOP per token. plain before/after: {plain_before:.0f} / {plain_after:.0f} tok/s.")
    if args.markdown:
        print("## Pretraining throughput (`python benchmarks/pretrain_throughput.py --markdown`)\n")
        print(f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
              f"torch {torch.__version__}. {head}\n")
        print("| loop | tokens/s | MFU (of measured peak) |\n|---|---:|---:|")
        for name, tps, mfu in rows:
            print(f"| {name} | {tps:.0f} | {mfu:.0%} |")
        print(f"\nllmkit / plain = **{ours / plain:.2f}**.")
    else:
        print(head)
        for name, tps, mfu in rows:
            print(f"{name:45s} {tps:8.0f} tok/s   MFU {mfu:.0%}")
        print(f"ratio llmkit / plain: {ours / plain:.2f}")


if __name__ == "__main__":
    main()
