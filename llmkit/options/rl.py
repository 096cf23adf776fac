"""What every RL stage's options share: the policy to start from, the reward model, the held-out prompts and the
evaluation against SFT (PPO, GRPO, RLOO, DPO, KTO, ORPO; each stage's own options are in its module here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import (
    BUNDLED,
    PREFERENCE_FORMATS,
    CheckpointOptions,
    DataOptions,
    EvalDataOptions,
    EvalOptions,
    FormatOptions,
    LengthOptions,
    ModelOptions,
    OptimOptions,
    PrecisionOptions,
    RewardOptions,
    RLOptions,
    RunOptions,
    StageConfig,
    retune,
)

# The words of the shared options' help, for every RL stage (a stage adds its own)
WORDS = {"base": "RUN_DIR/sft; also the reference the policy is compared with",
         "eval_default": "the bundled held-out RL prompts; with the verifier, a tenth of train_data, or the bundled "
                         "held-out tasks",
         "rm_note": "; every method is evaluated with it",
         "sampled_note": " (and in the evaluation)"}
PROMPTS = {"data": "prompts: rows with a `prompt` (a string or messages), conversations in any chat format, or "
                   "instructions; with the verifier, rows with a prompt and an answer",
           "data_default": "the bundled RL prompts, or with the verifier the bundled tasks"}
PAIRS = {"data": "preference pairs: prompt/chosen/rejected, implicit (chosen/rejected conversations) or HH "
                 "transcripts", "data_default": "the bundled closed-world pairs",
         "eval_default": "the bundled held-out RL prompts", "too_long": " of prompt and answer"}


@dataclass
class RLConfig(RunOptions, EvalOptions, CheckpointOptions, PrecisionOptions, RLOptions, OptimOptions, ModelOptions,
               EvalDataOptions, DataOptions, StageConfig):
    """The options every RL stage has: the policy (base_model, also the reference), the reward model, the held-out
    prompts, the budget (40 steps of 32 answers on tiny) and the evaluation against SFT."""

    INPUTS: ClassVar[dict[str, str]] = {"train_data": BUNDLED, "eval_data": BUNDLED, "base_model": "sft",
                                        "reward_model": "reward"}
    MEASURES: ClassVar[tuple[str, ...]] = ("policy", "rejected_rows")

    max_steps: int = retune(OptimOptions, "max_steps", 40)
    # measured on tiny: 2e-5 keeps trained-entity QA within 4 points, 5e-5 loses 34
    learning_rate: float = retune(OptimOptions, "learning_rate", 2e-5)
    save_every: int = retune(CheckpointOptions, "save_every", 10)


@dataclass
class SampledRLConfig(RewardOptions, RLConfig):
    """An RL stage that samples answers and rewards them (PPO, GRPO, RLOO): by the reward model, the verifier or
    both."""


@dataclass
class PairsRLConfig(LengthOptions, FormatOptions, RLConfig):
    """An RL stage that learns from preference pairs instead of sampling (DPO, KTO, ORPO)."""

    DATA_FORMATS: ClassVar[tuple[str, ...]] = ("auto", *PREFERENCE_FORMATS)


# The RL stages' presets: the same budget for every method, so that they compare (the loss lab)
SMOKE = {"max_steps": 3, "batch_size": 8, "max_new_tokens": 12, "eval_limit": 8, "eval_samples_per_prompt": 1}
