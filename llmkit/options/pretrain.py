"""Pretraining's options and presets (its code: `llmkit.pretrain`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import (
    SCRATCH,
    CheckpointOptions,
    DataOptions,
    EvalOptions,
    MicroBatchOptions,
    ModelOptions,
    OptimOptions,
    PeriodicEvalOptions,
    PrecisionOptions,
    RunOptions,
    StageConfig,
    TextOptions,
    WarmupOptions,
    WeightDecayOptions,
    configure,
    option,
    retune,
)

MODEL_SIZES = ("tiny", "small", "gpt2")  # llmkit.model.MODEL_SIZES: the model each one builds
OPTIMIZERS = ("adamw", "muon")  # for the transformer's matrices; norms and embeddings always get AdamW


@dataclass
class PretrainConfig(RunOptions, EvalOptions, PeriodicEvalOptions, CheckpointOptions, PrecisionOptions,
                     WeightDecayOptions, MicroBatchOptions, WarmupOptions, OptimOptions, ModelOptions, TextOptions,
                     DataOptions, StageConfig):
    """Train a language model on the data stage's blocks or on text."""

    STAGE: ClassVar[str] = "pretrain"
    # its checkpoints hold their step, and the data order is a function of (seed, step): a rerun resumes from them
    # with other options too (more steps), and a damaged one is an error that deletes nothing
    RESUME_ONLY_SAME_CONFIG: ClassVar[bool] = False
    INPUTS: ClassVar[dict[str, str]] = {"train_data": "data", "base_model": SCRATCH}
    MEASURES: ClassVar[tuple[str, ...]] = ("language_model", "fact_completion")
    WORDS: ClassVar[dict[str, str]] = {
        "data": "the data stage's blocks folder, or text files or folders to tokenize",
        "data_default": "RUN_DIR/data/blocks", "base": "a new model of model_size, from scratch; give a folder to "
        "continue pretraining it", "batch_note": " (default: the model size's)",
        "micro_note": " (default: the model size's)", "lr_note": " (default: the model size's, from its width)",
        "decay_note": " (default: the model size's: 1.0 for tiny, else 0.1)"}

    model_size: str = option("tiny", "model size and batch defaults: one of llmkit.model.MODEL_SIZES",
                             choices=MODEL_SIZES)
    depth: int | None = option(None, "model depth, overriding the size's (width, heads and learning rate follow)")
    seq_len: int | None = option(None, "tokens per training row (default: the model size's); documents are "
                                       "re-packed")
    optimizer: str | None = option(None, "for the transformer's matrices: adamw, or muon (fewer steps); default: "
                                         "the model size's", choices=(None, *OPTIMIZERS))
    min_lr_ratio: float = option(0.1, "the cosine schedule ends at this fraction of the peak")
    early_stopping: int | None = option(3, "when the validation loss has risen for this many evaluations in a row, "
                                           "stop and keep the weights of the best one (none: train every step)")
    sample_prompts: list[str] = option(default_factory=list, help="prompts to sample continuations of at the end "
                                                                   "(default: a few closed-world or corpus prompts)")
    compile: bool = option(False, "torch.compile the model (GPU; on a CPU the compile time outweighs the gain)")
    keep_checkpoints: bool = option(False, "keep .../pretrain/checkpoints after finishing")

    max_steps: int = retune(OptimOptions, "max_steps", 1100)
    batch_size: int | None = retune(OptimOptions, "batch_size", None)
    learning_rate: float | None = retune(OptimOptions, "learning_rate", None)
    micro_batch_size: int | None = retune(MicroBatchOptions, "micro_batch_size", None)
    warmup_steps: float = retune(WarmupOptions, "warmup_steps", 30)
    eval_every: int = retune(PeriodicEvalOptions, "eval_every", 100)
    save_every: int = retune(CheckpointOptions, "save_every", 100)


# Stage presets: the model sizes of llmkit.model with the steps that go with them, and "smoke" (a two-layer
# model, a few steps) for tests. small and gpt2 are GPU starting points for a corpus of your own.
PRESETS: dict[str, dict] = {
    "smoke": {"model_size": "tiny", "depth": 2, "max_steps": 20, "eval_every": 10, "save_every": 10,
              "batch_size": 16},
    "tiny": {"model_size": "tiny"},  # the 4-minute budget on 2 CPU cores
    "small": {"model_size": "small", "max_steps": 5000, "warmup_steps": 200, "eval_every": 250, "save_every": 500},
    "gpt2": {"model_size": "gpt2", "max_steps": 10000, "warmup_steps": 500, "eval_every": 500, "save_every": 1000},
}


def config_for(preset: str = "tiny", **overrides) -> PretrainConfig:
    return configure(PretrainConfig, PRESETS, preset, overrides)
