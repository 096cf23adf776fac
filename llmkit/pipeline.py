"""The pipeline: every stage of the registry in order, into one run folder — `run_pipeline`, which the CLI and the
notebooks call alike — and the run's report.

    from llmkit.pipeline import run_pipeline
    run_pipeline("runs/demo", preset="tiny")                            # = llmkit pipeline
    run_pipeline("runs/demo", stages=["sft"], overrides={"sft": {"lora": True}})

    data ─ pretrain ─ sft ─ reward ─ ppo          (grpo, rloo, dpo, kto beside ppo, on request)

Each stage reads the folders of the ones before it (RUN_DIR/pretrain, RUN_DIR/sft, ...) and writes its own
(`llmkit.lifecycle`); a finished stage is reused unless `overwrite`. After the stages, every model of the run
answers the same few prompts (`side_by_side`) and RUN_DIR/report.md shows each folder's measurements
(`llmkit.measures`), with the closed world's bars where its inputs were the closed world.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from llmkit import report, runs
from llmkit.formats import prompt_text, read_prompts
from llmkit.generation import chat_generate, greedy_continuations
from llmkit.loaders import Rejects, bundled_path, read_jsonl, write_jsonl
from llmkit.measures import rows_of
from llmkit.model import load_causal_lm
from llmkit.registry import DEFAULT_STAGES, PRESET_NAMES, REGISTRY, STAGES, model_folders, resolve, stage
from llmkit.report import Row
from llmkit.runs import StageResult

__all__ = ["DEFAULT_STAGES", "PRESET_NAMES", "REGISTRY", "STAGES", "model_folders", "run_pipeline", "run_stage",
           "stage", "write_report"]
SIDE_BY_SIDE = "side_by_side.jsonl"
TIMINGS = "timings.json"


def run_stage(name: str, config, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
              callbacks: tuple = ()) -> StageResult:
    """Run one stage of the registry with its config (on this process, and on any others a launcher started
    beside it: the run layer shares the work out)."""
    return stage(name).run(config, run_dir, overwrite=overwrite, progress=progress, callbacks=callbacks)


def run_pipeline(run_dir: str | Path = "runs/demo", preset: str = "tiny", stages: tuple | list = DEFAULT_STAGES,
                 overrides: dict[str, dict] | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict[str, StageResult]:
    """Run `stages` in order into `run_dir` with `preset`'s settings and the `overrides` of each stage
    ({"sft": {"lora": True}}), print what each did, and write RUN_DIR/report.md and RUN_DIR/timings.json (each
    stage folder's wall time this run in seconds, null where it was reused)."""
    overrides = overrides or {}
    for name in [*stages, *overrides]:
        stage(name)  # an unknown stage fails before anything runs
    return run_configs(run_dir, resolve(stages, preset, overrides=overrides)[1], overwrite, progress)


def run_configs(run_dir: str | Path, configs: dict, overwrite: bool = False,
                progress: bool = True) -> dict[str, StageResult]:
    """Run each stage with its config {stage: config}, in order; then the side-by-side answers and the report."""
    main = runs.is_main_process()
    results, timings = {}, {}
    for i, (name, config) in enumerate(configs.items(), 1):
        if progress and main and len(configs) > 1:
            print(f"== stage {i}/{len(configs)}: {name} ==", flush=True)
        start = time.perf_counter()
        result = results[name] = run_stage(name, config, run_dir, overwrite, progress)
        took = time.perf_counter() - start
        timings[result.stage] = None if result.reused else took
        if main:
            status = "reused (finished earlier; --overwrite to redo)" if result.reused else f"done in {took:.1f} s"
            print(f"[{name}] {status} -> {result.output_dir}")
            if not result.reused:
                print(stage_summary(result), flush=True)
    if main:
        side_by_side(run_dir)
        (Path(run_dir) / TIMINGS).write_text(json.dumps(timings, indent=1) + "\n", encoding="utf-8")
        print(f"report: {write_report(run_dir, timings)}")
    return results


def stage_summary(result: StageResult) -> str:
    """What a finished stage prints: its report (the data stage writes one), its measurements on one line, and
    its warnings."""
    rows, closed_world = folder_rows(result.output_dir)
    text = "  " + report.summary(rows, result.metrics, closed_world)
    if not closed_world and any(row.bar() for row in rows):
        text += "\n  (its inputs are not the bundled closed world: its bars, set there, do not apply)"
    text += "".join(f"\n  warning: {w}" for w in result.metrics.get("warnings", []))
    own = Path(result.output_dir) / "report.md"
    return (own.read_text(encoding="utf-8") + text) if own.exists() else text


def folder_rows(folder: str | Path) -> tuple[tuple[Row, ...], bool]:
    """(the report rows of a finished stage folder, whether its inputs were the closed world), from its
    stage_config.json: a stage run under another name (`--stage-name`, as `benchmarks/rlvr.py` runs GRPO) is
    measured as its stage is under its own name. A folder no llmkit stage wrote has none."""
    record = runs.provenance(folder)
    if record is None:
        return (), False
    return rows_of(record.get("measures", ())), bool(record.get("closed_world"))


def write_report(run_dir: str | Path, timings: dict[str, float | None] | None = None) -> Path:
    """RUN_DIR/report.md from the finished stages' metrics.json and RUN_DIR/side_by_side.jsonl; `timings`:
    folder -> seconds this run (None: reused). Sections: the registry's folders in pipeline order, then any other
    folder a stage wrote (a stage run under another name)."""
    run_dir = Path(run_dir)
    known = [folder for s in REGISTRY for folder in s.folders]
    others = sorted(p.name for p in run_dir.iterdir()  # not work folders (.sft.partial) nor replaced ones
                    if p.is_dir() and not p.name.startswith(".") and p.name not in known and runs.finished(p))
    sections = []
    for name in [*known, *others]:
        if runs.finished(run_dir / name):
            rows, closed_world = folder_rows(run_dir / name)
            if rows:
                sections.append((name, rows, closed_world))
    pretrained = runs.stage_dir(run_dir, "pretrain")
    peak = runs.read_metrics(pretrained).get("peak_flops") if runs.finished(pretrained) else None
    answers = run_dir / SIDE_BY_SIDE
    return report.write_report(run_dir, sections, timings, peak, read_jsonl(answers) if answers.exists() else [])


def side_by_side(run_dir: str | Path, n_prompts: int = 5, max_new_tokens: int = 48) -> list[dict]:
    """Every finished model of the run answers the same few prompts (greedy): what the report shows even where no
    oracle can judge. The prompts are those the SFT stage evaluated on (your eval data, or the first
    conversations of your training data), else the bundled held-out RL prompts. Written to
    RUN_DIR/side_by_side.jsonl: {"prompt", "answers": {folder: text}}."""
    run_dir = Path(run_dir)
    folders = [f for f in model_folders() if runs.finished(run_dir / f)]
    if not folders:
        return []
    read = (runs.provenance(run_dir / "sft") or {}).get("inputs", {})
    source = next((read[k] for k in ("eval_data", "train_data") if read.get(k, "bundled") != "bundled"),
                  bundled_path("rl_prompts_eval.jsonl"))
    prompts = read_prompts(source, Rejects(max_fraction=1.0), limit=n_prompts)  # the SFT stage set aside bad rows
    rows = [{"prompt": prompt_text(p), "answers": {}} for p in prompts]
    for folder in folders:
        tokenizer = AutoTokenizer.from_pretrained(run_dir / folder, local_files_only=True)
        model = load_causal_lm(run_dir / folder)
        if folder in model_folders(("base",)):  # a base model continues text: it gets the prompt as text
            texts = greedy_continuations(model, tokenizer, [r["prompt"] + "\n" for r in rows], max_new_tokens)
        else:
            texts = [a["text"] for a in chat_generate(model, tokenizer, prompts, max_new_tokens)]
        for row, text in zip(rows, texts):
            row["answers"][folder] = text.strip()
    write_jsonl(run_dir / SIDE_BY_SIDE, rows)
    return rows
