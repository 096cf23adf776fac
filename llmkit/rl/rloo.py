"""RLOO (Ahmadian et al., 2024) through TRL's `RLOOTrainer`: REINFORCE with a leave-one-out baseline — each
answer's reward minus the mean reward of the *other* answers to its prompt — and a KL penalty to the reference in
the reward:

    A_i = r_i − mean over j ≠ i of r_j,    r_i = score_i − β · KL_i

Rewarded by the reward model, the verifier or both, as GRPO is. Its options: `llmkit.options.rloo`; what it shares
with the other TRL methods: `llmkit.rl.trl_stage`.
"""

from __future__ import annotations

from trl import RLOOConfig as TRLConfig
from trl import RLOOTrainer

from llmkit import lifecycle
from llmkit.options.rloo import PRESETS, RLOOConfig, config_for
from llmkit.rl import inputs, trl_stage


def train(config: RLOOConfig, rl: inputs.RLInputs, work: lifecycle.Work) -> dict:
    trainer, tokenizer, cut = trl_stage.sampling_trainer(RLOOTrainer, TRLConfig, config, rl, work)
    return trl_stage.train(trainer, tokenizer, config, work, cut)


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(inputs.read_inputs, train, "Train the SFT policy with RLOO and write RUN_DIR/rloo.")
__all__ = ["PRESETS", "RLOOConfig", "config_for", "run"]  # its options: llmkit.options.rloo
