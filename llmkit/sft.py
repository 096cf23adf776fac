"""Supervised fine-tuning: teach the pretrained model to answer, on TRL's `SFTTrainer`.

Each conversation is rendered with the chat template (ChatML for llmkit's tokenizer) and the loss is taken
on the assistant's tokens only — the `{% generation %}` span of the template, `<|im_end|>` included, so the
model also learns to stop:

    loss = − mean over assistant tokens t of log p(token_t | everything before it)

Full fine-tuning updates every weight; **LoRA** (`lora=True`, through peft) freezes them and learns a low-rank
update W + (α/r)·B·A for the chosen linear layers, so a small fraction of the parameters trains. After
training the adapter is merged (`merge_and_unload`) into a plain checkpoint that `AutoModelForCausalLM`
loads; the adapter itself is kept in `adapter/`. In both, the token embeddings stay fixed except the rows of
tokens the base model never learned: the chat tokens (<|im_start|>, <|im_end|>) of a model pretrained without
conversations, and the answers' tokens the run's pretraining data never contains (see `rows_to_train`).

The closed world measures what SFT did: accuracy on questions about people the SFT data never names
(held-out: knowledge the model can only have from pretraining) and about people it does name (trained),
beside the base model's accuracy on the same questions.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer
from trl import SFTConfig as TRLConfig
from trl import SFTTrainer

from llmkit import lifecycle, runs, training
from llmkit.chat_format import (
    add_chatml,
    check_template,
    stop_at_end_of_turn,
    template_token_ids,
    tokenize_conversations,
)
from llmkit.formats import read_conversations, train_and_eval
from llmkit.loaders import Rejects
from llmkit.model import load_causal_lm
from llmkit.options.sft import PRESETS, SFTConfig, config_for
from llmkit.tokenizer import CHAT_TEMPLATE, load_chat_tokenizer


@dataclass
class SFTInputs:
    base: Path  # the model folder it fine-tunes
    tokenizer: object
    model: torch.nn.Module
    train_rows: list[dict]  # conversations {"messages": ...}
    eval_rows: list[dict]
    train_ids: list[dict]  # the same, tokenized with their assistant masks
    eval_ids: list[dict]


def read_inputs(config: SFTConfig, run_dir: Path, rejects: Rejects) -> SFTInputs:
    """The base model (a causal LM with a tokenizer that fits it and a chat template that renders; LoRA targets
    that exist) and the conversations, tokenized: bad rows go to `rejects`."""
    base = runs.model_folder(config.base_model, run_dir / "pretrain", "model to fine-tune",
                             f"run pretraining first (llmkit pretrain --run-dir {run_dir}) or pass base_model / "
                             "--base-model")
    tokenizer, model = load_base(base, config)
    train_rows, eval_rows = load_conversations(config, rejects)
    train_ids = tokenize_conversations(tokenizer, train_rows, rejects, str(config.train_data or "SFT conversations"))
    eval_ids = tokenize_conversations(tokenizer, eval_rows, rejects, str(config.eval_data or "eval conversations"))
    return SFTInputs(base, tokenizer, model, train_rows, eval_rows, train_ids, eval_ids)


def train(config: SFTConfig, inputs: SFTInputs, work: lifecycle.Work) -> dict:
    tokenizer, model, base = inputs.tokenizer, inputs.model, inputs.base
    unseen = (unseen_token_ids(base, tokenizer, answer_token_ids(tokenizer, inputs.train_rows))
              if config.train_unseen_tokens else [])
    rows = sorted(set(rows_to_train(tokenizer, model)) | set(unseen))
    trainer = build_trainer(config, tokenizer, model, inputs.train_ids, inputs.eval_ids, work.dir, work.progress, rows)
    trainer.add_callback(training.log_callback(work.log))
    trainable, total = training.trainable_parameters(trainer.model)
    if work.progress:
        print(f"[{work.name}] trainable parameters: {trainable:,} of {total:,} ({trainable / total:.2%})")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    resumed_from = training.train(trainer, work.dir, work.log, work.resume)
    train_seconds = time.perf_counter() - start  # since the start or the resume
    final_eval = trainer.evaluate()
    model = training.save_trained(trainer, tokenizer, work.dir, config.lora, work.dir / "adapter",
                                  base if config.quantization != "none" else None)
    if model is None:  # under several processes the main one saves and evaluates
        return {}
    metrics = {
        "method": "lora" if config.lora else "full", "base_model": str(base), "train_examples": len(inputs.train_rows),
        "eval_examples": len(inputs.eval_rows), "steps": trainer.state.global_step, "train_seconds": train_seconds,
        "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
        "unseen_token_rows_trained": len(unseen), "eval_loss": final_eval.get("eval_loss"),
        "resumed_from_step": resumed_from, "learning_rate": learning_rate(config), "packing": packing(config),
        # what training holds besides activations: fp32 weights, gradients and two AdamW moments per trained weight
        "weights_grads_optimizer_mb": (total + 3 * trainable) * 4 / 2**20,
    }
    if cuda:
        metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return metrics


def build_trainer(config: SFTConfig, tokenizer, model, train_rows: list[dict], eval_rows: list[dict], work: Path,
                  progress: bool = False, embedding_rows: list[int] | None = None):
    """TRL's SFTTrainer set up as llmkit runs it: assistant-only loss, cosine schedule, length-balanced
    micro-batches, LoRA if asked, the embeddings frozen but the rows that must train.
    Rows: conversations ({"messages": ...}) or what `chat_format.tokenize_conversations` made of them.
    `embedding_rows`: the token-embedding rows that train (default: `rows_to_train`)."""
    # The assistant mask is computed here for any template (llmkit.chat_format); TRL builds the labels from it
    train_rows, eval_rows = (rows if not rows or "input_ids" in rows[0] else tokenize_conversations(tokenizer, rows)
                             for rows in (train_rows, eval_rows))

    micro, accumulation = runs.split_batch(config.batch_size, config.micro_batch_size, runs.world_size())
    args = TRLConfig(**training.trainer_arguments(
        config, work, progress, micro, accumulation, learning_rate=learning_rate(config),
        num_train_epochs=epochs(config), max_steps=config.max_steps,
        train_sampling_strategy=training.sampling_strategy(config.balance_lengths, accumulation),
        lr_scheduler_type="cosine", warmup_steps=config.warmup_steps, weight_decay=config.weight_decay or 0.0,
        max_grad_norm=config.max_grad_norm,
        max_length=config.max_length, packing=packing(config), eval_strategy="steps",
        eval_steps=config.eval_every, logging_steps=max(1, config.eval_every // 5),
        **training.checkpointing(config.save_every)))
    peft_config = training.lora_config(config, "CAUSAL_LM", model) if config.lora else None
    trainer = training.llmkit_trainer(SFTTrainer)(
        model=model, args=args, train_dataset=Dataset.from_list(train_rows), eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer, peft_config=peft_config)
    training.quiet(trainer)
    if config.freeze_embeddings or config.lora:
        # Full SFT otherwise rewrites the embeddings of the names it trains on (tied to the output layer), and
        # the path from a name to the facts pretraining stored is lost for everyone else. The chat tokens' rows
        # train, beside the adapters too (peft's own trainable_token_indices breaks TRL's fused LM head, which
        # reads the tied head's weight and bias directly); they end up in the merged model, and in adapter/ as
        # peft's trainable tokens (training.add_trained_rows).
        # Done after peft has wrapped the model and before train() builds the optimizer.
        rows = rows_to_train(tokenizer, model) if embedding_rows is None else embedding_rows
        keep_rows = training.freeze_embeddings_except(trainer.model.get_input_embeddings(), rows)
        if keep_rows is not None:
            trainer.add_callback(keep_rows)
        if config.lora:
            trainer.add_callback(training.save_trained_rows(trainer))
    training.check_sharding(trainer)
    return trainer


def epochs(config: SFTConfig) -> float:
    # LoRA needs more passes (docs/decisions.md)
    return config.epochs if config.epochs is not None else (10.0 if config.lora else 3.0)


def learning_rate(config: SFTConfig) -> float:
    return config.lora_learning_rate if config.lora else config.learning_rate


def packing(config: SFTConfig) -> bool:
    if config.packing is not None:
        return config.packing
    return torch.cuda.is_available() and _has_flash_attention()


# ---- the embedding rows that train ----------------------------------------------------------------
def chat_token_ids(tokenizer) -> list[int]:
    """The special tokens of the chat template (llmkit's <|im_start|> and <|im_end|>; Llama 3's header and
    <|eot_id|> tokens, ...) and the EOS, but the BOS every pretrained model has seen: tokens a base model has
    rarely or never seen, which SFT must teach. With every other row frozen, a frozen <|im_end|> row kept the end
    of turn unlikely (measured on tiny: P(<|im_end|>) after a finished answer 0.13 with every row frozen, 0.96
    with these rows training)."""
    return template_token_ids(tokenizer)


def rows_to_train(tokenizer, model) -> list[int]:
    """The chat tokens whose embedding rows SFT trains: those the base model never learned to use.
    - A model on llmkit's ChatML template — llmkit's own models, pretrained without conversations, and any base
      that came without a template and got llmkit's tokens: every chat token (`chat_token_ids`).
    - A family's model on its own template: only the chat tokens whose rows look untrained — a norm under 1/1000
      of the median row's, as Llama 3 base leaves <|eot_id|> and its header tokens. Rows its makers trained
      (Qwen2.5's and SmolLM2's <|im_start|> and <|im_end|>) stay as they are, as in a plain TRL or peft run, and the
      run holds no gradient or optimizer state for the embedding matrix (V × d: 136 M values on Qwen2.5-0.5B)."""
    chat = chat_token_ids(tokenizer)
    if tokenizer.chat_template in (CHAT_TEMPLATE, CHAT_TEMPLATE.replace("{{ bos_token }}", "")):
        return chat
    # row norms in float32 without a float32 copy of a bf16 matrix
    norms = torch.linalg.vector_norm(model.get_input_embeddings().weight.detach(), dim=1, dtype=torch.float32)
    return [t for t in chat if t < len(norms) and norms[t] < 1e-3 * norms.median()]


def unseen_token_ids(base: Path, tokenizer, used: set[int] | None = None) -> list[int]:
    """Tokens that never occur in the data the base model was pretrained on, when that is known: the base is the
    pretrain stage of an llmkit run folder (RUN/pretrain), trained on that run's own data stage (RUN/data/blocks)
    with the same vocabulary — whichever run folder the SFT writes to.
    Their embedding rows were never an input and, tied to the output layer, only ever pushed down: frozen, they
    keep SFT from writing them. `used`: keep only these (the tokens of the SFT answers). On the bundled data most
    of the pieces of "I'm sorry, but I can't share private contact details" are such tokens (the corpus has no
    refusals)."""
    base = Path(base).resolve()
    data = base.parent / "data"
    made = runs.provenance(base)
    if made is None or made["stage"] != "pretrain" or not (data / "blocks").exists():
        return []
    read = made.get("inputs", {})
    if read.get("base_model") != "scratch" or read.get("train_data") != "RUN_DIR/data":
        return []  # pretrained on other data, or continued from a model whose data we do not have
    blocks = data / "blocks"
    data_tokenizer = data / "tokenizer"
    if data_tokenizer.exists():
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


# ---- inputs ---------------------------------------------------------------------------------------
def load_base(base: Path, config: SFTConfig | None = None):
    """(tokenizer, model) of the model folder to fine-tune, checked before anything is written: a causal LM, a
    tokenizer that fits its vocabulary, a chat template that renders a conversation (a model without one gets
    llmkit's ChatML template and its tokens), LoRA targets that exist, 4-bit loading where it can work."""
    config = config or SFTConfig()
    tokenizer = load_chat_tokenizer(base, require_template=False)
    if config.quantization != "none":
        if not config.lora:
            raise runs.StageError("quantization='4bit' is QLoRA: it trains a LoRA adapter on the frozen 4-bit "
                                  "model; add lora (--lora)")
        model = training.load_quantized(base)
    else:
        try:
            model = load_causal_lm(base)
        except (OSError, ValueError, KeyError) as e:
            raise runs.StageError(f"{base}: not a causal language model transformers can load ({e}); expected the "
                                  "save_pretrained folder of a ...ForCausalLM model") from None
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise runs.StageError(f"{base}: the tokenizer has {len(tokenizer):,} tokens but the model's embedding "
                              f"{vocab:,} rows; they do not belong together (the model folder needs its own tokenizer)")
    if not tokenizer.chat_template:
        add_chatml(tokenizer, model)
    check_template(tokenizer, base)
    stop_at_end_of_turn(tokenizer, model)
    if config.lora:
        training.lora_targets(model, config.lora_targets)
    return tokenizer, model


def load_conversations(config: SFTConfig, rejects: Rejects | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows {"messages": [...]} in TRL's conversational format; rows of the user's files that
    cannot be read go to `rejects` (None: the first one stops the read); 5 % held out of your own data."""
    return train_and_eval(read_conversations, config, ("sft_train.jsonl", "sft_eval.jsonl"), "messages", 20, rejects)


def _has_flash_attention() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(read_inputs, train, "Fine-tune and write RUN_DIR/sft (or RUN_DIR/lora).")
__all__ = ["PRESETS", "SFTConfig", "config_for", "run"]  # its options: llmkit.options.sft
