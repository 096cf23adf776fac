"""Kill and resume, every training stage after pretraining (pretraining's own test: test_pretrain.py): a run killed
with SIGKILL after its step-2 checkpoint is run again, goes on from that checkpoint, and ends with the metrics of a
run that was never stopped."""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from llmkit import runs
from llmkit.loaders import bundled_path

KILL_AT_STEP_3 = textwrap.dedent("""
    import json, os, signal, sys
    from llmkit import pipeline

    class KillAt:
        def on_log(self, record):
            if record.get("step") == 3:  # after the step-2 checkpoint, before the step-4 one
                os.kill(os.getpid(), signal.SIGKILL)

    name, run_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    stage = pipeline.stage(name)
    pipeline.run_stage(name, stage.config_for("smoke", **overrides), run_dir, progress=False, callbacks=[KillAt()])
""")
COMMON = {"max_steps": 4, "save_every": 2}
STAGES = {  # stage -> (options, the metrics that must come out the same)
    "sft": ({"lora": True, "stage_name": "sft", "eval_every": 2, "closed_world": False, "max_examples": 64},
            ("eval_loss",)),
    "reward": ({"eval_every": 2, "closed_world": False, "max_examples": 64}, ("eval_accuracy", "eval_margin")),
    "dpo": ({"closed_world": False, "eval_limit": 4}, ("eval_rm_score", "eval_kl_per_token")),
    "grpo": ({"closed_world": False, "eval_limit": 4}, ("eval_rm_score", "eval_kl_per_token")),
    "rloo": ({"closed_world": False, "eval_limit": 4}, ("eval_rm_score", "eval_kl_per_token")),
    "ppo": ({"closed_world": False, "eval_limit": 4, "sample_every": 2},
            ("eval_rm_score", "eval_kl_per_token", "final_beta")),
}


@pytest.fixture(scope="module")
def small_eval(tmp_path_factory):
    """16 held-out pairs: the reward stage's evaluation kept short."""
    path = tmp_path_factory.mktemp("eval") / "pairs.jsonl"
    path.write_text("".join(bundled_path("preferences_eval.jsonl").read_text().splitlines(keepends=True)[:16]))
    return path


def _run_dir(chat_run, tmp_path, name):
    """A run folder holding the chat fixture's finished SFT and reward stages, for the stages that start there."""
    run_dir = tmp_path / name
    for stage in ("sft", "reward"):
        shutil.copytree(chat_run / stage, run_dir / stage)
    (run_dir / "pretrain").symlink_to(chat_run / "pretrain")
    return run_dir


@pytest.mark.parametrize("name", list(STAGES))
def test_a_killed_stage_resumes_to_the_metrics_of_an_uninterrupted_run(name, chat_run, small_eval, tmp_path):
    from llmkit import pipeline

    options, same = STAGES[name]
    overrides = {**COMMON, **options, **({"eval_data": str(small_eval)} if name == "reward" else {})}
    folder = options.get("stage_name", name)

    straight = _run_dir(chat_run, tmp_path, "straight")
    shutil.rmtree(straight / folder, ignore_errors=True)
    stage = pipeline.stage(name)
    expected = pipeline.run_stage(name, stage.config_for("smoke", **overrides), straight, progress=False).metrics

    killed = _run_dir(chat_run, tmp_path, "killed")
    shutil.rmtree(killed / folder, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-c", KILL_AT_STEP_3, name, str(killed), json.dumps(overrides)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]
    partial = runs.partial_dir(killed, folder)
    assert not (killed / folder).exists() and partial.exists()
    saved = sorted(p.name for p in (partial / "trainer").glob("checkpoint-*")) if name != "ppo" else \
        ["checkpoint.pt"] if (partial / "checkpoint.pt").exists() else []
    assert saved == (["checkpoint-2"] if name != "ppo" else ["checkpoint.pt"])

    result = pipeline.run_stage(name, stage.config_for("smoke", **overrides), killed, progress=False)
    assert result.metrics["resumed_from_step"] == 2 and expected["resumed_from_step"] == 0
    for key in same:  # exactly: the same weights, optimizer, schedule, data order and random draws after step 2
        assert result.metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert not (killed / folder / "trainer").exists() and not (killed / folder / "checkpoint.pt").exists()
    steps = [json.loads(line)["step"] for line in (killed / folder / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) == steps.count(3) and max(steps) == 4  # no step logged twice
    straight_steps = [json.loads(line)["step"] for line in (straight / folder / "log.jsonl").read_text().splitlines()]
    assert steps == straight_steps


def test_a_changed_config_starts_over_instead_of_resuming(chat_run, tmp_path):
    from llmkit import pipeline

    run_dir = _run_dir(chat_run, tmp_path, "run")
    overrides = {**COMMON, "closed_world": False, "eval_limit": 4}
    proc = subprocess.run([sys.executable, "-c", KILL_AT_STEP_3, "dpo", str(run_dir), json.dumps(overrides)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-3000:]
    config = pipeline.stage("dpo").config_for("smoke", **{**overrides, "learning_rate": 1e-4})
    result = pipeline.run_stage("dpo", config, run_dir, progress=False)
    assert result.metrics["resumed_from_step"] == 0  # the checkpoint of another learning rate is not reused
