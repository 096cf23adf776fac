"""KTO (Ethayarajh et al., 2024) through TRL's `KTOTrainer`: the pairs taken apart into answers marked good or bad,
each judged on its own against a reference point (the policy's KL to the reference over the batch), so the data
needs no pairing:

    loss = mean over good answers of 1 − σ(β · (log π_θ/π_ref − z))  +  mean over bad ones of 1 − σ(β · (z − log π_θ/π_ref))

Evaluated as PPO is, with the reward model. Its options: `llmkit.options.kto`; what it shares with the other TRL
methods: `llmkit.rl.trl_stage`.
"""

from __future__ import annotations

from trl import KTOConfig as TRLConfig
from trl import KTOTrainer

from llmkit import lifecycle
from llmkit.options.kto import PRESETS, KTOConfig, config_for
from llmkit.rl import inputs, trl_stage


def train(config: KTOConfig, rl: inputs.RLInputs, work: lifecycle.Work) -> dict:
    trainer, tokenizer = trl_stage.pairs_trainer(KTOTrainer, TRLConfig, config, rl, work, unpaired)
    return trl_stage.train(trainer, tokenizer, config, work)


def unpaired(pairs: list[dict]) -> list[dict]:
    """KTO's rows from preference pairs: each pair's chosen answer marked good and its rejected answer bad."""
    return [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs for side in ("chosen", "rejected")]


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(trl_stage.inputs_reader(TRLConfig), train,
                       "Train the SFT policy with KTO on the pairs' answers, each marked good or bad, and write RUN_DIR/kto.")
__all__ = ["KTOConfig", "PRESETS", "config_for", "run"]  # its options: llmkit.options.kto
