"""llmkit export: a standalone transformers folder and GGUF, round-tripped through transformers' GGUF reader."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit import families
from llmkit.cli import main
from llmkit.export import TOLERANCE, export
from llmkit.loaders import bundled_path
from llmkit.runs import StageError


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    texts = [json.loads(line)["text"] for line in bundled_path("corpus.jsonl").read_text().splitlines()[:200]]
    root = tmp_path_factory.mktemp("export")
    return {name: families.build_stand_in(name, root / name, texts) for name in ("qwen2.5", "gpt2")}


def test_gguf_round_trips_with_the_logits_of_the_model(base_model, qwen, tmp_path):
    import gguf

    # llmkit's own model through the command, at full precision: the same logits, exactly
    run_dir = tmp_path / "run"
    assert main(["export", "--model", str(base_model), "--out", str(run_dir / "x"), "--gguf-type", "f32"]) == 0
    record = json.loads((run_dir / "x" / "export.json").read_text())
    assert record["files"] == ["transformers", "model-f32.gguf"] and record["gguf_max_logit_difference"] == 0.0
    # the metadata a GGUF runtime reads: the vocabulary, the chat template, the end-of-turn token as EOS
    reader = gguf.GGUFReader(run_dir / "x" / "model-f32.gguf")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    fields = reader.fields
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode() for i in fields["tokenizer.ggml.tokens"].data]
    assert tokens[: len(tokenizer)] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert bytes(fields["tokenizer.chat_template"].parts[-1]).decode() == tokenizer.chat_template
    assert int(fields["tokenizer.ggml.eos_token_id"].parts[-1][0]) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"

    # a Qwen2.5 stand-in (grouped-query attention, q/k/v biases, tied embeddings) at half precision and in q8_0
    for kind in ("f16", "q8_0"):
        record = export(qwen["qwen2.5"], tmp_path / f"qwen-{kind}", ("gguf",), kind)
        assert 0 < record["gguf_max_logit_difference"] <= TOLERANCE[kind]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "qwen-f16", gguf_file="model-f16.gguf")
    assert loaded.config.model_type == "qwen2" and loaded.config.tie_word_embeddings


def test_the_transformers_folder_stops_at_the_end_of_a_turn(qwen, tmp_path):
    export(qwen["qwen2.5"], tmp_path / "out", ("transformers",))
    folder = tmp_path / "out" / "transformers"
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"  # Qwen base: EOS was <|endoftext|>
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    original = AutoModelForCausalLM.from_pretrained(qwen["qwen2.5"])
    ids = torch.tensor([tokenizer("Where was Ada born?")["input_ids"]])
    assert torch.equal(model(ids).logits, original(ids).logits)  # the same weights


def test_bad_exports_are_clear_errors(qwen, tmp_path):
    with pytest.raises(StageError, match=r"GGUF export supports .*GPT2LMHeadModel.*convert_hf_to_gguf.py"):
        export(qwen["gpt2"], tmp_path / "gpt2")
    assert not (tmp_path / "gpt2").exists()
    with pytest.raises(StageError, match="not a model folder"):
        export(tmp_path, tmp_path / "x")
    with pytest.raises(StageError, match="gguf_type 'q4'; accepted: f32, f16, bf16, q8_0"):
        export(qwen["qwen2.5"], tmp_path / "y", gguf_type="q4")
    export(qwen["qwen2.5"], tmp_path / "z", ("transformers",))
    with pytest.raises(StageError, match="exists and is not empty"):
        export(qwen["qwen2.5"], tmp_path / "z", ("transformers",))
