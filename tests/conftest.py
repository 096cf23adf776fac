import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from llmkit import data
from llmkit.model import build_model
from llmkit.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, their subprocesses too
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """Tests that read the wheel-built smoke pipeline (a session fixture) run on one worker, so it is built once."""
    for item in items:
        if "smoke_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("smoke_pipeline"))


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
def smoke_pipeline(tmp_path_factory):
    """`llmkit pipeline --preset smoke --quiet` into runs/smoke from an empty folder, run once per test session by
    the `llmkit` a user without the checkout gets: a wheel built from the repository and installed into a fresh
    venv (its dependencies, the ones installed here, reached through a .pth file, so that this checks what the
    wheel holds). Returns (the folder, the completed process)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(root / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = (root / "dist").glob("llmkit-*.whl")
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    site = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    folder = root / "empty"
    folder.mkdir()
    where = subprocess.run([venv / "bin" / "python", "-c", "import llmkit.loaders as l; print(l.bundled_path())"],
                           cwd=folder, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed package's own data, not the checkout's
    done = subprocess.run([venv / "bin" / "llmkit", "pipeline", "--run-dir", "runs/smoke", "--preset", "smoke",
                           "--quiet"], cwd=folder, capture_output=True, text=True, timeout=900)
    return folder, done


WORDS = {  # slots of a narrative sentence; random fillings make text that no web rule objects to but its lines
    "det": ("the", "a", "that", "one", "her", "his", "their", "every", "our", "this"),
    "adj": ("old", "quiet", "narrow", "golden", "distant", "patient", "restless", "grey", "crooked", "bright",
            "heavy", "gentle", "silent", "early", "broken"),
    "noun": ("miller", "river", "bridge", "orchard", "lantern", "letter", "harvest", "chapel", "market", "meadow",
             "cottage", "widow", "blacksmith", "schoolmaster", "carriage", "storm", "garden", "window", "road",
             "winter", "sister", "stranger", "ferry", "kitchen", "doctor"),
    "verb": ("walked past", "looked across", "waited beside", "spoke of", "remembered", "returned to", "watched",
             "passed beneath", "thought about", "turned toward", "carried", "found", "mended", "followed", "left"),
    "conj": ("while", "and", "because", "although", "until", "before", "after", "since"),
    "who": ("she", "he", "they", "nobody", "the children", "his brother", "the priest", "everyone"),
    "adv": ("slowly", "at last", "without a word", "once more", "in silence", "before dawn", "all evening",
            "with care", "again", "for a while"),
}


def _novel(chapters: int, seed: int = 0) -> list[list[str]]:
    """Chapters of paragraphs of plain narrative prose: long sentences with commas, as in a novel."""
    import random

    rng = random.Random(seed)

    def w(slot: str) -> str:
        return rng.choice(WORDS[slot])

    def sentence() -> str:
        return (f"{w('det').capitalize()} {w('adj')} {w('noun')} {w('verb')} {w('det')} {w('adj')} {w('noun')}, "
                f"{w('conj')} {w('who')} {w('verb')} {w('det')} {w('noun')} {w('adv')}, {w('conj')} {w('who')} "
                f"{w('verb')} {w('det')} {w('adj')} {w('noun')} {w('adv')}.")

    return [[" ".join(sentence() for _ in range(8)) for _ in range(4)] for _ in range(chapters)]


@pytest.fixture(scope="session")
def novel():
    """novel(chapters, seed=0): chapters of paragraphs of generated narrative prose (long sentences with commas,
    as in a book), which every web rule but the line rules lets through."""
    return _novel
