"""Several processes train exactly as one: the same global batch, the same losses step by step.

Each run happens in a child Python process, as in a notebook kernel: accelerate's shared state is
per process, and the launcher forks the caller."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmkit import runs

ROOT = Path(__file__).resolve().parent.parent
# Losses of one process and of two agree to float32 summation order; 1e-4 leaves room for the
# all-reduce adding the two halves' gradients in a different order than one backward pass does.
TOLERANCE = 1e-4


def _python(script: str, cwd: Path, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


def _losses(stage_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (stage_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _assert_same(one: dict, two: dict, steps: int):
    assert sorted(one) == sorted(two) == list(range(1, steps + 1))
    for step in one:
        assert abs(one[step] - two[step]) <= TOLERANCE, (step, one[step], two[step])


def _weights(stage_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(stage_dir / "model.safetensors")


@pytest.fixture(scope="module")
def launch_run(data_run, tmp_path_factory):
    """Pretraining (then SFT) of the smoke model on one process in this child process, then on two
    processes launched from the same child: the notebook order that trips notebook_launcher when an
    Accelerator already exists in the kernel."""
    root = tmp_path_factory.mktemp("launch")
    for name in ("one", "two"):
        (root / name).mkdir()
        shutil.copytree(data_run.output_dir, root / name / "data")
    _python("""
        from llmkit import launch, pretrain, sft
        cfg = pretrain.config_for("smoke", max_steps=8, eval_every=1, save_every=100, batch_size=8,
                                  closed_world=False)
        pretrain.run(cfg, "one", progress=False)  # in this process: leaves accelerate's state behind
        launch.launch("pretrain", cfg, "two", num_processes=2)
        tuned = sft.config_for("smoke", base_model="one/pretrain", max_steps=5, batch_size=8, closed_world=False)
        sft.run(tuned, "one", progress=False)
        launch.launch("sft", tuned, "two", num_processes=2)
    """, root)
    return root


def test_two_processes_pretrain_with_the_losses_of_one(launch_run):
    one, two = launch_run / "one" / "pretrain", launch_run / "two" / "pretrain"
    _assert_same(_losses(one), _losses(two), 8)
    assert _losses(one)[8] < _losses(one)[1] - 0.05  # and training moved
    # each process saw its own half of every batch: different losses whose mean is the logged loss
    ranks = [[json.loads(x) for x in (two / "ranks" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [r["rows"] for r in ranks[0]] == [4] * 8
    for a, b, step in zip(ranks[0], ranks[1], range(1, 9)):
        assert a["loss"] != b["loss"]
        assert abs((a["loss"] + b["loss"]) / 2 - _losses(two)[step]) < 1e-5
    assert json.loads((two / "metrics.json").read_text())["steps"] == 8
    assert not (one / "ranks").exists()  # one process writes no per-rank logs


def test_two_processes_fine_tune_with_the_losses_of_one(launch_run):
    one, two = launch_run / "one" / "sft", launch_run / "two" / "sft"
    _assert_same(_losses(one), _losses(two), 5)
    assert runs.finished(two) and (two / "model.safetensors").is_file()
    # Five steps on demonstrations, half of them in a rude or rambling voice, need not lower one batch's
    # loss below another's; what they must do is move the weights, and move them alike on one and two processes.
    base, a, b = _weights(launch_run / "one" / "pretrain"), _weights(one), _weights(two)
    assert sorted(a) == sorted(b)
    moved = max((a[k].float() - base[k].float()).abs().max().item() for k in a if k in base)
    apart = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert moved > 5e-4 and apart < moved / 100, (moved, apart)


def _end_answers_early(folder: Path) -> None:
    """Make the tiny random model in `folder` end about half its answers within 12 tokens (untrained, it almost
    never samples its end-of-turn token): the EOS logit raised by 4 along the mean final hidden state of a few
    prompts. Answers of different lengths are what the rollouts' padding across processes has to handle."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    chats = [[{"role": "user", "content": f"Tell me about item {i}."}] for i in range(4)]
    batch = tokenizer.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt", return_dict=True,
                                          padding=True)
    with torch.no_grad():
        h = getattr(model, model.base_model_prefix)(**batch).last_hidden_state.mean((0, 1))
        model.get_output_embeddings().weight[tokenizer.eos_token_id] += 4.0 * h / h.norm() ** 2
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def ppo_runs(chat_run, tmp_path_factory):
    """PPO (smoke) from the same SFT policy and reward model on one process, then on two launched from the same
    child process; full weights, then LoRA."""
    root = tmp_path_factory.mktemp("ppo")
    for stage in ("sft", "reward"):
        shutil.copytree(chat_run / stage, root / "source" / stage)
    _end_answers_early(root / "source" / "sft")
    for name in ("one", "two", "lora_one", "lora_two"):
        shutil.copytree(root / "source", root / name)
    _python("""
        from llmkit import launch
        from llmkit.rl import ppo
        for prefix, options in (("", {}), ("lora_", {"lora": True, "learning_rate": 1e-3})):
            cfg = ppo.config_for("smoke", closed_world=False, eval_limit=4, **options)
            ppo.run(cfg, prefix + "one", progress=False)
            launch.launch("ppo", cfg, prefix + "two", num_processes=2)
    """, root)
    return root


# Everything a step logs that varies continuously; the clip fractions count tokens on either side of a boundary,
# where a float32 difference in the last bit can move one token across.
PPO_LOGGED = ("policy_loss", "value_loss", "reward", "kl", "score", "kl_per_token", "non_score_reward", "entropy",
              "approx_kl", "explained_variance", "response_length", "eos_fraction")


@pytest.mark.parametrize("prefix", ["", "lora_"])
def test_two_processes_run_ppo_with_the_losses_of_one(ppo_runs, prefix):
    """Each process samples and scores its half of every rollout (each row from its own seed), the halves are
    gathered, and each process takes half of every minibatch with the gradients summed: the same steps as one
    process. Measured here: at most 5e-7 apart (abs) and 1e-5 (rel) in any logged quantity, and weights 5e-7 apart
    after moving 2e-4 (LoRA: 2e-7 after 9e-3)."""
    one, two = ppo_runs / f"{prefix}one" / "ppo", ppo_runs / f"{prefix}two" / "ppo"
    logs = [{r["step"]: r for r in map(json.loads, (d / "log.jsonl").read_text().splitlines())} for d in (one, two)]
    assert sorted(logs[0]) == sorted(logs[1]) == [1, 2, 3]
    for step, a in logs[0].items():
        b = logs[1][step]
        for key in PPO_LOGGED:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (step, key, a[key], b[key])
        assert [x["continuation"] for x in a.get("samples", [])] == [x["continuation"] for x in b.get("samples", [])]
    assert any(0 < r["eos_fraction"] < 1 for r in logs[0].values())  # answers of several lengths, padded alike
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, two)]
    assert [m["processes"] for m in metrics] == [1, 2]
    assert metrics[1]["eval_rm_score"] == pytest.approx(metrics[0]["eval_rm_score"], abs=1e-5)
    sft, a, b = _weights(ppo_runs / "source" / "sft"), _weights(one), _weights(two)
    assert sorted(a) == sorted(b)
    moved = max((a[k].float() - sft[k].float()).abs().max().item() for k in a if k in sft)
    apart = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert moved > 1e-4 and apart < moved / 100, (moved, apart)


def test_the_shell_path_torchrun_runs_the_cli_on_two_processes(launch_run, tmp_path):
    """`accelerate launch -m llmkit ...` on GPUs runs the CLI under torchrun; on a CPU the same is torchrun."""
    run_dir = tmp_path / "shell"
    shutil.copytree(launch_run / "one" / "data", run_dir / "data")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    from llmkit.launch import free_port

    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "-m", "llmkit", "pretrain", "--run-dir", str(run_dir), "--preset", "smoke",
                           "--max-steps", "8", "--batch-size", "8", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("[pretrain] done") == 1  # the main process reports, once
    assert sorted(p.name for p in (run_dir / "pretrain" / "ranks").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    # the CLI's default logging is sparser; the steps it logged agree with the notebook launch
    shell, two = _losses(run_dir / "pretrain"), _losses(launch_run / "two" / "pretrain")
    assert shell and all(abs(shell[s] - two[s]) <= TOLERANCE for s in shell)


def test_split_batch_keeps_the_global_batch():
    assert runs.split_batch(32, None, 1) == (32, 1)
    assert runs.split_batch(32, 8, 1) == (8, 4)
    assert runs.split_batch(32, 8, 2) == (8, 2)
    assert runs.split_batch(32, 8, 4) == (8, 1)
    assert runs.split_batch(32, 16, 4) == (8, 1)  # never more per pass than a process's share
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        runs.split_batch(30, None, 4)
    with pytest.raises(ValueError, match="micro_batch_size 3"):
        runs.split_batch(16, 3, 2)


def test_accelerate_config_files_load_and_name_their_command():
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"single_gpu": ("NO", None), "multi_gpu": ("MULTI_GPU", None), "fsdp": ("FSDP", None),
                "deepspeed_zero2": ("DEEPSPEED", 2), "deepspeed_zero3": ("DEEPSPEED", 3),
                "multi_node": ("MULTI_GPU", None)}
    folder = ROOT / "configs" / "accelerate"
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(expected)
    for name, (kind, zero) in expected.items():
        path = folder / f"{name}.yaml"
        config = load_config_from_file(str(path))
        assert config.distributed_type.value == kind, name
        assert config.mixed_precision == "bf16", name
        if zero:
            assert config.deepspeed_config["zero_stage"] == zero
        assert f"accelerate launch --config_file configs/accelerate/{name}.yaml" in path.read_text(), name
    assert load_config_from_file(str(folder / "multi_node.yaml")).num_machines == 2
    assert load_config_from_file(str(folder / "fsdp.yaml")).fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == \
        "LlamaDecoderLayer"


def test_fsdp_asked_for_on_cpu_processes_is_a_clear_error_not_silent_ddp(base_model, tmp_path, monkeypatch):
    """accelerate 1.16 turns FSDP on only on GPUs: launched with configs/accelerate/fsdp.yaml on CPUs it would
    train plain DDP without a word. Every TRL-based stage checks what runs against what was asked for."""
    from llmkit import sft

    tokenizer, model = sft.load_base(base_model)
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}] * 2
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(runs.StageError, match=r"FSDP was asked for \(ACCELERATE_USE_FSDP=true\) but accelerate runs"):
        sft.build_trainer(sft.SFTConfig(max_steps=1, batch_size=2), tokenizer, model, rows, rows, tmp_path)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert sft.build_trainer(sft.SFTConfig(max_steps=1, batch_size=2), tokenizer, model, rows, rows, tmp_path)


def test_some_embedding_rows_training_under_fsdp_or_zero_is_refused():
    """FSDP and ZeRO-3 replace the embedding weight with their shards and lose the hook that keeps the other rows
    fixed: the whole embedding would train. Refused, naming the way out; a fully frozen or fully trained
    embedding passes."""
    from types import SimpleNamespace

    import torch
    from accelerate.utils import DistributedType

    from llmkit import training

    embedding = torch.nn.Embedding(10, 4)
    model = SimpleNamespace(get_input_embeddings=lambda: embedding)
    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        trainer = SimpleNamespace(accelerator=SimpleNamespace(distributed_type=kind), model=model)
        assert training.check_sharding(trainer) is trainer
        training.freeze_embeddings_except(embedding, [1, 2])
        with pytest.raises(runs.StageError, match="2 rows of the token embedding .* --no-freeze-embeddings"):
            training.check_sharding(trainer)
        del embedding.weight.trained_rows
    ddp = SimpleNamespace(accelerator=SimpleNamespace(distributed_type=DistributedType.MULTI_CPU), model=model)
    training.freeze_embeddings_except(embedding, [1, 2])
    assert training.check_sharding(ddp) is ddp
