"""Base fact completion of the tiny preset across pretraining settings, on one data stage.

    python benchmarks/pretrain_sweep.py --run-dir runs/sweep --set weight_decay=0,0.1,0.3,1.0 --seeds 0,1 --markdown
    python benchmarks/pretrain_sweep.py --case optimizer=adamw,max_steps=1100 --case optimizer=muon,max_steps=400

Runs the data stage once (tiny preset, bundled corpus), then one full tiny-preset pretraining run per
combination of the `--set` values and seeds, each in its own folder beside the data stage, and reports fact
completion (overall and per attribute), validation loss and training seconds. Any PretrainConfig field can
be swept: `--set learning_rate=0.002,0.003 --set weight_decay=0.1,1.0`. `--case` names one combination of
fields instead (repeat it: the cases run in the order given, each with every seed), for settings that only
make sense together, such as an optimizer and its step budget. Each run takes the full 4-minute
budget on 2 CPU cores, so a sweep of n runs takes about 4n minutes; run nothing else beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

from llmkit import data, pretrain


def parse_value(text: str):
    return json.loads(text) if text[:1].isdigit() or text in ("true", "false") else text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default="runs/sweep")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=V1,V2", help="values of a PretrainConfig field")
    ap.add_argument("--case", action="append", default=[], metavar="FIELD=V,FIELD=V",
                    help="one combination of PretrainConfig fields (repeatable; crossed with --set and --seeds)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    root = Path(args.run_dir)
    data.run(data.config_for("tiny"), root, progress=False)
    grid = {}
    for item in args.set:
        name, _, values = item.partition("=")
        grid[name] = [parse_value(v) for v in values.split(",")]
    grid["seed"] = [int(s) for s in args.seeds.split(",")]
    cases = [dict((k, parse_value(v)) for k, _, v in (kv.partition("=") for kv in case.split(",")))
             for case in args.case] or [{}]
    rows = []
    for case, combo in itertools.product(cases, itertools.product(*grid.values())):
        overrides = {**case, **dict(zip(grid, combo))}
        label = ",".join(f"{k}={v}" for k, v in overrides.items())
        run = root / label.replace("=", "_").replace(",", "__")
        run.mkdir(parents=True, exist_ok=True)
        if not (run / "data").exists():
            (run / "data").symlink_to((root / "data").resolve())
        shutil.rmtree(run / "pretrain", ignore_errors=True)
        m = pretrain.run(pretrain.config_for("tiny", **overrides), run, overwrite=True, progress=False).metrics
        rows.append((label, m))
        print(json.dumps({"run": label, "fact_completion": m["fact_completion"], "val_loss": m["val_loss"],
                          "train_seconds": m["train_seconds"]}), flush=True)

    if args.markdown:
        attrs = list(rows[0][1]["fact_completion_by_attribute"])
        print("\n| settings | fact completion | " + " | ".join(attrs) + " | val loss | training (s) |")
        print("|---|---:|" + "---:|" * len(attrs) + "---:|---:|")
        for label, m in rows:
            per = " | ".join(f"{m['fact_completion_by_attribute'][a]:.2f}" for a in attrs)
            print(f"| {label} | {m['fact_completion']:.2f} | {per} | {m['val_loss']:.3f} | {m['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
