"""GRPO (Shao et al., 2024) through TRL's `GRPOTrainer`: several answers per prompt, each one's advantage its
reward minus its group's mean (divided by the group's std), and no value model:

    A_i = (r_i − mean(r_group)) / std(r_group)
    loss = − mean over tokens of min(ρ_t · A_i, clip(ρ_t, 1 − ε, 1 + ε) · A_i)  +  β · KL(π_θ ‖ π_ref)

`loss_type` picks how TRL averages and clips the token losses (grpo: over each answer's own length; dr_grpo: over
a constant, no length bias; dapo: over all of the batch's tokens, TRL's default; cispo: the importance weight
clipped and kept out of the gradient), and `importance_sampling_level="sequence"` is GSPO's one ratio per answer.
TRL's default β is 0 (no KL term); llmkit's is PPO's 0.1, so the methods compare at a stated KL coefficient.
Rewarded by the reward model, by the verifier (`reward="verifier"`: RL with verifiable rewards) or by both. Its
options: `llmkit.options.grpo`; what it shares with the other TRL methods: `llmkit.rl.trl_stage`.
"""

from __future__ import annotations

from trl import GRPOConfig as TRLConfig
from trl import GRPOTrainer

from llmkit import lifecycle
from llmkit.options.grpo import PRESETS, GRPOConfig, config_for
from llmkit.rl import inputs, trl_stage

# cispo's upper bound on the importance weight (ε_max), the value TRL's GRPOConfig recommends from the ScaleRL paper
CISPO_EPSILON_MAX = 5.0


def train(config: GRPOConfig, rl: inputs.RLInputs, work: lifecycle.Work) -> dict:
    trainer, tokenizer, cut = build_trainer(config, rl, work)
    return trl_stage.train(trainer, tokenizer, config, work, cut)


def build_trainer(config: GRPOConfig, rl: inputs.RLInputs, work: lifecycle.Work):
    """(TRL's GRPOTrainer as llmkit runs it, the policy's tokenizer, how many prompts were cut to fit)."""
    specific = {"importance_sampling_level": config.importance_sampling_level}
    if config.loss_type == "cispo":  # TRL's cispo clips the importance weight at epsilon_high, which otherwise
        specific["epsilon_high"] = CISPO_EPSILON_MAX  # is epsilon's 0.2: every weight, ~1 on-policy, becomes 0.2
    return trl_stage.sampling_trainer(GRPOTrainer, TRLConfig, config, rl, work, **specific)


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(trl_stage.inputs_reader(TRLConfig), train,
                       "Train the SFT policy with GRPO and write RUN_DIR/grpo.")
__all__ = ["GRPOConfig", "PRESETS", "config_for", "run"]  # its options: llmkit.options.grpo
