"""Model sizes: standard transformers LLaMA models whose size follows from one dial, the depth.

A model is a plain `LlamaConfig` (RMSNorm, RoPE, SwiGLU, tied embeddings, sdpa attention), so every
checkpoint llmkit writes is an ordinary `save_pretrained` folder that `AutoModelForCausalLM` loads.

The dial (after nanochat): width = 64 · depth, one attention head per 64 dimensions, a SwiGLU hidden size
of 8/3 · width (rounded to a multiple of 64, so the MLP has the parameters of a 4× GELU MLP), and a peak
learning rate that shrinks with width (∝ 1/√width, anchored at 3e-3 for width 256 — small models tolerate
large steps). Depth 3 is the CPU `tiny` size (~1.75 M parameters with the bundled 2k vocabulary); depth 12
with GPT-2's 50k vocabulary is GPT-2-small-sized (~124 M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


@dataclass(frozen=True)
class ModelSize:
    depth: int
    seq_len: int
    batch_size: int  # sequences per optimizer step, before gradient accumulation is split out
    weight_decay: float = 0.1  # AdamW's, on the transformer's weight matrices (not norms, not embeddings)
    micro_batch_size: int | None = None  # sequences per forward pass on one device; None: the whole batch
    optimizer: str = "adamw"  # for the transformer's matrices: "adamw", or "muon" (llmkit.muon)

    @property
    def width(self) -> int:
        return 64 * self.depth

    @property
    def learning_rate(self) -> float:
        return 3e-3 * math.sqrt(256 / self.width)


MODEL_SIZES: dict[str, ModelSize] = {
    # CPU, the embedded default: batches of 8, weight decay 1.0 on the matrices, depth 3, AdamW. Why each, with
    # the runs that decided it: docs/decisions.md.
    "tiny": ModelSize(depth=3, seq_len=128, batch_size=8, weight_decay=1.0),
    "small": ModelSize(depth=8, seq_len=512, batch_size=64),  # one consumer GPU, ~30 M
    # GPT-2-small-sized, ~124 M with a 50k vocab. Micro-batches of 32: 23 GiB, 0.97x the speed of 64 (45 GiB) on
    # an H200 compiled in bf16 (benchmarks/gpu_throughput.py); the whole batch of 256 in one pass fits no GPU.
    "gpt2": ModelSize(depth=12, seq_len=1024, batch_size=256, micro_batch_size=32),
}


def llama_config(depth: int, vocab_size: int, max_position_embeddings: int = 2048, **overrides):
    """A LlamaConfig from the depth dial (see the module docstring)."""
    width = 64 * depth
    hidden = 64 * round(8 / 3 * width / 64)
    cfg = dict(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=hidden, num_hidden_layers=depth,
        num_attention_heads=max(1, width // 64), num_key_value_heads=max(1, width // 64),
        max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, initializer_range=0.02,
        attn_implementation="sdpa",
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def build_model(depth: int, tokenizer, max_position_embeddings: int = 2048, seed: int = 0,
                vocab_size: int | None = None, **overrides):
    """A freshly initialised LlamaForCausalLM sized by `depth`, matched to `tokenizer`'s vocabulary (or to a larger
    `vocab_size`, whose extra rows the tokenizer never uses)."""
    config = llama_config(depth, vocab_size or len(tokenizer), max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def parameter_count(depth: int, vocab_size: int) -> int:
    """The parameters of `build_model(depth, ...)` with a vocabulary of `vocab_size`, without building it: the
    tied embedding, and per layer attention (4 w²), the SwiGLU MLP (3 · w · hidden) and two norms, and the final
    norm."""
    width = 64 * depth
    hidden = 64 * round(8 / 3 * width / 64)
    return vocab_size * width + depth * (4 * width * width + 3 * width * hidden + 2 * width) + width


def parameter_counts(model) -> dict[str, int]:
    """Parameters by part: embedding (shared with the output head when tied), attention, MLP, norms."""
    parts = {"embedding": 0, "attention": 0, "mlp": 0, "norm": 0, "other": 0}
    for name, p in model.named_parameters():
        key = ("embedding" if "embed" in name or "lm_head" in name else "attention" if "self_attn" in name
               else "mlp" if ".mlp." in name else "norm" if "norm" in name else "other")
        parts[key] += p.numel()
    parts["total"] = sum(parts.values())
    return parts


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6 · (non-embedding parameters) + the attention score term, 12 · L · d · T
    (Kaplan et al. 2020, as nanoGPT and nanochat count it). The tied output projection is a matmul too, so
    its parameters count once."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def load_causal_lm(path, device=None):
    """A local checkpoint as a float32 causal LM in eval mode, on `device` (default: where it loads, the CPU)."""
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return (model.to(device) if device is not None else model).eval()
