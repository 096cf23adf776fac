"""DPO (Rafailov et al., 2023) through TRL's `DPOTrainer`: no reward model and no sampling; the policy is fitted
to the preference pairs directly, with the implicit reward β · log(π_θ / π_ref):

    loss = − mean over pairs of log σ( β · [log π_θ(y_w|x) − log π_ref(y_w|x)] − β · [log π_θ(y_l|x) − log π_ref(y_l|x)] )

`loss_type` picks TRL's loss: sigmoid (DPO), ipo, sigmoid_norm (length-normalised), hinge, ... Evaluated as PPO is,
with the reward model. Its options: `llmkit.options.dpo`; what it shares with the other TRL methods:
`llmkit.rl.trl_stage`.
"""

from __future__ import annotations

from trl import DPOConfig as TRLConfig
from trl import DPOTrainer

from llmkit import lifecycle
from llmkit.options.dpo import PRESETS, DPOConfig, config_for
from llmkit.rl import inputs, trl_stage


def train(config: DPOConfig, rl: inputs.RLInputs, work: lifecycle.Work) -> dict:
    losses = {"loss_type": [config.loss_type]} if config.loss_type else {}  # TRL's DPO takes a list (a mix)
    trainer, tokenizer = trl_stage.pairs_trainer(DPOTrainer, TRLConfig, config, rl, work, **losses)
    return trl_stage.train(trainer, tokenizer, config, work)


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(trl_stage.inputs_reader(TRLConfig), train,
                       "Fit the SFT policy to the preference pairs with DPO and write RUN_DIR/dpo.")
__all__ = ["DPOConfig", "PRESETS", "config_for", "run"]  # its options: llmkit.options.dpo
