"""Supervised fine-tuning's options and presets (its code: `llmkit.sft`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import BUNDLED, CHAT_FORMATS, TrainerStageConfig, WeightDecayOptions, configure, option


@dataclass
class SFTConfig(WeightDecayOptions, TrainerStageConfig):
    """Supervised fine-tuning (full or LoRA) on conversations."""

    STAGE: ClassVar[str] = "sft"
    INPUTS: ClassVar[dict[str, str]] = {"train_data": BUNDLED, "eval_data": BUNDLED, "base_model": "pretrain"}
    DATA_FORMATS: ClassVar[tuple[str, ...]] = ("auto", *CHAT_FORMATS)
    WORDS: ClassVar[dict[str, str]] = {
        "data": "conversations in any chat format (messages, ShareGPT, Alpaca, prompt/completion, HH transcripts, "
                "self-instruct)", "data_default": "the bundled closed-world conversations",
        "eval_default": "the bundled eval split, or 5 % of train_data", "base": "RUN_DIR/pretrain; its tokenizer "
        "needs a chat template, or gets llmkit's", "folder": "sft, or lora with LoRA",
        "steps_note": "; > 0 overrides epochs", "epochs_note": " (default: 3, or 10 with LoRA)",
        "lr_note": " of full fine-tuning", "too_long": "; longer conversations are truncated",
        "decay_note": " (default: 0)", "rows_note": " except the rows that must train: the chat tokens' and the "
        "answer tokens' the run's pretraining data never held", "lora_note": "; writes RUN_DIR/lora",
        "micro_note": " (on average, with balance_lengths)"}

    lora_learning_rate: float = option(3e-3, "peak learning rate with LoRA")
    packing: bool | None = option(None, "pack conversations into rows (default: only where padding-free attention "
                                        "exists, CUDA with FlashAttention)")
    # Why these rows: docs/decisions.md, "Which embedding rows SFT trains".
    train_unseen_tokens: bool = option(True, "the embedding rows of answer tokens the run's pretraining data never "
                                             "contains train too (frozen, refusals came out garbled)")
    quantization: str = option("none", "4bit: load the base model in 4 bits for QLoRA (with lora, on a CUDA GPU "
                                       "with bitsandbytes)", choices=("none", "4bit"))

    @property
    def output_name(self) -> str:
        return self.stage_name or ("lora" if self.lora else self.STAGE)

    def measures(self) -> tuple[str, ...]:
        return (("lora_qa", "adapter", "eval_loss", "rejected_rows") if self.lora
                else ("closed_world_qa", "eval_loss", "rejected_rows"))


# small and gpt2 are GPU starting points (one consumer GPU; a GPT-2-small-sized model): longer conversations,
# bigger batches and the learning rates of fine-tuning a model of that size.
PRESETS: dict[str, dict] = {
    "smoke": {"max_steps": 12, "eval_every": 6, "eval_limit": 24, "batch_size": 16},
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
