"""What every RL stage (PPO, GRPO, RLOO, DPO, KTO, ORPO) reads before it trains: the run's SFT policy, the reward
model where the reward needs one, the prompts (or the preference pairs) to train on and the prompts to evaluate on
— all checked before anything is written (`llmkit.lifecycle`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmkit import runs
from llmkit.formats import read_preferences, read_prompts, read_tasks
from llmkit.loaders import DataError, Rejects, bundled_path


@dataclass
class RLInputs:
    policy_dir: Path  # the policy to start from, which is also the reference it is compared with
    rm_dir: Path | None  # None: rewarded by the verifier alone, and no reward model in the run
    prompts: list  # what it samples answers to (empty for the methods that learn from pairs)
    eval_prompts: list
    rejects: Rejects  # the rows of the user's files that hold no prompt or pair
    answers: list | None = None  # the verifier's expected answer of each prompt
    eval_answers: list | None = None
    # more verifiable tasks to test on, by name: on the bundled tasks, "task_new" holds new questions about the
    # people RL trains on, beside eval_prompts' questions about people that neither SFT nor RL saw
    more_eval: dict[str, tuple[list, list]] = field(default_factory=dict)
    pairs: list[dict] | None = None  # DPO, KTO, ORPO: the preference pairs they learn from


def read_inputs(config, run_dir: Path, rejects: Rejects) -> RLInputs:
    """From an RL config (`llmkit.options.rl`): the policy and reward model folders; for a method that samples, the
    prompts from any format `llmkit.formats.read_prompts` reads (with the verifier, rows with a prompt and an
    answer, `read_tasks`); for one that learns from pairs, the pairs (`read_preferences`); and the held-out
    prompts. `eval_limit` caps each held-out set, `max_examples` the training rows."""
    reward = getattr(config, "reward", "model")  # the methods that learn from pairs are evaluated with the RM
    policy_dir = runs.model_folder(config.base_model, run_dir / "sft", "policy",
                                   f"run llmkit sft --run-dir {run_dir} first or pass its folder (--base-model)")
    rm_dir = None
    if reward != "verifier" or config.reward_model or runs.finished(run_dir / "reward"):
        rm_dir = runs.model_folder(config.reward_model, run_dir / "reward", "reward model",
                                   f"run llmkit reward --run-dir {run_dir} first or pass its folder (--reward-model)")
    if config.max_examples is not None and config.max_examples < 1:
        raise DataError(f"max_examples={config.max_examples}: give a positive number of training rows")
    limit, cap = config.eval_limit, config.max_examples
    if not hasattr(config, "reward"):  # DPO, KTO, ORPO
        pairs = read_preferences(config.train_data or bundled_path("preferences_train.jsonl"), config.data_format,
                                 rejects=rejects)[:cap]
        eval_prompts = read_prompts(config.eval_data or bundled_path("rl_prompts_eval.jsonl"), rejects, limit=limit)
        return RLInputs(policy_dir, rm_dir, [], eval_prompts, rejects, pairs=pairs)
    if reward == "model":
        prompts = read_prompts(config.train_data or bundled_path("rl_prompts_train.jsonl"), rejects, limit=cap)
        eval_prompts = read_prompts(config.eval_data or bundled_path("rl_prompts_eval.jsonl"), rejects, limit=limit)
        return RLInputs(policy_dir, rm_dir, prompts, eval_prompts, rejects)
    tasks = read_tasks(config.train_data or bundled_path("tasks_train.jsonl"), rejects)
    if config.eval_data or not config.train_data:
        eval_tasks = read_tasks(config.eval_data or bundled_path("tasks_heldout.jsonl"), rejects)
    else:  # your tasks and no others to test on: a tenth of them is held out
        n = max(1, len(tasks) // 10)
        if len(tasks) < 2:
            raise runs.StageError(f"{config.train_data}: one task is too few to train on and test on; give more, or "
                                  "--eval-data")
        tasks, eval_tasks = tasks[:-n], tasks[-n:]
    tasks, eval_tasks = tasks[:cap], eval_tasks[:limit]
    more = {}
    if not config.train_data and not config.eval_data:
        new = read_tasks(bundled_path("tasks_eval.jsonl"), rejects)[:limit]
        more["task_new"] = ([t["prompt"] for t in new], [t["answer"] for t in new])
    return RLInputs(policy_dir, rm_dir, [t["prompt"] for t in tasks], [t["prompt"] for t in eval_tasks], rejects,
                    [t["answer"] for t in tasks], [t["answer"] for t in eval_tasks], more)
