"""What every RL stage (PPO, GRPO, RLOO, DPO, KTO) reads before it trains: the run's SFT policy, the reward model
where the reward needs one, and the prompts to train and evaluate on — all checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmkit import runs
from llmkit.formats import read_prompts, read_tasks
from llmkit.loaders import Rejects, bundled_path

# What an RL stage can be rewarded by: the trained reward model, a rule that checks each answer's final line
# (`llmkit.verifier`: the prompts need answers), or the sum of both.
REWARDS = ("model", "verifier", "both")
REWARD_HELP = ("what rewards an answer: model (the reward model), verifier (1 if its final 'Answer: ...' is the "
               "row's answer, else 0; the prompts need answers, default: the bundled verifiable tasks) or both "
               "(their sum)")


@dataclass
class RLInputs:
    policy_dir: Path  # the policy to start from, which is also the reference it is compared with
    rm_dir: Path | None  # None: rewarded by the verifier alone, and no reward model in the run
    prompts: list
    eval_prompts: list
    closed_world: bool  # the bundled prompts: the oracle scores answers, and QA is measured
    rejects: Rejects  # the rows of the user's prompt files that hold no prompt
    answers: list | None = None  # the verifier's expected answer of each prompt
    eval_answers: list | None = None
    # more verifiable tasks to test on, by name: on the bundled tasks, "task_new" holds new questions about the
    # people RL trains on, beside eval_prompts' questions about people that neither SFT nor RL saw
    more_eval: dict[str, tuple[list, list]] = field(default_factory=dict)


def read_inputs(config, run_dir: Path) -> RLInputs:
    """From an RL config's policy_model, reward_model, reward, prompts, eval_prompts, eval_limit, closed_world and
    max_bad_rows. Prompts come from any format `llmkit.formats.read_prompts` reads; with the verifier, rows with a
    prompt and an answer (`llmkit.formats.read_tasks`)."""
    reward = config.reward  # one of REWARDS: the config's choices refused any other
    policy_dir = runs.model_folder(config.policy_model, run_dir / "sft", "policy",
                                   f"run llmkit sft --run-dir {run_dir} first or pass its folder")
    rm_dir = None
    if reward != "verifier" or config.reward_model or runs.finished(run_dir / "reward"):
        rm_dir = runs.model_folder(config.reward_model, run_dir / "reward", "reward model",
                                   f"run llmkit reward --run-dir {run_dir} first or pass its folder")
    rejects = Rejects(config.max_bad_rows)
    closed_world = config.closed_world if config.closed_world is not None else config.prompts is None
    if reward == "model":
        prompts = read_prompts(config.prompts or bundled_path("rl_prompts_train.jsonl"), rejects)
        eval_prompts = read_prompts(config.eval_prompts or bundled_path("rl_prompts_eval.jsonl"), rejects)
        return RLInputs(policy_dir, rm_dir, prompts, eval_prompts[: config.eval_limit], closed_world, rejects)
    tasks = read_tasks(config.prompts or bundled_path("tasks_train.jsonl"), rejects)
    if config.eval_prompts or not config.prompts:
        eval_tasks = read_tasks(config.eval_prompts or bundled_path("tasks_heldout.jsonl"), rejects)
    else:  # your tasks and no others to test on: a tenth of them is held out
        n = max(1, len(tasks) // 10)
        if len(tasks) < 2:
            raise runs.StageError(f"{config.prompts}: one task is too few to train on and test on; give more, or "
                                  "--eval-prompts")
        tasks, eval_tasks = tasks[:-n], tasks[-n:]
    eval_tasks = eval_tasks[: config.task_eval_limit]
    more = {}
    if not config.prompts and not config.eval_prompts:
        new = read_tasks(bundled_path("tasks_eval.jsonl"), rejects)[: config.task_eval_limit]
        more["task_new"] = ([t["prompt"] for t in new], [t["answer"] for t in new])
    return RLInputs(policy_dir, rm_dir, [t["prompt"] for t in tasks], [t["prompt"] for t in eval_tasks],
                    closed_world, rejects, [t["answer"] for t in tasks], [t["answer"] for t in eval_tasks], more)
