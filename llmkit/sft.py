"""Supervised fine-tuning: teach the pretrained model to answer, on TRL's `SFTTrainer`.

Each conversation is rendered with the chat template (ChatML for llmkit's tokenizer) and the loss is taken
on the assistant's tokens only — the `{% generation %}` span of the template, `<|im_end|>` included, so the
model also learns to stop:

    loss = − mean over assistant tokens t of log p(token_t | everything before it)

Full fine-tuning updates every weight; **LoRA** (`lora=True`, through peft) freezes them and learns a low-rank
update W + (α/r)·B·A for the chosen linear layers, so a small fraction of the parameters trains. After
training the adapter is merged (`merge_and_unload`) into a plain checkpoint that `AutoModelForCausalLM`
loads; the adapter itself is kept in `adapter/`. In both, the token embeddings stay fixed except the rows of the
chat tokens (<|im_start|>, <|im_end|>) and of the answers' tokens the run's pretraining data never contains:
pretraining never saw them, so there is nothing to keep (see `freeze_embeddings_except`, `unseen_token_ids`).

The closed world measures what SFT did: accuracy on questions about people the SFT data never names
(held-out: knowledge the model can only have from pretraining) and about people it does name (trained),
beside the base model's accuracy on the same questions.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit import runs
from llmkit.curves import save_curves
from llmkit.evaluate import qa_accuracy
from llmkit.formats import read_conversations
from llmkit.launch import gathered_model
from llmkit.loaders import DataError, bundled_path, read_jsonl

STAGE = "sft"


class SFTError(ValueError):
    """Bad input to SFT: the message says what is wrong and what is accepted."""


@dataclass
class SFTConfig:
    base_model: str | None = None  # None: RUN_DIR/pretrain; else any local causal LM whose tokenizer has a chat template
    train_data: str | None = None  # None: the bundled closed-world conversations; else a file/folder in any of formats.FORMATS
    eval_data: str | None = None  # None: the bundled eval split, or 5 % of train_data
    data_format: str = "auto"  # auto, messages, alpaca, sharegpt, prompt_completion, hh, self_instruct
    max_examples: int | None = None  # train on the first N conversations only (the LIMA experiment)
    epochs: float | None = None  # None: 3 for full fine-tuning, 10 for LoRA (LoRA held-out QA: 0.19 at 3, 0.47 at 10)
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float | None = None  # None: 1e-3 full, 3e-3 LoRA
    batch_size: int = 32  # conversations per optimizer step
    micro_batch_size: int | None = 8  # per forward pass, on average when balance_lengths is on (accumulation
    # makes up the rest)
    balance_lengths: bool = True  # sort each step's conversations by length into micro-batches: less padding,
    # the same loss (TRL divides by the step's answer tokens however they are split)
    max_length: int = 256  # tokens per conversation (longer ones are truncated)
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    packing: bool | None = None  # None: on only where padding-free attention exists (CUDA + FlashAttention)
    freeze_embeddings: bool = True  # full SFT: keep the (tied) token embeddings fixed but the chat tokens' rows —
    # measured: held-out QA 0.27 vs 0.05 with every row training
    train_unseen_tokens: bool = True  # the rows of the answers' tokens the pretraining data never contains train
    # too (when the base is an llmkit run's pretrain stage): frozen, refusals came out garbled ("I' s s sry, but I can'tare")
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    stage_name: str | None = None  # output folder name; None: "sft", or "lora" with lora=True
    eval_every: int = 50
    qa_eval: bool | None = None  # None: on when training on the bundled closed-world data
    qa_limit: int | None = None  # questions per QA split (None: all)
    mixed_precision: str = "auto"  # "auto" (bf16 on a GPU that has it), "bf16", "fp16", "no"
    seed: int = 0


STEP_PRESETS = {"smoke": {"max_steps": 12, "eval_every": 6, "qa_limit": 24, "batch_size": 16}}


def config_for(preset: str = "tiny", **overrides) -> SFTConfig:
    if preset in STEP_PRESETS:
        return SFTConfig(**{**STEP_PRESETS[preset], **overrides})
    return SFTConfig(**overrides)


def run(config: SFTConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    """Fine-tune and write RUN_DIR/sft (or RUN_DIR/lora). `callbacks`: objects with `on_log(record)`."""
    stage = config.stage_name or ("lora" if config.lora else STAGE)
    run_dir = Path(run_dir)
    base = Path(config.base_model) if config.base_model else run_dir / "pretrain"
    done = runs.stage_dir(run_dir, stage)
    if runs.finished(done) and not overwrite:
        return runs.StageResult(stage, done, runs.read_metrics(done), reused=True)
    tokenizer, model = load_base(base, run_dir)  # before touching the run folder: bad input changes nothing
    train_rows, eval_rows = load_conversations(config)
    final, work = runs.reuse_or_start(run_dir, stage, overwrite)
    if work is None:
        return runs.StageResult(stage, final, runs.read_metrics(final), reused=True)
    try:
        return _train(config, run_dir, base, tokenizer, model, train_rows, eval_rows, final, work, progress, callbacks)
    except BaseException:
        runs.abandon(work)
        raise


def build_trainer(config: SFTConfig, tokenizer, model, train_rows: list[dict], eval_rows: list[dict], work: Path,
                  progress: bool = False, callbacks: tuple = (), unseen_tokens: list[int] = ()):
    """TRL's SFTTrainer set up as llmkit runs it: assistant-only loss, cosine schedule, LoRA if asked.
    `unseen_tokens`: tokens pretraining never saw, whose embedding rows train beside the chat tokens'."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    cuda = torch.cuda.is_available()
    micro, accumulation = runs.split_batch(config.batch_size, config.micro_batch_size, runs.world_size(), SFTError)
    args = TRLConfig(
        output_dir=str(work / "trainer"), per_device_train_batch_size=micro, per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accumulation, num_train_epochs=epochs(config),
        train_sampling_strategy=sampling_strategy(config.balance_lengths, accumulation),
        max_steps=config.max_steps, learning_rate=learning_rate(config), lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay, max_length=config.max_length,
        assistant_only_loss=True, packing=packing(config), eval_strategy="steps", eval_steps=config.eval_every,
        logging_steps=max(1, config.eval_every // 5), save_strategy="no", report_to=[], seed=config.seed,
        data_seed=config.seed, use_cpu=not cuda, bf16=_bf16(config), fp16=config.mixed_precision == "fp16",
        gradient_checkpointing=False, disable_tqdm=not progress, dataloader_num_workers=0,
    )
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=config.lora_target_modules, task_type="CAUSAL_LM")
    trainer = length_balanced(SFTTrainer)(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                                          eval_dataset=Dataset.from_list(eval_rows), processing_class=tokenizer,
                                          peft_config=peft_config, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # llmkit writes log.jsonl and the monitor shows it
    if config.freeze_embeddings or config.lora:
        # Full SFT otherwise rewrites the embeddings of the names it trains on (tied to the output layer), and
        # the path from a name to the facts pretraining stored is lost for everyone else. The chat tokens' rows
        # train, beside the adapters too (peft's own trainable_token_indices breaks TRL's fused LM head, which
        # reads the tied head's weight and bias directly); they end up in the merged model, not in adapter/.
        # Done after peft has wrapped the model and before train() builds the optimizer.
        rows = sorted(set(chat_token_ids(tokenizer)) | set(unseen_tokens))
        keep_rows = freeze_embeddings_except(trainer.model.get_input_embeddings(), rows)
        if keep_rows is not None:
            trainer.add_callback(keep_rows)
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


def chat_token_ids(tokenizer) -> list[int]:
    """The end-of-turn token (the tokenizer's EOS) and ChatML's <|im_start|> where the vocabulary has it: tokens a
    pretrained model has rarely or never seen, which SFT must teach."""
    from llmkit.tokenizer import IM_START

    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_START)}
    return sorted(i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id)


def unseen_token_ids(base: Path, tokenizer, used: set[int] | None = None) -> list[int]:
    """Tokens that never occur in the data the base model was pretrained on, when that is known: the base is the
    pretrain stage of an llmkit run folder (RUN/pretrain), trained on that run's own data stage (RUN/data/blocks)
    with the same vocabulary — whichever run folder the SFT writes to.
    Their embedding rows were never an input and, tied to the output layer, only ever pushed down: frozen, they
    keep SFT from writing them. `used`: keep only these (the tokens of the SFT answers). Measured on the bundled
    data: 1116 of 2196 tokens, 77 of them in the SFT answers — most of the pieces of "I'm sorry, but I can't
    share private contact details" (the corpus has no refusals)."""
    import json

    from datasets import load_from_disk

    base = Path(base).resolve()
    blocks, stage_config = base.parent / "data" / "blocks", base / "stage_config.json"
    if base.name != "pretrain" or not blocks.exists() or not stage_config.exists():
        return []
    pretrain_config = json.loads(stage_config.read_text())
    if pretrain_config.get("data") or pretrain_config.get("base_model"):
        return []  # pretrained on other data, or continued from a model whose data we do not have
    data_tokenizer = base.parent / "data" / "tokenizer"
    if data_tokenizer.exists():
        from transformers import AutoTokenizer

        if AutoTokenizer.from_pretrained(data_tokenizer, local_files_only=True).get_vocab() != tokenizer.get_vocab():
            return []
    seen = torch.zeros(len(tokenizer), dtype=torch.bool)
    for split in load_from_disk(str(blocks)).values():
        for chunk in split.with_format("torch").iter(batch_size=1024):
            ids = chunk["input_ids"].reshape(-1)
            seen[ids[ids < len(seen)]] = True
    return [i for i in torch.nonzero(~seen).reshape(-1).tolist() if used is None or i in used]


def answer_token_ids(tokenizer, rows: list[dict]) -> set[int]:
    """Every token id in the assistant turns of conversational rows."""
    ids: set[int] = set()
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "assistant":
                ids.update(tokenizer(message["content"], add_special_tokens=False)["input_ids"])
    return ids


def freeze_embeddings_except(embedding, token_ids: list[int]):
    """Keep a token embedding fixed except the rows of `token_ids`, which train: a pretrained model never saw the
    chat tokens, and with the embeddings tied to the output layer a frozen <|im_end|> row keeps the end of turn
    unlikely (measured on tiny: P(<|im_end|>) after a finished answer 0.13 with every row frozen, 0.96 with these
    two rows training; sampled answers ran on past the answer with a fragment and often a sentence about somebody
    else). Their gradient is zeroed, so the optimizer's state for them stays zero; the returned trainer callback
    puts them back after each step as well, which matters only with weight decay (it shrinks every row)."""
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


def epochs(config: SFTConfig) -> float:
    return config.epochs if config.epochs is not None else (10.0 if config.lora else 3.0)


def learning_rate(config: SFTConfig) -> float:
    return config.learning_rate or (3e-3 if config.lora else 1e-3)


def packing(config: SFTConfig) -> bool:
    return config.packing if config.packing is not None else (torch.cuda.is_available() and _has_flash_attention())


def _bf16(config: SFTConfig) -> bool:
    cuda = torch.cuda.is_available()
    return config.mixed_precision == "bf16" or (config.mixed_precision == "auto" and cuda and torch.cuda.is_bf16_supported())


def _train(config, run_dir, base, tokenizer, model, train_rows, eval_rows, final, work, progress, callbacks):
    cuda = torch.cuda.is_available()
    log = _LogBridge(work / "log.jsonl", callbacks)
    unseen = (unseen_token_ids(base, tokenizer, answer_token_ids(tokenizer, train_rows))
              if config.train_unseen_tokens else [])
    trainer = build_trainer(config, tokenizer, model, train_rows, eval_rows, work, progress, [log.trainer_callback()],
                            unseen_tokens=unseen)
    trainable, total = _parameter_counts(trainer.model)
    if progress:
        print(f"[{final.name}] trainable parameters: {trainable:,} of {total:,} ({trainable / total:.2%})")
    start = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    train_seconds = time.perf_counter() - start
    final_eval = trainer.evaluate()
    model = gathered_model(trainer)
    if model is None:  # under several processes the main one saves and evaluates
        return runs.StageResult(final.name, final, {})
    if config.lora:
        model.save_pretrained(work / "adapter")
        model = model.merge_and_unload()
    model = model.float()
    model.save_pretrained(work, safe_serialization=True)
    tokenizer.save_pretrained(work)

    metrics = {
        "method": "lora" if config.lora else "full", "base_model": str(base), "train_examples": len(train_rows),
        "eval_examples": len(eval_rows), "steps": trainer.state.global_step, "train_seconds": train_seconds,
        "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
        "unseen_token_rows_trained": len(unseen),
        "eval_loss": final_eval.get("eval_loss"), "learning_rate": learning_rate(config), "packing": packing(config),
        # what training holds besides activations: fp32 weights, gradients and two AdamW moments per trained weight
        "weights_grads_optimizer_mb": (total + 3 * trainable) * 4 / 2**20,
    }
    if cuda:
        metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if config.qa_eval if config.qa_eval is not None else config.train_data is None:
        metrics.update(closed_world_qa(model, tokenizer, base, config.qa_limit))
    log.write({"step": trainer.state.global_step, "samples": [
        {"prompt": e["prompt"], "continuation": e["answer"]} for e in metrics.get("qa_heldout_examples", [])[:4]]})
    save_curves(work)
    return runs.commit(work, final, config, metrics)


# ---- inputs ---------------------------------------------------------------------------------------
def load_base(base: Path, run_dir: Path):
    """(tokenizer, model) of the model to fine-tune; clear errors for a missing model or chat template."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_chat_tokenizer(base, run_dir)
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
    return tokenizer, model


def load_chat_tokenizer(base: Path, run_dir: Path):
    """The tokenizer of a local model folder, which must have a chat template (and gets a pad token)."""
    from transformers import AutoTokenizer

    if not (base / "config.json").exists():
        hint = "run pretraining first (llmkit pretrain --run-dir " + str(run_dir) + ") or pass base_model / --base-model"
        raise SFTError(f"{base}: not a local transformers model folder (no config.json); {hint}")
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    if not tokenizer.chat_template:
        raise SFTError(f"{base}: the tokenizer has no chat template; SFT renders conversations with it. Add one "
                       "(tokenizer.chat_template = ...; llmkit.tokenizer.CHAT_TEMPLATE is ChatML) and save it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_conversations(config: SFTConfig) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows {"messages": [...]} in TRL's conversational format."""
    if config.train_data is None:
        train = read_conversations(bundled_path("sft_train.jsonl"), "messages")
        evals = (read_conversations(config.eval_data, config.data_format) if config.eval_data
                 else read_conversations(bundled_path("sft_eval.jsonl"), "messages"))
    else:
        train = read_conversations(config.train_data, config.data_format)
        if config.eval_data:
            evals = read_conversations(config.eval_data, config.data_format)
        else:
            n_eval = max(1, len(train) // 20) if len(train) > 1 else 0
            train, evals = train[n_eval:], train[:n_eval] or train[:1]
    if config.max_examples is not None:
        if config.max_examples < 1:
            raise DataError(f"max_examples={config.max_examples}: give a positive number of conversations")
        train = train[: config.max_examples]
    return train, evals


def closed_world_qa(model, tokenizer, base: Path, limit: int | None = None) -> dict:
    """QA accuracy on held-out and trained people, for the fine-tuned model and for its base model."""
    from transformers import AutoModelForCausalLM

    heldout = read_jsonl(bundled_path("qa_heldout.jsonl"))[:limit]
    trained = read_jsonl(bundled_path("qa_trained.jsonl"))[:limit]
    out: dict = {}
    for split, rows in (("heldout", heldout), ("trained", trained)):
        r = qa_accuracy(model, tokenizer, rows)
        out[f"qa_{split}"] = r["accuracy"]
        out[f"format_ok_{split}"] = r["format_ok"]
        out[f"eos_probability_{split}"] = r["eos_probability"]
        out[f"qa_{split}_examples"] = r["examples"]
    base_model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32)
    base_model.to(next(model.parameters()).device)
    out["base_qa_heldout"] = qa_accuracy(base_model, tokenizer, heldout)["accuracy"]
    out["base_qa_trained"] = qa_accuracy(base_model, tokenizer, trained)["accuracy"]
    return out


# ---- helpers --------------------------------------------------------------------------------------
class _LogBridge:
    """Writes the trainer's log records to log.jsonl (llmkit's names: loss, val_loss) and hands them to callbacks."""

    NAMES = (("loss", "loss"), ("eval_loss", "val_loss"), ("learning_rate", "lr"), ("grad_norm", "grad_norm"),
             ("epoch", "epoch"), ("mean_token_accuracy", "token_accuracy"),
             ("eval_mean_token_accuracy", "val_token_accuracy"))

    def __init__(self, path: Path, callbacks, extra: tuple = ()):
        self.path, self.callbacks, self.names = path, list(callbacks), self.NAMES + tuple(extra)

    def write(self, record: dict) -> None:
        if not runs.is_main_process():
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for cb in self.callbacks:
            cb.on_log(record)

    def trainer_callback(self):
        from transformers import TrainerCallback

        bridge = self

        class Bridge(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                record = {"step": state.global_step}
                for src, dst in bridge.names:
                    if src in logs:
                        record[dst] = float(logs[src])
                if len(record) > 1 and ("loss" in record or "val_loss" in record):
                    if "loss" not in record:  # an eval record: the monitor plots it beside the last train loss
                        record["eval"] = True
                    bridge.write(record)

        return Bridge()


def _parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters; an embedding trained only in some rows counts those rows."""
    trainable = sum(getattr(p, "trained_rows", p.shape[0]) * p[0].numel() if p.dim() > 1 else p.numel()
                    for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _has_flash_attention() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True
