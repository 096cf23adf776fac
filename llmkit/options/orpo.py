"""ORPO's options and presets (its code: `llmkit.rl.orpo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import configure
from llmkit.options.dpo import PAIRS_PRESETS
from llmkit.options.rl import PAIRS, WORDS, PairsRLConfig


@dataclass
class ORPOConfig(PairsRLConfig):
    """ORPO through TRL's ORPOTrainer: SFT and preference in one loss, no reference model; evaluated like PPO."""

    STAGE: ClassVar[str] = "orpo"
    WORDS: ClassVar[dict[str, str]] = {**WORDS, **PAIRS, "batch_note": " (pairs)",
                                       "beta_note": ": the weight λ of the odds-ratio term beside the chosen answers' "
                                                    "SFT loss (no reference: the policy is held by that loss)"}


PRESETS = PAIRS_PRESETS


def config_for(preset: str = "tiny", **overrides) -> ORPOConfig:
    return configure(ORPOConfig, PRESETS, preset, overrides)
