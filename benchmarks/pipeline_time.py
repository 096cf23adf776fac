"""The pipeline's time, side by side on one machine: `llmkit pipeline` from an empty folder with the settings of
2026-12-05 written out as flags (the baseline), then with this commit's defaults, in one invocation.

    python benchmarks/pipeline_time.py                       # both runs into runs/pipeline_time/{baseline,defaults}
    python benchmarks/pipeline_time.py --only defaults       # one of them (the other's folder is read if finished)

A CPU's wall time follows its matmul peak (the same commit took 9 min on one 2-core machine and 16 on another),
so the pipeline's speed is the ratio of the two runs, not their seconds. The peak is measured before and after,
so drift on a shared machine shows. Printed: each stage's wall time in both runs and their ratio, the total (the
whole `llmkit pipeline` process) and its ratio, and every bar of the report with its verdict in both runs. Each
run is a fresh process from an empty folder; nothing is reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from data_stage import commit, matmul_peak, provenance

from llmkit import runs
from llmkit.measures import rows_of
from llmkit.pipeline import DEFAULT_STAGES, REGISTRY, TIMINGS

# The settings every stage had on 2026-12-05 (issue 30's starting point), as flags: pretraining with AdamW for
# 1,100 steps of 8 sequences at depth 4, SFT for 3 epochs of 32, the reward model for 2 epochs of 32, PPO for 40
# steps of 32 rollouts in minibatches of 8, 2 passes each, answers of at most 40 tokens.
BASELINE = ["--pretrain.optimizer", "adamw", "--pretrain.max-steps", "1100", "--pretrain.depth", "4",
            "--pretrain.batch-size", "8", "--sft.epochs", "3", "--sft.batch-size", "32",
            "--reward.epochs", "2", "--reward.batch-size", "32", "--ppo.max-steps", "40", "--ppo.batch-size", "32",
            "--ppo.mini-batch-size", "8", "--ppo.ppo-epochs", "2", "--ppo.max-new-tokens", "40"]
RUNS = {"baseline": BASELINE, "defaults": []}


def run(name: str, flags: list[str], root: Path, preset: str) -> dict:
    """`llmkit pipeline` into root/name from an empty folder; its process's wall time and each stage's."""
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, "-m", "llmkit", "pipeline", "--run-dir", str(folder), "--preset", preset, "--quiet",
               *flags]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"[{name}] failed ({done.returncode}):\n{done.stderr[-3000:]}")
    (folder / "pipeline_time.json").write_text(json.dumps({"seconds": seconds, "flags": flags}) + "\n")
    return read(folder)


def read(folder: Path) -> dict:
    timed = json.loads((folder / "pipeline_time.json").read_text())
    return {"seconds": timed["seconds"], "stages": json.loads((folder / TIMINGS).read_text()),
            "metrics": {f: runs.read_metrics(folder / f) for f in DEFAULT_STAGES if runs.finished(folder / f)}}


def table(results: dict[str, dict]) -> str:
    base, new = results["baseline"], results["defaults"]
    lines = ["| stage | baseline s | defaults s | ratio |", "|---|---:|---:|---:|"]
    for stage in DEFAULT_STAGES:
        b, n = base["stages"].get(stage), new["stages"].get(stage)
        ratio = f"{n / b:.2f}" if b and n else ""
        lines.append(f"| {stage} | {b or 0:.0f} | {n or 0:.0f} | {ratio} |")
    lines.append(f"| **whole `llmkit pipeline`** | **{base['seconds']:.0f}** | **{new['seconds']:.0f}** | "
                 f"**{new['seconds'] / base['seconds']:.2f}** |")
    lines += ["", "| stage | measurement | bar | baseline | verdict | defaults | verdict |", "|---|---|---|---:|---|---:|---|"]
    verdicts = []
    for s in REGISTRY:
        for folder in s.folders:
            if folder not in DEFAULT_STAGES:
                continue
            for row in rows_of(s.config_for("tiny").measures()):
                if not row.bar():
                    continue
                cells = []
                for r in (base, new):
                    m = r["metrics"].get(folder, {})
                    cells += [row.value(m) or "", row.verdict(m) if row.key in m else ""]
                if not any(cells):  # measured by neither run (the verifier's rows, on the preference task)
                    continue
                lines.append(f"| {folder} | {row.label} | {row.bar()} | " + " | ".join(cells) + " |")
                verdicts.append(cells[3])
    ratio = new["seconds"] / base["seconds"]
    met = ratio <= 0.6 and all(v == "met" for v in verdicts)
    lines += ["", f"Target (the defaults in at most 0.6x the baseline's time, every bar met): ratio {ratio:.2f}, "
                  f"{sum(v == 'met' for v in verdicts)} of {len(verdicts)} bars met: {'met' if met else 'not met'}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("runs/pipeline_time"), help="the two runs' parent folder")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--only", choices=list(RUNS), help="run one; read the other from its folder")
    args = ap.parse_args()
    peak_before = matmul_peak()
    results = {}
    for name, flags in RUNS.items():
        results[name] = run(name, flags, args.root, args.preset) if args.only in (None, name) else read(args.root / name)
    peak_after = matmul_peak()
    print("\n" + provenance(f"Commit {commit()}; {peak_before} before the runs, {peak_after.split()[-2]} GFLOP/s "
                            f"after; preset {args.preset}."))
    print(f"Baseline flags: `{' '.join(BASELINE)}`\n")
    print(table(results))


if __name__ == "__main__":
    main()
