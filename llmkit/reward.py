"""Reward model: a scorer of answers trained on preference pairs, on TRL's `RewardTrainer`.

The SFT model gets a scalar head (`AutoModelForSequenceClassification`, one output read at the last token of
the rendered conversation) and learns from pairs where people preferred one answer to another (Bradley–Terry):

    loss = − mean over pairs of log σ( r(prompt, chosen) − r(prompt, rejected) )

so only differences of scores mean anything. A small `center_rewards_coefficient` keeps the scores near zero.

Two heads (`RewardConfig.head`):
- "last_token": the classic one above, r = w · h_last.
- "likelihood" (default): the classic head plus what the SFT model itself knows, token by token:

      r(prompt, answer) = w · h_last  +  Σ over answer tokens t of  g_t · max(log p_SFT(token_t | before it), −5)

  where log p_SFT comes from a frozen copy of the SFT model (the *reference*) and g_t = softplus(gate(h_t)) ≥ 0
  is a weight the RM learns per position (the floor: see `LikelihoodRewardModel`). A token the SFT model finds
  surprising — a wrong birth year, a town it never saw with this person — costs reward where the gate says that
  position matters. A last-token head alone has to carry that fact check through its final hidden state, which a
  small model does badly: on the closed world it judged style pairs perfectly but right-vs-wrong facts at 0.6–0.7
  (pairwise accuracy 0.78, the likelihood head 0.97; BENCHMARKS.md).

The result is a checkpoint folder (the classifier as a plain transformers model; for the likelihood head also
`reference/` and the gate), and `llmkit.reward_model.RewardModel.load(folder).score(prompts, responses)` is
what RL and the chat app call.

Training data: the bundled closed-world pairs (or any file in formats.PREFERENCE_FORMATS — explicit prompt,
implicit prompt, Anthropic-HH transcripts) plus the labels people made in the annotation app
(RUN_DIR/labels.jsonl; ties and "both bad" are left out). Measured: pairwise accuracy and mean margin on the
eval split, and — on the closed world — how often the RM orders two fresh answers of the SFT model the way the
oracle does.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llmkit import runs
from llmkit.chat_format import fit_pairs
from llmkit.config import (
    LORA_TARGETS_HELP,
    MAX_BAD_ROWS_HELP,
    SAVE_EVERY_HELP,
    StageConfig,
    configure,
    option,
)
from llmkit.curves import save_curves
from llmkit.formats import PREFERENCE_FORMATS, read_preferences, read_prompts
from llmkit.loaders import DataError, Rejects, bundled_path, write_jsonl

HEADS = ("likelihood", "last_token")


@dataclass
class RewardConfig(StageConfig):
    STAGE: ClassVar[str] = "reward"

    base_model: str | None = option(None, "a local causal-LM folder to put the reward head on (default: RUN_DIR/sft)")
    train_data: str | None = option(None, "preference pairs to train on (default: the bundled closed-world pairs)")
    eval_data: str | None = option(None, "preference pairs to evaluate on (default: the bundled eval split, or 10% "
                                         "of train_data)")
    data_format: str = option("auto", "format of the pairs: explicit (prompt/chosen/rejected), implicit or hh "
                                      "transcripts (auto: detected)", choices=("auto", *PREFERENCE_FORMATS))
    labels: str | None = option(None, "annotation-app labels to train on as well (default: RUN_DIR/labels.jsonl "
                                      "if it exists)")
    max_examples: int | None = option(None, "train on the first N pairs only")
    max_bad_rows: float = option(0.01, MAX_BAD_ROWS_HELP)
    # measured on tiny: 3e-4 (2 epochs) 0.79, 1e-3 (3 epochs) 0.83, 6 epochs overfits (0.82)
    epochs: float = option(2.0, "passes over the pairs")
    max_steps: int = option(-1, "optimizer steps; > 0 overrides epochs")
    learning_rate: float = option(1e-3, "peak learning rate")
    batch_size: int = option(32, "pairs per optimizer step, over all devices")
    micro_batch_size: int | None = option(8, "pairs per forward pass (on average, with balance_lengths)")
    balance_lengths: bool = option(True, "sort each step's pairs by length into micro-batches: less padding, the "
                                         "same loss")
    max_length: int = option(256, "tokens per rendered pair; longer pairs are dropped (TRL does not truncate them)")
    warmup_ratio: float = option(0.05, "fraction of the steps spent warming up")
    center_rewards_coefficient: float | None = option(0.01, "keeps the scores near zero")
    freeze_embeddings: bool = option(False, "full fine-tuning: keep the token embeddings fixed")
    lora: bool = option(False, "train a LoRA adapter (then merged) instead of every weight")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_targets: str | list[str] = option("all-linear", LORA_TARGETS_HELP)
    eval_every: int = option(20, "steps between evaluations")
    save_every: int = option(50, SAVE_EVERY_HELP)
    closed_world: bool | None = option(None, "measure agreement with the oracle on fresh SFT answers (default: when "
                                             "training on the bundled data)")
    oracle_prompts: int = option(100, "held-out prompts (two fresh SFT answers each) to compare the RM and the "
                                      "oracle on")
    mixed_precision: str = option("auto", "auto (bf16 on a GPU that has it), bf16, fp16 or no",
                                  choices=("auto", "bf16", "fp16", "no"))
    head: str = option("likelihood", "likelihood (the last-token head + the SFT model's gated log-probabilities of "
                                     "the answer) or last_token (the classic head alone)", choices=HEADS)
    gate_bias: float = option(-2.0, "likelihood head: each token's weight starts at softplus(gate_bias)")
    logp_floor: float = option(-5.0, "likelihood head: a token's log-probability counts down to here, no lower")
    cache_reference: bool = option(True, "likelihood head: each sequence goes through the frozen reference once, "
                                         "not once per epoch and evaluation")
    seed: int = option(0, "seed of the new head and the data order")


PRESETS: dict[str, dict] = {
    "smoke": {"max_steps": 8, "eval_every": 4, "batch_size": 16, "oracle_prompts": 16, "max_examples": 256},
    "tiny": {},
    "small": {"batch_size": 64, "micro_batch_size": 16, "max_length": 512, "learning_rate": 3e-4, "eval_every": 50},
    "gpt2": {"batch_size": 64, "micro_batch_size": 16, "max_length": 1024, "learning_rate": 1e-4, "eval_every": 100},
}


def config_for(preset: str = "tiny", **overrides) -> RewardConfig:
    return configure(RewardConfig, PRESETS, preset, overrides)


def run(config: RewardConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    """Train the reward model and write RUN_DIR/reward. `callbacks`: objects with `on_log(record)`."""
    from llmkit import training
    from llmkit.reward_model import LikelihoodRewardModel, RewardModel
    from llmkit.tokenizer import load_chat_tokenizer

    run_dir = Path(run_dir)
    out = runs.Stage(run_dir, config.output_name, overwrite, resumable=True)
    if out.reusable:
        return out.reuse()
    base = runs.model_folder(config.base_model, run_dir / "sft", "model to put the reward head on",
                             f"run SFT first (llmkit sft --run-dir {run_dir}) or pass base_model / --base-model")
    tokenizer = load_chat_tokenizer(base)  # the reward model itself is loaded once, by the trainer
    rejects = Rejects(config.max_bad_rows)
    train_rows, eval_rows, n_labels = load_pairs(config, run_dir, rejects)
    with out:
        resume = out.same_config(config)  # a killed run of this config left checkpoints: go on from the last
        rejects.write(out.work)
        log = runs.LogWriter(out.work / "log.jsonl", callbacks)
        trainer = build_trainer(config, tokenizer, base, train_rows, eval_rows, out.work, progress)
        trainer.add_callback(training.log_callback(log, (("accuracy", "accuracy"), ("eval_accuracy", "val_accuracy"),
                                                         ("margin", "margin"), ("eval_margin", "val_margin"))))
        kept = len(trainer.train_dataset)
        trainable, total = training.trainable_parameters(trainer.model)
        likelihood = isinstance(trainer.model, LikelihoodRewardModel)
        if likelihood:
            from accelerate.utils import DistributedType

            if trainer.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
                raise runs.StageError("the likelihood head is not supported under FSDP or DeepSpeed yet: use DDP "
                                      "(configs/accelerate/multi_gpu.yaml) or head='last_token'")
            total -= sum(p.numel() for p in trainer.model.reference.parameters())  # the frozen copy is not the RM's
            trainer.model.reference_cache = {} if config.cache_reference else None
        start = time.perf_counter()
        try:
            resumed_from = training.train(trainer, out.work, log, resume)
        finally:
            if likelihood:
                trainer.model.reference_cache = None  # what scores after training meet is new: nothing to reuse
        train_seconds = time.perf_counter() - start
        model = training.save_trained(trainer, tokenizer, out.work, config.lora)
        if model is None:  # under several processes the main one saves and evaluates
            return runs.StageResult(out.name, out.final, {})

        from llmkit.evaluate import pairwise_accuracy

        rm = RewardModel(model, tokenizer)
        pairs = pairwise_accuracy(rm, eval_rows)
        write_jsonl(out.work / "eval_scores.jsonl", pairs["rows"])
        metrics = {
            "base_model": str(base), "train_pairs": len(train_rows), "train_pairs_used": kept,
            "train_pairs_from_labels": n_labels, "eval_pairs": len(eval_rows), "steps": trainer.state.global_step,
            "train_seconds": train_seconds, "trainable_params": trainable, "total_params": total,
            "eval_accuracy": pairs["accuracy"], "eval_margin": pairs["margin"],
            "method": "lora" if config.lora else "full", "head": config.head, "rejected_rows": len(rejects.rows),
            "resumed_from_step": resumed_from,
        }
        if config.closed_world if config.closed_world is not None else config.train_data is None:
            from llmkit.evaluate import oracle_agreement
            from llmkit.model import load_causal_lm

            prompts = read_prompts(bundled_path("rl_prompts_eval.jsonl"))[: config.oracle_prompts]
            policy = load_causal_lm(base, next(model.parameters()).device)
            agreement = oracle_agreement(rm, policy, prompts, seed=config.seed)
            write_jsonl(out.work / "oracle_pairs.jsonl", agreement.pop("rows"))
            metrics.update(agreement)
        save_curves(out.work)
        return out.commit(config, metrics)


def load_pairs(config: RewardConfig, run_dir: Path, rejects: Rejects | None = None) -> tuple[list[dict], list[dict], int]:
    """(train, eval, how many train pairs came from the annotation app's labels); rows of the user's files that
    cannot be read go to `rejects` (None: the first one stops the read)."""
    from llmkit.labels import export_pairs

    if config.train_data is None:
        train = read_preferences(bundled_path("preferences_train.jsonl"), "explicit")
        evals = (read_preferences(config.eval_data, config.data_format, rejects=rejects) if config.eval_data
                 else read_preferences(bundled_path("preferences_eval.jsonl"), "explicit"))
    else:
        train = read_preferences(config.train_data, config.data_format, rejects=rejects)
        if config.eval_data:
            evals = read_preferences(config.eval_data, config.data_format, rejects=rejects)
        else:
            n_eval = max(1, len(train) // 10) if len(train) > 1 else 0
            train, evals = train[n_eval:], train[:n_eval] or train[:1]
    if config.max_examples is not None:
        if config.max_examples < 1:
            raise DataError(f"max_examples={config.max_examples}: give a positive number of pairs")
        train = train[: config.max_examples]
    labels = Path(config.labels) if config.labels else run_dir / "labels.jsonl"
    from_labels: list[dict] = []
    if config.labels and not labels.exists():
        raise DataError(f"{labels}: no such labels file (labels / --labels)")
    if labels.exists():
        from_labels, _ = export_pairs(labels)
    return train + from_labels, evals, len(from_labels)


def build_trainer(config: RewardConfig, tokenizer, base: Path, train_rows: list[dict], eval_rows: list[dict],
                  work: Path, progress: bool = False):
    """TRL's RewardTrainer on a sequence-classification copy of the base model (LoRA if asked), wrapped in the
    likelihood head if asked."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging
    from trl import RewardConfig as TRLConfig

    from llmkit import training

    micro, accumulation = runs.split_batch(config.batch_size, config.micro_batch_size, runs.world_size())
    torch.manual_seed(config.seed)  # the new score head
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the new head is "missing from the checkpoint": that is the point
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, local_files_only=True,
                                                                   dtype=torch.float32)
    finally:
        transformers_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = training.lora_config(config, "SEQ_CLS", model, modules_to_save=["score"]) if config.lora else None
    if config.freeze_embeddings and not config.lora:
        for p in model.get_input_embeddings().parameters():
            p.requires_grad_(False)
    if config.head == "likelihood":
        from peft import get_peft_model

        from llmkit.model import load_causal_lm
        from llmkit.reward_model import LikelihoodRewardModel, answer_header

        if peft_config is not None:  # peft wraps the classifier; TRL would try to wrap the whole reward model
            model, peft_config = get_peft_model(model, peft_config), None
        model = LikelihoodRewardModel(model, load_causal_lm(base), answer_header(tokenizer), config.gate_bias,
                                      config.logp_floor)
    args = TRLConfig(**training.trainer_arguments(
        config, work, progress, micro, accumulation, num_train_epochs=config.epochs, max_steps=config.max_steps,
        train_sampling_strategy=training.sampling_strategy(config.balance_lengths, accumulation),
        lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio, max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient, eval_strategy="steps",
        eval_steps=config.eval_every, logging_steps=max(1, config.eval_every // 4),
        **training.checkpointing(config.save_every)))
    train_rows, eval_rows = fit_pairs(tokenizer, train_rows), fit_pairs(tokenizer, eval_rows)  # Gemma 2: no system role
    trainer = pair_mean_reward_trainer()(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                                         eval_dataset=Dataset.from_list(eval_rows), processing_class=tokenizer,
                                         peft_config=peft_config)
    return training.quiet(training.check_sharding(trainer))


@functools.cache
def pair_mean_reward_trainer() -> type:
    """The trainer class (built on first use: importing TRL takes seconds)."""
    from trl import RewardTrainer

    from llmkit.training import llmkit_trainer

    class PairMeanRewardTrainer(llmkit_trainer(RewardTrainer)):
        """TRL's RewardTrainer, with the loss of an optimizer step the mean over all its pairs however they are
        split into micro-batches.

        Length-balanced batches (`llmkit.training.sampling_strategy`) put many short pairs in one micro-batch and few
        long ones in another (on the closed world 2.4 padded tokens per real one at 32 pairs a pass, 1.5
        balanced over 4 passes). TRL averages each micro-batch and the Trainer divides by the number of
        passes, which would weigh a pair in a small micro-batch more; scaling each micro-batch's mean by its
        share of the pairs makes the sum exactly the step's mean."""

        def _prepare_dataset(self, dataset, *args, **kwargs):  # the length the sampler sorts by
            dataset = super()._prepare_dataset(dataset, *args, **kwargs)
            return dataset.map(lambda r: {"length": max(len(r["chosen_ids"]), len(r["rejected_ids"]))})

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "length"]

        def _save(self, output_dir=None, state_dict=None):
            """A checkpoint of the likelihood head leaves out its frozen reference (the SFT model, loaded again
            from its folder; its tied embedding cannot go into safetensors twice): the Trainer loads a checkpoint
            non-strictly, so resuming restores the rest."""
            from llmkit.reward_model import LikelihoodRewardModel

            model = self.accelerator.unwrap_model(self.model)
            if state_dict is None and isinstance(model, LikelihoodRewardModel):
                state_dict = {k: v for k, v in model.state_dict().items() if not k.startswith("reference.")}
            super()._save(output_dir, state_dict)

        def _issue_warnings_after_load(self, load_result):
            missing = [k for k in load_result.missing_keys if not k.startswith("reference.")]  # left out on purpose
            if missing or load_result.unexpected_keys:
                raise runs.StageError(f"the checkpoint does not fit the reward model: missing {missing[:5]}, "
                                      f"unexpected {load_result.unexpected_keys[:5]}")

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
            if model.training:
                loss = loss * (inputs["input_ids"].shape[0] // 2) / self.args.per_device_train_batch_size
            return (loss, outputs) if return_outputs else loss

    return PairMeanRewardTrainer
