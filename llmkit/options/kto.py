"""KTO's options and presets (its code: `llmkit.rl.kto`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import LossOptions, configure
from llmkit.options.dpo import PAIRS_PRESETS
from llmkit.options.rl import PAIRS, WORDS, PairsRLConfig


@dataclass
class KTOConfig(LossOptions, PairsRLConfig):
    """KTO through TRL's KTOTrainer, evaluated like PPO."""

    STAGE: ClassVar[str] = "kto"
    WORDS: ClassVar[dict[str, str]] = {**WORDS, **PAIRS, "batch_note": " (answers marked good or bad: the pairs "
                                       "taken apart)", "beta_note": ": the scale of the implicit reward",
                                       "losses_note": ": kto or apo_zero_unpaired (default: kto)"}


PRESETS = PAIRS_PRESETS


def config_for(preset: str = "tiny", **overrides) -> KTOConfig:
    return configure(KTOConfig, PRESETS, preset, overrides)
