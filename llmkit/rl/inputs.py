"""What every RL stage (PPO, GRPO, RLOO, DPO) reads before it trains: the run's SFT policy and reward model, and
the prompts to train and evaluate on — all checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmkit import runs
from llmkit.formats import read_prompts
from llmkit.loaders import Rejects, bundled_path


@dataclass
class RLInputs:
    policy_dir: Path  # the policy to start from, which is also the reference it is compared with
    rm_dir: Path
    prompts: list
    eval_prompts: list
    closed_world: bool  # the bundled prompts: the oracle scores answers, and QA is measured
    rejects: Rejects  # the rows of the user's prompt files that hold no prompt


def read_inputs(config, run_dir: Path) -> RLInputs:
    """From an RL config's policy_model, reward_model, prompts, eval_prompts, eval_limit, closed_world and
    max_bad_rows. Prompts come from any format `llmkit.formats.read_prompts` reads."""
    policy_dir = runs.model_folder(config.policy_model, run_dir / "sft", "policy",
                                   f"run llmkit sft --run-dir {run_dir} first or pass its folder")
    rm_dir = runs.model_folder(config.reward_model, run_dir / "reward", "reward model",
                               f"run llmkit reward --run-dir {run_dir} first or pass its folder")
    rejects = Rejects(config.max_bad_rows)
    prompts = read_prompts(config.prompts or bundled_path("rl_prompts_train.jsonl"), rejects)
    eval_prompts = read_prompts(config.eval_prompts or bundled_path("rl_prompts_eval.jsonl"), rejects)
    closed_world = config.closed_world if config.closed_world is not None else config.prompts is None
    return RLInputs(policy_dir, rm_dir, prompts, eval_prompts[: config.eval_limit], closed_world, rejects)
