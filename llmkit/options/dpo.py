"""DPO's options and presets (its code: `llmkit.rl.dpo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import LossOptions, configure
from llmkit.options.rl import PAIRS, SMOKE, WORDS, PairsRLConfig

PAIRS_PRESETS: dict[str, dict] = {  # what DPO, KTO and ORPO are run with: the RL budget, on pairs
    "smoke": dict(SMOKE),
    "tiny": {},
    "small": {"max_steps": 200, "batch_size": 64, "max_length": 512, "max_new_tokens": 128, "learning_rate": 1e-5},
    "gpt2": {"max_steps": 300, "batch_size": 64, "max_length": 1024, "max_new_tokens": 256, "learning_rate": 5e-6},
}


@dataclass
class DPOConfig(LossOptions, PairsRLConfig):
    """DPO through TRL's DPOTrainer, evaluated like PPO."""

    STAGE: ClassVar[str] = "dpo"
    WORDS: ClassVar[dict[str, str]] = {**WORDS, **PAIRS, "batch_note": " (pairs)",
                                       "beta_note": ": the scale of the implicit reward β · log(π / π_ref)",
                                       "losses_note": ": sigmoid, ipo, sigmoid_norm, hinge, ... (default: sigmoid)"}


PRESETS = PAIRS_PRESETS


def config_for(preset: str = "tiny", **overrides) -> DPOConfig:
    return configure(DPOConfig, PRESETS, preset, overrides)
