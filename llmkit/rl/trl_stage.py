"""An RL stage on a TRL trainer: what GRPO, RLOO, DPO, KTO and ORPO share, so that each stage module holds only its
method. Every one of them runs at PPO's budget and writes the same folder, evaluated as PPO is
(`llmkit.measures`, "policy"), so the methods compare directly (the loss lab).

- the methods that *sample* (GRPO, RLOO) get their prompts as messages cut to fit the context beside an answer,
  and TRL's reward-function interface: the reward model, the verifier, or both; on the closed world also the
  oracle's score of every sampled answer, with weight 0 (watched, not trained on: a reward that rises while the
  oracle's score falls is reward hacking);
- the methods that learn from *pairs* (DPO, KTO, ORPO) get the pairs in TRL's conversational format;
- all of them: the trainer's arguments as llmkit sets them (`llmkit.training`), its log in llmkit's names, a
  resume from the newest checkpoint, the trained policy saved as a plain checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoTokenizer

from llmkit import runs, training
from llmkit.chat_format import fit_pairs
from llmkit.formats import as_messages
from llmkit.generation import context_length, fit_messages
from llmkit.loaders import Rejects
from llmkit.model import load_causal_lm
from llmkit.oracle import Oracle
from llmkit.reward_model import RewardModel
from llmkit.rl import inputs
from llmkit.verifier import completion_text, verifier_reward

# TRL's log names -> llmkit's, beside training.LOG_NAMES (the RL health checks read these: llmkit.rl.health)
LOG_NAMES = (("reward", "reward"), ("rewards/chosen", "reward_chosen"), ("rewards/margins", "reward_margin"),
             ("rewards/accuracies", "reward_accuracy"), ("kl", "kl"), ("completions/mean_length", "response_length"),
             ("entropy", "entropy"), ("clip_ratio/region_mean", "clipfrac"), ("cispo_clip_ratio", "clipfrac"),
             ("frac_reward_zero_std", "zero_std_groups"), ("completions/clipped_ratio", "cut_at_cap"),
             ("rewards/oracle/mean", "oracle_score"), ("rewards/verifier/mean", "verifier_reward"),
             ("rewards/reward_model/mean", "rm_reward"), ("log_odds_ratio", "log_odds_ratio"))


def loss_types(trl_config: type) -> tuple[str, ...]:
    """The loss types the installed TRL's trainer config documents (() where it has none to choose from)."""
    fields = {f.name: f for f in dataclasses.fields(trl_config)}
    if "loss_type" not in fields:
        return ()
    meta = fields["loss_type"].metadata
    if meta.get("choices"):
        return tuple(meta["choices"])
    listing = re.split(r"\.\s", meta.get("help", "").split("values are", 1)[-1], maxsplit=1)[0]
    return tuple(dict.fromkeys(re.findall(r"'(\w+)'", listing)))


def check_loss_type(config, trl_config: type) -> None:
    """A loss the installed TRL does not have: an error before anything is written."""
    if config.loss_type is not None:
        known = loss_types(trl_config)
        if config.loss_type not in known:
            raise runs.StageError(f"loss_type={config.loss_type!r}: TRL's {config.STAGE.upper()} has "
                                  + (f"these: {', '.join(known)}" if known else "no loss types to choose from"))


def inputs_reader(trl_config: type):
    """A TRL method's `read_inputs`: the loss type checked against the installed TRL's, then the RL inputs
    (`llmkit.rl.inputs`)."""
    def read_inputs(config, run_dir: Path, rejects: Rejects) -> inputs.RLInputs:
        check_loss_type(config, trl_config)
        return inputs.read_inputs(config, run_dir, rejects)

    return read_inputs


def arguments(config, work, **specific) -> dict:
    """The TRL config's keyword arguments every RL stage sets alike: the global batch on any number of processes,
    a constant learning rate, a log record every step, checkpoints every `save_every` steps."""
    per_process, _ = runs.split_batch(config.batch_size, None, runs.world_size())  # the same global batch on N
    if getattr(config, "loss_type", None) is not None:
        specific = {"loss_type": config.loss_type, **specific}
    return training.trainer_arguments(config, work.dir, work.progress, per_process, max_steps=config.max_steps,
                                      lr_scheduler_type="constant", logging_steps=1,
                                      max_grad_norm=config.max_grad_norm, **training.checkpointing(config.save_every),
                                      **specific)


# ---- the methods that sample ------------------------------------------------------------------------
def reward_functions(config, rm_dir: Path | None, closed_world: bool) -> tuple[list, list[float]]:
    """(TRL reward functions, their weights) for `config.reward`. Each function is named as TRL logs it
    (rewards/<name>/mean): reward_model, verifier, and on the closed world oracle, with weight 0 — watched, not
    trained on."""
    funcs, weights = [], []
    if config.reward in ("model", "both"):
        rm = RewardModel.load(rm_dir, PartialState(cpu=not torch.cuda.is_available()).device)  # either head

        def reward_model(prompts, completions, **_):
            return rm.score(prompts, [completion_text(c) for c in completions])

        funcs.append(reward_model)
        weights.append(1.0)
    if config.reward in ("verifier", "both"):
        def verifier(prompts, completions, answer, **_):
            return verifier_reward(prompts, completions, answer)

        funcs.append(verifier)
        weights.append(1.0)
    elif closed_world:
        truth = Oracle()

        def oracle(prompts, completions, **_):
            return [truth.score(p, completion_text(c)) for p, c in zip(prompts, completions)]

        funcs.append(oracle)
        weights.append(0.0)
    return funcs, weights


def sampling_trainer(trainer_class: type, trl_config: type, config, inputs, work, **specific):
    """(a GRPO or RLOO trainer on the policy, its tokenizer, how many prompts were cut to fit the context). TRL 1.16
    does not cut prompts, so those too long for the policy's context beside an answer lose their oldest turns
    (`llmkit.generation.fit_messages`)."""
    tokenizer = AutoTokenizer.from_pretrained(inputs.policy_dir, local_files_only=True)
    policy = load_causal_lm(inputs.policy_dir)
    context = context_length(policy)
    answer = min(config.max_new_tokens, context // 2)
    prompts, cut = fit_messages(tokenizer, inputs.prompts, context - answer)
    funcs, weights = reward_functions(config, inputs.rm_dir, work.closed_world)
    rows = [{"prompt": as_messages(p)} for p in prompts]
    if inputs.answers is not None:
        rows = [{**row, "answer": a} for row, a in zip(rows, inputs.answers)]
    args = arguments(config, work, num_generations=config.num_generations, reward_weights=weights,
                     max_completion_length=answer,
                     temperature=config.temperature, beta=config.beta, **specific)
    trainer = trainer_class(model=policy, reward_funcs=funcs, args=trl_config(**args),
                            train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    return training.quiet(training.check_sharding(trainer)), tokenizer, cut


# ---- the methods that learn from pairs ----------------------------------------------------------------
def pairs_trainer(trainer_class: type, trl_config: type, config, inputs, work, make_rows=list, **specific):
    """(a DPO, KTO or ORPO trainer on the policy and the pairs — or on the rows `make_rows` makes of them —, its
    tokenizer)."""
    tokenizer = AutoTokenizer.from_pretrained(inputs.policy_dir, local_files_only=True)
    rows = make_rows(fit_pairs(tokenizer, inputs.pairs))
    args = arguments(config, work, beta=config.beta, max_length=config.max_length, **specific)
    trainer = trainer_class(model=load_causal_lm(inputs.policy_dir), args=trl_config(**args),
                            train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    return training.quiet(training.check_sharding(trainer)), tokenizer


def train(trainer, tokenizer, config, work, prompts_cut: int = 0) -> dict:
    """Train (resumed from the newest checkpoint when a killed run of this config left one) and save the policy;
    what it did, for metrics.json."""
    trainer.add_callback(training.log_callback(work.log, LOG_NAMES))
    start = time.perf_counter()
    resumed_from = training.train(trainer, work.dir, work.log, work.resume)
    train_seconds = time.perf_counter() - start
    if training.save_trained(trainer, tokenizer, work.dir) is None:
        return {}  # under several processes the main one saves, and the run layer measures what it saved
    steps = trainer.state.global_step
    return {"method": config.STAGE, "reward": getattr(config, "reward", "pairs"),
            "loss_type": getattr(config, "loss_type", None), "steps": steps, "train_seconds": train_seconds,
            "seconds_per_step": train_seconds / max(1, steps), "prompts_cut": prompts_cut,
            "resumed_from_step": resumed_from}
