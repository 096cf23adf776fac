"""Stage options: fields that carry their own help, the groups every stage's config is composed from, presets.

A stage's config is a dataclass composed of option groups, each concept with one name, one default and one help
text in every stage (as TRL's configs carry `metadata={"help": ...}` and peft's options live apart):

    @dataclass
    class SFTConfig(LoraOptions, OptimOptions, DataOptions, ..., StageConfig):
        STAGE: ClassVar[str] = "sft"
        packing: bool | None = option(None, "pack conversations into rows ...")   # what only SFT has

A stage that needs its own number for a shared option says so with `retune` (SFT's learning rate is not PPO's);
the help stays the group's. The command line (`llmkit.cli`) builds its flags from these fields, grouped as here,
and `configure` builds a config from a preset and overrides, with an error that lists what exists.

This package imports nothing heavy: `llmkit --help` answers without torch. Each stage's config and presets are in
`llmkit/options/<stage>.py`; its training code in the stage's own module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from llmkit.errors import StageError

MISSING = dataclasses.MISSING
BUNDLED = "bundled"  # an input that, when unset, is the bundled closed world's file
SCRATCH = "scratch"  # an input that, when unset, is nothing: a model built from scratch
PRECISIONS = ("auto", "bf16", "fp16", "no")
# The row formats llmkit reads (`llmkit.formats` reads each; the stages' data_format takes them): conversations for
# SFT, preference pairs for the reward model and DPO, KTO, ORPO
CHAT_FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "hh", "self_instruct")
PREFERENCE_FORMATS = ("explicit", "implicit", "hh")


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           choices: tuple | str | None = None, cli: bool = True) -> Any:
    """A config field with its help text. `choices`: the values accepted (checked when the config is made, and by
    the CLI), or the name of a class attribute that holds them (a group's field whose values depend on the stage).
    `cli=False`: no command-line flag. The help may name the stage's `WORDS` in braces ({data}); a note a stage does not fill
    ({lr_note}) reads as nothing."""
    metadata = {"help": help, "choices": choices, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def retune(group: type, name: str, default: Any) -> Any:
    """`group`'s option `name` with this stage's own default (the help and choices stay the group's)."""
    return dataclasses.field(default=default, metadata=group.__dataclass_fields__[name].metadata)


@dataclass
class StageConfig:
    """What every stage's config shares.

    - `STAGE`: the stage's name (its command, and the folder it writes by default);
    - `INPUTS`: each field that names an input, and what it means when unset — the folder of an earlier stage of
      the run ("sft": RUN_DIR/sft), the bundled closed world (`BUNDLED`) or nothing (`SCRATCH`). From these the run layer decides
      whether a stage's inputs are the closed world (`llmkit.lifecycle.closed_world`);
    - `MEASURES`: the names of the measurements of its output (`llmkit.measures`);
    - `WORDS`: what the shared options' help says for this stage ({data}: "conversations", ...);
    - `RESUMABLE`: a killed run keeps its work folder and resumes; `RESUME_ONLY_SAME_CONFIG`: only a rerun with
      the same options resumes (another starts afresh), as a Trainer's checkpoints need; `MAIN_PROCESS_ONLY`:
      under N processes the main one runs it while the others wait."""

    STAGE: ClassVar[str] = ""
    INPUTS: ClassVar[dict[str, str]] = {}
    MEASURES: ClassVar[tuple[str, ...]] = ()
    WORDS: ClassVar[dict[str, str]] = {}
    RESUMABLE: ClassVar[bool] = True
    RESUME_ONLY_SAME_CONFIG: ClassVar[bool] = True
    MAIN_PROCESS_ONLY: ClassVar[bool] = False

    def __post_init__(self):
        check_choices(self)

    @property
    def output_name(self) -> str:
        """The run folder it writes: `stage_name` where it has one and it is set, else the stage's name."""
        return getattr(self, "stage_name", None) or self.STAGE

    def measures(self) -> tuple[str, ...]:
        """The measurements of this run's output, by name (`llmkit.measures.MEASUREMENTS`)."""
        return self.MEASURES

    @classmethod
    def help_of(cls, name: str) -> str:
        """A field's help as this stage says it: the group's text with the stage's words filled in."""
        words = {"folder": cls.STAGE, **cls.WORDS}
        return cls.__dataclass_fields__[name].metadata.get("help", "").format_map(_Words(words))

    @classmethod
    def choices_of(cls, name: str) -> tuple | None:
        choices = cls.__dataclass_fields__[name].metadata.get("choices")
        return getattr(cls, choices) if isinstance(choices, str) else choices


class _Words(dict):
    def __missing__(self, key: str) -> str:  # a note this stage has nothing to add to
        return ""


# ---- the option groups ------------------------------------------------------------------------------
# Each group is a concept; a stage's config lists the groups it has. `llmkit <stage> --help` shows them in this
# order, the stage's own options first.
@dataclass
class RunOptions:
    stage_name: str | None = option(None, "the folder this stage writes in the run (default: {folder})")
    seed: int = option(0, "seed of the initialisation, the data order and the sampling")


@dataclass
class ModelOptions:
    base_model: str | None = option(None, "the model this stage starts from: a local transformers folder "
                                          "(default: {base})")


@dataclass
class DataOptions:
    train_data: str | None = option(None, "what it trains on: {data}; a file or folder in any format llmkit reads "
                                          "(docs/data_formats.md; default: {data_default})")
    max_examples: int | None = option(None, "use the first N training examples only (documents, conversations, "
                                            "pairs or prompts)")
    max_bad_rows: float = option(0.01, "the share of the rows of your files that may be unusable (they are kept in "
                                       "the stage's rejected_rows.jsonl with file, line and reason) before the stage "
                                       "stops")


@dataclass
class TextOptions:
    text_field: str | None = option(None, "the field holding the text in jsonl, json, parquet or csv data (default: "
                                          "the first of text, content, document, body, raw_content)")


@dataclass
class EvalDataOptions:
    eval_data: str | None = option(None, "held-out data it is evaluated on, in the same formats (default: "
                                         "{eval_default})")


@dataclass
class FormatOptions:
    data_format: str = option("auto", "the format of the rows (auto: detected from the first row)",
                              choices="DATA_FORMATS")


@dataclass
class OptimOptions:
    max_steps: int = option(-1, "optimizer steps{steps_note}")
    batch_size: int = option(32, "examples per optimizer step, over all devices{batch_note}")
    learning_rate: float = option(1e-3, "peak learning rate{lr_note}")
    max_grad_norm: float = option(1.0, "gradient norm clipping")


@dataclass
class EpochOptions:
    epochs: float | None = option(None, "passes over the training data; max_steps > 0 overrides it"
                                        "{epochs_note}")


@dataclass
class WarmupOptions:
    warmup_steps: float = option(0.05, "warmup: steps, or below 1 the fraction of the steps (as transformers "
                                       "reads warmup_steps)")


@dataclass
class MicroBatchOptions:
    micro_batch_size: int | None = option(8, "examples per forward pass on one device; gradient accumulation makes "
                                             "up the batch{micro_note}")


@dataclass
class LengthBalanceOptions:
    balance_lengths: bool = option(True, "sort each step's examples by length into micro-batches: less padding, "
                                         "the same loss")


@dataclass
class LengthOptions:
    max_length: int = option(256, "tokens per example at most{too_long}")


@dataclass
class WeightDecayOptions:
    weight_decay: float | None = option(None, "AdamW's weight decay on the weight matrices, not on norms or "
                                              "embeddings{decay_note}")


@dataclass
class EmbeddingOptions:
    freeze_embeddings: bool = option(True, "full fine-tuning: keep the token embeddings fixed{rows_note}")


@dataclass
class LoraOptions:
    lora: bool = option(False, "train a LoRA adapter (then merged) instead of every weight{lora_note}")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_targets: str | list[str] = option("all-linear", "the layers LoRA adapts: all-linear (every linear layer "
                                                          "but the output head, GPT-2's Conv1D included) or module "
                                                          "names separated by commas, e.g. q_proj,v_proj")


@dataclass
class PrecisionOptions:
    mixed_precision: str = option("auto", "auto (bf16 on a GPU that has it), bf16, fp16 or no", choices=PRECISIONS)


@dataclass
class CheckpointOptions:
    save_every: int = option(50, "steps between checkpoints a killed run resumes from (0: none; deleted when the "
                                 "stage finishes)")


@dataclass
class PeriodicEvalOptions:
    eval_every: int = option(50, "steps between evaluations while training")


@dataclass
class EvalOptions:
    eval_limit: int | None = option(None, "held-out examples an evaluation uses at most, in each of its sets "
                                          "(default: all)")
    closed_world: bool | None = option(None, "measure on the closed world (its oracle, facts and QA) and judge by its "
                                             "bars (default: when every input is the bundled closed world's)")


@dataclass
class RLOptions:
    reward_model: str | None = option(None, "the reward model (default: RUN_DIR/reward){rm_note}")
    max_new_tokens: int = option(40, "tokens per sampled answer at most{sampled_note}")
    temperature: float = option(0.7, "sampling temperature (0: greedy)")
    beta: float = option(0.1, "β: how strongly the policy is held to the reference{beta_note}")
    eval_samples_per_prompt: int = option(4, "answers per held-out prompt and side in the evaluation")


REWARDS = ("model", "verifier", "both")


@dataclass
class RewardOptions:
    reward: str = option("model", "what rewards an answer: model (the reward model), verifier (1 if its final "
                                   "'Answer: ...' is the row's answer, else 0; the prompts need answers, default: the "
                                   "bundled verifiable tasks) or both (their sum)", choices=REWARDS)


@dataclass
class GroupOptions:
    num_generations: int = option(4, "samples per prompt, compared with each other")


@dataclass
class LossOptions:
    loss_type: str | None = option(None, "the installed TRL's loss for this method{losses_note}")


@dataclass
class TrainerStageConfig(RunOptions, EvalOptions, PeriodicEvalOptions, CheckpointOptions, PrecisionOptions,
                         LoraOptions, EmbeddingOptions, LengthOptions, LengthBalanceOptions, MicroBatchOptions,
                         WarmupOptions, EpochOptions, OptimOptions, ModelOptions, FormatOptions, EvalDataOptions,
                         DataOptions, StageConfig):
    """The options of a stage that fine-tunes on a transformers Trainer (SFT, the reward model): the data and its
    held-out split, the base model, the optimisation with micro-batches, LoRA, precision, checkpoints and the
    evaluation."""


GROUPS: tuple[tuple[str, type], ...] = (
    ("data", DataOptions), ("text", TextOptions), ("held-out data", EvalDataOptions), ("data format", FormatOptions),
    ("model", ModelOptions), ("optimisation", OptimOptions), ("epochs", EpochOptions), ("warmup", WarmupOptions),
    ("micro-batches", MicroBatchOptions), ("length balance", LengthBalanceOptions), ("length", LengthOptions),
    ("weight decay", WeightDecayOptions), ("embeddings", EmbeddingOptions), ("LoRA", LoraOptions),
    ("precision", PrecisionOptions), ("checkpoints", CheckpointOptions), ("evaluation while training", PeriodicEvalOptions),
    ("evaluation", EvalOptions),
    ("RL", RLOptions), ("reward", RewardOptions), ("groups", GroupOptions), ("loss", LossOptions),
    ("run", RunOptions),
)
# The shared options whose value a stage's scale sets (a learning rate, a budget); every other shared option
# has one default in every stage (tests/test_options.py holds the stages to it).
TUNABLE = ("max_steps", "batch_size", "learning_rate", "micro_batch_size", "warmup_steps", "max_length",
           "eval_every", "save_every", "max_new_tokens", "temperature", "beta", "num_generations", "epochs",
           "freeze_embeddings")


def group_of(name: str) -> str | None:
    """The group a shared option belongs to; None for a stage's own option."""
    return next((label for label, group in GROUPS if name in group.__dataclass_fields__), None)


# ---- making configs ----------------------------------------------------------------------------------
def configure(config_class: type, presets: dict[str, dict], preset: str, overrides: dict) -> Any:
    """`config_class` with `presets[preset]`'s values, then `overrides`, on top of its defaults."""
    if preset not in presets:
        raise StageError(f"unknown preset {preset!r} for {config_class.__name__}; presets: {', '.join(presets)}")
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise StageError(f"{config_class.__name__} has no field {', '.join(map(repr, unknown))}; its fields: "
                         f"{', '.join(names)}")
    return config_class(**{**presets[preset], **overrides})


def check_choices(config) -> None:
    """Raise a StageError naming the field and what it accepts where a value is not one of its field's choices (a
    config's `__post_init__` calls this, so a bad value fails when the config is made, not minutes later)."""
    for f in dataclasses.fields(config):
        choices, value = type(config).choices_of(f.name), getattr(config, f.name)
        if choices and value not in choices:
            raise StageError(f"{type(config).__name__}.{f.name}={value!r}; accepted: {', '.join(map(str, choices))}")


def as_dict(config) -> dict:
    """A config's fields and values, as a recipe and stage_config.json hold them."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
