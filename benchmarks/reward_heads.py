"""The reward model's two heads side by side: the classic last-token head and the likelihood head (the default).

    python benchmarks/reward_heads.py --run-dir runs/bench --markdown

Trains both on the same SFT checkpoint (RUN_DIR/sft; run `llmkit pipeline --stages data,pretrain,sft` or
benchmarks/closed_world.py first), with the same data, steps and seed, one after the other, and reports pairwise
accuracy on the eval split and on held-out people, per kind of pair (the oracle's verdict on each side: style
flaws are visible in the text, wrong and off-topic answers take knowing the facts), agreement with the oracle on
fresh SFT answers, and wall time. The two reward models are written to RUN_DIR/reward_heads/<head>.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from pathlib import Path

from llmkit import reward
from llmkit.evaluate import pairwise_accuracy
from llmkit.formats import read_preferences
from llmkit.loaders import bundled_path
from llmkit.oracle import Oracle
from llmkit.reward_model import RewardModel

HEADS = ("last_token", "likelihood")


def per_kind(oracle: Oracle, rows: list[dict]) -> dict[str, tuple[int, float]]:
    kinds = collections.defaultdict(list)
    for r in rows:
        kinds[f"{oracle.flaw(r['prompt'], r['chosen'])} > {oracle.flaw(r['prompt'], r['rejected'])}"].append(
            r["score_chosen"] > r["score_rejected"])
    return {k: (len(v), sum(v) / len(v)) for k, v in sorted(kinds.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/bench")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    run_dir = Path(args.run_dir)
    oracle = Oracle()
    heldout_rows = read_preferences(bundled_path("preferences_heldout.jsonl"))
    results = {}
    for head in HEADS:
        start = time.perf_counter()
        out = run_dir / "reward_heads" / head
        result = reward.run(reward.config_for("tiny", head=head, base_model=str(run_dir / "sft")), out,
                            args.overwrite, progress=False)
        wall = time.perf_counter() - start
        rm = RewardModel.load(result.output_dir)
        heldout = pairwise_accuracy(rm, heldout_rows)
        evals = pairwise_accuracy(rm, read_preferences(bundled_path("preferences_eval.jsonl")))["rows"]
        results[head] = dict(m=result.metrics, wall=wall, heldout=heldout["accuracy"], kinds=per_kind(oracle, evals),
                             heldout_kinds=per_kind(oracle, heldout["rows"]))

    base, new = (results[h] for h in HEADS)
    rows = [("pairwise accuracy, eval split (bar >= 0.9)", base["m"]["eval_accuracy"], new["m"]["eval_accuracy"], ""),
            ("pairwise accuracy, held-out people", base["heldout"], new["heldout"], "")]
    for kind, (n, acc) in base["kinds"].items():
        rows.append((f"eval: {kind}", acc, new["kinds"][kind][1], f"{n} pairs"))
    for kind, (n, acc) in base["heldout_kinds"].items():
        rows.append((f"held-out people: {kind}", acc, new["heldout_kinds"][kind][1], f"{n} pairs"))
    rows += [("agreement with the oracle, fresh SFT answers", base["m"]["oracle_agreement"],
              new["m"]["oracle_agreement"], f"{new['m']['oracle_decided_pairs']} decided pairs"),
             ("correlation with the oracle's scores", base["m"]["oracle_rm_correlation"],
              new["m"]["oracle_rm_correlation"], ""),
             ("training time (s)", base["m"]["train_seconds"], new["m"]["train_seconds"],
              f"ratio {new['m']['train_seconds'] / base['m']['train_seconds']:.2f}"),
             ("stage wall time incl. evaluation (s)", base["wall"], new["wall"],
              f"ratio {new['wall'] / base['wall']:.2f}")]
    if args.markdown:
        print(f"Machine: {os.cpu_count()} CPU cores. SFT model: {run_dir / 'sft'}\n")
        print("| measurement | last-token head | likelihood head | |\n|---|---:|---:|---|")
        for name, a, b, note in rows:
            print(f"| {name} | {a:.2f} | {b:.2f} | {note} |")
    else:
        for name, a, b, note in rows:
            print(f"{name:50s} {a:8.2f} {b:8.2f}  {note}")


if __name__ == "__main__":
    main()
