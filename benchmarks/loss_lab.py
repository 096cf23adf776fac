"""The loss lab: every RL method and loss variant llmkit has, on the same SFT model, data and budget, in one table.

    python benchmarks/loss_lab.py --run-dir runs/lab                 # tiny preset; builds data..reward if missing
    python benchmarks/loss_lab.py --run-dir runs/lab --entries grpo,dr_grpo,grpo_verifier

What runs and how it is measured is `llmkit.loss_lab` (notebook 11 calls the same functions): PPO, GRPO with
the loss types grpo, dr_grpo, dapo, cispo and GSPO's sequence-level ratio, RLOO, DPO (sigmoid, ipo,
sigmoid_norm) and KTO on the preference task, and the sampling methods again against the exact-answer check on
the verifiable tasks. Equal budget: the same optimizer steps, each on 32 answers. The base stages (data,
pretrain, sft, reward) are built first when the run folder lacks them and are timed apart from the lab; the lab's
own wall time is what the "under 30 minutes on 2 cores" target is about.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from data_stage import commit, matmul_peak, provenance

from llmkit import runs
from llmkit.loss_lab import ENTRIES, lab_table, run_lab
from llmkit.pipeline import run_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/lab"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--entries", default=None, help=f"comma-separated, from: {', '.join(e.name for e in ENTRIES)}")
    args = ap.parse_args()
    chosen = ENTRIES
    if args.entries:
        names = args.entries.split(",")
        unknown = sorted(set(names) - {e.name for e in ENTRIES})
        if unknown:
            raise SystemExit(f"unknown entries {unknown}; entries: {', '.join(e.name for e in ENTRIES)}")
        chosen = tuple(e for e in ENTRIES if e.name in names)
    start = time.perf_counter()
    if not all(runs.finished(args.run_dir / s) for s in ("sft", "reward")):
        run_pipeline(args.run_dir, args.preset, stages=("data", "pretrain", "sft", "reward"), progress=False)
    base_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rows = run_lab(args.run_dir, args.preset, chosen, progress=True)
    lab_seconds = time.perf_counter() - start
    print("\n" + provenance(f"Commit {commit()}, {matmul_peak()}."))
    print(f"preset {args.preset}; base stages {base_seconds:.0f} s (0 if reused); lab {lab_seconds / 60:.1f} min "
          f"for {len(rows)} entries (reused entries count 0)\n")
    print(lab_table(rows))


if __name__ == "__main__":
    main()
