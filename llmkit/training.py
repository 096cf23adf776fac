"""How llmkit drives a transformers/TRL Trainer: what SFT, the reward model, DPO, GRPO and RLOO share.

    args = training.trainer_arguments(config, out.work, progress, micro, accumulation, lr_scheduler_type="cosine")
    trainer = training.llmkit_trainer(SFTTrainer)(model=..., args=SFTConfig(**args), ...)
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
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from peft import get_peft_model as wrap
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainerCallback, TrainingArguments
from transformers.pytorch_utils import Conv1D
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_pt_utils import BatchRebalanceSampler
from transformers.trainer_utils import get_last_checkpoint

from llmkit import runs
from llmkit.model import load_causal_lm

# TRL 1.16 (unwrap_model_for_generation) and peft 0.21 (get_peft_model) read transformers 5's deprecated
# `is_gradient_checkpointing`, which warns at every generation step: dozens of lines in a notebook that nobody
# reading it can act on. This one message alone is silenced.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

# The Trainer's log names -> llmkit's (what log.jsonl, the curves and the live monitor read)
LOG_NAMES = (("loss", "loss"), ("eval_loss", "val_loss"), ("learning_rate", "lr"), ("grad_norm", "grad_norm"),
             ("epoch", "epoch"), ("mean_token_accuracy", "token_accuracy"),
             ("eval_mean_token_accuracy", "val_token_accuracy"))


def precision(choice: str) -> str:
    """"bf16", "fp16" or "no" for a config's `mixed_precision`; "auto" is bf16 on a GPU that has it."""
    if choice != "auto":
        return choice

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def trainer_arguments(config, work: Path, progress: bool, per_device_batch: int, accumulation: int = 1,
                      **stage_specific) -> dict:
    """Keyword arguments for a TRL config (SFTConfig, RewardConfig, DPOConfig, GRPOConfig, RLOOConfig) that every
    llmkit stage sets alike, from a config with `learning_rate`, `seed` and `mixed_precision`; `stage_specific`
    adds or replaces the rest."""
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


def checkpointing(save_every: int) -> dict:
    """Trainer arguments that keep the newest checkpoint (model, optimizer, scheduler, RNG states, the data
    position) every `save_every` steps in WORK/trainer, for `train` to resume from; 0: none."""
    if save_every <= 0:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": save_every, "save_total_limit": 1}


def train(trainer, work: Path, log: runs.LogWriter | None = None, resume: bool = True) -> int:
    """`trainer.train()`, resumed from the newest checkpoint in WORK/trainer when `resume` (a killed run of the
    same config left it; `runs.Stage.same_config`): the Trainer restores the weights, the optimizer, the schedule,
    the RNG states and the position in the data, so the run goes on as if never stopped. The log forgets what came
    after the checkpoint; the checkpoints are deleted once training is done (the stage saves its result).
    Returns the step it resumed from (0: from the start)."""
    folder = work / "trainer"
    last = get_last_checkpoint(str(folder)) if resume and folder.is_dir() else None
    step = int(last.rsplit("-", 1)[1]) if last else 0
    if last:
        if log is not None:
            log.keep_until(step)
        restore_trained_rows(trainer, Path(last))
    trainer.train(resume_from_checkpoint=last)
    if runs.is_main_process():
        shutil.rmtree(folder, ignore_errors=True)
    return step


ROWS_FILE = "trained_embedding_rows.safetensors"


def save_trained_rows(trainer):
    """A callback that saves, beside each checkpoint of a LoRA model, the input-embedding rows that train outside
    the adapter (`freeze_embeddings_except`): peft's checkpoint holds the adapter only."""
    class SaveTrainedRows(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            weight = trainer.model.get_input_embeddings().weight
            if getattr(weight, "trained_rows", None) and state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                save_file({"weight": weight.detach().cpu().contiguous()}, str(folder / ROWS_FILE))

    return SaveTrainedRows()


def restore_trained_rows(trainer, checkpoint: Path) -> None:
    if (checkpoint / ROWS_FILE).exists():
        weight = trainer.model.get_input_embeddings().weight
        with torch.no_grad():
            weight.copy_(load_file(str(checkpoint / ROWS_FILE))["weight"].to(weight.device, weight.dtype))


def lora_config(config, task_type: str, model=None, **extra):
    """peft's LoraConfig from a config's `lora_r`, `lora_alpha`, `lora_dropout` and `lora_targets` (checked
    against `model` when given)."""
    targets = lora_targets(model, config.lora_targets) if model is not None else parse_targets(config.lora_targets)
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type=task_type, **extra)


def parse_targets(targets) -> str | list[str]:
    """"all-linear", or a list of module names from a list or a comma-separated string."""
    if isinstance(targets, str):
        targets = [targets]
    names = [name.strip() for t in targets for name in str(t).split(",") if name.strip()]  # "q_proj,v_proj" too
    if names == ["all-linear"]:
        return "all-linear"
    if not names:
        raise runs.StageError("lora_targets is empty: give all-linear or module names such as q_proj,v_proj")
    return names


def lora_targets(model, targets) -> str | list[str]:
    """The LoRA targets, checked against the model before anything trains: each name must be the name, or the
    last part of the name, of a linear layer (nn.Linear, or GPT-2's Conv1D), as peft matches them."""
    parsed = parse_targets(targets)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)]
    known = sorted({n.rsplit(".", 1)[-1] for n in linear})
    if parsed == "all-linear":
        if not linear:
            raise runs.StageError("lora_targets=all-linear: the model has no linear layer to adapt")
        return parsed
    missing = [t for t in parsed if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        raise runs.StageError(f"lora_targets: {', '.join(missing)} match no linear layer of the model "
                              f"({type(model).__name__}); its linear layers are named {', '.join(known)}")
    return parsed


def load_quantized(path: Path):
    """A causal LM loaded in 4 bits (NF4, bf16 compute) for QLoRA, ready for k-bit training; a clear error where
    it cannot work (no CUDA GPU, no bitsandbytes)."""
    if not torch.cuda.is_available():
        raise runs.StageError("quantization='4bit' (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no "
                              "CUDA GPU. Train LoRA on the full-precision model instead (leave quantization at none)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise runs.StageError("quantization='4bit' (QLoRA) needs bitsandbytes: pip install bitsandbytes")

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, quantization_config=bnb,
                                                 dtype=torch.bfloat16, device_map={"": torch.cuda.current_device()})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def log_callback(log: runs.LogWriter, names: tuple = ()):
    """A TrainerCallback that writes the Trainer's training and evaluation records to `log` (log.jsonl and the
    callbacks), renamed by LOG_NAMES and `names`; an evaluation record is marked `"eval": true`."""
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


def check_sharding(trainer):
    """`trainer`, or a clear error before training where the run would not be what was asked for:
    - FSDP or DeepSpeed asked for (`accelerate launch --config_file configs/accelerate/fsdp.yaml ...` sets
      ACCELERATE_USE_FSDP) but not running: accelerate 1.16 turns them on only on GPUs and other accelerators; on
      CPU processes it drops the plugin without a word and trains plain DDP, every weight on every process;
    - some rows of the token embedding training (`freeze_embeddings_except`) on a sharded model: FSDP and ZeRO-3
      replace the weight with their shards, so the hook that keeps the other rows fixed is lost and the whole
      embedding would train."""
    running = trainer.accelerator.distributed_type
    for name, variable, kind in (("FSDP", "ACCELERATE_USE_FSDP", DistributedType.FSDP),
                                 ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(variable, "false").lower() == "true" and running != kind:
            raise runs.StageError(
                f"{name} was asked for ({variable}=true) but accelerate runs {running.value}: accelerate shards "
                "only on GPUs (on CPU processes it would train plain DDP). On CPUs launch with "
                "configs/accelerate/multi_gpu.yaml and --cpu, or without a config (llmkit.launch)")
    weight = input_embedding(trainer.model)
    if running in (DistributedType.FSDP, DistributedType.DEEPSPEED) and getattr(weight, "trained_rows", None):
        raise runs.StageError(
            f"{weight.trained_rows} rows of the token embedding would train and the others stay fixed, which "
            f"{running.value} cannot keep (it replaces the weight with its shards): train every row "
            "(freeze_embeddings=False, --no-freeze-embeddings), or run with DDP")
    return trainer


def quiet(trainer):
    """The trainer without transformers' printer, and with a progress bar that does not print every log record
    as a dict under it (`{'loss': '5.676', 'grad_norm': ...}` by the dozen): llmkit writes them to log.jsonl and
    the live monitor shows them."""
    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly())
    return trainer


def sampling_strategy(balance_lengths: bool, accumulation: int) -> str:
    """The transformers Trainer's `train_sampling_strategy`: "batch_rebalance" sorts the examples of each
    optimizer step by length and cuts them into `accumulation` micro-batches of about equal cost (more short
    examples in one, fewer long ones in another), so that little compute goes to padding. Same examples per
    step as "random"; with one micro-batch a step there is nothing to balance."""
    return "batch_rebalance" if balance_lengths and accumulation > 1 else "random"


@functools.cache
def llmkit_trainer(trainer_class: type) -> type:
    """`trainer_class` (a transformers or TRL Trainer) as llmkit runs it:
    - its length-balanced sampler shuffles by the run's seed: transformers 5.24 builds its `BatchRebalanceSampler`
      with that class's own seed (42), whatever `seed` / `data_seed` say;
    - an embedding that trains in some rows only (`freeze_embeddings_except`) enters the optimizer as those rows."""
    class LlmkitTrainer(trainer_class):
        def create_optimizer(self, model=None):
            weight = input_embedding(self.model)
            rows = getattr(weight, "row_parameter", None)
            if rows is None or self.optimizer is not None:
                return super().create_optimizer(model)
            weight.requires_grad_(False)  # the optimizer takes the rows' parameter instead of the matrix
            try:
                super().create_optimizer(model)
            finally:
                weight.requires_grad_(True)
            self.optimizer.add_param_group({"params": [rows], "weight_decay": self.args.weight_decay})
            return self.optimizer

        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if isinstance(sampler, BatchRebalanceSampler):
                sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return sampler

    LlmkitTrainer.__name__ = LlmkitTrainer.__qualname__ = f"Llmkit{trainer_class.__name__}"
    return LlmkitTrainer


def freeze_embeddings_except(embedding, token_ids: list[int]):
    """Keep a token embedding fixed except the rows of `token_ids`, which train. Returns a trainer callback (None,
    with the whole embedding frozen, when `token_ids` is empty) for a trainer made by `llmkit_trainer`, whose
    optimizer then holds those rows alone — a parameter of len(token_ids) × d (`weight.row_parameter`) — instead
    of the whole V × d matrix: AdamW keeps no moments for the frozen rows and weight decay cannot touch them.
    The embedding's gradient is masked to the trained rows as autograd makes it (so gradient clipping sees the
    trained rows' gradient alone); after clipping it moves into the rows' parameter and the full-size gradient is
    freed; after the step the rows are written back into the embedding."""
    weight = embedding.weight
    if not token_ids:
        weight.requires_grad_(False)
        return None
    weight.requires_grad_(True)
    weight.trained_rows = len(token_ids)
    weight.trained_indices = sorted(token_ids)  # for the saved adapter (`add_trained_rows`)
    index = torch.tensor(weight.trained_indices, device=weight.device)
    rows = weight.row_parameter = torch.nn.Parameter(weight.detach()[index].clone())
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[index] = 1.0
    weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))

    class TrainRows(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is None or not any(rows is p for group in optimizer.param_groups for p in group["params"]):
                raise runs.StageError("freeze_embeddings_except: the trainer's optimizer does not hold the trained "
                                      "rows; build the trainer with training.llmkit_trainer(...)")
            with torch.no_grad():
                rows.copy_(weight[index])  # a resumed run has loaded its weights by now

        def on_pre_optimizer_step(self, args, state, control, **kwargs):  # after clipping
            if weight.grad is not None:
                rows.grad = weight.grad[index]
                weight.grad = None

        def on_optimizer_step(self, args, state, control, **kwargs):
            with torch.no_grad():
                weight[index] = rows
            rows.grad = None

    return TrainRows()


def input_embedding(model):
    """The token embedding's weight of a transformers model; None for a model without one (the likelihood reward
    model wraps two)."""
    get = getattr(model, "get_input_embeddings", None)
    return get().weight if get is not None else None


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


def save_trained(trainer, tokenizer, folder: Path, lora: bool = False, adapter: Path | None = None,
                 quantized_base: Path | None = None):
    """Write the trained model (float32) and its tokenizer to `folder` as a plain checkpoint; with `lora` the
    adapter is merged first (and saved to `adapter` when given). A QLoRA adapter merges into the base model
    reloaded in full precision (`quantized_base`: its folder), with the embedding rows that trained. Every
    process must call this (FSDP gathers); returns the saved model on the main process, None on the others."""
    model = gathered_model(trainer)
    if model is None:
        return None
    if lora:
        if adapter is not None:
            model.save_pretrained(adapter)
            add_trained_rows(adapter, model)
        if quantized_base is not None:
            model = merge_into_full_precision(model, quantized_base)
        else:
            model = model.merge_and_unload()
    model = model.float().eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return model


def add_trained_rows(adapter: Path, peft_model) -> None:
    """Write the input-embedding rows that trained beside the LoRA adapter (`freeze_embeddings_except`) into the
    saved adapter as peft's trainable tokens (`trainable_token_indices`), so that
    `PeftModel.from_pretrained(base, adapter)` is the trained model, as the merged checkpoint is. (They train
    outside peft because peft's own trainable tokens break TRL's fused LM head.) Where SFT added tokens, the base
    must first be resized to the tokenizer's length, as for the merged model."""
    embedding = peft_model.get_input_embeddings()
    rows = getattr(embedding.weight, "trained_indices", None)
    if not rows:
        return
    base = peft_model.get_base_model()
    name = next(n for n, m in base.named_modules() if m is embedding)
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    dtype = next(iter(tensors.values())).dtype
    tensors[f"base_model.model.{name}.token_adapter.trainable_tokens_delta"] = (
        embedding.weight.detach()[rows].to("cpu", dtype).contiguous())  # peft's "delta" holds the rows themselves
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["trainable_token_indices"] = {name.rsplit(".", 1)[-1]: rows}
    (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def merge_into_full_precision(peft_model, base: Path):
    """The LoRA weights of a model trained on a 4-bit base, merged into that base loaded in float32 on the CPU;
    the input embedding (not quantized, and trained in some rows) is copied over."""
    trained_embedding = peft_model.get_input_embeddings().weight.detach().float().cpu()
    full = load_causal_lm(base)
    if full.get_input_embeddings().weight.shape[0] != trained_embedding.shape[0]:
        full.resize_token_embeddings(trained_embedding.shape[0])
    with torch.no_grad():
        full.get_input_embeddings().weight.copy_(trained_embedding)
    wrapped = wrap(full, peft_model.peft_config["default"])
    set_peft_model_state_dict(wrapped, {k: v.float().cpu() for k, v in get_peft_model_state_dict(peft_model).items()})
    return wrapped.merge_and_unload()
