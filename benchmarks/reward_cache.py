"""The likelihood reward model's reference cache: each sequence through the frozen SFT copy once, against once per
epoch and evaluation, in one process on the same SFT checkpoint.

    python benchmarks/reward_cache.py --run-dir runs/bench --markdown     # needs RUN_DIR/sft

Trains the tiny reward model (the defaults: 2 epochs over the bundled pairs, evaluations every 20 steps) twice,
`cache_reference=False` then `True`, each into its own temporary folder, after a short warm-up run; reports the
Trainer's training time, the stage's wall time and the eval accuracy of each (the cache changes only how
often the reference runs, so the accuracies should agree up to float noise in which rows share a pass).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llmkit import reward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/bench", type=Path)
    ap.add_argument("--epochs", type=float, default=reward.RewardConfig.epochs)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    base = str(args.run_dir / "sft")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        reward.run(reward.config_for("tiny", base_model=base, max_steps=2, closed_world=False), Path(tmp) / "warm-up",
                   progress=False)
        for cache in (False, True):
            start = time.perf_counter()
            result = reward.run(reward.config_for("tiny", base_model=base, epochs=args.epochs, closed_world=False,
                                                  cache_reference=cache), Path(tmp) / f"cache-{cache}", progress=False)
            rows.append((cache, result.metrics["train_seconds"], time.perf_counter() - start,
                         result.metrics["eval_accuracy"]))
    off = rows[0]
    if args.markdown:
        print(f"SFT model: {base}; {args.epochs:g} epochs\n")
        print("| reference cache | training (s) | stage wall time (s) | eval accuracy | training time vs off |")
        print("|---|---:|---:|---:|---:|")
        for cache, train, wall, acc in rows:
            print(f"| {'on' if cache else 'off'} | {train:.1f} | {wall:.1f} | {acc:.3f} | {train / off[1]:.2f}x |")
    else:
        for cache, train, wall, acc in rows:
            print(f"cache {'on ' if cache else 'off'}  training {train:.1f} s  wall {wall:.1f} s  accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
