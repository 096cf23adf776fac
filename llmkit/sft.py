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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llmkit import runs
from llmkit.chat_format import tokenize_conversations
from llmkit.config import (
    LORA_TARGETS_HELP,
    MAX_BAD_ROWS_HELP,
    SAVE_EVERY_HELP,
    StageConfig,
    configure,
    option,
)
from llmkit.curves import save_curves
from llmkit.formats import FORMATS, read_conversations
from llmkit.loaders import DataError, Rejects, bundled_path


@dataclass
class SFTConfig(StageConfig):
    STAGE: ClassVar[str] = "sft"

    base_model: str | None = option(None, "a local causal-LM folder to fine-tune (default: RUN_DIR/pretrain); its "
                                          "tokenizer needs a chat template")
    train_data: str | None = option(None, "conversations to train on: a file or folder in any format llmkit reads "
                                          "(default: the bundled closed-world conversations)")
    eval_data: str | None = option(None, "conversations to evaluate on (default: the bundled eval split, or 5% of "
                                         "train_data)")
    data_format: str = option("auto", "format of the data (auto: detected from the first row)",
                              choices=("auto", *FORMATS))
    max_examples: int | None = option(None, "train on the first N conversations only (the LIMA experiment)")
    max_bad_rows: float = option(0.01, MAX_BAD_ROWS_HELP)
    epochs: float | None = option(None, "passes over the conversations (default: 3, or 10 with LoRA)")
    max_steps: int = option(-1, "optimizer steps; > 0 overrides epochs")
    learning_rate: float = option(1e-3, "peak learning rate of full fine-tuning")
    lora_learning_rate: float = option(3e-3, "peak learning rate with LoRA")
    batch_size: int = option(32, "conversations per optimizer step, over all devices")
    micro_batch_size: int | None = option(8, "conversations per forward pass (on average, with balance_lengths); "
                                             "gradient accumulation makes up the rest")
    balance_lengths: bool = option(True, "sort each step's conversations by length into micro-batches: less "
                                         "padding, the same loss")
    max_length: int = option(256, "tokens per conversation (longer ones are truncated)")
    warmup_ratio: float = option(0.05, "fraction of the steps spent warming up")
    weight_decay: float = option(0.0, "AdamW's weight decay")
    packing: bool | None = option(None, "pack conversations into rows (default: only where padding-free attention "
                                        "exists, CUDA with FlashAttention)")
    # Why these rows: docs/decisions.md, "Which embedding rows SFT trains".
    freeze_embeddings: bool = option(True, "full SFT: keep the token embeddings fixed except the chat tokens' rows")
    train_unseen_tokens: bool = option(True, "the embedding rows of answer tokens the run's pretraining data never "
                                             "contains train too (frozen, refusals came out garbled)")
    lora: bool = option(False, "train a LoRA adapter (then merged) instead of every weight; writes RUN_DIR/lora")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_targets: str | list[str] = option("all-linear", LORA_TARGETS_HELP)
    quantization: str = option("none", "4bit: load the base model in 4 bits for QLoRA (with lora, on a CUDA GPU "
                                       "with bitsandbytes)", choices=("none", "4bit"))
    stage_name: str | None = option(None, "output folder in the run (default: sft, or lora with LoRA)")
    eval_every: int = option(50, "steps between evaluations")
    save_every: int = option(50, SAVE_EVERY_HELP)
    closed_world: bool | None = option(None, "measure closed-world QA after training (default: when training on "
                                             "the bundled data)")
    qa_limit: int | None = option(None, "questions per QA split (default: all)")
    mixed_precision: str = option("auto", "auto (bf16 on a GPU that has it), bf16, fp16 or no",
                                  choices=("auto", "bf16", "fp16", "no"))
    seed: int = option(0, "seed of the data order")

    @property
    def output_name(self) -> str:
        return self.stage_name or ("lora" if self.lora else self.STAGE)


# small and gpt2 are GPU starting points (one consumer GPU; a GPT-2-small-sized model): longer conversations,
# bigger batches and the learning rates of fine-tuning a model of that size.
PRESETS: dict[str, dict] = {
    "smoke": {"max_steps": 12, "eval_every": 6, "qa_limit": 24, "batch_size": 16},
    # rank 4: on the depth-3 tiny model rank 8 trains 6 % of the weights; 4 trains 3.9 % and answers more held-out
    # questions than full SFT (docs/decisions.md, "Depth 3, not 4")
    "tiny": {"lora_r": 4},
    "small": {"batch_size": 64, "micro_batch_size": 16, "max_length": 512, "learning_rate": 3e-4,
              "lora_learning_rate": 1e-3, "eval_every": 100},
    "gpt2": {"batch_size": 64, "micro_batch_size": 16, "max_length": 1024, "learning_rate": 1e-4,
             "lora_learning_rate": 5e-4, "eval_every": 200},
}


def config_for(preset: str = "tiny", **overrides) -> SFTConfig:
    return configure(SFTConfig, PRESETS, preset, overrides)


def run(config: SFTConfig, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
        callbacks: tuple = ()) -> runs.StageResult:
    """Fine-tune and write RUN_DIR/sft (or RUN_DIR/lora). `callbacks`: objects with `on_log(record)`."""
    import torch

    from llmkit import training

    run_dir = Path(run_dir)
    out = runs.Stage(run_dir, config.output_name, overwrite, resumable=True)
    if out.reusable:
        return out.reuse()
    base = runs.model_folder(config.base_model, run_dir / "pretrain", "model to fine-tune",
                             f"run pretraining first (llmkit pretrain --run-dir {run_dir}) or pass base_model / "
                             "--base-model")
    # bad input (no model, a template that cannot render, LoRA targets that match nothing, bad rows) writes nothing
    tokenizer, model = load_base(base, config)
    rejects = Rejects(config.max_bad_rows)
    train_rows, eval_rows = load_conversations(config, rejects)
    train_ids = tokenize_conversations(tokenizer, train_rows, rejects, str(config.train_data or "SFT conversations"))
    eval_ids = tokenize_conversations(tokenizer, eval_rows, rejects, str(config.eval_data or "eval conversations"))
    rejects.check(config.train_data or "the SFT conversations")
    with out:
        resume = out.same_config(config)  # a killed run of this config left checkpoints: go on from the last
        rejects.write(out.work)
        log = runs.LogWriter(out.work / "log.jsonl", callbacks)
        unseen = (unseen_token_ids(base, tokenizer, answer_token_ids(tokenizer, train_rows))
                  if config.train_unseen_tokens else [])
        rows = sorted(set(rows_to_train(tokenizer, model)) | set(unseen))
        trainer = build_trainer(config, tokenizer, model, train_ids, eval_ids, out.work, progress, rows)
        trainer.add_callback(training.log_callback(log))
        trainable, total = training.trainable_parameters(trainer.model)
        if progress:
            print(f"[{out.name}] trainable parameters: {trainable:,} of {total:,} ({trainable / total:.2%})")
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        resumed_from = training.train(trainer, out.work, log, resume)
        train_seconds = time.perf_counter() - start  # since the start or the resume
        final_eval = trainer.evaluate()
        model = training.save_trained(trainer, tokenizer, out.work, config.lora, out.work / "adapter",
                                      base if config.quantization != "none" else None)
        if model is None:  # under several processes the main one saves and evaluates
            return runs.StageResult(out.name, out.final, {})
        metrics = {
            "method": "lora" if config.lora else "full", "base_model": str(base), "train_examples": len(train_rows),
            "eval_examples": len(eval_rows), "steps": trainer.state.global_step, "train_seconds": train_seconds,
            "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
            "unseen_token_rows_trained": len(unseen), "eval_loss": final_eval.get("eval_loss"),
            "rejected_rows": len(rejects.rows), "resumed_from_step": resumed_from,
            "learning_rate": learning_rate(config), "packing": packing(config),
            # what training holds besides activations: fp32 weights, gradients and two AdamW moments per trained weight
            "weights_grads_optimizer_mb": (total + 3 * trainable) * 4 / 2**20,
        }
        if cuda:
            metrics["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if config.closed_world if config.closed_world is not None else config.train_data is None:
            from llmkit.evaluate import closed_world_qa
            from llmkit.model import load_causal_lm

            base_model = load_causal_lm(base, next(model.parameters()).device)
            metrics.update(closed_world_qa(model, tokenizer, config.qa_limit, base_model, "base"))
        log.write({"step": trainer.state.global_step, "samples": [
            {"prompt": e["prompt"], "continuation": e["answer"]} for e in metrics.get("qa_heldout_examples", [])[:4]]})
        save_curves(out.work)
        return out.commit(config, metrics)


def build_trainer(config: SFTConfig, tokenizer, model, train_rows: list[dict], eval_rows: list[dict], work: Path,
                  progress: bool = False, embedding_rows: list[int] | None = None):
    """TRL's SFTTrainer set up as llmkit runs it: assistant-only loss, cosine schedule, length-balanced
    micro-batches, LoRA if asked, the embeddings frozen but the rows that must train.
    Rows: conversations ({"messages": ...}) or what `chat_format.tokenize_conversations` made of them.
    `embedding_rows`: the token-embedding rows that train (default: `rows_to_train`)."""
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from llmkit import training

    # The assistant mask is computed here for any template (llmkit.chat_format); TRL builds the labels from it
    train_rows, eval_rows = (rows if not rows or "input_ids" in rows[0] else tokenize_conversations(tokenizer, rows)
                             for rows in (train_rows, eval_rows))

    micro, accumulation = runs.split_batch(config.batch_size, config.micro_batch_size, runs.world_size())
    args = TRLConfig(**training.trainer_arguments(
        config, work, progress, micro, accumulation, learning_rate=learning_rate(config),
        num_train_epochs=epochs(config), max_steps=config.max_steps,
        train_sampling_strategy=training.sampling_strategy(config.balance_lengths, accumulation),
        lr_scheduler_type="cosine", warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
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
    import torch

    return torch.cuda.is_available() and _has_flash_attention()


# ---- the embedding rows that train ----------------------------------------------------------------
def chat_token_ids(tokenizer) -> list[int]:
    """The special tokens of the chat template (llmkit's <|im_start|> and <|im_end|>; Llama 3's header and
    <|eot_id|> tokens, ...) and the EOS, but the BOS every pretrained model has seen: tokens a base model has
    rarely or never seen, which SFT must teach. With every other row frozen, a frozen <|im_end|> row kept the end
    of turn unlikely (measured on tiny: P(<|im_end|>) after a finished answer 0.13 with every row frozen, 0.96
    with these rows training)."""
    from llmkit.chat_format import template_token_ids

    return template_token_ids(tokenizer)


def rows_to_train(tokenizer, model) -> list[int]:
    """The chat tokens whose embedding rows SFT trains: those the base model never learned to use.
    - A model on llmkit's ChatML template — llmkit's own models, pretrained without conversations, and any base
      that came without a template and got llmkit's tokens: every chat token (`chat_token_ids`).
    - A family's model on its own template: only the chat tokens whose rows look untrained — a norm under 1/1000
      of the median row's, as Llama 3 base leaves <|eot_id|> and its header tokens. Rows its makers trained
      (Qwen2.5's and SmolLM2's <|im_start|> and <|im_end|>) stay as they are, as in a plain TRL or peft run, and the
      run holds no gradient or optimizer state for the embedding matrix (V × d: 136 M values on Qwen2.5-0.5B)."""
    import torch

    from llmkit.tokenizer import CHAT_TEMPLATE

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
    import torch
    from datasets import load_from_disk

    base = Path(base).resolve()
    blocks = base.parent / "data" / "blocks"
    pretrain_config = runs.read_stage_config(base)
    if base.name != "pretrain" or not blocks.exists() or pretrain_config is None:
        return []
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


# ---- inputs ---------------------------------------------------------------------------------------
def load_base(base: Path, config: SFTConfig | None = None):
    """(tokenizer, model) of the model folder to fine-tune, checked before anything is written: a causal LM, a
    tokenizer that fits its vocabulary, a chat template that renders a conversation (a model without one gets
    llmkit's ChatML template and its tokens), LoRA targets that exist, 4-bit loading where it can work."""
    from llmkit.chat_format import add_chatml, check_template, stop_at_end_of_turn
    from llmkit.model import load_causal_lm
    from llmkit.tokenizer import load_chat_tokenizer

    config = config or SFTConfig()
    tokenizer = load_chat_tokenizer(base, require_template=False)
    if config.quantization != "none":
        from llmkit.training import load_quantized

        if not config.lora:
            raise runs.StageError("quantization='4bit' is QLoRA: it trains a LoRA adapter on the frozen 4-bit "
                                  "model; add lora (--lora)")
        model = load_quantized(base)
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
        from llmkit.training import lora_targets

        lora_targets(model, config.lora_targets)
    return tokenizer, model


def load_conversations(config: SFTConfig, rejects: Rejects | None = None) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows {"messages": [...]} in TRL's conversational format; rows of the user's files that
    cannot be read go to `rejects` (None: the first one stops the read)."""
    if config.train_data is None:
        train = read_conversations(bundled_path("sft_train.jsonl"), "messages")
        evals = (read_conversations(config.eval_data, config.data_format, rejects=rejects) if config.eval_data
                 else read_conversations(bundled_path("sft_eval.jsonl"), "messages"))
    else:
        train = read_conversations(config.train_data, config.data_format, rejects=rejects)
        if config.eval_data:
            evals = read_conversations(config.eval_data, config.data_format, rejects=rejects)
        else:
            n_eval = max(1, len(train) // 20) if len(train) > 1 else 0
            train, evals = train[n_eval:], train[:n_eval] or train[:1]
    if config.max_examples is not None:
        if config.max_examples < 1:
            raise DataError(f"max_examples={config.max_examples}: give a positive number of conversations")
        train = train[: config.max_examples]
    return train, evals


def _has_flash_attention() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True
