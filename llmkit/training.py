"""How llmkit drives a transformers/TRL Trainer: what SFT, the reward model, DPO, GRPO and RLOO share.

    args = training.trainer_arguments(config, out.work, progress, micro, accumulation, lr_scheduler_type="cosine")
    trainer = training.length_balanced(SFTTrainer)(model=..., args=SFTConfig(**args), ...)
    trainer.add_callback(training.log_callback(log))      # log.jsonl in llmkit's names, and the live monitor
    trainer.train()
    model = training.save_trained(trainer, tokenizer, out.work)

- **Arguments** every stage sets alike: the global batch split over processes and micro-batches
  (`runs.split_batch`), precision (bf16 where the GPU has it), no checkpoints of the Trainer's own (a stage
  saves its result), no reports to outside services, the run's seed for the data order too.
- **Length-balanced micro-batches**: transformers' `batch_rebalance` sampler sorts a step's examples by length
  into micro-batches of about equal cost — the same examples per step, far less padding.
- **Frozen embedding rows**: a token embedding that trains only in the rows asked for.
- **Saving on N processes**: the trained model gathered onto the main process (FSDP/ZeRO-3 shards included),
  a LoRA adapter saved and merged, and a plain float32 checkpoint with its tokenizer written.
"""

from __future__ import annotations

import functools
from pathlib import Path

from llmkit import runs

# The Trainer's log names -> llmkit's (what log.jsonl, the curves and the live monitor read)
LOG_NAMES = (("loss", "loss"), ("eval_loss", "val_loss"), ("learning_rate", "lr"), ("grad_norm", "grad_norm"),
             ("epoch", "epoch"), ("mean_token_accuracy", "token_accuracy"),
             ("eval_mean_token_accuracy", "val_token_accuracy"))


def precision(choice: str) -> str:
    """"bf16", "fp16" or "no" for a config's `mixed_precision`; "auto" is bf16 on a GPU that has it."""
    if choice != "auto":
        return choice
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def trainer_arguments(config, work: Path, progress: bool, per_device_batch: int, accumulation: int = 1,
                      **stage_specific) -> dict:
    """Keyword arguments for a TRL config (SFTConfig, RewardConfig, DPOConfig, GRPOConfig, RLOOConfig) that every
    llmkit stage sets alike, from a config with `learning_rate`, `seed` and `mixed_precision`; `stage_specific`
    adds or replaces the rest."""
    import torch
    from transformers import TrainingArguments

    mixed = precision(config.mixed_precision)
    # TRL turns checkpointing on by default; transformers 5.25 renamed the option (the old name warns)
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                     else "gradient_checkpointing")
    return {"output_dir": str(work / "trainer"), "per_device_train_batch_size": per_device_batch,
            "per_device_eval_batch_size": per_device_batch, "gradient_accumulation_steps": accumulation,
            "learning_rate": config.learning_rate, "seed": config.seed, "data_seed": config.seed,
            "save_strategy": "no", "report_to": [], "use_cpu": not torch.cuda.is_available(),
            "bf16": mixed == "bf16", "fp16": mixed == "fp16", checkpointing: False,
            "disable_tqdm": not progress, "dataloader_num_workers": 0, **stage_specific}


def lora_config(config, task_type: str, **extra):
    """peft's LoraConfig from a config's `lora_r`, `lora_alpha`, `lora_dropout` and `lora_target_modules`."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type=task_type, **extra)


def log_callback(log: runs.LogWriter, names: tuple = ()):
    """A TrainerCallback that writes the Trainer's training and evaluation records to `log` (log.jsonl and the
    callbacks), renamed by LOG_NAMES and `names`; an evaluation record is marked `"eval": true`."""
    from transformers import TrainerCallback

    renames = LOG_NAMES + tuple(names)

    class LogToRunFolder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            record = {"step": state.global_step}
            for src, dst in renames:
                if src in logs:
                    record[dst] = float(logs[src])
            if len(record) > 1 and ("loss" in record or "val_loss" in record):
                if "loss" not in record:  # an eval record: the monitor plots it beside the last train loss
                    record["eval"] = True
                log.write(record)

    return LogToRunFolder()


def quiet(trainer):
    """The trainer without transformers' printer (llmkit writes log.jsonl and the monitor shows it)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def sampling_strategy(balance_lengths: bool, accumulation: int) -> str:
    """The transformers Trainer's `train_sampling_strategy`: "batch_rebalance" sorts the examples of each
    optimizer step by length and cuts them into `accumulation` micro-batches of about equal cost (more short
    examples in one, fewer long ones in another), so that little compute goes to padding. Same examples per
    step as "random"; with one micro-batch a step there is nothing to balance."""
    return "batch_rebalance" if balance_lengths and accumulation > 1 else "random"


@functools.cache
def length_balanced(trainer_class: type) -> type:
    """`trainer_class` (a transformers Trainer) whose length-balanced sampler shuffles by the run's seed:
    transformers 5.24 builds its `BatchRebalanceSampler` with that class's own seed (42), whatever
    `seed` / `data_seed` say."""
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    class LengthBalanced(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, BatchRebalanceSampler):
                sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return sampler

    LengthBalanced.__name__ = LengthBalanced.__qualname__ = f"LengthBalanced{trainer_class.__name__}"
    return LengthBalanced


def freeze_embeddings_except(embedding, token_ids: list[int]):
    """Keep a token embedding fixed except the rows of `token_ids`, which train. Their gradient is zeroed
    elsewhere, so the optimizer's state for the frozen rows stays zero; the returned trainer callback puts them
    back after each step as well, which matters only with weight decay (it shrinks every row). Returns None (and
    freezes the whole embedding) when `token_ids` is empty."""
    import torch
    from transformers import TrainerCallback

    weight = embedding.weight
    if not token_ids:
        weight.requires_grad_(False)
        return None
    weight.requires_grad_(True)
    weight.trained_rows = len(token_ids)
    # The mask and the frozen copy follow the weight when the trainer moves it (to a GPU): moved once, not per step.
    held = {"mask": torch.zeros(weight.shape[0], 1, dtype=weight.dtype), "frozen": weight.detach().clone()}
    held["mask"][token_ids] = 1.0

    def on(device) -> dict:
        if held["mask"].device != device:
            held.update(mask=held["mask"].to(device), frozen=held["frozen"].to(device))
        return held

    weight.register_hook(lambda grad: grad * on(grad.device)["mask"].to(grad.dtype))

    class KeepFrozenRows(TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            rows = on(weight.device)
            with torch.no_grad():
                weight.copy_(torch.where(rows["mask"].bool(), weight, rows["frozen"].to(weight.dtype)))

    return KeepFrozenRows()


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; an embedding trained only in some rows counts those rows."""
    trainable = sum(getattr(p, "trained_rows", p.shape[0]) * p[0].numel() if p.dim() > 1 else p.numel()
                    for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def gathered_model(trainer):
    """A transformers Trainer's trained model as one plain module on the main process (None on the others).

    Under DDP the main process already holds every weight. Under FSDP or DeepSpeed ZeRO-3 each process holds
    a shard: every process must take part in gathering them (accelerate's `get_state_dict`), and the main
    process loads the full weights into a fresh model of the same class."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return trainer.model if trainer.is_world_process_zero() else None
    if getattr(trainer.model, "peft_config", None):
        raise runs.StageError("LoRA under FSDP or DeepSpeed is not supported by llmkit yet: train LoRA with DDP "
                              "(configs/accelerate/multi_gpu.yaml) or full weights under FSDP/ZeRO")
    state = accelerator.get_state_dict(trainer.model_wrapped)
    if not trainer.is_world_process_zero():
        return None
    plain = accelerator.unwrap_model(trainer.model)
    fresh = type(plain)(plain.config)
    fresh.load_state_dict(state)
    return fresh


def save_trained(trainer, tokenizer, folder: Path, lora: bool = False, adapter: Path | None = None):
    """Write the trained model (float32) and its tokenizer to `folder` as a plain checkpoint; with `lora` the
    adapter is merged first (and saved to `adapter` when given). Every process must call this (FSDP gathers);
    returns the saved model on the main process, None on the others."""
    model = gathered_model(trainer)
    if model is None:
        return None
    if lora:
        if adapter is not None:
            model.save_pretrained(adapter)
        model = model.merge_and_unload()
    model = model.float().eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return model
