"""GRPO, RLOO, DPO and KTO through TRL, with PPO's run-folder contract so the five compare directly.

- **GRPO** (`GRPOTrainer`): several samples per prompt; each sample's advantage is its reward minus the group's
  mean (divided by the group's std); no value model. TRL's default β = 0 (no KL term); llmkit sets β so the
  comparison with PPO is at a stated KL coefficient.
- **RLOO** (`RLOOTrainer`): REINFORCE with a leave-one-out baseline — each sample's reward minus the mean
  reward of the *other* samples of its prompt — and a KL penalty to the reference.
- **DPO** (`DPOTrainer`): no reward model and no sampling; it fits the policy directly to the preference
  pairs, with the implicit reward β · log(π_θ / π_ref). `loss_type` picks TRL's loss: sigmoid (DPO), ipo,
  sigmoid_norm (length-normalised), ...
- **KTO** (`KTOTrainer`): the pairs taken apart into answers marked good or bad, each judged on its own against a
  reference point (Ethayarajh et al., 2024): data that needs no pairing.

GRPO and RLOO are rewarded through TRL's reward-function interface by the trained reward model (`reward="model"`),
by a rule that checks each answer's final line against the row's answer (`reward="verifier"`, `llmkit.verifier`:
RL with verifiable rewards, on the bundled tasks by default) or by their sum. GRPO's `loss_type` picks how token
losses are averaged and clipped (grpo, dr_grpo, dapo, cispo, ...), and `importance_sampling_level="sequence"` is
GSPO's one ratio per answer. On the closed world the oracle's score of every sampled answer is logged beside the
reward (a reward function of weight 0): a reward that rises while the oracle's score falls is reward hacking. Every
run writes RUN_DIR/<method>/ with the policy checkpoint and the same evaluation as PPO
(`llmkit.evaluate.evaluate_policy`): RM and oracle scores against the SFT policy, oracle win-rate, KL per token,
response length and QA — and with the verifier, exact-answer accuracy on held-out tasks against SFT's, with its
95 % interval — and the RL health checks of `llmkit.rl.health`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from llmkit import runs
from llmkit.chat_format import fit_pairs
from llmkit.config import MAX_BAD_ROWS_HELP, SAVE_EVERY_HELP, StageConfig, configure, option
from llmkit.curves import save_curves
from llmkit.formats import PREFERENCE_FORMATS, as_messages, read_preferences
from llmkit.loaders import bundled_path, read_jsonl, write_jsonl
from llmkit.rl import health
from llmkit.rl.inputs import REWARD_HELP, REWARDS, read_inputs
from llmkit.verifier import completion_text, verifier_reward

METHODS = ("grpo", "rloo", "dpo", "kto")
SAMPLING = ("grpo", "rloo")  # sample answers and reward them; DPO and KTO learn from the preference pairs


@dataclass
class MethodConfig(StageConfig):
    method: str = option("grpo", "grpo, rloo, dpo or kto", choices=METHODS, cli=False)
    policy_model: str | None = option(None, "the policy to start from (default: RUN_DIR/sft)")
    reward_model: str | None = option(None, "the reward model (default: RUN_DIR/reward); GRPO and RLOO train "
                                            "against it, and every method is evaluated with it")
    reward: str = option("model", "GRPO/RLOO: " + REWARD_HELP, choices=REWARDS)
    prompts: str | None = option(None, "GRPO/RLOO prompts: rows with a `prompt`, conversations in any chat format, "
                                       "or instructions (default: the bundled RL prompts); with the verifier, rows "
                                       "with a prompt and an answer")
    preferences: str | None = option(None, "DPO's preference pairs (default: the bundled pairs)")
    preference_format: str = option("auto", "format of the DPO pairs (auto: detected)",
                                    choices=("auto", *PREFERENCE_FORMATS))
    eval_prompts: str | None = option(None, "prompts to evaluate on (default: the bundled held-out RL prompts; with "
                                            "the verifier, a tenth of --prompts, or the bundled held-out tasks)")
    loss_type: str | None = option(None, "TRL's loss: GRPO grpo, dr_grpo, dapo, bnpo, cispo, ... (default dapo); "
                                         "DPO sigmoid, ipo, sigmoid_norm, ... (default sigmoid); KTO kto or "
                                         "apo_zero_unpaired")
    importance_sampling_level: str = option("token", "GRPO: the policy ratio per token, or one per answer "
                                                     "(sequence: GSPO)", choices=("token", "sequence"))
    max_bad_rows: float = option(0.01, MAX_BAD_ROWS_HELP)
    max_steps: int = option(40, "optimizer steps (PPO's default budget)")
    batch_size: int = option(32, "completions (GRPO/RLOO) or pairs (DPO) per step, over all devices")
    num_generations: int = option(4, "samples per prompt (GRPO/RLOO)")
    max_new_tokens: int = option(40, "tokens per answer at most (GRPO/RLOO, and the evaluation)")
    max_length: int = option(256, "DPO/KTO: tokens per prompt and answer")
    temperature: float = option(0.7, "sampling temperature")
    learning_rate: float = option(2e-5, "the policy's learning rate (as PPO's)")
    beta: float = option(0.1, "KL coefficient (GRPO: in the loss; RLOO: in the reward) or DPO's β")
    save_every: int = option(10, SAVE_EVERY_HELP)
    eval_limit: int = option(100, "held-out prompts for the final evaluation")
    task_eval_limit: int | None = option(None, "with the verifier: held-out tasks to measure accuracy on (default: "
                                               "all; 400 bundled)")
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
              "eval_samples_per_prompt": 1, "qa_limit": 8, "task_eval_limit": 8},
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
    check_options(config)
    inputs = read_inputs(config, run_dir)  # bad input writes nothing
    pairs = (read_preferences(config.preferences or bundled_path("preferences_train.jsonl"), config.preference_format,
                              rejects=inputs.rejects) if config.method not in SAMPLING else None)
    prompts, prompts_cut = (fit_prompts(config, inputs.policy_dir, inputs.prompts) if config.method in SAMPLING
                            else (inputs.prompts, 0))
    with out:
        resume = out.same_config(config)  # a killed run of this config left checkpoints: go on from the last
        inputs.rejects.write(out.work)
        log = runs.LogWriter(out.work / "log.jsonl", callbacks)
        trainer, tokenizer = build_trainer(config, inputs.policy_dir, inputs.rm_dir, prompts, pairs, out.work, progress,
                                           answers=inputs.answers, closed_world=inputs.closed_world)
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
        rm = RewardModel.load(inputs.rm_dir, device) if inputs.rm_dir is not None else None
        evaluation = evaluate_policy(model, load_causal_lm(inputs.policy_dir, device), tokenizer, rm,
                                     inputs.eval_prompts, config, inputs.policy_dir, oracle, inputs.eval_answers,
                                     inputs.more_eval)
        write_jsonl(out.work / "eval_samples.jsonl", evaluation.pop("rows"))
        if "task_rows" in evaluation:
            write_jsonl(out.work / "task_samples.jsonl", evaluation.pop("task_rows"))
        checks, warnings = health.check(read_jsonl(out.work / "log.jsonl"))
        metrics = {"method": config.method, "reward": config.reward if config.method in SAMPLING else "pairs",
                   "loss_type": config.loss_type, "policy_model": str(inputs.policy_dir),
                   "reward_model": str(inputs.rm_dir) if inputs.rm_dir else None,
                   "steps": trainer.state.global_step, "train_seconds": train_seconds,
                   "seconds_per_step": train_seconds / max(1, trainer.state.global_step),
                   "rejected_rows": len(inputs.rejects.rows), "prompts_cut": prompts_cut,
                   "resumed_from_step": resumed_from, **checks, **evaluation}
        metrics["warnings"] = evaluation.get("warnings", []) + warnings
        save_curves(out.work)
        return out.commit(config, metrics)


# TRL's log names -> llmkit's, beside training.LOG_NAMES (the RL health checks read these: llmkit.rl.health)
LOG_NAMES = (("reward", "reward"), ("rewards/chosen", "reward_chosen"), ("rewards/margins", "reward_margin"),
             ("rewards/accuracies", "reward_accuracy"), ("kl", "kl"), ("completions/mean_length", "response_length"),
             ("entropy", "entropy"), ("clip_ratio/region_mean", "clipfrac"), ("cispo_clip_ratio", "clipfrac"),
             ("frac_reward_zero_std", "zero_std_groups"), ("completions/clipped_ratio", "cut_at_cap"),
             ("rewards/oracle/mean", "oracle_score"), ("rewards/verifier/mean", "verifier_reward"),
             ("rewards/reward_model/mean", "rm_reward"))


# cispo's upper bound on the importance weight (ε_max), the value TRL's GRPOConfig recommends from the ScaleRL paper
CISPO_EPSILON_MAX = 5.0


def loss_types(method: str) -> tuple[str, ...]:
    """The loss types of the installed TRL's trainer for `method`, as its config documents them (() for RLOO)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(trl_config(method))}
    if "loss_type" not in fields:
        return ()
    meta = fields["loss_type"].metadata
    if meta.get("choices"):
        return tuple(meta["choices"])
    listing = re.split(r"\.\s", meta.get("help", "").split("values are", 1)[-1], maxsplit=1)[0]
    return tuple(dict.fromkeys(re.findall(r"'(\w+)'", listing)))


def trl_config(method: str):
    import trl

    return getattr(trl, {"grpo": "GRPOConfig", "rloo": "RLOOConfig", "dpo": "DPOConfig", "kto": "KTOConfig"}[method])


def check_options(config: MethodConfig) -> None:
    """A loss TRL does not have, or a reward for a method that samples none: an error before anything is written."""
    if config.loss_type is not None:
        known = loss_types(config.method)
        if config.loss_type not in known:
            raise runs.StageError(f"loss_type={config.loss_type!r}: TRL's {config.method.upper()} has "
                                  + (f"these: {', '.join(known)}" if known else "no loss types to choose from"))
    if config.method not in SAMPLING and config.reward != "model":
        raise runs.StageError(f"reward={config.reward!r}: {config.method.upper()} learns from preference pairs, not "
                              f"from a reward; the methods that sample answers and reward them: {', '.join(SAMPLING)}")
    if config.importance_sampling_level != "token" and config.method != "grpo":
        raise runs.StageError("importance_sampling_level is GRPO's (sequence: GSPO)")


def fit_prompts(config: MethodConfig, policy_dir: Path, prompts: list) -> tuple[list, int]:
    """(the prompts, how many were cut): TRL 1.16 does not cut prompts, so those too long for the policy's context
    beside an answer lose their oldest turns (`llmkit.generation.fit_messages`)."""
    from transformers import AutoConfig, AutoTokenizer

    from llmkit.generation import context_length, fit_messages

    context = context_length(AutoConfig.from_pretrained(policy_dir, local_files_only=True))
    tokenizer = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    return fit_messages(tokenizer, prompts, context - min(config.max_new_tokens, context // 2))


def reward_functions(config: MethodConfig, rm_dir: Path | None, closed_world: bool) -> tuple[list, list[float]]:
    """(TRL reward functions, their weights) for `config.reward`. Each function is named as TRL logs it
    (rewards/<name>/mean): reward_model, verifier, and on the closed world oracle, with weight 0 — watched, not
    trained on."""
    funcs, weights = [], []
    if config.reward in ("model", "both"):
        import torch
        from accelerate import PartialState

        from llmkit.reward_model import RewardModel

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
        from llmkit.oracle import Oracle

        truth = Oracle()

        def oracle(prompts, completions, **_):
            return [truth.score(p, completion_text(c)) for p, c in zip(prompts, completions)]

        funcs.append(oracle)
        weights.append(0.0)
    return funcs, weights


def build_trainer(config: MethodConfig, policy_dir: Path, rm_dir: Path | None, prompts: list, pairs: list | None,
                  work: Path, progress: bool = False, answers: list | None = None, closed_world: bool = False):
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
    if config.loss_type is not None:
        args["loss_type"] = [config.loss_type] if config.method == "dpo" else config.loss_type
    Config = trl_config(config.method)
    if config.method == "dpo":
        from trl import DPOTrainer

        trainer = DPOTrainer(model=policy, args=Config(**args, beta=config.beta, max_length=config.max_length),
                             train_dataset=Dataset.from_list(fit_pairs(tokenizer, pairs)), processing_class=tokenizer)
        return training.quiet(training.check_sharding(trainer)), tokenizer
    if config.method == "kto":
        from trl import KTOTrainer

        trainer = KTOTrainer(model=policy, args=Config(**args, beta=config.beta, max_length=config.max_length),
                             train_dataset=Dataset.from_list(unpaired(fit_pairs(tokenizer, pairs))),
                             processing_class=tokenizer)
        return training.quiet(training.check_sharding(trainer)), tokenizer
    funcs, weights = reward_functions(config, rm_dir, closed_world)
    rows = [{"prompt": as_messages(p)} for p in prompts]
    if answers is not None:
        rows = [{**row, "answer": a} for row, a in zip(rows, answers)]
    kwargs = dict(**args, num_generations=config.num_generations, reward_weights=weights,
                  max_completion_length=min(config.max_new_tokens, context_length(policy) // 2),
                  temperature=config.temperature, beta=config.beta)
    if config.method == "grpo":
        from trl import GRPOTrainer as Trainer

        kwargs["importance_sampling_level"] = config.importance_sampling_level
        if config.loss_type == "cispo":  # TRL's cispo clips the importance weight at epsilon_high, which otherwise
            kwargs["epsilon_high"] = CISPO_EPSILON_MAX  # is epsilon's 0.2: every weight, ~1 on-policy, becomes 0.2
    else:
        from trl import RLOOTrainer as Trainer
    trainer = Trainer(model=policy, reward_funcs=funcs, args=Config(**kwargs), train_dataset=Dataset.from_list(rows),
                      processing_class=tokenizer)
    return training.quiet(training.check_sharding(trainer)), tokenizer


def unpaired(pairs: list[dict]) -> list[dict]:
    """KTO's rows from preference pairs: each pair's chosen answer marked good and its rejected answer bad."""
    return [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in pairs for side in ("chosen", "rejected")]
