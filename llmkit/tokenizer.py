"""Tokenizer: a byte-level BPE trained on the cleaned corpus, and packing of documents into training blocks.

Byte-level BPE (GPT-2's scheme) never meets an unknown character: any UTF-8 text falls back to bytes.
The special tokens are few and serve one purpose each:

    <|bos|>         starts every document in a packed block, so the model sees where one text ends and the
                    next begins (documents are concatenated, nanochat-style, instead of padded)
    <|im_start|>    opens a chat turn: "<|im_start|>user\\n…<|im_end|>\\n" (ChatML)
    <|im_end|>      ends a turn; it is the EOS token, so generation stops at the end of the answer
    <|pad|>         padding for batched generation and fine-tuning

The chat template wraps assistant text in `{% generation %}` … `{% endgeneration %}`, which is how TRL's
`assistant_only_loss=True` finds the tokens to train on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llmkit.errors import StageError

BOS, EOS, PAD, IM_START = "<|bos|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, EOS]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] }}{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def train_tokenizer(texts, vocab_size: int = 4096, min_frequency: int = 2):
    """Train a byte-level BPE on an iterable of strings; returns a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=[IM_START], chat_template=CHAT_TEMPLATE, model_max_length=1 << 20,
    )


def pack_sequences(dataset, tokenizer, block_size: int, num_proc: int = 1, text_field: str = "text"):
    """Tokenize documents (BOS first) and cut the concatenated stream into blocks of `block_size` tokens.

    Runs as two batched `datasets.map` passes. Each block's remainder shorter than `block_size` at the end
    of a map batch is dropped, as in the transformers examples' `group_texts` (a fraction of a percent)."""
    bos = tokenizer.bos_token_id
    if len(dataset) == 0:
        empty = {"documents": 0, "bytes": 0, "tokens": 0, "bytes_per_token": 0.0, "blocks": 0}
        return Dataset.from_dict({"input_ids": []}), empty

    def tokenize(batch):
        ids = tokenizer(batch[text_field], add_special_tokens=False)["input_ids"]
        return {"input_ids": [[bos, *x] for x in ids],
                "n_bytes": [len(t.encode("utf-8")) for t in batch[text_field]]}

    def group(batch):
        stream = [t for ids in batch["input_ids"] for t in ids]
        n = len(stream) // block_size * block_size
        return {"input_ids": [stream[i:i + block_size] for i in range(0, n, block_size)]}

    nproc = num_proc if num_proc > 1 else None
    tokenized = dataset.map(tokenize, batched=True, num_proc=nproc, remove_columns=dataset.column_names,
                            desc="tokenize")
    stats = {
        "documents": len(tokenized),
        "bytes": int(sum(tokenized["n_bytes"])),
        "tokens": int(sum(len(x) - 1 for x in tokenized["input_ids"])),  # without the BOS
    }
    stats["bytes_per_token"] = stats["bytes"] / max(stats["tokens"], 1)
    blocks = tokenized.remove_columns("n_bytes").map(group, batched=True, batch_size=1000, num_proc=nproc,
                                                     desc="pack")
    stats["blocks"] = len(blocks)
    return blocks, stats


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the vocabulary: two tokenizers with the same fingerprint map text to the same ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha1(json.dumps(vocab).encode()).hexdigest()[:16]


def load_tokenizer(path: str | Path):
    return AutoTokenizer.from_pretrained(str(path))


def load_chat_tokenizer(path: str | Path, require_template: bool = True):
    """The tokenizer of a local model folder that a chat stage starts from: it must have a chat template (the
    conversations are rendered with it; SFT gives a model without one llmkit's), and it gets a pad token (its
    EOS) where it has none."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise StageError(f"{path}: no tokenizer transformers can load ({e}); a model folder holds its tokenizer "
                         "(tokenizer.json or the files save_pretrained writes)") from None
    if require_template and not tokenizer.chat_template:
        raise StageError(f"{path}: the tokenizer has no chat template; the stage renders conversations with it. "
                         "Fine-tune it with llmkit sft first (which adds llmkit's ChatML template), or add one "
                         "(tokenizer.chat_template = ...) and save it")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
