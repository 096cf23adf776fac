"""The pipeline: every stage, in order, in one registry — and `run_pipeline`, which the CLI and notebooks call alike.

    from llmkit.pipeline import run_pipeline
    run_pipeline("runs/demo", preset="tiny")                            # = llmkit pipeline
    run_pipeline("runs/demo", stages=["sft"], overrides={"sft": {"lora": True}})

    data ─ pretrain ─ sft ─ reward ─ ppo          (grpo, rloo, dpo, kto beside ppo, on request)

Each stage is one module with a config dataclass, `config_for(preset)` and `run(config, run_dir)`; a stage
reads the folders of the ones before it (RUN_DIR/pretrain, RUN_DIR/sft, ...) and writes its own. A finished
stage is reused unless `overwrite`. The registry below is the one list of stages: the command line builds a
command and flags for each from it, the launcher runs them on N processes through it, the report reads its
measurements, and the chat app its model folders. Adding a stage is one entry.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from llmkit import data, pretrain, report, reward, runs, sft
from llmkit.report import Row
from llmkit.rl import ppo, trl_methods
from llmkit.runs import StageError, StageResult

PRESETS = ("smoke", "tiny", "small", "gpt2")  # smoke: seconds, for tests; tiny: a CPU in minutes; small, gpt2: GPUs


@dataclass(frozen=True)
class Stage:
    name: str  # the command, and the folder it writes by default
    help: str
    config_class: type
    config_for: Callable  # (preset, **overrides) -> config
    run: Callable  # (config, run_dir, overwrite=, progress=, callbacks=) -> StageResult
    presets: dict  # preset -> the settings it changes
    kind: str  # what its folder holds: "data", "base" (a pretrained LM), "chat" (a chat LM) or "reward"
    measurements: dict = field(default_factory=dict)  # folder it writes -> its Rows in the report
    main_process_only: bool = False  # under N processes the main one runs it while the others wait
    in_default_pipeline: bool = True
    description: str = ""  # what `llmkit <stage> --help` says about it (default: its module's first paragraph)

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders it writes by default (SFT: sft, and lora with LoRA)."""
        return tuple(self.measurements) or (self.name,)


# What the report and the stage's summary line show; the closed world's bars (DESIGN.md): the data stage has
# none, pretraining must store the facts, SFT must activate them, the reward model must rank pairs, RL must
# improve answers by the oracle without losing knowledge.
REJECTED = Row("rows of your files set aside (rejected_rows.jsonl)", "rejected_rows", hide_zero=True)
# RL must make the answers better than SFT's by the oracle without losing knowledge: the win-rate's interval over
# prompts above a coin flip, the oracle's score 0.05 above SFT's, QA at most 5 points below (issue 30's bars; a
# fixed win-rate such as 0.65 punished a stronger SFT model, which leaves less to win).
RL_ROWS = (Row("oracle win-rate vs SFT", "oracle_win_rate"),
           Row("win-rate's 95 % interval over prompts, lower end", "oracle_win_rate_ci_low", above=0.5),
           Row("oracle score of its answers (SFT's)", "eval_oracle_score", beside="eval_oracle_score_sft",
               min_gain=0.05),
           Row("KL to SFT per token", "eval_kl_per_token"),
           Row("held-out QA (SFT's)", "qa_heldout", beside="sft_qa_heldout", max_drop=0.05),
           Row("trained QA (SFT's)", "qa_trained", beside="sft_qa_trained", max_drop=0.05),
           # what stays measurable without the closed world's oracle
           Row("reward-model score (SFT's)", "eval_rm_score", beside="eval_rm_score_sft"),
           Row("answer length in tokens (SFT's)", "eval_response_length", beside="eval_response_length_sft"),
           Row("answers that ended their turn", "eval_eos_fraction"),
           # with the verifier (--reward verifier): exact answers to held-out tasks, greedy, against SFT's; on the
           # bundled tasks both about people neither SFT nor RL saw, and new questions about the people RL trained on
           Row("held-out tasks answered exactly (SFT's)", "task_accuracy", beside="task_accuracy_sft"),
           Row("gain over SFT, 95 % interval's lower end", "task_gain_ci_low", above=0.0),
           Row("new tasks about RL's people answered exactly (SFT's)", "task_new_accuracy", beside="task_new_accuracy_sft"),
           Row("gain over SFT, 95 % interval's lower end", "task_new_gain_ci_low", above=0.0),
           Row("prompts cut to fit the context", "prompts_cut", hide_zero=True), REJECTED)

REGISTRY = (
    Stage("data", "clean, deduplicate and tokenize a corpus into packed blocks", data.DataConfig, data.config_for,
          data.run, data.PRESETS, "data", main_process_only=True,
          measurements={"data": (Row("documents kept", "documents_out"),
                                 Row("bytes per token", "validation_bytes_per_token"), REJECTED)}),
    Stage("pretrain", "train a language model on the data stage's blocks or on text", pretrain.PretrainConfig,
          pretrain.config_for, pretrain.run, pretrain.PRESETS, "base",
          measurements={"pretrain": (Row("base fact completion", "fact_completion", at_least=0.8),
                                     Row("validation bits per byte", "val_bpb"), Row("MFU", "mfu"),
                                     Row("epochs over the training data", "epochs"),
                                     Row("tokens seen per parameter", "tokens_per_parameter"))}),
    Stage("sft", "supervised fine-tuning (full or LoRA) on conversations", sft.SFTConfig, sft.config_for, sft.run,
          sft.PRESETS, "chat",
          measurements={"sft": (Row("held-out QA", "qa_heldout", at_least=0.6), Row("trained-entity QA", "qa_trained"),
                                Row("base model's held-out QA", "base_qa_heldout", at_most=0.1),
                                Row("eval loss", "eval_loss"), REJECTED),
                        "lora": (Row("held-out QA", "qa_heldout"),
                                 Row("trainable fraction", "trainable_fraction", at_most=0.05),
                                 Row("eval loss", "eval_loss"), REJECTED)}),
    Stage("reward", "train a reward model on preference pairs (and your labels)", reward.RewardConfig,
          reward.config_for, reward.run, reward.PRESETS, "reward",
          measurements={"reward": (Row("pairwise accuracy (eval split)", "eval_accuracy", at_least=0.9),
                                   Row("agreement with the oracle, fresh SFT answers", "oracle_agreement"), REJECTED)}),
    Stage("ppo", "RLHF with llmkit's PPO against the reward model", ppo.PPOConfig, ppo.config_for, ppo.run,
          ppo.PRESETS, "chat",
          measurements={"ppo": (*RL_ROWS[:6],
                                Row("rude or rambling answers (SFT's)", "eval_habit_rate", beside="eval_habit_rate_sft"),
                                *RL_ROWS[6:])}),
    *(Stage(method, f"{method.upper()} through TRL, evaluated like PPO", trl_methods.MethodConfig,
            functools.partial(trl_methods.config_for, method), trl_methods.run, trl_methods.PRESETS, "chat",
            measurements={method: RL_ROWS}, in_default_pipeline=False,
            description=trl_methods.__doc__.split("\n\n")[0]) for method in trl_methods.METHODS),
)
STAGES: dict[str, Stage] = {s.name: s for s in REGISTRY}
DEFAULT_STAGES = tuple(s.name for s in REGISTRY if s.in_default_pipeline)


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]


def model_folders(kinds: tuple[str, ...] = ("base", "chat")) -> list[str]:
    """The folders the stages of these kinds write, in pipeline order (the chat app's checkpoints)."""
    return [folder for s in REGISTRY if s.kind in kinds for folder in s.folders]


def run_stage(name: str, config, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
              callbacks: tuple = ()) -> StageResult:
    """Run one stage with its config, on this process and on any others a launcher started beside it (a
    main-process-only stage runs on the main one while the others wait)."""
    s = stage(name)
    kwargs = {"overwrite": overwrite, "progress": progress, **({"callbacks": callbacks} if callbacks else {})}
    if s.main_process_only and runs.world_size() > 1:
        import torch.distributed as dist

        result = s.run(config, run_dir, **kwargs) if runs.is_main_process() else None
        dist.barrier()
        return result or StageResult(config.output_name, runs.stage_dir(run_dir, config.output_name), {})
    return s.run(config, run_dir, **kwargs)


def run_pipeline(run_dir: str | Path = "runs/demo", preset: str = "tiny", stages: tuple | list = DEFAULT_STAGES,
                 overrides: dict[str, dict] | None = None, overwrite: bool = False,
                 progress: bool = True) -> dict[str, StageResult]:
    """Run `stages` in order into `run_dir` with `preset`'s settings and the `overrides` of each stage
    ({"sft": {"lora": True}}), print what each did, and write RUN_DIR/report.md and RUN_DIR/timings.json (each
    stage folder's wall time this run in seconds, null where it was reused)."""
    overrides = overrides or {}
    for name in [*stages, *overrides]:
        stage(name)  # an unknown stage fails before anything runs
    configs = {name: stage(name).config_for(preset, **overrides.get(name, {})) for name in stages}
    main = runs.is_main_process()
    results, timings = {}, {}
    for i, name in enumerate(stages, 1):
        if progress and main and len(stages) > 1:
            print(f"== stage {i}/{len(stages)}: {name} ==", flush=True)
        start = time.perf_counter()
        result = results[name] = run_stage(name, configs[name], run_dir, overwrite, progress)
        took = time.perf_counter() - start
        timings[result.stage] = None if result.reused else took
        if main:
            status = "reused (finished earlier; --overwrite to redo)" if result.reused else f"done in {took:.1f} s"
            print(f"[{name}] {status} -> {result.output_dir}")
            if not result.reused:
                print(stage_summary(name, result), flush=True)
    if main:
        side_by_side(run_dir)
        (Path(run_dir) / TIMINGS).write_text(json.dumps(timings, indent=1) + "\n", encoding="utf-8")
        print(f"report: {write_report(run_dir, timings)}")
    return results


def stage_summary(name: str, result: StageResult) -> str:
    """What a finished stage prints: its report (the data stage writes one), its measurements on one line, and
    its warnings."""
    rows = stage(name).measurements.get(result.stage) or folder_rows(result.output_dir)
    text = "  " + report.summary(rows, result.metrics)
    text += "".join(f"\n  warning: {w}" for w in result.metrics.get("warnings", []))
    own = Path(result.output_dir) / "report.md"
    return (own.read_text(encoding="utf-8") + text) if own.exists() else text


def write_report(run_dir: str | Path, timings: dict[str, float | None] | None = None) -> Path:
    """RUN_DIR/report.md from the finished stages' metrics.json and RUN_DIR/side_by_side.jsonl; `timings`:
    folder -> seconds this run (None: reused)."""
    from llmkit.loaders import read_jsonl

    sections = [(folder, rows) for s in REGISTRY for folder, rows in s.measurements.items()]
    known = {folder for folder, _ in sections}
    renamed = sorted(p for p in Path(run_dir).iterdir()  # not work folders (.sft.partial) nor replaced ones
                     if p.is_dir() and not p.name.startswith(".") and p.name not in known and runs.finished(p))
    sections += [(p.name, rows) for p in renamed if (rows := folder_rows(p))]
    pretrained = runs.stage_dir(run_dir, "pretrain")
    peak = runs.read_metrics(pretrained).get("peak_flops") if runs.finished(pretrained) else None
    answers = Path(run_dir) / SIDE_BY_SIDE
    return report.write_report(run_dir, sections, timings, peak, read_jsonl(answers) if answers.exists() else [])


def folder_rows(folder: str | Path) -> tuple[Row, ...]:
    """The report rows of a finished stage folder, found from its stage_config.json: a stage run under another
    name (`--stage-name`, as `benchmarks/rlvr.py` runs GRPO) is measured as its stage is under its own name."""
    saved = runs.read_stage_config(folder)
    if not saved:
        return ()
    for s in REGISTRY:
        if set(saved) != {f.name for f in fields(s.config_class) if f.init}:
            continue
        try:
            config = s.config_class(**{**saved, "stage_name": None})
        except (TypeError, ValueError, StageError):  # the same fields, but not this stage's values
            continue
        if config.output_name in s.measurements:
            return s.measurements[config.output_name]
    return ()


SIDE_BY_SIDE = "side_by_side.jsonl"
TIMINGS = "timings.json"


def side_by_side(run_dir: str | Path, n_prompts: int = 5, max_new_tokens: int = 48) -> list[dict]:
    """Every finished model of the run answers the same few prompts (greedy): what the report shows even where no
    oracle can judge. The prompts are those the SFT stage evaluated on (your eval data, or the first
    conversations of your training data), else the bundled held-out RL prompts. Written to
    RUN_DIR/side_by_side.jsonl: {"prompt", "answers": {folder: text}}."""
    from transformers import AutoTokenizer

    from llmkit.formats import prompt_text, read_prompts
    from llmkit.generation import chat_generate, greedy_continuations
    from llmkit.loaders import Rejects, bundled_path, write_jsonl
    from llmkit.model import load_causal_lm

    run_dir = Path(run_dir)
    folders = [f for f in model_folders() if runs.finished(run_dir / f)]
    if not folders:
        return []
    sft_config = runs.read_stage_config(run_dir / "sft") or {}
    source = sft_config.get("eval_data") or sft_config.get("train_data") or bundled_path("rl_prompts_eval.jsonl")
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
