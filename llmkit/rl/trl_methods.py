"""GRPO, RLOO and DPO through TRL, with PPO's run-folder contract so the four compare directly.

- **GRPO** (`GRPOTrainer`): several samples per prompt; each sample's advantage is its reward minus the group's
  mean (divided by the group's std); no value model. TRL's default β = 0 (no KL term); llmkit sets β so the
  comparison with PPO is at a stated KL coefficient.
- **RLOO** (`RLOOTrainer`): REINFORCE with a leave-one-out baseline — each sample's reward minus the mean
  reward of the *other* samples of its prompt — and a KL penalty to the reference.
- **DPO** (`DPOTrainer`): no reward model and no sampling; it fits the policy directly to the preference
  pairs, with the implicit reward β · log(π_θ / π_ref).

GRPO and RLOO are rewarded by the trained reward model (through TRL's reward-function interface). Every run
writes RUN_DIR/<method>/ with the policy checkpoint and the same evaluation as PPO
(`llmkit.evaluate.compare_policies`): RM and oracle scores against the SFT policy, oracle win-rate, KL per token,
response length, and QA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from llmkit import runs
from llmkit.chat_format import fit_pairs
from llmkit.config import MAX_BAD_ROWS_HELP, SAVE_EVERY_HELP, StageConfig, configure, option
from llmkit.curves import save_curves
from llmkit.formats import PREFERENCE_FORMATS, as_messages, read_preferences
from llmkit.loaders import bundled_path, write_jsonl
from llmkit.rl.inputs import read_inputs

METHODS = ("grpo", "rloo", "dpo")


@dataclass
class MethodConfig(StageConfig):
    method: str = option("grpo", "grpo, rloo or dpo", choices=METHODS, cli=False)
    policy_model: str | None = option(None, "the policy to start from (default: RUN_DIR/sft)")
    reward_model: str | None = option(None, "the reward model (default: RUN_DIR/reward); GRPO and RLOO train "
                                            "against it, and every method is evaluated with it")
    prompts: str | None = option(None, "GRPO/RLOO prompts: rows with a `prompt`, conversations in any chat format, "
                                       "or instructions (default: the bundled RL prompts)")
    preferences: str | None = option(None, "DPO's preference pairs (default: the bundled pairs)")
    preference_format: str = option("auto", "format of the DPO pairs (auto: detected)",
                                    choices=("auto", *PREFERENCE_FORMATS))
    eval_prompts: str | None = option(None, "prompts to evaluate on (default: the bundled held-out RL prompts)")
    max_bad_rows: float = option(0.01, MAX_BAD_ROWS_HELP)
    max_steps: int = option(40, "optimizer steps (PPO's default budget)")
    batch_size: int = option(32, "completions (GRPO/RLOO) or pairs (DPO) per step, over all devices")
    num_generations: int = option(4, "samples per prompt (GRPO/RLOO)")
    max_new_tokens: int = option(40, "tokens per answer at most (GRPO/RLOO, and the evaluation)")
    max_length: int = option(256, "DPO: tokens per prompt and answer")
    temperature: float = option(0.7, "sampling temperature")
    learning_rate: float = option(2e-5, "the policy's learning rate (as PPO's)")
    beta: float = option(0.1, "KL coefficient (GRPO: in the loss; RLOO: in the reward) or DPO's β")
    save_every: int = option(10, SAVE_EVERY_HELP)
    eval_limit: int = option(100, "held-out prompts for the final evaluation")
    eval_samples_per_prompt: int = option(4, "answers per held-out prompt and side (as PPO's evaluation)")
    qa_limit: int | None = option(None, "closed-world QA questions per split after training (default: all)")
    closed_world: bool | None = option(None, "oracle scores in the evaluation, and QA (default: with the bundled "
                                             "prompts)")
    mixed_precision: str = option("auto", "auto (bf16 on a GPU that has it), bf16, fp16 or no",
                                  choices=("auto", "bf16", "fp16", "no"))
    stage_name: str | None = option(None, "output folder in the run (default: the method's name)")
    seed: int = option(0, "seed of the sampling and the data order")

    @property
    def output_name(self) -> str:
        return self.stage_name or self.method


PRESETS: dict[str, dict] = {
    "smoke": {"max_steps": 3, "batch_size": 8, "num_generations": 4, "max_new_tokens": 12, "eval_limit": 8,
              "eval_samples_per_prompt": 1, "qa_limit": 8},
    "tiny": {},
    "small": {"max_steps": 200, "batch_size": 64, "num_generations": 8, "max_new_tokens": 128, "max_length": 512,
              "learning_rate": 1e-5},
    "gpt2": {"max_steps": 300, "batch_size": 64, "num_generations": 8, "max_new_tokens": 256, "max_length": 1024,
             "learning_rate": 5e-6},
}


def config_for(method: str, preset: str = "tiny", **overrides) -> MethodConfig:
    return configure(MethodConfig, PRESETS, preset, {"method": method, **overrides})


def run(config: MethodConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    """Train the SFT policy with `config.method` and write RUN_DIR/<method>. `callbacks`: objects with `on_log(record)`."""
    from llmkit import training
    from llmkit.evaluate import evaluate_policy
    from llmkit.model import load_causal_lm
    from llmkit.reward_model import RewardModel

    run_dir = Path(run_dir)
    out = runs.Stage(run_dir, config.output_name, overwrite, resumable=True)
    if out.reusable:
        return out.reuse()
    inputs = read_inputs(config, run_dir)  # bad input writes nothing
    pairs = (read_preferences(config.preferences or bundled_path("preferences_train.jsonl"), config.preference_format,
                              rejects=inputs.rejects) if config.method == "dpo" else None)
    prompts, prompts_cut = (fit_prompts(config, inputs.policy_dir, inputs.prompts) if config.method != "dpo"
                            else (inputs.prompts, 0))
    with out:
        resume = out.same_config(config)  # a killed run of this config left checkpoints: go on from the last
        inputs.rejects.write(out.work)
        log = runs.LogWriter(out.work / "log.jsonl", callbacks)
        trainer, tokenizer = build_trainer(config, inputs.policy_dir, inputs.rm_dir, prompts, pairs, out.work, progress)
        trainer.add_callback(training.log_callback(log, LOG_NAMES))
        start = time.perf_counter()
        resumed_from = training.train(trainer, out.work, log, resume)
        train_seconds = time.perf_counter() - start
        model = training.save_trained(trainer, tokenizer, out.work)
        if model is None:  # under several processes the main one saves and evaluates
            return runs.StageResult(out.name, out.final, {})
        device = next(model.parameters()).device
        oracle = None
        if inputs.closed_world:
            from llmkit.oracle import Oracle

            oracle = Oracle()
        evaluation = evaluate_policy(model, load_causal_lm(inputs.policy_dir, device), tokenizer,
                                     RewardModel.load(inputs.rm_dir, device), inputs.eval_prompts, config,
                                     inputs.policy_dir, oracle)
        write_jsonl(out.work / "eval_samples.jsonl", evaluation.pop("rows"))
        metrics = {"method": config.method, "policy_model": str(inputs.policy_dir), "reward_model": str(inputs.rm_dir),
                   "steps": trainer.state.global_step, "train_seconds": train_seconds,
                   "seconds_per_step": train_seconds / max(1, trainer.state.global_step),
                   "rejected_rows": len(inputs.rejects.rows), "prompts_cut": prompts_cut,
                   "resumed_from_step": resumed_from, **evaluation}
        save_curves(out.work)
        return out.commit(config, metrics)


# TRL's log names -> llmkit's, beside training.LOG_NAMES
LOG_NAMES = (("reward", "reward"), ("rewards/chosen", "reward_chosen"), ("rewards/margins", "reward_margin"),
             ("rewards/accuracies", "reward_accuracy"), ("kl", "kl"), ("completions/mean_length", "response_length"),
             ("entropy", "entropy"), ("clip_ratio/region_mean", "clipfrac"))


def fit_prompts(config: MethodConfig, policy_dir: Path, prompts: list) -> tuple[list, int]:
    """(the prompts, how many were cut): TRL 1.16 does not cut prompts, so those too long for the policy's context
    beside an answer lose their oldest turns (`llmkit.generation.fit_messages`)."""
    from transformers import AutoConfig, AutoTokenizer

    from llmkit.generation import context_length, fit_messages

    context = context_length(AutoConfig.from_pretrained(policy_dir, local_files_only=True))
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    return fit_messages(tokenizer, prompts, context - min(config.max_new_tokens, context // 2))


def build_trainer(config: MethodConfig, policy_dir: Path, rm_dir: Path, prompts: list, pairs: list | None, work: Path,
                  progress: bool = False):
    """(the TRL trainer for `config.method`, the policy's tokenizer), set up for this machine and llmkit's budget."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from llmkit import training
    from llmkit.generation import context_length
    from llmkit.model import load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    policy = load_causal_lm(policy_dir)
    per_process, _ = runs.split_batch(config.batch_size, None, runs.world_size())  # the same global batch on N
    args = training.trainer_arguments(config, work, progress, per_process, max_steps=config.max_steps,
                                      lr_scheduler_type="constant", logging_steps=1,
                                      **training.checkpointing(config.save_every))
    if config.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=policy, args=DPOConfig(**args, beta=config.beta, max_length=config.max_length),
                             train_dataset=Dataset.from_list(fit_pairs(tokenizer, pairs)), processing_class=tokenizer)
        return training.quiet(training.check_sharding(trainer)), tokenizer
    import torch
    from accelerate import PartialState

    from llmkit.reward_model import RewardModel

    rm = RewardModel.load(rm_dir, PartialState(cpu=not torch.cuda.is_available()).device)  # either head, on this process's device

    def reward_model(prompts, completions, **_):  # TRL's custom-reward-function interface
        return rm.score(prompts, [c[-1]["content"] if isinstance(c, list) else c for c in completions])

    dataset = Dataset.from_list([{"prompt": as_messages(p)} for p in prompts])
    kwargs = dict(**args, num_generations=config.num_generations,
                  max_completion_length=min(config.max_new_tokens, context_length(policy) // 2),
                  temperature=config.temperature, beta=config.beta)
    if config.method == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    trainer = Trainer(model=policy, reward_funcs=[reward_model], args=Config(**kwargs), train_dataset=dataset,
                      processing_class=tokenizer)
    return training.quiet(training.check_sharding(trainer)), tokenizer

