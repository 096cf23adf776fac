"""RLOO's options and presets (its code: `llmkit.rl.rloo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import GroupOptions, configure
from llmkit.options.grpo import PRESETS as GRPO_PRESETS
from llmkit.options.rl import PROMPTS, WORDS, SampledRLConfig


@dataclass
class RLOOConfig(GroupOptions, SampledRLConfig):
    """RLOO through TRL's RLOOTrainer, evaluated like PPO."""

    STAGE: ClassVar[str] = "rloo"
    WORDS: ClassVar[dict[str, str]] = {**WORDS, **PROMPTS, "batch_note": " (sampled answers: batch_size / "
                                       "num_generations prompts)", "beta_note": ": the KL penalty's coefficient "
                                       "in the reward"}


PRESETS: dict[str, dict] = GRPO_PRESETS  # the same budget as GRPO's: the two differ in the baseline alone


def config_for(preset: str = "tiny", **overrides) -> RLOOConfig:
    return configure(RLOOConfig, PRESETS, preset, overrides)
