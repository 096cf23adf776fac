"""A PPO step (rollout + update) against TRL's GRPO step at equal batch size, generation length and model.

    python benchmarks/rl_step.py --run-dir runs/bench      # uses RUN_DIR/sft and RUN_DIR/reward; prints markdown

In one process, after one warm-up step each, times `--steps` steps of:
- llmkit PPO with its defaults: 2 PPO epochs over minibatches of 8, i.e. 8 optimizer steps per rollout batch;
- llmkit PPO with one update per rollout batch (1 epoch, one minibatch of 32): the same update count as GRPO;
- TRL's GRPOTrainer: 8 prompts x 4 generations = 32 completions, one update per generation round (TRL's
  defaults: num_iterations 1, a generation every step);
all with 32 completions of at most `--max-new-tokens` tokens at temperature 0.7 from the same SFT model,
scored by the same reward model. It also times the rollout alone with and without the KV cache (PPO's
rollouts use it). Mean completion length is reported beside each time, since generation stops at EOS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from llmkit import lifecycle, runs
from llmkit.formats import read_prompts
from llmkit.generation import generate
from llmkit.loaders import Rejects, bundled_path
from llmkit.rl import grpo, inputs, ppo


def time_ppo(run_dir: Path, prompts: list, steps: int, max_new_tokens: int, **overrides) -> dict:
    torch.manual_seed(0)
    cfg = ppo.PPOConfig(batch_size=32, max_new_tokens=max_new_tokens, temperature=0.7, **overrides)
    tokenizer, policy, rm, value = ppo.load_models(run_dir / "sft", run_dir / "reward")
    trainer = ppo.PPOTrainer(cfg, policy, tokenizer, rm, value)
    times, lengths = [], []
    for i in range(steps + 1):
        batch = [prompts[(i * 32 + j) % len(prompts)] for j in range(32)]
        t0 = time.perf_counter()
        record, _ = trainer.step(batch)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
            lengths.append(record["response_length"])
    return {"seconds": statistics.mean(times), "length": statistics.mean(lengths)}


def time_rollout(run_dir: Path, prompts: list, max_new_tokens: int, use_cache: bool, repeats: int = 3) -> dict:
    tokenizer, policy, _, _ = ppo.load_models(run_dir / "sft", run_dir / "reward")
    times, lengths = [], []
    for i in range(repeats + 1):
        torch.manual_seed(i)
        t0 = time.perf_counter()
        r = generate(policy, tokenizer, prompts[:32], max_new_tokens, 0.7, use_cache=use_cache)
        if i:
            times.append(time.perf_counter() - t0)
            lengths.append(r.mask.sum(-1).float().mean().item())
    return {"seconds": statistics.mean(times), "length": statistics.mean(lengths)}


def time_grpo(run_dir: Path, prompts: list, steps: int, max_new_tokens: int) -> dict:
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks, self.lengths = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks[-1] = time.perf_counter() - self.marks[-1]

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    torch.manual_seed(0)
    cfg = grpo.GRPOConfig(max_steps=steps + 1, batch_size=32, num_generations=4, max_new_tokens=max_new_tokens,
                          temperature=0.7)
    clock = Clock()
    work = run_dir / ".bench_grpo"
    work.mkdir(exist_ok=True)
    rl = inputs.RLInputs(run_dir / "sft", run_dir / "reward", prompts, [], Rejects())
    trainer, _, _ = grpo.build_trainer(cfg, rl, lifecycle.Work(work, run_dir, runs.LogWriter(work / "log.jsonl"), False,
                                                               False, False))
    trainer.add_callback(clock)
    trainer.train()
    return {"seconds": statistics.mean(clock.marks[1:]), "length": statistics.mean(clock.lengths[1:] or clock.lengths)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/bench", type=Path)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    args = ap.parse_args()
    prompts = read_prompts(bundled_path("rl_prompts_train.jsonl"))
    start = time.perf_counter()
    results = {
        "llmkit PPO, defaults (2 epochs x 4 minibatches = 8 updates)": time_ppo(args.run_dir, prompts, args.steps, args.max_new_tokens),
        "llmkit PPO, 1 update per batch": time_ppo(args.run_dir, prompts, args.steps, args.max_new_tokens,
                                                   ppo_epochs=1, mini_batch_size=32),
        "TRL GRPOTrainer (8 prompts x 4 generations, 1 update)": time_grpo(args.run_dir, prompts, args.steps, args.max_new_tokens),
    }
    cached = time_rollout(args.run_dir, prompts, args.max_new_tokens, True)
    uncached = time_rollout(args.run_dir, prompts, args.max_new_tokens, False)
    grpo = results["TRL GRPOTrainer (8 prompts x 4 generations, 1 update)"]["seconds"]
    lines = [f"Machine: {os.cpu_count()} CPU cores; torch {torch.__version__}; model {args.run_dir / 'sft'}; 32 completions "
             f"per step, at most {args.max_new_tokens} new tokens, temperature 0.7; mean of {args.steps} steps after one "
             f"warm-up. Whole benchmark: {time.perf_counter() - start:.0f} s.", "",
             "| step | seconds / step | mean completion tokens | time vs TRL GRPO |", "|---|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['length']:.1f} | {r['seconds'] / grpo:.2f}x |")
    lines += ["", "| rollout of 32 completions (llmkit `generation.generate`) | seconds | mean tokens |", "|---|---:|---:|",
              f"| with the KV cache | {cached['seconds']:.2f} | {cached['length']:.1f} |",
              f"| without the KV cache | {uncached['seconds']:.2f} | {uncached['length']:.1f} |",
              f"| speed-up from the cache | {uncached['seconds'] / cached['seconds']:.2f}x | |"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
