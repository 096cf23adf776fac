"""GRPO, RLOO and DPO through TRL, with PPO's run-folder contract so the four compare directly.

- **GRPO** (`GRPOTrainer`): several samples per prompt; each sample's advantage is its reward minus the group's
  mean (divided by the group's std); no value model. TRL's default β = 0 (no KL term); llmkit sets β so the
  comparison with PPO is at a stated KL coefficient.
- **RLOO** (`RLOOTrainer`): REINFORCE with a leave-one-out baseline — each sample's reward minus the mean
  reward of the *other* samples of its prompt — and a KL penalty to the reference.
- **DPO** (`DPOTrainer`): no reward model and no sampling; it fits the policy directly to the preference
  pairs, with the implicit reward β · log(π_θ / π_ref).

GRPO and RLOO are rewarded by the trained reward model (TRL calls it as a one-output classifier). Every run
writes RUN_DIR/<method>/ with the policy checkpoint and the same evaluation as PPO (`ppo.compare_policies`):
RM and oracle scores against the SFT policy, oracle win-rate, KL per token, response length, and QA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit import runs
from llmkit.curves import save_curves
from llmkit.formats import read_preferences
from llmkit.launch import gathered_model
from llmkit.loaders import bundled_path, write_jsonl
from llmkit.rl import ppo

METHODS = ("grpo", "rloo", "dpo")


@dataclass
class MethodConfig:
    method: str = "grpo"  # grpo, rloo or dpo
    policy_model: str | None = None  # None: RUN_DIR/sft
    reward_model: str | None = None  # None: RUN_DIR/reward (GRPO, RLOO; also used to evaluate DPO)
    prompts: str | None = None  # GRPO/RLOO prompts; None: the bundled RL prompts
    preferences: str | None = None  # DPO pairs; None: the bundled preference pairs
    eval_prompts: str | None = None
    steps: int = 40  # optimizer steps (PPO's default budget)
    batch_size: int = 32  # completions (GRPO/RLOO) or pairs (DPO) per step
    num_generations: int = 4  # samples per prompt (GRPO/RLOO)
    max_new_tokens: int = 40
    temperature: float = 0.7
    learning_rate: float = 2e-5  # as PPO
    beta: float = 0.1  # KL coefficient (GRPO: in the loss; RLOO: in the reward) / DPO's β
    eval_limit: int = 100
    eval_samples_per_prompt: int = 4  # as PPO's evaluation
    qa_limit: int | None = None  # as PPO: every QA question
    closed_world: bool | None = None
    seed: int = 0


STEP_PRESETS = {"smoke": {"steps": 3, "batch_size": 8, "num_generations": 4, "max_new_tokens": 12, "eval_limit": 8,
                          "eval_samples_per_prompt": 1, "qa_limit": 8}}


def config_for(method: str, preset: str = "tiny", **overrides) -> MethodConfig:
    base = STEP_PRESETS.get(preset, {})
    return MethodConfig(**{**base, "method": method, **overrides})


def run(config: MethodConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    if config.method not in METHODS:
        raise ppo.PPOError(f"method={config.method!r}; accepted: {', '.join(METHODS)}")
    run_dir = Path(run_dir)
    stage = config.method
    done = runs.stage_dir(run_dir, stage)
    if runs.finished(done) and not overwrite:
        return runs.StageResult(stage, done, runs.read_metrics(done), reused=True)
    policy_dir, rm_dir, prompts, eval_prompts = ppo.resolve_inputs(config, run_dir)
    pairs = read_preferences(config.preferences or bundled_path("preferences_train.jsonl")) if stage == "dpo" else None
    final, work = runs.reuse_or_start(run_dir, stage, overwrite)
    if work is None:
        return runs.StageResult(stage, final, runs.read_metrics(final), reused=True)
    try:
        return _train(config, policy_dir, rm_dir, prompts, eval_prompts, pairs, final, work, progress, callbacks)
    except BaseException:
        runs.abandon(work)
        raise


def build_trainer(config: MethodConfig, policy_dir: Path, rm_dir: Path, prompts: list, pairs: list | None, work: Path,
                  progress: bool = False, callbacks: tuple = ()):
    """The TRL trainer for `config.method`, set up for this machine (CPU or GPU) and llmkit's budget."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, local_files_only=True, dtype=torch.float32)
    per_process, _ = runs.split_batch(config.batch_size, None, runs.world_size())  # the same global batch on N
    common = dict(output_dir=str(work / "trainer"), max_steps=config.steps, learning_rate=config.learning_rate,
                  lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[], seed=config.seed,
                  data_seed=config.seed, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
                  gradient_checkpointing=False, disable_tqdm=not progress, dataloader_num_workers=0)
    if config.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, per_device_train_batch_size=per_process, beta=config.beta,
                         max_length=256)
        trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                             callbacks=list(callbacks))
    else:
        from accelerate import PartialState

        from llmkit.reward import RewardModel

        rm = RewardModel.load(rm_dir, PartialState(cpu=not cuda).device)  # either head, on this process's device

        def reward_model(prompts, completions, **_):  # TRL's custom-reward-function interface
            return rm.score(prompts, [c[-1]["content"] if isinstance(c, list) else c for c in completions])

        dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}] if isinstance(p, str) else p}
                                     for p in prompts])
        kwargs = dict(**common, per_device_train_batch_size=per_process, num_generations=config.num_generations,
                      max_completion_length=config.max_new_tokens, temperature=config.temperature, beta=config.beta)
        if config.method == "grpo":
            from trl import GRPOConfig as Config
            from trl import GRPOTrainer as Trainer
        else:
            from trl import RLOOConfig as Config
            from trl import RLOOTrainer as Trainer
        trainer = Trainer(model=policy, reward_funcs=[reward_model], args=Config(**kwargs), train_dataset=dataset,
                          processing_class=tokenizer, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer


def _train(config, policy_dir, rm_dir, prompts, eval_prompts, pairs, final, work, progress, callbacks):
    from llmkit.oracle import Oracle
    from llmkit.reward import RewardModel
    from llmkit.sft import _LogBridge

    names = (("reward", "reward"), ("rewards/chosen", "reward_chosen"), ("rewards/margins", "reward_margin"),
             ("rewards/accuracies", "reward_accuracy"), ("kl", "kl"), ("completions/mean_length", "response_length"),
             ("entropy", "entropy"), ("clip_ratio/region_mean", "clipfrac"))
    log = _LogBridge(work / "log.jsonl", callbacks, extra=names)
    trainer, tokenizer = build_trainer(config, policy_dir, rm_dir, prompts, pairs, work, progress, [log.trainer_callback()])
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    model = gathered_model(trainer)
    if model is None:  # under several processes the main one saves and evaluates
        return runs.StageResult(final.name, final, {})
    model = model.float().eval()
    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)
    closed_world = config.closed_world if config.closed_world is not None else config.prompts is None
    oracle = Oracle() if closed_world else None
    device = next(model.parameters()).device
    rm = RewardModel.load(rm_dir, device)
    reference = ppo._load_causal(policy_dir, device)
    eval_cfg = ppo.PPOConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed,
                             eval_samples_per_prompt=config.eval_samples_per_prompt)
    comparison = ppo.compare_policies(model, reference, tokenizer, rm, eval_prompts, eval_cfg, oracle)
    write_jsonl(work / "eval_samples.jsonl", comparison.pop("rows"))
    metrics = {"method": config.method, "policy_model": str(policy_dir), "reward_model": str(rm_dir),
               "steps": trainer.state.global_step, "train_seconds": train_seconds,
               "seconds_per_step": train_seconds / max(1, trainer.state.global_step), **comparison}
    if closed_world:
        metrics.update(ppo._qa(model, reference, tokenizer, config.qa_limit, policy_dir))
    save_curves(work)
    return runs.commit(work, final, config, metrics)
