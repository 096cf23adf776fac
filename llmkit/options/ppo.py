"""PPO's options and presets (its code: `llmkit.rl.ppo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.errors import StageError
from llmkit.options import LoraOptions, configure, option
from llmkit.options.rl import PROMPTS, SMOKE, WORDS, SampledRLConfig


@dataclass
class PPOConfig(LoraOptions, SampledRLConfig):
    """RLHF with llmkit's PPO against the reward model."""

    STAGE: ClassVar[str] = "ppo"
    WORDS: ClassVar[dict[str, str]] = {**WORDS, **PROMPTS, "batch_note": " (prompts per rollout)",
                                       "beta_note": ": the KL penalty's coefficient (the starting value with "
                                                    "target_kl)",
                                       "lora_note": " (the reference is the policy with it off)"}
    MEASURES: ClassVar[tuple[str, ...]] = ("policy", "habits", "rejected_rows")

    mini_batch_size: int = option(8, "rollouts per update")
    ppo_epochs: int = option(2, "passes over each rollout batch")
    value_learning_rate: float = option(1e-4, "the value model's learning rate")
    missing_eos_penalty: float = option(1.0, "subtracted from the score of an answer that did not end by itself")
    # 0.1 on the tiny preset: docs/decisions.md, "PPO's β = 0.1"
    kl_estimator: str = option("k1", "per-token KL estimator", choices=("k1", "k3"))
    target_kl: float | None = option(None, "per-sequence KL to aim at, adapting β (default: β fixed)")
    kl_horizon: int = option(10000, "adaptive β: how fast it adapts")
    gamma: float = option(1.0, "discount")
    lam: float = option(0.95, "GAE's λ")
    cliprange: float = option(0.2, "policy ratio clip ε")
    cliprange_value: float = option(0.2, "value clip ε_v")
    vf_coef: float = option(0.1, "value loss weight c_v")
    sample_every: int = option(10, "log a table of rollouts every N steps")

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size % self.mini_batch_size:
            raise StageError(f"batch_size {self.batch_size} must be a multiple of mini_batch_size "
                             f"{self.mini_batch_size}")


PRESETS: dict[str, dict] = {
    "smoke": {**SMOKE, "mini_batch_size": 4, "sample_every": 2},
    "tiny": {},
    "small": {"max_steps": 200, "batch_size": 64, "mini_batch_size": 16, "max_new_tokens": 128, "learning_rate": 1e-5,
              "value_learning_rate": 5e-5, "sample_every": 20},
    "gpt2": {"max_steps": 300, "batch_size": 64, "mini_batch_size": 16, "max_new_tokens": 256, "learning_rate": 5e-6,
             "value_learning_rate": 2e-5, "sample_every": 25},
}


def config_for(preset: str = "tiny", **overrides) -> PPOConfig:
    return configure(PPOConfig, PRESETS, preset, overrides)
