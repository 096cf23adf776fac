import pytest

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
