"""Pretraining throughput on one GPU in bf16: the tiny and the ~124M (GPT-2-small-sized) presets, llmkit's loop
beside a plain PyTorch loop with the same model, batch and precision, in one run.

    python benchmarks/gpu_throughput.py --run-dir runs/bench [--presets tiny gpt2] [--compile] [--markdown]

The run folder needs the data stage (`llmkit data --run-dir runs/bench`); its blocks are re-packed to each
preset's sequence length. The ~124M model has GPT-2's 50k vocabulary (50304 entries, so the output layer costs
what it costs there) although the bundled tokenizer uses only its first 4096 ids: speed does not depend on which
ids are used. MFU = tokens/s × training FLOPs per token (6 × parameters + attention,
`llmkit.model.flops_per_token`) / peak, against the GPU's nominal dense bf16 peak (what MFU usually means) and
against the best bf16 8192² matmul rate measured in the same run.

The plain loop: bf16 autocast, forward, backward (gradient accumulation over the same micro-batches), fused AdamW
step, on batches sliced from one tensor. llmkit's tokens/s is the median over its logging windows after the
first (evaluation, checkpointing and the first window's warm-up and compilation excluded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llmkit import pretrain
from llmkit.model import MODEL_SIZES, build_model, flops_per_token, parameter_counts
from llmkit.tokenizer import load_tokenizer

GPT2_VOCAB = 50304  # GPT-2's 50257 rounded up to a multiple of 64, as nanoGPT does
GPU_BATCH = {"tiny": (256, 256), "small": (64, 64), "gpt2": (256, 32)}  # (sequences per step, per micro-batch)


def make_model(preset: str, tokenizer):
    return build_model(MODEL_SIZES[preset].depth, tokenizer, vocab_size=GPT2_VOCAB if preset == "gpt2" else None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, blocks: torch.Tensor, batch: int, micro: int, steps: int, compile: bool,
               device: torch.device, warmup: int = 3) -> float:
    model = model.to(device).train()
    if compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    data = blocks.to(device)
    start, row = None, 0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        for _ in range(batch // micro):
            if row + micro > len(data):
                row = 0
            x = data[row:row + micro]
            row += micro
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(input_ids=x, labels=x).loss / (batch // micro)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return steps * batch * blocks.shape[1] / (time.perf_counter() - start)


def measure(preset: str, run_dir: Path, batch: int, micro: int, steps: int, compile: bool, nominal: float,
            measured: float, device: torch.device) -> dict:
    tokenizer = load_tokenizer(run_dir / "data" / "tokenizer")
    seq = MODEL_SIZES[preset].seq_len
    from datasets import load_from_disk

    stream = torch.tensor(load_from_disk(str(run_dir / "data" / "blocks"))["train"]["input_ids"]).flatten()
    blocks = stream[: len(stream) // seq * seq].view(-1, seq)

    model = make_model(preset, tokenizer)
    fpt = flops_per_token(model, seq)
    n_params = parameter_counts(model)["total"]
    plain = plain_loop(model, blocks, batch, micro, steps, compile, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    with tempfile.TemporaryDirectory() as tmp:  # llmkit trains the same fresh model, loaded as a base model
        base = Path(tmp) / "base"
        make_model(preset, tokenizer).save_pretrained(base)
        tokenizer.save_pretrained(base)
        stage_dir = Path(tmp) / "run"
        (stage_dir / "data").mkdir(parents=True)
        cfg = pretrain.PretrainConfig(model_size=preset, base_model=str(base),
                                      train_data=str(run_dir / "data" / "blocks"), batch_size=batch, micro_batch_size=micro,
                                      max_steps=5 * (steps // 5 + 2), eval_every=5, eval_limit=8,
                                      save_every=100_000, closed_world=False, mixed_precision="bf16", compile=compile)
        ours = pretrain.run(cfg, stage_dir, progress=False).metrics["tokens_per_s"]
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"preset": preset, "parameters": n_params, "seq": seq, "batch": batch, "micro": micro,
            "compile": compile, "flops_per_token": fpt, "plain_tps": plain, "llmkit_tps": ours,
            "plain_mfu": plain * fpt / nominal, "llmkit_mfu": ours * fpt / nominal,
            "llmkit_mfu_measured": ours * fpt / measured, "peak_memory_gib": peak_mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", required=True, help="a run folder with the data stage done")
    ap.add_argument("--presets", nargs="+", default=["tiny", "gpt2"], choices=sorted(GPU_BATCH))
    ap.add_argument("--steps", type=int, default=15, help="timed optimizer steps of the plain loop")
    ap.add_argument("--compile", action="store_true", help="torch.compile both loops' models")
    ap.add_argument("--micro", type=int, help="sequences per micro-batch (default: GPU_BATCH's for each preset)")
    ap.add_argument("--json", help="append each row to this jsonl file as soon as it is measured")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--cpu-dry-run", action="store_true", help="check the script on a CPU (the numbers mean nothing)")
    args = ap.parse_args()
    if args.cpu_dry_run:
        device, name = torch.device("cpu"), "CPU (dry run)"
        nominal = measured = pretrain.measure_matmul_flops(device, torch.bfloat16, n=512, seconds=0.2)
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py needs a CUDA GPU; on a CPU use benchmarks/pretrain_throughput.py")
    else:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        nominal = pretrain.peak_flops(device)
        measured = pretrain.measure_matmul_flops(device, torch.bfloat16, n=8192, seconds=2.0)
    head = (f"{name}, torch {torch.__version__}; nominal dense bf16 peak {nominal / 1e12:.0f} TFLOP/s, measured "
            f"bf16 8192² matmul {measured / 1e12:.0f} TFLOP/s")
    print(head, flush=True)
    rows = []
    for preset in args.presets:
        batch, micro = (4, 2) if args.cpu_dry_run else GPU_BATCH[preset]
        row = measure(preset, Path(args.run_dir), batch, args.micro or micro, args.steps, args.compile, nominal,
                      measured, device)
        row.update(device=name, nominal_peak=nominal, measured_peak=measured)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    if args.markdown:
        print(f"\n{head}. Compiled: {'yes' if args.compile else 'no'}.\n")
        print("| preset | parameters | sequence × batch (micro) | plain tokens/s | llmkit tokens/s | llmkit / plain "
              "| MFU (nominal) | MFU (measured peak) | peak memory |\n|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['preset']} | {r['parameters'] / 1e6:.1f} M | {r['seq']} × {r['batch']} ({r['micro']}) | "
                  f"{r['plain_tps']:,.0f} | {r['llmkit_tps']:,.0f} | {r['llmkit_tps'] / r['plain_tps']:.2f} | "
                  f"{r['llmkit_mfu']:.0%} | {r['llmkit_mfu_measured']:.0%} | {r['peak_memory_gib']:.1f} GiB |")


if __name__ == "__main__":
    main()
