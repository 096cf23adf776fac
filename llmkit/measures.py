"""The measurements of each stage's output, and their bars: declared once here, found by name.

A stage's config names its measurements (`StageConfig.measures()`: SFT's are "closed_world_qa", "eval_loss" and
"rejected_rows"); the run layer (`llmkit.lifecycle`) computes those that apply once the stage has trained, from what
it wrote into its work folder, and the report (`llmkit.report`) shows their rows. Each `Measurement` is:

- `rows`: what the report and the stage's summary line show, each a key of metrics.json with its bar, if any;
- `closed_world`: computed only where the stage's inputs were the bundled closed world (the oracle, the world's
  facts and questions). Elsewhere the stage shows what can be measured on any data: bits per byte, eval losses,
  held-out pairwise accuracy, reward, KL and length, sample answers;
- `compute(subject) -> metrics`, or None where the stage itself writes the keys while training (a loss, MFU).

Every bar was set on the closed world (DESIGN.md: the yardstick), so a verdict is given only for a folder whose
inputs were the closed world; on other data the same row shows its value and no verdict (`llmkit.report.Row`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llmkit.evaluate import (
    closed_world_qa,
    evaluate_policy,
    fact_completion,
    oracle_agreement,
    pairwise_accuracy,
)
from llmkit.formats import read_prompts
from llmkit.loaders import bundled_path, read_jsonl, write_jsonl
from llmkit.model import load_causal_lm
from llmkit.oracle import Oracle
from llmkit.report import Row
from llmkit.reward_model import RewardModel
from llmkit.rl import health


@dataclass
class Subject:
    """What a measurement measures: the stage's config, the inputs it read, its work folder (the trained model is
    saved there) and what it measured while training."""

    config: object
    inputs: object
    work: object  # llmkit.lifecycle.Work
    metrics: dict

    @property
    def folder(self) -> Path:
        return self.work.dir

    @property
    def device(self) -> str:
        return "cuda" if torch.cuda.is_available() else "cpu"

    # loaded once for all of a stage's measurements (the reward model's two read the same one)
    @functools.cached_property
    def model(self):
        return load_causal_lm(self.folder, self.device)

    @functools.cached_property
    def tokenizer(self):
        return AutoTokenizer.from_pretrained(self.folder, local_files_only=True)

    @functools.cached_property
    def reward_model(self) -> RewardModel:
        return RewardModel.load(self.folder, self.device)


@dataclass(frozen=True)
class Measurement:
    name: str
    rows: tuple[Row, ...]
    closed_world: bool = False
    compute: Callable[[Subject], dict] | None = None


MEASUREMENTS: dict[str, Measurement] = {}


def declare(name: str, rows: tuple[Row, ...], closed_world: bool = False):
    """Declare a measurement whose computation is the decorated function (or, called on None, one the stage writes)."""
    def register(compute: Callable[[Subject], dict] | None) -> Callable | None:
        MEASUREMENTS[name] = Measurement(name, rows, closed_world, compute)
        return compute

    return register


def measure(config, inputs, work, metrics: dict) -> dict:
    """The measurements of `config.measures()` that apply to this run (the closed world's only where its inputs
    were the closed world), computed on the stage's output."""
    out: dict = {}
    subject = Subject(config, inputs, work, metrics)
    for name in config.measures():
        m = MEASUREMENTS[name]
        if m.compute is None or (m.closed_world and not work.closed_world):
            continue
        found = m.compute(subject)
        out["warnings"] = out.get("warnings", []) + found.pop("warnings", [])
        out.update(found)
    return out


def rows_of(names: tuple[str, ...] | list[str]) -> tuple[Row, ...]:
    return tuple(row for name in names for row in MEASUREMENTS[name].rows)


# ---- what the stages themselves write ---------------------------------------------------------------
declare("rejected_rows", (Row("rows of your files set aside (rejected_rows.jsonl)", "rejected_rows", hide_zero=True),))(None)
declare("corpus", (Row("documents kept", "documents_out"), Row("bytes per token", "validation_bytes_per_token")))(None)
declare("language_model", (Row("validation bits per byte", "val_bpb"), Row("MFU", "mfu"),
                           Row("epochs over the training data", "epochs"),
                           Row("tokens seen per parameter", "tokens_per_parameter")))(None)
declare("eval_loss", (Row("eval loss", "eval_loss"),))(None)
# LoRA: what share of the weights trains (the bar: the tiny preset's rank and its embedding rows stay under 5 %)
declare("adapter", (Row("trainable fraction", "trainable_fraction", at_most=0.05),))(None)
# PPO's answers against SFT's: the demonstrators' habits that SFT imitated and the preference rule dislikes
declare("habits", (Row("rude or rambling answers (SFT's)", "eval_habit_rate", beside="eval_habit_rate_sft"),))(None)


# ---- pretraining: did it store the facts? -----------------------------------------------------------
@declare("fact_completion", (Row("base fact completion", "fact_completion", at_least=0.8),), closed_world=True)
def _fact_completion(s: Subject) -> dict:
    fc = fact_completion(s.model, s.tokenizer)
    return {"fact_completion": fc["fact_completion"],
            "fact_completion_by_attribute": {k: v for k, v in fc.items() if k not in ("fact_completion", "examples")},
            "fact_completion_examples": fc["examples"]}


# ---- SFT: does it activate what pretraining stored? -------------------------------------------------
def _qa(s: Subject) -> dict:
    """Closed-world QA of the fine-tuned model beside its base model's, and a few answers to the log."""
    out = closed_world_qa(s.model, s.tokenizer, s.config.eval_limit, load_causal_lm(s.inputs.base, s.device), "base")
    s.work.log.write({"step": s.metrics.get("steps", 0), "samples": [
        {"prompt": e["prompt"], "continuation": e["answer"]} for e in out.get("qa_heldout_examples", [])[:4]]})
    return out


# The bars: SFT must answer held-out questions (facts only pretraining taught), which the base model cannot
declare("closed_world_qa", (Row("held-out QA", "qa_heldout", at_least=0.6), Row("trained-entity QA", "qa_trained"),
                            Row("base model's held-out QA", "base_qa_heldout", at_most=0.1)), closed_world=True)(_qa)
declare("lora_qa", (Row("held-out QA", "qa_heldout"),), closed_world=True)(_qa)


# ---- the reward model: does it rank pairs, and fresh answers as the oracle does? --------------------
@declare("pairwise_accuracy", (Row("pairwise accuracy (eval split)", "eval_accuracy", at_least=0.9),))
def _pairwise(s: Subject) -> dict:
    pairs = pairwise_accuracy(s.reward_model, s.inputs.eval_rows)
    write_jsonl(s.folder / "eval_scores.jsonl", pairs["rows"])
    return {"eval_accuracy": pairs["accuracy"], "eval_margin": pairs["margin"], "eval_pairs": len(s.inputs.eval_rows)}


@declare("oracle_agreement", (Row("agreement with the oracle, fresh SFT answers", "oracle_agreement"),),
         closed_world=True)
def _oracle_agreement(s: Subject) -> dict:
    prompts = read_prompts(bundled_path("rl_prompts_eval.jsonl"), limit=s.config.eval_limit)
    agreement = oracle_agreement(s.reward_model, load_causal_lm(s.inputs.base, s.device), prompts, seed=s.config.seed)
    write_jsonl(s.folder / "oracle_pairs.jsonl", agreement.pop("rows"))
    return agreement


# ---- RL: better answers than SFT's, without losing what SFT knew ------------------------------------
# The oracle's win-rate interval over prompts above a coin flip, its score 0.05 above SFT's, QA at most 5 points
# below (a fixed win-rate such as 0.65 punished a stronger SFT model, which leaves less to win); with the verifier,
# the exact-answer gain's interval above zero. The rest is measurable without the oracle.
POLICY_ROWS = (
    Row("oracle win-rate vs SFT", "oracle_win_rate"),
    Row("win-rate's 95 % interval over prompts, lower end", "oracle_win_rate_ci_low", above=0.5),
    Row("oracle score of its answers (SFT's)", "eval_oracle_score", beside="eval_oracle_score_sft", min_gain=0.05),
    Row("KL to SFT per token", "eval_kl_per_token"),
    Row("held-out QA (SFT's)", "qa_heldout", beside="sft_qa_heldout", max_drop=0.05),
    Row("trained QA (SFT's)", "qa_trained", beside="sft_qa_trained", max_drop=0.05),
    Row("reward-model score (SFT's)", "eval_rm_score", beside="eval_rm_score_sft"),
    Row("answer length in tokens (SFT's)", "eval_response_length", beside="eval_response_length_sft"),
    Row("answers that ended their turn", "eval_eos_fraction"),
    # with the verifier: exact answers to held-out tasks, greedy, against SFT's; on the bundled tasks both about
    # people neither SFT nor RL saw, and new questions about the people RL trained on
    Row("held-out tasks answered exactly (SFT's)", "task_accuracy", beside="task_accuracy_sft"),
    Row("gain over SFT, 95 % interval's lower end", "task_gain_ci_low", above=0.0),
    Row("new tasks about RL's people answered exactly (SFT's)", "task_new_accuracy", beside="task_new_accuracy_sft"),
    Row("gain over SFT, 95 % interval's lower end", "task_new_gain_ci_low", above=0.0),
    Row("prompts cut to fit the context", "prompts_cut", hide_zero=True))


@declare("policy", POLICY_ROWS)
def _policy(s: Subject) -> dict:
    """An RL stage's policy against the SFT model it started from (`llmkit.evaluate.evaluate_policy`), and the
    health checks of its training log (`llmkit.rl.health`)."""
    i = s.inputs
    rm = RewardModel.load(i.rm_dir, s.device) if i.rm_dir is not None else None
    oracle = Oracle() if s.work.closed_world else None
    evaluation = evaluate_policy(s.model, load_causal_lm(i.policy_dir, s.device), s.tokenizer, rm, i.eval_prompts,
                                 s.config, i.policy_dir, oracle, i.eval_answers, i.more_eval)
    write_jsonl(s.folder / "eval_samples.jsonl", evaluation.pop("rows"))
    if "task_rows" in evaluation:
        write_jsonl(s.folder / "task_samples.jsonl", evaluation.pop("task_rows"))
    checks, warnings = health.check(read_jsonl(s.folder / "log.jsonl"))
    return {**checks, **evaluation, "warnings": evaluation.get("warnings", []) + warnings,
            "policy_model": str(i.policy_dir), "reward_model": str(i.rm_dir) if i.rm_dir else None}

