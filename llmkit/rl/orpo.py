"""ORPO (Hong et al., 2024) through TRL's `ORPOTrainer`: the SFT loss on the chosen answer and a preference term in
one loss, with no reference model — the odds of the chosen answer against the rejected one's, where
odds(y|x) = P(y|x) / (1 − P(y|x)) and P is the policy's per-token mean likelihood of the answer:

    loss = − mean over pairs of [ log P(y_w|x)  +  λ · log σ( log odds(y_w|x) − log odds(y_l|x) ) ]

λ is `beta`. TRL keeps ORPO in `trl.experimental`. Evaluated as PPO is, with the reward model. Its options:
`llmkit.options.orpo`; what it shares with the other TRL methods: `llmkit.rl.trl_stage`.
"""

from __future__ import annotations

from trl.experimental.orpo import ORPOConfig as TRLConfig
from trl.experimental.orpo import ORPOTrainer

from llmkit import lifecycle
from llmkit.options.orpo import PRESETS, ORPOConfig, config_for
from llmkit.rl import inputs, trl_stage


def train(config: ORPOConfig, rl: inputs.RLInputs, work: lifecycle.Work) -> dict:
    trainer, tokenizer = trl_stage.pairs_trainer(ORPOTrainer, TRLConfig, config, rl, work)
    return trl_stage.train(trainer, tokenizer, config, work)


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(inputs.read_inputs, train, "Train the SFT policy with ORPO on the preference pairs and write "
                       "RUN_DIR/orpo.")
__all__ = ["ORPOConfig", "PRESETS", "config_for", "run"]  # its options: llmkit.options.orpo
