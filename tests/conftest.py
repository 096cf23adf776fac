import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmkit import data
from llmkit.model import build_model
from llmkit.tokenizer import load_tokenizer


@pytest.fixture(scope="session")
def data_run(tmp_path_factory):
    """The data stage on the whole bundled corpus, run once per test session."""
    run_dir = tmp_path_factory.mktemp("run")
    result = data.run(data.config_for("tiny"), run_dir, progress=False)
    return result


@pytest.fixture(scope="session")
def base_model(data_run, tmp_path_factory):
    """A tiny model (2 layers, from scratch) with the data stage's tokenizer and chat template."""
    out = tmp_path_factory.mktemp("base") / "pretrain"
    tokenizer = load_tokenizer(data_run.output_dir / "tokenizer")
    model = build_model(2, tokenizer, seed=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chat_run(base_model, tmp_path_factory):
    """A run folder of finished stages for the chat app: pretrain and sft (both the tiny base model) and a
    reward model with a random head; plus an unfinished stage that must not be offered."""
    run = tmp_path_factory.mktemp("chat")
    for stage in ("pretrain", "sft"):
        shutil.copytree(base_model, run / stage)
        (run / stage / "metrics.json").write_text("{}")
    (run / ".ppo.partial").mkdir()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base_model)
    rm = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(run / "reward")
    tok.save_pretrained(run / "reward")
    (run / "reward" / "metrics.json").write_text("{}")
    return run


@pytest.fixture(scope="session")
def llmkit_command():
    """Run the `llmkit` command (as `python -m llmkit`) in a folder; returns the completed process."""
    def run(*args, cwd):
        return subprocess.run([sys.executable, "-m", "llmkit", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=600)

    return run


@pytest.fixture(scope="session")
def smoke_pipeline(llmkit_command, tmp_path_factory):
    """`llmkit pipeline --preset smoke --quiet` from an empty folder into runs/smoke, once per test session:
    (the folder, the completed process)."""
    folder = tmp_path_factory.mktemp("smoke_pipeline")
    return folder, llmkit_command("pipeline", "--run-dir", "runs/smoke", "--preset", "smoke", "--quiet", cwd=folder)
