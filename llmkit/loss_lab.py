"""The loss lab: llmkit's RL methods on the same SFT model, the same data and the same budget, in one table.

    from llmkit.loss_lab import run_lab, lab_table
    rows = run_lab("runs/demo", preset="tiny")     # needs RUN_DIR/sft and RUN_DIR/reward (llmkit pipeline)
    print(lab_table(rows))

Its entries come from the registry (`llmkit.registry`, each RL stage's `lab` rows), so a new method is in the lab
as soon as it is a stage. Two tasks:
- **preferences**: the bundled RL prompts, rewarded by the reward model (PPO, GRPO, RLOO) or learned from the
  preference pairs (DPO, KTO, ...); judged by the oracle's win-rate against SFT, held-out QA and KL.
- **verifiable**: the bundled tasks (`llmkit.world.TASKS`), rewarded by the exact-answer check
  (`llmkit.verifier`); judged by held-out exact-answer accuracy against SFT's. DPO and KTO have no pairs here.

The budget is the same for every entry: `max_steps` optimizer steps (the stages' presets: 40 on tiny), each on
`batch_size` answers (32): sampled completions for PPO (32 prompts × 1), GRPO and RLOO (8 prompts × 4), preference
pairs for DPO, answers marked good or bad for KTO (16 pairs). PPO makes `ppo_epochs` × 4 minibatch updates of
each rollout, the others one, so equal answers is not equal arithmetic: the wall time column shows the cost.

Every entry is a stage run written to RUN_DIR/lab-<name>; a finished one is reused, so an interrupted lab goes on
where it stopped. Each value comes with its 95 % interval where one exists: the win-rate's over prompts
(`llmkit.evaluate.win_rate_ci`), the accuracy gain's over the paired questions (`llmkit.evaluate.task_accuracy`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmkit import runs
from llmkit.registry import REGISTRY, stage


@dataclass(frozen=True)
class Entry:
    name: str  # the table's label, and the folder RUN_DIR/lab-<name>
    stage: str  # an RL stage of the registry: ppo, grpo, rloo, dpo, kto, ...
    task: str  # "preferences" or "verifiable"
    overrides: dict = field(default_factory=dict)
    what: str = ""  # what it changes, in a sentence


# Every RL stage's rows of the registry (`llmkit.registry.StageSpec.lab`) on the preference task, and those of the
# stages that sample answers again on the verifiable task, rewarded by the exact-answer check.
ENTRIES = tuple(Entry(e.name, s.name, "preferences", dict(e.overrides), e.what) for s in REGISTRY for e in s.lab) + tuple(
    Entry(f"{e.name}_verifier", s.name, "verifiable", {**e.overrides, "reward": "verifier"}, e.what)
    for s in REGISTRY if s.samples for e in s.lab)


def config_of(entry: Entry, preset: str = "tiny", **overrides):
    """The stage config of an entry: the stage's preset with the entry's settings and `overrides`."""
    return stage(entry.stage).config_for(preset, **{**entry.overrides, **overrides, "stage_name": f"lab-{entry.name}"})


def run_entry(entry: Entry, run_dir: str | Path, preset: str = "tiny", progress: bool = False,
              **overrides) -> dict:
    """Run one entry (or reuse its finished folder) and return its row of the table."""
    config = config_of(entry, preset, **overrides)
    times = Path(run_dir) / "lab_times.json"  # the wall time of each entry, training and evaluation, for a lab
    known = json.loads(times.read_text()) if times.exists() else {}  # that resumes
    start = time.perf_counter()
    result = stage(entry.stage).run(config, run_dir, progress=progress)
    if not result.reused or entry.name not in known:
        known[entry.name] = None if result.reused else time.perf_counter() - start
        if runs.is_main_process():
            times.write_text(json.dumps(known, indent=1) + "\n")
    seconds = known[entry.name]
    return row(entry, result.metrics, seconds)


def row(entry: Entry, m: dict, seconds: float | None) -> dict:
    """An entry's measurements, as the table shows them."""
    out = {"method": entry.name, "task": entry.task, "steps": m.get("steps"), "wall_s": seconds,
           "kl_per_token": m.get("eval_kl_per_token"), "answer_tokens": m.get("eval_response_length"),
           "answer_tokens_sft": m.get("eval_response_length_sft"),
           "qa_heldout_change": _minus(m.get("qa_heldout"), m.get("sft_qa_heldout")),
           "qa_trained_change": _minus(m.get("qa_trained"), m.get("sft_qa_trained")),
           "warnings": len(m.get("warnings", []))}
    if entry.task == "preferences":
        out |= {"win_rate": m.get("oracle_win_rate"), "win_rate_low": m.get("oracle_win_rate_ci_low"),
                "win_rate_high": m.get("oracle_win_rate_ci_high"), "oracle_score": m.get("eval_oracle_score"),
                "oracle_score_sft": m.get("eval_oracle_score_sft")}
    else:
        out |= {"accuracy": m.get("task_accuracy"), "accuracy_sft": m.get("task_accuracy_sft"),
                "gain": m.get("task_gain"), "gain_low": m.get("task_gain_ci_low"),
                "gain_high": m.get("task_gain_ci_high"), "zero_std_groups": m.get("health_zero_std_groups")}
    return out


def _minus(a, b):
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def run_lab(run_dir: str | Path, preset: str = "tiny", entries: tuple[Entry, ...] = ENTRIES,
            progress: bool = False, **overrides) -> list[dict]:
    """Run every entry in `entries` on RUN_DIR's sft (and reward) with `preset`'s budget; one row each."""
    run_dir = Path(run_dir)
    for needed in ("sft", "reward"):
        if not runs.finished(run_dir / needed) and any(e.task == "preferences" or needed == "sft" for e in entries):
            raise runs.StageError(f"{run_dir / needed}: the lab starts from a finished {needed} stage; run "
                                  f"llmkit pipeline --run-dir {run_dir} first")
    rows = []
    for entry in entries:
        if progress:
            print(f"[lab] {entry.name} ({entry.task})", flush=True)
        rows.append(run_entry(entry, run_dir, preset, **overrides))
    return rows


def lab_table(rows: list[dict]) -> str:
    """The lab's rows as one Markdown table; intervals in brackets."""

    def f(v, fmt=".3f"):
        return "" if v is None else format(v, fmt)

    def ci(v, lo, hi, fmt=".3f"):
        return "" if v is None else f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"

    lines = ["| method | task | win-rate vs SFT [95 % CI] | oracle score (SFT) | exact answers (SFT) | gain [95 % CI] | "
             "held-out QA change | KL / token | answer tokens (SFT) | wall s |",
             "|---|---|---|---|---|---|---:|---:|---|---:|"]
    for r in rows:
        pref = r["task"] == "preferences"
        lines.append(
            f"| {r['method']} | {r['task']} | "
            + (ci(r.get("win_rate"), r.get("win_rate_low"), r.get("win_rate_high")) if pref else "") + " | "
            + (f"{f(r.get('oracle_score'))} ({f(r.get('oracle_score_sft'))})" if pref else "") + " | "
            + ("" if pref else f"{f(r.get('accuracy'))} ({f(r.get('accuracy_sft'))})") + " | "
            + ("" if pref else ci(r.get("gain"), r.get("gain_low"), r.get("gain_high"), "+.3f")) + " | "
            + f"{f(r['qa_heldout_change'], '+.3f')} | {f(r['kl_per_token'])} | "
            + f"{f(r['answer_tokens'], '.1f')} ({f(r['answer_tokens_sft'], '.1f')}) | {f(r['wall_s'], '.0f')} |")
    return "\n".join(lines)
