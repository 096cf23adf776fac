"""Export a stage's model for use outside llmkit: a standalone transformers folder, and GGUF for llama.cpp,
Ollama, LM Studio and the like.

    llmkit export --run-dir runs/tiny --stage ppo                 # -> runs/tiny/export/ppo/{transformers,gguf}
    llmkit export --model path/to/folder --out exported --gguf-type f16

- **transformers**: the model (a LoRA stage's folder already holds the merged weights), its tokenizer with the
  chat template, and a generation config that stops at every end-of-turn token (`llmkit.chat_format`), so
  `pipeline("text-generation", ...)` or any other tool stops where an answer ends.
- **GGUF**, written with the `gguf` package (llama.cpp's own writer library) for the architectures llama.cpp
  runs as `llama` (Llama, Mistral, SmolLM2 and llmkit's own models) and `qwen2` (Qwen2/2.5): the weights in f32,
  f16, bf16 or q8_0, with the hyper-parameters, the BPE vocabulary and merges, the special token ids and the
  chat template as metadata. Query and key weights are permuted as llama.cpp's converter does (llama.cpp rotates
  interleaved pairs, transformers the two halves). Every export is checked: the GGUF file is loaded back with
  transformers (which reads GGUF) and its logits on a few prompts compared with the original's; the largest
  difference is written to export.json, and an export whose difference exceeds what its precision allows fails.
  Other families: export the transformers folder and run llama.cpp's `convert_hf_to_gguf.py` on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit import runs
from llmkit.chat_format import special_ids, stop_at_end_of_turn
from llmkit.model import load_causal_lm

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
# The largest logit difference each precision may give (measured on the families' stand-ins and notebook 10's:
# f32 0, f16 3e-4 to 1.2e-3, bf16 ~3e-3, q8_0 ~1e-2; logits of magnitude ~10), with room
TOLERANCE = {"f32": 1e-4, "f16": 0.05, "bf16": 0.5, "q8_0": 0.5}
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
CHECK_PROMPTS = ["Where was Ada born?", "Write one sentence about a river.", "What is 2 + 3?"]


def export(model_dir: str | Path, out: str | Path, formats: tuple[str, ...] = ("transformers", "gguf"),
           gguf_type: str = "f16", overwrite: bool = False) -> dict:
    """Export the model folder `model_dir` into `out` (`out/transformers`, `out/model-<type>.gguf`); returns what
    export.json records (files, the GGUF round-trip's largest logit difference)."""
    model_dir, out = Path(model_dir), Path(out)
    unknown = sorted(set(formats) - {"transformers", "gguf"})
    if unknown:
        raise runs.StageError(f"unknown export format {', '.join(unknown)}; accepted: transformers, gguf")
    if gguf_type not in GGUF_TYPES:
        raise runs.StageError(f"gguf_type {gguf_type!r}; accepted: {', '.join(GGUF_TYPES)}")
    if not (model_dir / "config.json").exists():
        raise runs.StageError(f"{model_dir}: not a model folder (no config.json); give a stage's folder")
    model = load_causal_lm(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if "gguf" in formats and type(model).__name__ not in ARCHITECTURES:
        raise runs.StageError(f"GGUF export supports {', '.join(ARCHITECTURES)}; {model_dir} is a "
                              f"{type(model).__name__}: export the transformers folder and convert it with "
                              "llama.cpp's convert_hf_to_gguf.py")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise runs.StageError(f"{out} exists and is not empty; pass overwrite (--overwrite) or another folder")
    if tokenizer.chat_template:
        stop_at_end_of_turn(tokenizer, model)
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {"model": str(model_dir), "files": []}
    if "transformers" in formats:
        model.save_pretrained(out / "transformers")
        tokenizer.save_pretrained(out / "transformers")
        record["files"].append("transformers")
    if "gguf" in formats:
        path = out / f"model-{gguf_type}.gguf"
        write_gguf(model, tokenizer, path, gguf_type)
        record["files"].append(path.name)
        record["gguf_type"] = gguf_type
        record["gguf_max_logit_difference"] = gguf_logit_difference(model, tokenizer, path)
        record["gguf_tolerance"] = TOLERANCE[gguf_type]
        if record["gguf_max_logit_difference"] > TOLERANCE[gguf_type]:
            raise runs.StageError(f"{path}: its logits differ from the model's by up to "
                                  f"{record['gguf_max_logit_difference']:.3g} (allowed at {gguf_type}: "
                                  f"{TOLERANCE[gguf_type]}); the export is wrong for this model")
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _permute(weight, heads: int):
    """llama.cpp's query/key permutation: the two rotary halves of each head, interleaved."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model) -> dict:
    """GGUF tensor name -> float32 numpy array of a llama- or qwen2-architecture model."""
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    permute = ARCHITECTURES[type(model).__name__] == "llama"
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    out = {}
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    tied = getattr(cfg, "tie_word_embeddings", False)
    for name, array in state.items():
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = array
        elif name == "model.norm.weight":
            out["output_norm.weight"] = array
        elif name == "lm_head.weight":
            if not tied:  # a tied head is the embedding: llama.cpp (and transformers' reader) reuse token_embd
                out["output.weight"] = array
        elif name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            if module not in names:
                raise runs.StageError(f"GGUF export: no GGUF name for {name}")
            if permute and module == "self_attn.q_proj":
                array = _permute(array, heads)
            elif permute and module == "self_attn.k_proj":
                array = _permute(array, kv_heads)
            out[f"blk.{layer}.{names[module]}.{kind}"] = array
        elif not name.endswith("rotary_emb.inv_freq"):
            raise runs.StageError(f"GGUF export: no GGUF name for {name}")
    return out


def write_gguf(model, tokenizer, path: Path, gguf_type: str = "f16") -> None:
    """Write `model` and `tokenizer` to one GGUF file (module doc)."""
    cfg = model.config
    arch = ARCHITECTURES[type(model).__name__]
    writer = gguf.GGUFWriter(str(path), arch)
    # not the folder's name: transformers reads a llama file whose name holds "mistral" as another architecture
    writer.add_name("llmkit export")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads or cfg.num_attention_heads)
    writer.add_rope_dimension_count(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type]
    writer.add_file_type(file_type)
    _add_tokenizer(writer, tokenizer, cfg.vocab_size)
    for name, array in gguf_tensors(model).items():
        if array.ndim == 1 or gguf_type == "f32":  # norms and biases stay f32, as llama.cpp's converter keeps them
            writer.add_tensor(name, array.astype(np.float32))
        elif gguf_type == "f16":
            writer.add_tensor(name, array.astype(np.float16))
        else:
            qtype = gguf.GGMLQuantizationType.BF16 if gguf_type == "bf16" else gguf.GGMLQuantizationType.Q8_0
            data = gguf.quants.quantize(array, qtype)
            writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """The vocabulary (padded to the model's rows), BPE merges, special token ids and chat template."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = special_ids(tokenizer)
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        types.append(gguf.TokenType.CONTROL if i in special else gguf.TokenType.UNUSED if i not in by_id
                     else gguf.TokenType.NORMAL)
    byte_level = "ByteLevel" in json.dumps(state.get("pre_tokenizer"))
    writer.add_tokenizer_model("gpt2" if byte_level else "llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if not byte_level:
        writer.add_token_scores([0.0] * len(tokens))
    merges = state.get("model", {}).get("merges") or []
    if merges:
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id)):
        if token_id is not None:
            setter(token_id)
    writer.add_add_bos_token(False)  # the chat template writes the BOS where the model wants one
    if tokenizer.chat_template:
        template = tokenizer.chat_template
        writer.add_chat_template(template if isinstance(template, str) else template.get("default", ""))


def gguf_logit_difference(model, tokenizer, path: Path) -> float:
    """The largest absolute difference between the model's logits and those of the GGUF file loaded back with
    transformers, on CHECK_PROMPTS through the chat template (or as raw text without one)."""
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    worst = 0.0
    for prompt in CHECK_PROMPTS:
        if tokenizer.chat_template:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"]
        else:
            ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            a = model(torch.tensor([ids])).logits
            b = loaded(torch.tensor([ids])).logits
        worst = max(worst, (a - b).abs().max().item())
    return worst
