"""GRPO's options and presets (its code: `llmkit.rl.grpo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import GroupOptions, LossOptions, configure, option
from llmkit.options.rl import PROMPTS, SMOKE, WORDS, SampledRLConfig


@dataclass
class GRPOConfig(LossOptions, GroupOptions, SampledRLConfig):
    """GRPO through TRL's GRPOTrainer, evaluated like PPO."""

    STAGE: ClassVar[str] = "grpo"
    WORDS: ClassVar[dict[str, str]] = {**WORDS, **PROMPTS, "batch_note": " (sampled answers: batch_size / "
                                       "num_generations prompts)", "beta_note": ": the KL term's coefficient in "
                                       "the loss (TRL's default is 0)", "losses_note": ": grpo, dr_grpo, dapo, "
                                       "bnpo, cispo, sapo, ... (default: TRL's, dapo)"}

    importance_sampling_level: str = option("token", "the policy ratio per token, or one per answer (sequence: "
                                                     "GSPO)", choices=("token", "sequence"))


PRESETS: dict[str, dict] = {
    "smoke": {**SMOKE, "num_generations": 4},
    "tiny": {},
    "small": {"max_steps": 200, "batch_size": 64, "num_generations": 8, "max_new_tokens": 128, "learning_rate": 1e-5},
    "gpt2": {"max_steps": 300, "batch_size": 64, "num_generations": 8, "max_new_tokens": 256, "learning_rate": 5e-6},
}


def config_for(preset: str = "tiny", **overrides) -> GRPOConfig:
    return configure(GRPOConfig, PRESETS, preset, overrides)
