"""The pipeline's report: RUN_DIR/report.md with every stage's closed-world numbers, its bar, and its curves.

Written by `llmkit pipeline` after its stages ran (or were reused); it reads only the stage folders'
metrics.json, so it can be rewritten at any time with `write_report(run_dir)`.
"""

from __future__ import annotations

from pathlib import Path

from llmkit import runs

# stage -> [(label, metric key, bar)]; a bar is None, (op, value), the key of SFT's value the metric may fall at
# most 0.05 below (RL must not lose what SFT knew; answering more questions right than SFT is no failure), or
# ("beside", key of SFT's value) to show that value without a verdict
ROWS = {
    "data": [("documents kept", "documents_out", None), ("bytes per token", "validation_bytes_per_token", None)],
    "pretrain": [("base fact completion", "fact_completion", (">=", 0.8)), ("validation bits per byte", "val_bpb", None),
                 ("MFU", "mfu", None)],
    "sft": [("held-out QA", "qa_heldout", (">=", 0.6)), ("trained-entity QA", "qa_trained", None),
            ("base model's held-out QA", "base_qa_heldout", ("<=", 0.1))],
    "lora": [("held-out QA", "qa_heldout", None), ("trainable fraction", "trainable_fraction", ("<=", 0.05))],
    "reward": [("pairwise accuracy (eval split)", "eval_accuracy", (">=", 0.9)),
               ("agreement with the oracle, fresh SFT answers", "oracle_agreement", None)],
    "ppo": [("oracle win-rate vs SFT", "oracle_win_rate", (">=", 0.65)), ("KL to SFT per token", "eval_kl_per_token", None),
            ("held-out QA (SFT's)", "qa_heldout", "sft_qa_heldout"), ("trained QA (SFT's)", "qa_trained", "sft_qa_trained"),
            ("rude or rambling answers (SFT's)", "eval_habit_rate", ("beside", "eval_habit_rate_sft")),
            # the win-rate is relative: the better the SFT model, the less there is to win against it
            ("oracle score of its answers (SFT's)", "eval_oracle_score", ("beside", "eval_oracle_score_sft"))],
}
for method in ("grpo", "rloo", "dpo"):
    ROWS[method] = [("oracle win-rate vs SFT", "oracle_win_rate", None), ("KL to SFT per token", "eval_kl_per_token", None),
                    ("held-out QA (SFT's)", "qa_heldout", "sft_qa_heldout"),
                    ("oracle score of its answers (SFT's)", "eval_oracle_score", ("beside", "eval_oracle_score_sft"))]


def _sft_key(bar) -> str | None:
    """The SFT metric a bar compares the value with, or shows beside it."""
    if isinstance(bar, str):
        return bar
    return bar[1] if bar and bar[0] == "beside" else None


def _verdict(value: float, bar, metrics: dict) -> str:
    if isinstance(bar, str):  # at most 5 points below the SFT model's, 5 included: 16 of 320 questions is 0.05
        # exactly, which float subtraction can make 0.0500000000000000x (0.775 − 0.725)
        return "met" if metrics[bar] - value <= 0.05 + 1e-9 else "**not met**"
    if bar is None or bar[0] == "beside":
        return ""
    op, target = bar
    ok = value >= target if op == ">=" else value <= target
    return "met" if ok else "**not met**"


def _bar_text(bar) -> str:
    if isinstance(bar, str):
        return "at most 0.05 below SFT"
    if bar is None or bar[0] == "beside":
        return ""
    return f"{bar[0]} {bar[1]:g}"


def write_report(run_dir: str | Path, timings: dict[str, float | None] | None = None) -> Path:
    """Write RUN_DIR/report.md; `timings` maps stage -> seconds this run (None: reused)."""
    run_dir = Path(run_dir)
    timings = timings or {}
    lines = [f"# llmkit run report: {run_dir}", "",
             "| stage | measurement | value | bar | verdict | wall time this run |", "|---|---|---:|---|---|---:|"]
    plots = []
    for stage, rows in ROWS.items():
        folder = runs.stage_dir(run_dir, stage)
        if not runs.finished(folder):
            continue
        m = runs.read_metrics(folder)
        t = timings.get(stage, "n/a")
        took = "reused" if t is None else (f"{t:.0f} s" if isinstance(t, float) else t)
        first = True
        for label, key, bar in rows:
            if key not in m or not isinstance(m[key], (int, float)):
                continue
            value = m[key]
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            sft_key = _sft_key(bar)
            if sft_key in m:
                shown += f" ({m[sft_key]:.3f})"
            lines.append(f"| {stage if first else ''} | {label} | {shown} | {_bar_text(bar)} | "
                         f"{_verdict(value, bar, m)} | {took if first else ''} |")
            first = False
        if (folder / "curves.png").exists():
            plots.append(f"### {stage}\n\n![{stage} curves]({stage}/curves.png)\n")
    lines += _timing_note(run_dir, timings)
    lines += ["", "## Curves", "", *plots]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _timing_note(run_dir: Path, timings: dict) -> list[str]:
    """The total wall time of the stages that ran, and the machine's speed as pretraining measured it: times
    only compare between machines of about the same matmul peak."""
    ran = [t for t in timings.values() if isinstance(t, (int, float))]
    pretrain = runs.stage_dir(run_dir, "pretrain")
    peak = runs.read_metrics(pretrain).get("peak_flops") if runs.finished(pretrain) else None
    if not ran and not peak:
        return []
    parts = [f"Wall time of the stages run this time: {sum(ran):.0f} s."] if ran else []
    if isinstance(peak, (int, float)):
        parts.append(f"Pretraining measured this machine's matmul peak at {peak / 1e9:.0f} GFLOP/s "
                     "(`peak_flops` in pretrain/metrics.json); wall times scale with it.")
    return ["", " ".join(parts)]
