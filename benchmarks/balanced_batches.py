"""Padding: length-balanced micro-batches (SFT, reward model) and trimmed PPO minibatches, against the batches
they replaced, in one process on the same checkpoints.

    python benchmarks/balanced_batches.py --run-dir runs/bench    # needs RUN_DIR/pretrain, sft and reward

For SFT (base RUN_DIR/pretrain) and the reward model (base RUN_DIR/sft), `--steps` optimizer steps of 32
examples each, on the bundled closed-world data, three ways:
- one pass of 32 a step (the earlier default: every row padded to the step's longest);
- 8 a pass, 4 passes, in random order (what a smaller micro-batch alone changes);
- 8 a pass on average, length-balanced (`train_sampling_strategy="batch_rebalance"`, the default now).
It reports seconds per step (the Trainer's own `train_runtime`, after one warm-up run of each trainer class)
and padded tokens per real token over the same steps. For PPO, `--ppo-steps` steps (after a warm-up step)
with and without `ppo.trim_padding` in the minibatch loop, from the SFT policy PPO starts with and, where
RUN_DIR/ppo exists, from the one it ends with (shorter answers, so more to trim).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from llmkit import reward, sft
from llmkit.formats import read_prompts
from llmkit.loaders import bundled_path
from llmkit.rl import ppo
from llmkit.tokenizer import load_chat_tokenizer

WAYS = [("one pass of 32", 32, False), ("8 a pass, random", 8, False), ("8 a pass, length-balanced", 8, True)]


def padding_ratio(trainer, steps: int, accumulation: int) -> float:
    """Padded tokens per real token in the first `steps` optimizer steps the trainer's dataloader gives."""
    padded = real = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i >= steps * accumulation:
            break
        padded += batch["attention_mask"].numel()
        real += int(batch["attention_mask"].sum())
    return padded / real


def time_trainer(trainer, steps: int, accumulation: int) -> dict:
    ratio = padding_ratio(trainer, steps, accumulation)
    out = trainer.train()
    return {"seconds": out.metrics["train_runtime"] / steps, "padding": ratio}


def sft_trainer(run_dir: Path, micro: int, balanced: bool, steps: int, work: Path):
    tokenizer, model = sft.load_base(run_dir / "pretrain")
    rows, evals = sft.load_conversations(sft.SFTConfig())
    config = sft.SFTConfig(micro_batch_size=micro, balance_lengths=balanced, max_steps=steps, eval_every=10_000)
    return sft.build_trainer(config, tokenizer, model, rows, evals[:8], work)


def reward_trainer(run_dir: Path, micro: int, balanced: bool, steps: int, work: Path):
    config = reward.RewardConfig(micro_batch_size=micro, balance_lengths=balanced, max_steps=steps,
                                 eval_every=10_000)
    tokenizer = load_chat_tokenizer(run_dir / "sft")
    train, evals, _ = reward.load_pairs(config, run_dir)
    return reward.build_trainer(config, tokenizer, run_dir / "sft", train, evals[:8], work)


def time_ppo(run_dir: Path, policy_dir: Path, steps: int, trim: bool) -> dict:
    original = ppo.trim_padding
    if not trim:
        ppo.trim_padding = lambda ids, att, n_prompt, mask: (ids, att, n_prompt, mask.shape[1])
    try:
        torch.manual_seed(0)
        tokenizer, policy, rm, value = ppo.load_models(policy_dir, run_dir / "reward")
        trainer = ppo.PPOTrainer(ppo.PPOConfig(), policy, tokenizer, rm, value)
        prompts = read_prompts(bundled_path("rl_prompts_train.jsonl"))
        times = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            trainer.step([prompts[(i * 32 + j) % len(prompts)] for j in range(32)])
            if i:
                times.append(time.perf_counter() - t0)
        return {"seconds": statistics.mean(times)}
    finally:
        ppo.trim_padding = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ppo-steps", type=int, default=4)
    args = parser.parse_args()
    work = args.run_dir / ".bench_balanced"
    print(f"Machine: {os.cpu_count()} CPU cores; torch {torch.__version__}; {torch.get_num_threads()} threads; "
          f"{args.steps} steps of 32 per way; checkpoints {args.run_dir}.\n")
    print("| stage | batches | padded tokens per real one | s per step | vs one pass of 32 |")
    print("|---|---|---:|---:|---:|")
    for stage, build in (("SFT", sft_trainer), ("reward model", reward_trainer)):
        build(args.run_dir, 8, True, 2, work).train()  # warm-up: first calls into torch and TRL
        base = None
        for label, micro, balanced in WAYS:
            r = time_trainer(build(args.run_dir, micro, balanced, args.steps, work), args.steps, 32 // micro)
            base = base or r["seconds"]
            print(f"| {stage} | {label} | {r['padding']:.2f} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x |")
    for policy in ("sft", "ppo"):  # the policy PPO starts from, and the one it ends with (shorter answers)
        if not (args.run_dir / policy / "config.json").exists():
            continue
        untrimmed = time_ppo(args.run_dir, args.run_dir / policy, args.ppo_steps, trim=False)
        trimmed = time_ppo(args.run_dir, args.run_dir / policy, args.ppo_steps, trim=True)
        print(f"| PPO from {policy} | minibatches at the rollout's width |  | {untrimmed['seconds']:.2f} | 1.00x |")
        print(f"| PPO from {policy} | minibatches trimmed of unused padding |  | {trimmed['seconds']:.2f} | "
              f"{untrimmed['seconds'] / trimmed['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
