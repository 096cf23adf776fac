"""SFT stage: assistant-only loss, a real TRL run (full and LoRA), merged checkpoints, and bad input."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit import sft
from llmkit.loaders import DataError
from llmkit.runs import StageError

FAST = dict(max_steps=6, eval_every=3, batch_size=8, eval_limit=12)


def test_loss_is_taken_on_assistant_tokens_only(base_model, tmp_path):
    """The labels the trainer sees are -100 on every system/user/template token; the trained tokens spell out
    exactly the assistant's answers, each followed by <|im_end|> (so the model learns to stop)."""
    tokenizer, model = sft.load_base(base_model)
    convo = [{"role": "user", "content": "Where was Ada born?"}, {"role": "assistant", "content": "Ada was born in Elmford."},
             {"role": "user", "content": "And when?"}, {"role": "assistant", "content": "In 1931."}]
    rows = [{"messages": convo}, {"messages": convo[:2]}]
    trainer = sft.build_trainer(sft.SFTConfig(**FAST), tokenizer, model, rows, rows, tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained = ids[labels != -100]
        assert (labels[labels != -100] == ids[labels != -100]).all()
        text = tokenizer.decode(trained)
        assert "Where was Ada born?" not in text and "user" not in text and "<|im_start|>" not in text
        assert text.startswith("Ada was born in Elmford.<|im_end|>")
    first, second = (tokenizer.decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"]))
    assert first == "Ada was born in Elmford.<|im_end|>In 1931.<|im_end|>"
    assert second == "Ada was born in Elmford.<|im_end|>"


def test_full_sft_run_writes_a_chat_checkpoint_and_its_measurements(base_model, tmp_path):
    from widgets.live_monitor import LiveMonitor

    monitor = LiveMonitor()
    # the tiny base model is made by hand (no stage_config.json), from the closed world's tokenizer: say it is its
    config = sft.SFTConfig(base_model=str(base_model), closed_world=True, **FAST)
    result = sft.run(config, tmp_path, progress=False, callbacks=[monitor])
    out = result.output_dir
    assert out == tmp_path / "sft" and not (tmp_path / ".sft.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "{% generation %}" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    m = result.metrics
    for key in ("qa_heldout", "qa_trained", "base_qa_heldout", "base_qa_trained", "format_ok_heldout", "eval_loss",
                "eos_probability_heldout"):
        assert 0 <= m[key] <= (1 if "qa" in key or "format" in key else 100), key
    # The embeddings (tied to the output layer) stay frozen by default, except the chat tokens' rows
    weight = model.get_input_embeddings().weight
    chat = sft.chat_token_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(chat) == ["<|im_start|>", "<|im_end|>"]
    assert m["method"] == "full" and m["steps"] == 6 and m["unseen_token_rows_trained"] == 0  # not a run's pretrain
    assert m["trainable_params"] == m["total_params"] - weight.numel() + len(chat) * weight.shape[1]
    _assert_only_rows_changed(weight, AutoModelForCausalLM.from_pretrained(base_model).get_input_embeddings().weight,
                              chat)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in log if "val_loss" in r]
    assert len(evals) >= 2 and evals[-1] < evals[0]  # it learned something from the conversations
    assert any("loss" in r for r in monitor.records) and (out / "curves.png").exists()
    assert sum(p.numel() for p in model.parameters()) == m["total_params"]
    assert sft.run(sft.SFTConfig(base_model=str(base_model), **FAST), tmp_path, progress=False).reused


def test_the_tiny_presets_lora_rank_leaves_room_for_the_embedding_rows_under_5_percent():
    from llmkit.model import MODEL_SIZES, build_model, parameter_count

    config, depth = sft.config_for("tiny", lora=True), MODEL_SIZES["tiny"].depth
    tokenizer = type("Vocab", (), {"__len__": lambda self: 2048, "bos_token_id": 0, "eos_token_id": 1,
                                   "pad_token_id": 2})()  # the bundled tokenizer's size
    model = build_model(depth, tokenizer)
    total = sum(p.numel() for p in model.parameters())
    assert total == parameter_count(depth, 2048)
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    adapter = config.lora_r * sum(x.in_features + x.out_features for x in linears)  # r·(in+out) each
    rows = 120 * model.config.hidden_size  # the chat and unseen tokens' rows SFT trains on the bundled data
    assert (adapter + rows) / total < 0.05
    assert (2 * adapter + rows) / total > 0.05  # twice the rank would not fit


def test_lora_trains_a_few_percent_and_merges_to_the_same_logits(base_model, tmp_path):
    from peft import PeftModel

    cfg = sft.SFTConfig(base_model=str(base_model), lora=True, lora_r=8, **FAST)
    result = sft.run(cfg, tmp_path, progress=False)
    out, m = result.output_dir, result.metrics
    assert out == tmp_path / "lora" and m["method"] == "lora"
    base = AutoModelForCausalLM.from_pretrained(base_model)
    linears = [mod for name, mod in base.named_modules() if isinstance(mod, torch.nn.Linear) and "lm_head" not in name]
    chat = sft.chat_token_ids(AutoTokenizer.from_pretrained(out))
    width = base.get_input_embeddings().weight.shape[1]
    lora_params = sum(8 * (x.in_features + x.out_features) for x in linears)  # r·(in+out) each
    assert m["trainable_params"] == lora_params + len(chat) * width  # and the chat tokens' embedding rows
    assert m["trainable_fraction"] < 0.06  # 2 layers, width 128; the tiny preset trains under 5 %
    merged = AutoModelForCausalLM.from_pretrained(out)  # a plain checkpoint: no peft needed to load it
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), out / "adapter")
    ids = AutoTokenizer.from_pretrained(out)("Where was Ada born?", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b, c = merged(ids).logits, adapter(ids).logits, base(ids).logits
    # base + adapter/ is the trained model: the chat tokens' rows, which train beside the adapter, are in it too
    assert torch.allclose(a, b, atol=1e-4)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["trainable_token_indices"] == {
        "embed_tokens": sorted(chat)}
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter changed the model
    _assert_only_rows_changed(merged.get_input_embeddings().weight, base.get_input_embeddings().weight, chat)


def _assert_only_rows_changed(after: torch.Tensor, before: torch.Tensor, rows: list[int]) -> None:
    changed = (after - before).abs().amax(dim=1) > 0
    assert changed.nonzero().flatten().tolist() == rows


def test_with_weight_decay_the_frozen_embedding_rows_still_do_not_move(base_model, tmp_path):
    result = sft.run(sft.SFTConfig(base_model=str(base_model), weight_decay=0.5, learning_rate=1e-2, **FAST),
                     tmp_path, progress=False)
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    chat = sft.chat_token_ids(AutoTokenizer.from_pretrained(result.output_dir))
    _assert_only_rows_changed(model.get_input_embeddings().weight,
                              AutoModelForCausalLM.from_pretrained(base_model).get_input_embeddings().weight, chat)


def test_tokens_pretraining_never_saw_train_their_rows_too(base_model, data_run, tmp_path):
    """When the base is an llmkit run's pretrain stage, the tokens of the SFT answers that the run's pretraining
    blocks never contain (the corpus has no "I'm sorry, but ...") train their embedding rows beside the chat
    tokens'; every other row stays as pretraining left it. A base from elsewhere, or the option off, trains the chat rows alone."""
    import shutil

    from datasets import load_from_disk

    run = tmp_path / "run"
    run.mkdir()
    (run / "data").symlink_to(data_run.output_dir, target_is_directory=True)
    shutil.copytree(base_model, run / "pretrain")
    (run / "pretrain" / "stage_config.json").write_text(json.dumps(  # pretrained from scratch on RUN_DIR/data
        {"stage": "pretrain", "inputs": {"train_data": "RUN_DIR/data", "base_model": "scratch"}, "config": {}}))
    seen = set()
    for split in load_from_disk(str(data_run.output_dir / "blocks")).values():
        for row in split["input_ids"]:
            seen.update(row)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    unseen = sorted(set(range(len(tokenizer))) - seen)
    sorry = tokenizer("I'm sorry", add_special_tokens=False)["input_ids"]
    assert unseen and any(t in unseen for t in sorry)  # the bundled corpus never apologises
    assert sft.unseen_token_ids(run / "pretrain", tokenizer) == unseen
    assert sft.unseen_token_ids(base_model, tokenizer) == []  # a pretrain folder without its run's data stage
    answers = sft.answer_token_ids(tokenizer, sft.load_conversations(sft.SFTConfig())[0])
    needed = sorted(set(unseen) & answers)  # what the SFT answers write that pretraining never showed
    assert needed and set(sorry) & set(needed) and len(needed) < len(unseen)
    result = sft.run(sft.SFTConfig(**FAST), run, progress=False)
    assert result.metrics["unseen_token_rows_trained"] == len(needed)
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    before = AutoModelForCausalLM.from_pretrained(base_model).get_input_embeddings().weight
    _assert_only_rows_changed(model.get_input_embeddings().weight, before,
                              sorted(set(sft.chat_token_ids(tokenizer)) | set(needed)))
    off = sft.run(sft.SFTConfig(train_unseen_tokens=False, stage_name="sft_off", **FAST), run, progress=False)
    assert off.metrics["unseen_token_rows_trained"] == 0
    _assert_only_rows_changed(AutoModelForCausalLM.from_pretrained(off.output_dir).get_input_embeddings().weight,
                              before, sft.chat_token_ids(tokenizer))


def test_bad_base_models_are_clear_errors_before_anything_is_written(base_model, tmp_path):
    """No model, a folder that is not a causal LM, a tokenizer from another model, a template that cannot render a
    conversation, LoRA targets that match nothing: each names the path or module and what was expected, and no
    run folder is made."""
    from transformers import DistilBertConfig, DistilBertModel

    with pytest.raises(StageError, match="run pretraining first"):
        sft.run(sft.SFTConfig(**FAST), tmp_path / "empty")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)

    def folder(name, tok=tokenizer, mdl=model, template=tokenizer.chat_template):
        tok.chat_template = template
        tok.save_pretrained(tmp_path / name)
        mdl.save_pretrained(tmp_path / name)
        return str(tmp_path / name)

    encoder = folder("encoder", mdl=DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=1,
                                                                     n_heads=2, hidden_dim=32)))
    small = AutoModelForCausalLM.from_config(model.config.__class__(**{**model.config.to_dict(), "vocab_size": 100}))
    cases = [(encoder, {}, r"encoder: not a causal language model .*ForCausalLM"),
             (folder("other_vocab", mdl=small), {}, r"other_vocab: the tokenizer has \d[\d,]* tokens but the model's "
                                                    r"embedding 100 rows"),
             (folder("bad_template", template="{{ messages[0]['nope'].upper() }}"), {},
              r"bad_template: the chat template cannot render a user/assistant conversation"),
             (folder("odd_template", template="{% for m in messages %}{{ m['role'] }}{% endfor %}"), {},
              r"odd_template: the chat template renders the conversation differently"),
             (str(base_model), {"lora": True, "lora_targets": "q_proj,attn_c"},
              r"lora_targets: attn_c match no linear layer of the model \(LlamaForCausalLM\); its linear layers are "
              r"named down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"),
             (str(base_model), {"lora": True, "quantization": "4bit"}, r"QLoRA\) needs a CUDA GPU and bitsandbytes"),
             (str(base_model), {"quantization": "4bit"}, r"add lora")]
    for base, extra, message in cases:
        with pytest.raises(StageError, match=message):
            sft.run(sft.SFTConfig(base_model=base, **FAST, **extra), tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_unknown_data_format_names_the_file_and_row(base_model, tmp_path):
    bad = tmp_path / "chats.jsonl"
    bad.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n" + json.dumps({"q": "x", "a": "y"}) + "\n")
    with pytest.raises(DataError, match=rf"{bad}:2: .*fields found: \[a, q\]"):
        sft.run(sft.SFTConfig(base_model=str(base_model), train_data=str(bad), **FAST), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_progress_bar_prints_no_raw_log_records(base_model, tmp_path, capfd):
    sft.run(sft.SFTConfig(base_model=str(base_model), **{**FAST, "max_steps": 4}), tmp_path, progress=True)
    out, err = capfd.readouterr()
    assert "it/s" in err or "s/it" in err  # the bar is there
    assert "'loss'" not in out + err and "'train_runtime'" not in out + err  # the dicts are in log.jsonl only
    assert '"loss"' in (tmp_path / "sft" / "log.jsonl").read_text()


def test_sft_on_alpaca_file(base_model, tmp_path):
    rows = [{"instruction": f"Say the number {i}.", "input": "", "output": f"{i}"} for i in range(40)]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = sft.run(sft.SFTConfig(base_model=str(base_model), train_data=str(path), **FAST), tmp_path / "run",
                     progress=False)
    assert result.metrics["train_examples"] == 38 and result.metrics["eval_examples"] == 2
    assert "qa_heldout" not in result.metrics  # not the closed world: no closed-world QA


def test_length_balanced_micro_batches_give_the_steps_loss_and_follow_the_seed(base_model, tmp_path):
    """A step's 16 conversations, sorted by length into micro-batches of different sizes, add up to the loss of
    the 16 in one batch (a mean over all their answer tokens) over fewer padded tokens; the order follows `seed`."""
    tokenizer, model = sft.load_base(base_model)
    rows, _ = sft.load_conversations(sft.SFTConfig())
    config = sft.SFTConfig(batch_size=16, micro_batch_size=4)
    trainer = sft.build_trainer(config, tokenizer, model, rows[:160], rows[:8], tmp_path)
    assert trainer.args.train_sampling_strategy == "batch_rebalance"
    loader = trainer.get_train_dataloader()
    step = list(loader.batch_sampler)[:4]  # the 4 micro-batches of the first step
    assert sum(len(m) for m in step) == 16 and len({len(m) for m in step}) > 1

    def collate(indices):
        return trainer.data_collator([trainer.train_dataset[i] for i in indices])

    parts = [collate(m) for m in step]
    whole = collate([i for m in step for i in m])
    _, n_items = trainer.get_batch_samples(iter(parts), len(parts), trainer.args.device)
    assert n_items == (whole["labels"] != -100).sum()
    with torch.no_grad():
        one_batch = trainer.compute_loss(trainer.model, dict(whole)).item()
        summed = sum(trainer.compute_loss(trainer.model, dict(p), num_items_in_batch=n_items).item() for p in parts)
    assert summed == pytest.approx(one_batch, rel=1e-5)
    assert sum(p["input_ids"].numel() for p in parts) < 0.9 * whole["input_ids"].numel()

    again = sft.build_trainer(config, tokenizer, model, rows[:160], rows[:8], tmp_path)
    other = sft.build_trainer(sft.SFTConfig(batch_size=16, micro_batch_size=4, seed=1), tokenizer, model,
                              rows[:160], rows[:8], tmp_path)
    assert list(again.get_train_dataloader().batch_sampler)[:4] == step
    assert list(other.get_train_dataloader().batch_sampler)[:4] != step


def test_lora_targets_read_as_the_command_line_and_configs_give_them():
    from llmkit.training import parse_targets

    assert parse_targets("all-linear") == parse_targets(["all-linear"]) == "all-linear"
    assert parse_targets("q_proj,v_proj") == parse_targets(["q_proj,v_proj"]) == parse_targets(["q_proj", " v_proj"]) \
        == ["q_proj", "v_proj"]  # --lora-targets q_proj,v_proj and --lora-targets q_proj v_proj alike
    with pytest.raises(StageError, match="lora_targets is empty"):
        parse_targets(" , ")
