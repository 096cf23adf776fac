"""The stage contract, for every stage of the registry: bad input leaves RUN_DIR/<stage> as it was, the folder says
which stage made it and whether its inputs were the closed world, and a closed-world bar judges only the closed
world (`llmkit.lifecycle`, `llmkit.measures`)."""

import json
from pathlib import Path

import pytest

from llmkit import lifecycle, pipeline, registry, runs
from llmkit.errors import StageError


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _bad_rows(path: Path) -> Path:
    """A jsonl file of which most rows are not JSON: more than max_bad_rows of them stop any stage."""
    path.write_text('{"text": "fine", "prompt": "fine"}\nnot json\n{broken\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("name", [s.name for s in registry.REGISTRY])
def test_bad_input_leaves_the_stage_folder_as_it_was(name, chat_run, tmp_path):
    """A finished RUN_DIR/<stage> survives a rerun with --overwrite on input the stage cannot use: the error comes
    before anything is written, and no work folder is left behind."""
    run = tmp_path / "run"
    folder = run / registry.stage(name).folders[0]
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"kept": true}\n')
    (folder / "model.safetensors").write_bytes(b"weights of an earlier run")
    before = _snapshot(folder)
    options = {"train_data": str(_bad_rows(tmp_path / "bad.jsonl"))}
    if name not in ("data", "pretrain"):
        options["base_model"] = str(chat_run / "sft")
    if name not in ("data", "pretrain", "sft", "reward"):
        options["reward_model"] = str(chat_run / "reward")
    spec = registry.stage(name)
    with pytest.raises(StageError, match="bad.jsonl"):
        spec.run(spec.config_for("smoke", **options), run, overwrite=True, progress=False)
    assert _snapshot(folder) == before
    assert sorted(p.name for p in run.iterdir()) == [folder.name]  # no .<stage>.partial


def test_the_folder_says_which_stage_made_it_and_whether_its_inputs_were_the_closed_world(chat_run, tmp_path):
    """Closed world all the way up: the bundled data, a model from scratch, or a folder whose own inputs were the
    closed world. A folder from elsewhere (no stage_config.json) or the user's own file is not."""
    from llmkit.options import pretrain, reward, sft

    run = tmp_path / "run"
    data_dir = run / "data"
    data_dir.mkdir(parents=True)
    (data_dir / "metrics.json").write_text("{}")
    assert lifecycle.origin(pretrain.config_for("smoke"), run) == {
        "inputs": {"train_data": "RUN_DIR/data", "base_model": "scratch"}, "closed_world": False}  # no provenance
    (data_dir / runs.STAGE_CONFIG).write_text(json.dumps({"stage": "data", "closed_world": True, "config": {}}))
    assert lifecycle.origin(pretrain.config_for("smoke"), run)["closed_world"] is True
    assert lifecycle.origin(pretrain.config_for("smoke", train_data="my.txt"), run)["closed_world"] is False
    # chat_run's sft/ is a model folder with no stage_config.json: a model from elsewhere
    made = lifecycle.origin(sft.config_for("smoke", base_model=str(chat_run / "sft")), run)
    assert made == {"inputs": {"train_data": "bundled", "eval_data": "bundled", "base_model": str(chat_run / "sft")},
                    "closed_world": False}
    assert lifecycle.origin(sft.config_for("smoke", base_model=str(chat_run / "sft"), closed_world=True),
                            run)["closed_world"] is True  # the user says so
    sft_dir = run / "sft"
    sft_dir.mkdir()
    (sft_dir / runs.STAGE_CONFIG).write_text(json.dumps({"stage": "sft", "closed_world": False, "config": {}}))
    assert lifecycle.origin(reward.config_for("smoke"), run)["closed_world"] is False  # SFT on someone's data
    assert lifecycle.origin(reward.config_for("smoke", base_model="RUN_DIR/sft"), run)["inputs"]["base_model"] == \
        "RUN_DIR/sft"


HH = ("\n\nHuman: How do I keep my {x} from wilting in summer?\n\nAssistant: {a}")


def test_a_reward_model_on_hh_pairs_gets_no_closed_world_bar(chat_run, tmp_path, capsys):
    """The HH harmless pairs of a new user: pairwise accuracy on its held-out split, measured and shown, without the
    closed world's ">= 0.9" verdict, and no closed-world measurement (the oracle) runs on it."""
    rows = []
    for i, plant in enumerate(["basil", "fern", "rose", "tomato", "mint", "ivy", "orchid", "sage"] * 5):
        good = f"Water the {plant} early in the morning and give it some shade at noon (tip {i})."
        bad = f"I don't care about your {plant}."
        rows.append({"chosen": HH.format(x=plant, a=good), "rejected": HH.format(x=plant, a=bad)})
    hh = tmp_path / "hh.jsonl"
    hh.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    spec = registry.stage("reward")
    config = spec.config_for("smoke", base_model=str(chat_run / "sft"), train_data=str(hh), head="last_token")
    result = spec.run(config, run, progress=False)
    line = pipeline.stage_summary(result)
    assert "pairwise accuracy (eval split)" in line and "[>=" not in line and "met]" not in line
    assert "oracle" not in line and "oracle_agreement" not in result.metrics
    assert "its bars, set there, do not apply" in line
    assert json.loads((result.output_dir / runs.STAGE_CONFIG).read_text())["closed_world"] is False
    report = pipeline.write_report(run).read_text()
    assert "| reward | pairwise accuracy (eval split) |" in report and "not met" not in report and "| met |" not in report
    assert "inputs other than the bundled closed world, so no verdicts" in report
