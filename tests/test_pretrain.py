import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit import data, pretrain
from llmkit.pretrain import PackedEpochs, split_documents
from llmkit.runs import StageError

SMALL = dict(depth=1, max_steps=12, eval_every=4, save_every=3, batch_size=8, micro_batch_size=4,
             seq_len=64, eval_limit=8, warmup_steps=2)


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke")
    data.run(data.config_for("smoke"), run_dir, progress=False)
    return run_dir / "data"


def _run_dir(tmp_path, smoke_data, name="run"):
    run_dir = tmp_path / name
    shutil.copytree(smoke_data, run_dir / "data")
    return run_dir


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "pretrain" / "log.jsonl").read_text().splitlines()]


def test_pretraining_writes_a_standard_checkpoint_and_its_measurements(tmp_path, smoke_data):
    from widgets.live_monitor import LiveMonitor

    run_dir = _run_dir(tmp_path, smoke_data)
    monitor = LiveMonitor()
    result = pretrain.run(pretrain.PretrainConfig(**SMALL), run_dir, progress=False, callbacks=[monitor])
    out = result.output_dir
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 1 and model.config.tie_word_embeddings
    assert (out / "tokenizer.json").exists() and (out / "curves.png").exists()
    assert not (out / "checkpoints").exists() and not (run_dir / ".pretrain.partial").exists()
    m = result.metrics
    for key in ("val_loss", "val_bpb", "tokens_per_s", "mfu", "fact_completion", "samples"):
        assert key in m, key
    assert 0 < m["mfu"] < 1.5 and m["val_bpb"] > 0
    evals = [r for r in _log(run_dir) if "val_loss" in r]
    assert [r["step"] for r in evals] == [1, 4, 8, 12]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it learned something
    assert len([r for r in monitor.records if "loss" in r]) == 4
    monitor.save(tmp_path / "monitor.png")
    assert (tmp_path / "monitor.png").stat().st_size > 1000
    again = pretrain.run(pretrain.PretrainConfig(**SMALL), run_dir, progress=False)
    assert again.reused


KILL_AT_STEP_8 = textwrap.dedent("""
    import os, signal, sys
    from llmkit import pretrain

    class KillAt:
        def on_log(self, record):
            if record.get("step") == 8:  # after the step-6 checkpoint, before the step-9 one
                os.kill(os.getpid(), signal.SIGKILL)

    pretrain.run(pretrain.PretrainConfig(**{config}), sys.argv[1], progress=False, callbacks=[KillAt()])
""")


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # Muon: two optimizers' states in the checkpoint
def test_killed_run_resumes_to_the_same_final_loss(tmp_path, smoke_data, optimizer):
    config = {**SMALL, "optimizer": optimizer}
    straight = _run_dir(tmp_path, smoke_data, "straight")
    expected = pretrain.run(pretrain.PretrainConfig(**config), straight, progress=False).metrics
    assert expected["optimizer"] == optimizer

    resumed = _run_dir(tmp_path, smoke_data, "resumed")
    script = KILL_AT_STEP_8.format(config=repr(config))
    proc = subprocess.run([sys.executable, "-c", script, str(resumed)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = resumed / ".pretrain.partial"
    assert [p.name for p in (partial / "checkpoints").glob("step-*")] == ["step-0000006"]
    assert not (resumed / "pretrain").exists()

    result = pretrain.run(pretrain.PretrainConfig(**config), resumed, progress=False)
    assert result.metrics["train_loss"] == pytest.approx(expected["train_loss"], abs=1e-5)
    assert result.metrics["val_loss"] == pytest.approx(expected["val_loss"], abs=1e-5)
    steps = [r["step"] for r in _log(resumed) if "val_loss" in r]
    assert steps == [1, 4, 8, 12]  # the log continues; the killed run's step-8 record was replaced


def test_an_unknown_optimizer_is_refused_before_training(tmp_path, smoke_data):
    run_dir = _run_dir(tmp_path, smoke_data)
    with pytest.raises(StageError, match=r"PretrainConfig.optimizer='sgd'; accepted: None, adamw, muon"):
        pretrain.run(pretrain.PretrainConfig(**SMALL, optimizer="sgd"), run_dir, progress=False)
    assert not (run_dir / "pretrain").exists() and not (run_dir / ".pretrain.partial").exists()


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_lost(tmp_path, smoke_data):
    run_dir = _run_dir(tmp_path, smoke_data)
    cfg = pretrain.PretrainConfig(**{**SMALL, "max_steps": 3, "keep_checkpoints": True})
    pretrain.run(cfg, run_dir, progress=False)
    # make an unfinished run whose newest checkpoint is damaged
    partial = run_dir / ".pretrain.partial"
    shutil.copytree(run_dir / "pretrain" / "checkpoints", partial / "checkpoints")
    shutil.rmtree(run_dir / "pretrain")
    weights = next((partial / "checkpoints" / "step-0000003").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(StageError, match=r"cannot resume from .*step-0000003.*unreadable; nothing was changed"):
        pretrain.run(pretrain.PretrainConfig(**SMALL), run_dir, progress=False)
    assert weights.read_bytes() == b"not a safetensors file"


def test_blocks_from_another_tokenizer_are_refused_before_training(tmp_path, smoke_data):
    other = tmp_path / "other"
    data.run(data.config_for("smoke", vocab_size=700), other, progress=False)
    run_dir = _run_dir(tmp_path, smoke_data)
    cfg = pretrain.PretrainConfig(**{**SMALL, "train_data": str(other / "data" / "blocks")})
    with pytest.raises(StageError, match="tokenized with a different tokenizer"):
        pretrain.run(cfg, run_dir, progress=False)
    assert not (run_dir / "pretrain").exists()


def test_pretraining_on_a_plain_text_book(tmp_path):
    from llmkit.loaders import bundled_path, load_documents

    docs, _ = load_documents(bundled_path("corpus.jsonl"), max_documents=300)
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(d["text"] for d in docs), encoding="utf-8")
    result = pretrain.run(pretrain.PretrainConfig(**{**SMALL, "train_data": str(book), "max_steps": 4}),
                          tmp_path / "run", progress=False)
    assert result.metrics["val_bpb"] > 0 and "fact_completion" not in result.metrics
    assert (result.output_dir / "tokenizer.json").exists()


def test_packed_epochs_reshuffle_documents_and_are_reproducible():
    docs = [torch.tensor([999, *range(10 * k, 10 * k + 7)]) for k in range(20)]  # BOS = 999
    assert [d.tolist() for d in split_documents(torch.cat(docs).view(-1, 8), 999)] == [d.tolist() for d in docs]
    a, b = PackedEpochs(docs, 16, seed=0), PackedEpochs(docs, 16, seed=0)
    assert torch.equal(a.rows(3, 4), b.rows(3, 4))
    assert not torch.equal(a.epoch(0), a.epoch(1))  # new neighbours every epoch
    assert a.rows_per_epoch == 160 // 16
    assert sorted(a.epoch(1).flatten().tolist()) == sorted(torch.cat(docs).tolist())  # every token, once


def test_continued_pretraining_from_a_local_checkpoint(tmp_path, smoke_data):
    first = _run_dir(tmp_path, smoke_data, "first")
    base = pretrain.run(pretrain.PretrainConfig(**{**SMALL, "max_steps": 2}), first, progress=False).output_dir
    second = _run_dir(tmp_path, smoke_data, "second")
    result = pretrain.run(pretrain.PretrainConfig(**{**SMALL, "max_steps": 4, "base_model": str(base)}), second,
                          progress=False)
    # its base was pretrained on the closed world, and so is its data: what it knows of the world is measured
    assert result.metrics["steps"] == 4 and "fact_completion" in result.metrics
    made = json.loads((result.output_dir / "stage_config.json").read_text())
    assert made["closed_world"] is True and made["inputs"]["base_model"] == str(base)
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert model.config.num_hidden_layers == 1
    with pytest.raises(StageError, match="not a transformers model folder"):
        pretrain.run(pretrain.PretrainConfig(**{**SMALL, "base_model": str(tmp_path / "nowhere")}),
                     tmp_path / "third", progress=False)


def test_a_depth_override_keeps_the_presets_other_settings():
    gpt2 = pretrain.model_preset(pretrain.PretrainConfig(model_size="gpt2", depth=2))
    assert (gpt2.depth, gpt2.seq_len, gpt2.batch_size, gpt2.micro_batch_size, gpt2.weight_decay) == (2, 1024, 256, 32, 0.1)
    tiny = pretrain.model_preset(pretrain.PretrainConfig(model_size="tiny", depth=2))
    assert (tiny.depth, tiny.micro_batch_size, tiny.weight_decay) == (2, None, 1.0)


def test_a_corpus_far_too_small_stops_early_keeps_the_best_weights_and_says_so(tmp_path):
    """40 documents for a model that could learn thousands: the validation loss turns up, training stops three
    evaluations later, the weights kept are those of the best evaluation, and the report says why."""
    from llmkit.loaders import bundled_path, load_documents

    docs, _ = load_documents(bundled_path("corpus.jsonl"), max_documents=40)
    text = tmp_path / "small.txt"
    text.write_text("\n\n".join(d["text"] for d in docs), encoding="utf-8")
    config = pretrain.PretrainConfig(depth=2, train_data=str(text), max_steps=600, eval_every=10, save_every=10_000,
                                     batch_size=8, seq_len=64, eval_limit=8, warmup_steps=5, learning_rate=3e-3)
    result = pretrain.run(config, tmp_path / "run", progress=False)
    m = result.metrics
    evals = [(r["step"], r["val_loss"]) for r in _log(tmp_path / "run") if "val_loss" in r]
    best_step, best = min(evals, key=lambda e: e[1])
    assert m["steps"] < 600 and evals[-1][0] == m["steps"]  # it stopped early ...
    assert [step for step, _ in evals[-3:]] == [best_step + 10, best_step + 20, best_step + 30]  # ... 3 evals on
    assert m["best_step"] == best_step and m["val_loss"] == pytest.approx(best) and m["final_val_loss"] > best
    assert m["epochs"] > 10 and m["tokens_per_parameter"] < 1
    assert any(f"rose after step {best_step}" in w for w in m["warnings"])
    assert any("the training data is small for this model" in w and "depth 1" in w for w in m["warnings"])
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    _, val, _ = pretrain.load_training_data(config, tmp_path / "run", tokenizer, 64)
    val = val.flatten()[: val.numel() // 64 * 64].view(-1, 64)[:8]
    with torch.no_grad():
        kept = AutoModelForCausalLM.from_pretrained(result.output_dir)(input_ids=val, labels=val).loss.item()
    assert kept == pytest.approx(best, abs=1e-4)  # the saved model is the best step's
    assert not (result.output_dir / pretrain.BEST).exists()
