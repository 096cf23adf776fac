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

Training data: the bundled closed-world pairs (or any file in llmkit.options.PREFERENCE_FORMATS — explicit prompt,
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

import torch
from accelerate.utils import DistributedType
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoModelForSequenceClassification
from transformers.utils import logging as transformers_logging
from trl import RewardConfig as TRLConfig
from trl import RewardTrainer

from llmkit import lifecycle, runs, training
from llmkit.chat_format import fit_pairs
from llmkit.formats import read_preferences, train_and_eval
from llmkit.labels import export_pairs
from llmkit.loaders import DataError, Rejects
from llmkit.model import load_causal_lm
from llmkit.options.reward import HEADS, PRESETS, RewardConfig, config_for
from llmkit.reward_model import LikelihoodRewardModel, answer_header
from llmkit.tokenizer import load_chat_tokenizer


@dataclass
class RewardInputs:
    base: Path  # the SFT model the head goes on; its fresh answers are what the RM judges in RL
    tokenizer: object
    train_rows: list[dict]  # preference pairs, with the annotation app's labels
    eval_rows: list[dict]
    from_labels: int  # train pairs that came from the labels


def read_inputs(config: RewardConfig, run_dir: Path, rejects: Rejects) -> RewardInputs:
    base = runs.model_folder(config.base_model, run_dir / "sft", "model to put the reward head on",
                             f"run SFT first (llmkit sft --run-dir {run_dir}) or pass base_model / --base-model")
    tokenizer = load_chat_tokenizer(base)  # the reward model itself is loaded once, by the trainer
    train_rows, eval_rows, n_labels = load_pairs(config, run_dir, rejects)
    return RewardInputs(base, tokenizer, train_rows, eval_rows, n_labels)


def train(config: RewardConfig, inputs: RewardInputs, work: lifecycle.Work) -> dict:
    trainer = build_trainer(config, inputs.tokenizer, inputs.base, inputs.train_rows, inputs.eval_rows, work.dir,
                            work.progress)
    trainer.add_callback(training.log_callback(work.log, (("accuracy", "accuracy"), ("eval_accuracy", "val_accuracy"),
                                                          ("margin", "margin"), ("eval_margin", "val_margin"))))
    kept = len(trainer.train_dataset)
    trainable, total = training.trainable_parameters(trainer.model)
    likelihood = isinstance(trainer.model, LikelihoodRewardModel)
    if likelihood:
        if trainer.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise runs.StageError("the likelihood head is not supported under FSDP or DeepSpeed yet: use DDP "
                                  "(configs/accelerate/multi_gpu.yaml) or head='last_token'")
        total -= sum(p.numel() for p in trainer.model.reference.parameters())  # the frozen copy is not the RM's
        trainer.model.reference_cache = {} if config.cache_reference else None
    start = time.perf_counter()
    try:
        resumed_from = training.train(trainer, work.dir, work.log, work.resume)
    finally:
        if likelihood:
            trainer.model.reference_cache = None  # what scores after training meet is new: nothing to reuse
    train_seconds = time.perf_counter() - start
    if training.save_trained(trainer, inputs.tokenizer, work.dir, config.lora) is None:
        return {}  # under several processes the main one saves, and the run layer measures what it saved
    return {"base_model": str(inputs.base), "train_pairs": len(inputs.train_rows), "train_pairs_used": kept,
            "train_pairs_from_labels": inputs.from_labels, "steps": trainer.state.global_step,
            "train_seconds": train_seconds, "trainable_params": trainable, "total_params": total,
            "method": "lora" if config.lora else "full", "head": config.head, "resumed_from_step": resumed_from}


def load_pairs(config: RewardConfig, run_dir: Path, rejects: Rejects | None = None) -> tuple[list[dict], list[dict], int]:
    """(train, eval, how many train pairs came from the annotation app's labels); rows of the user's files that
    cannot be read go to `rejects` (None: the first one stops the read); 10 % held out of your own pairs."""
    train, evals = train_and_eval(read_preferences, config, ("preferences_train.jsonl", "preferences_eval.jsonl"),
                                  "explicit", 10, rejects)
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
        if peft_config is not None:  # peft wraps the classifier; TRL would try to wrap the whole reward model
            model, peft_config = get_peft_model(model, peft_config), None
        model = LikelihoodRewardModel(model, load_causal_lm(base), answer_header(tokenizer), config.gate_bias,
                                      config.logp_floor)
    args = TRLConfig(**training.trainer_arguments(
        config, work, progress, micro, accumulation, num_train_epochs=config.epochs, max_steps=config.max_steps,
        train_sampling_strategy=training.sampling_strategy(config.balance_lengths, accumulation),
        lr_scheduler_type="cosine", warmup_steps=config.warmup_steps, max_length=config.max_length,
        max_grad_norm=config.max_grad_norm,
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
    """The trainer class (built once: `llmkit_trainer` builds classes)."""

    class PairMeanRewardTrainer(training.llmkit_trainer(RewardTrainer)):
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


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(read_inputs, train, "Train the reward model and write RUN_DIR/reward.")
__all__ = ["HEADS", "PRESETS", "RewardConfig", "config_for", "run"]  # its options: llmkit.options.reward
