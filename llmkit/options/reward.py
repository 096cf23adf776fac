"""The reward model's options and presets (its code: `llmkit.reward`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import (
    BUNDLED,
    PREFERENCE_FORMATS,
    EmbeddingOptions,
    EpochOptions,
    PeriodicEvalOptions,
    TrainerStageConfig,
    configure,
    option,
    retune,
)

HEADS = ("likelihood", "last_token")


@dataclass
class RewardConfig(TrainerStageConfig):
    """Train a reward model on preference pairs (and your labels)."""

    STAGE: ClassVar[str] = "reward"
    INPUTS: ClassVar[dict[str, str]] = {"train_data": BUNDLED, "eval_data": BUNDLED, "base_model": "sft"}
    MEASURES: ClassVar[tuple[str, ...]] = ("pairwise_accuracy", "oracle_agreement", "rejected_rows")
    DATA_FORMATS: ClassVar[tuple[str, ...]] = ("auto", *PREFERENCE_FORMATS)
    WORDS: ClassVar[dict[str, str]] = {
        "data": "preference pairs: prompt/chosen/rejected, implicit (chosen/rejected conversations) or HH "
                "transcripts", "data_default": "the bundled closed-world pairs",
        "eval_default": "the bundled eval split, or 10 % of train_data", "base": "RUN_DIR/sft",
        "too_long": "; longer pairs are dropped (TRL does not truncate them)"}

    labels: str | None = option(None, "annotation-app labels to train on as well (default: RUN_DIR/labels.jsonl "
                                      "if it exists)")
    center_rewards_coefficient: float | None = option(0.01, "keeps the scores near zero")
    head: str = option("likelihood", "likelihood (the last-token head + the SFT model's gated log-probabilities of "
                                     "the answer) or last_token (the classic head alone)", choices=HEADS)
    gate_bias: float = option(-2.0, "likelihood head: each token's weight starts at softplus(gate_bias)")
    logp_floor: float = option(-5.0, "likelihood head: a token's log-probability counts down to here, no lower")
    cache_reference: bool = option(True, "likelihood head: each sequence goes through the frozen reference once, "
                                         "not once per epoch and evaluation")

    # measured on tiny: 3e-4 (2 epochs) 0.79, 1e-3 (3 epochs) 0.83, 6 epochs overfits (0.82)
    epochs: float | None = retune(EpochOptions, "epochs", 2.0)
    eval_every: int = retune(PeriodicEvalOptions, "eval_every", 20)
    freeze_embeddings: bool = retune(EmbeddingOptions, "freeze_embeddings", False)


PRESETS: dict[str, dict] = {
    "smoke": {"max_steps": 8, "eval_every": 4, "batch_size": 16, "eval_limit": 16, "max_examples": 256},
    "tiny": {},
    "small": {"batch_size": 64, "micro_batch_size": 16, "max_length": 512, "learning_rate": 3e-4, "eval_every": 50},
    "gpt2": {"batch_size": 64, "micro_batch_size": 16, "max_length": 1024, "learning_rate": 1e-4, "eval_every": 100},
}


def config_for(preset: str = "tiny", **overrides) -> RewardConfig:
    return configure(RewardConfig, PRESETS, preset, overrides)
