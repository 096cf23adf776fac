"""Stand-ins of the common open-weight model families: a tiny random-initialised model from the family's own
transformers config class, a tokenizer trained on the spot with the family's special tokens and tokenizer kind,
and the family's chat template — the one its checkpoints ship (TRL keeps byte-identical copies of most), or
written in its format where TRL has none.

No weights can be downloaded in tests, notebooks or CI, so this is how llmkit checks that a stage works on a
Llama 3, Qwen, Gemma, Mistral, Phi-3, SmolLM2 or GPT-2 checkpoint: same classes, same template, same special
tokens, EOS and pad conventions, a vocabulary and a size that train in seconds.

    folder = families.build_stand_in("llama3", "models/llama3", texts)   # a save_pretrained folder
    llmkit sft --base-model models/llama3 --lora
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from trl import chat_template_utils

# Templates that TRL does not keep, as the checkpoints ship them
MISTRAL_TEMPLATE = (  # Mistral-7B-Instruct-v0.1/v0.2: no system role, [INST] ... [/INST] answer</s>
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct: ChatML with a default system prompt, no generation markers
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    config_class: str  # the transformers config class
    template: str | None  # a TRL template name ("trl:llama3"), a template, or None: the checkpoint has none
    eos: str
    bos: str | None = None
    pad: str | None = None  # None: the family ships no pad token
    unk: str | None = None
    extra: tuple[str, ...] = ()  # the other special tokens of its chat format
    sentencepiece: bool = False  # a SentencePiece-style tokenizer (▁ for spaces) instead of byte-level BPE
    config: dict = field(default_factory=dict)  # family-specific config fields of the tiny stand-in


FAMILIES: dict[str, Family] = {
    "llama3": Family("LlamaConfig", "trl:llama3", "<|end_of_text|>", bos="<|begin_of_text|>",
                     extra=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
                     config={"tie_word_embeddings": False, "rope_theta": 500000.0}),
    "qwen2.5": Family("Qwen2Config", "trl:qwen2_5", "<|endoftext|>", pad="<|endoftext|>",
                      extra=("<|im_start|>", "<|im_end|>"), config={"tie_word_embeddings": True}),
    "qwen3": Family("Qwen3Config", "trl:qwen3", "<|im_end|>", pad="<|endoftext|>",
                    extra=("<|im_start|>", "<think>", "</think>"), config={"tie_word_embeddings": True, "head_dim": 16}),
    "gemma2": Family("Gemma2Config", "trl:gemma", "<eos>", bos="<bos>", pad="<pad>", unk="<unk>",
                     extra=("<start_of_turn>", "<end_of_turn>"), sentencepiece=True,
                     config={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}),
    "gemma3": Family("Gemma3TextConfig", "trl:gemma3", "<eos>", bos="<bos>", pad="<pad>", unk="<unk>",
                     extra=("<start_of_turn>", "<end_of_turn>"), sentencepiece=True,
                     config={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64}),
    "mistral": Family("MistralConfig", MISTRAL_TEMPLATE, "</s>", bos="<s>", unk="<unk>", extra=("[INST]", "[/INST]"),
                      sentencepiece=True, config={"tie_word_embeddings": False}),
    "phi3": Family("Phi3Config", "trl:phi3", "<|endoftext|>", bos="<s>", pad="<|endoftext|>", unk="<unk>",
                   extra=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), sentencepiece=True,
                   config={"tie_word_embeddings": False}),
    "smollm2": Family("LlamaConfig", SMOLLM2_TEMPLATE, "<|im_end|>", bos="<|im_start|>", pad="<|im_end|>",
                      unk="<|endoftext|>", config={"tie_word_embeddings": True}),
    "gpt2": Family("GPT2Config", None, "<|endoftext|>", bos="<|endoftext|>", unk="<|endoftext|>"),
}


def template_of(family: Family) -> str | None:
    if family.template is None or not family.template.startswith("trl:"):
        return family.template

    return getattr(chat_template_utils, f"{family.template[4:]}_chat_template")


def build_tokenizer(name: str, texts, vocab_size: int = 512):
    """A fast tokenizer of family `name` trained on `texts`: its special tokens, its kind (byte-level BPE or
    SentencePiece-style with ▁), its EOS, pad (or none) and chat template (or none)."""
    family = FAMILIES[name]
    named = [t for t in (family.pad, family.bos, family.eos, family.unk) if t]
    special = list(dict.fromkeys([*named, *family.extra]))
    if family.sentencepiece:
        tok = Tokenizer(models.BPE(unk_token=family.unk))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted({c for t in texts for c in t.replace(" ", "▁")})
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos, pad_token=family.pad, unk_token=family.unk,
        additional_special_tokens=[t for t in family.extra if t not in named], chat_template=template_of(family),
        model_max_length=1 << 20)


def build_config(name: str, tokenizer, hidden: int = 64, layers: int = 2, context: int = 512):
    """The family's transformers config, tiny: `hidden` wide, `layers` deep, grouped-query attention where the
    family has it, its special token ids."""
    family = FAMILIES[name]
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)}
    config_class = getattr(transformers, family.config_class)
    if family.config_class == "GPT2Config":
        return config_class(n_embd=hidden, n_layer=layers, n_head=4, n_positions=context, **ids)
    return config_class(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                        **ids, **family.config)


def build_stand_in(name: str, folder: str | Path, texts, seed: int = 0, **sizes) -> Path:
    """Write a random-initialised stand-in of family `name` (model and tokenizer) to `folder`."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    texts = list(texts)
    tokenizer = build_tokenizer(name, texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(name, tokenizer, **sizes))
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
