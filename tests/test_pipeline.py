"""The pipeline's registry: one list of stages that the CLI, the notebooks (run_pipeline), the launcher, the report
and the chat app all read, and every stage's presets."""

import dataclasses
import json
import shutil

import pytest

from llmkit import pipeline, registry
from llmkit.measures import MEASUREMENTS
from llmkit.runs import StageError


def test_run_pipeline_is_the_code_the_command_ran(smoke_pipeline, capsys):
    """run_pipeline on the folder `llmkit pipeline` wrote finds every stage where the command put it, reuses it,
    and writes the same report."""
    folder, done = smoke_pipeline
    assert done.returncode == 0, done.stderr
    run_dir = folder / "runs" / "smoke"
    before = (run_dir / "report.md").read_text()
    results = pipeline.run_pipeline(run_dir, preset="smoke", progress=False)
    assert list(results) == list(pipeline.DEFAULT_STAGES) == ["data", "pretrain", "sft", "reward", "ppo"]
    assert all(r.reused for r in results.values())
    printed = capsys.readouterr().out
    assert all(f"[{name}] reused" in printed for name in results) and f"report: {run_dir / 'report.md'}" in printed
    after = (run_dir / "report.md").read_text()

    def measurements(text):  # the table without its wall-time column
        return [line.rsplit("|", 2)[0] for line in text.splitlines() if line.startswith("| ")]

    assert measurements(after) == measurements(before) and len(measurements(after)) > 10
    # five prompts answered by every model: what a run on your own data shows where no oracle can judge
    answers = [json.loads(line) for line in (run_dir / "side_by_side.jsonl").read_text().splitlines()]
    assert len(answers) == 5 and all(set(a["answers"]) == {"pretrain", "sft", "ppo"} for a in answers)
    assert "## The same prompts, every model" in after and answers[0]["prompt"][:20] in after


def test_the_pipeline_writes_each_stages_wall_time(tmp_path):
    """RUN_DIR/timings.json, which benchmarks/pipeline_time.py reads: seconds for a stage that ran, null for one
    reused."""
    pipeline.run_pipeline(tmp_path, preset="smoke", stages=("data",), progress=False)
    took = json.loads((tmp_path / "timings.json").read_text())
    assert list(took) == ["data"] and took["data"] > 0
    pipeline.run_pipeline(tmp_path, preset="smoke", stages=("data",), progress=False)
    assert json.loads((tmp_path / "timings.json").read_text()) == {"data": None}


def test_model_text_in_the_report_is_text(tmp_path):
    from llmkit import report

    path = report.write_report(tmp_path, [], answers=[{"prompt": "Hi ![x](http://127.0.0.1:9/t.png)",
                                                        "answers": {"sft": "<img src=x onerror=alert(1)> a|b\nc"}}])
    text = path.read_text()
    assert "![x](" not in text and "<img" not in text and "&lt;img src=x onerror=alert\\(1\\)&gt; a\\|b c" in text


def test_every_stage_has_every_preset_and_the_gpu_presets_are_gpu_sized():
    """`--preset gpt2` must not fine-tune a 124 M model with the tiny preset's settings: every stage's GPU presets
    change its sizes (batches, lengths, model) and, where it trains, its learning rate."""
    sizes = {"batch_size", "micro_batch_size", "max_length", "max_new_tokens", "block_size", "vocab_size",
             "model_size"}
    for s in registry.REGISTRY:
        assert tuple(s.presets) == registry.PRESET_NAMES, s.name
        tiny = dataclasses.asdict(s.config_for("tiny"))
        for preset in ("small", "gpt2"):
            gpu = dataclasses.asdict(s.config_for(preset))
            changed = {k for k in gpu if gpu[k] != tiny[k]}
            assert changed & sizes, (s.name, preset)
            if s.name != "data":  # pretraining's learning rate follows the model preset's width
                assert changed & {"learning_rate", "model_size"}, (s.name, preset)
        assert s.config_for("small").output_name == s.folders[0]


def test_unknown_presets_fields_and_stages_say_what_exists():
    with pytest.raises(StageError, match="unknown preset 'huge' for SFTConfig; presets: smoke, tiny, small, gpt2"):
        pipeline.stage("sft").config_for("huge")
    with pytest.raises(StageError, match="PPOConfig has no field 'kl_coef'; its fields: .*beta"):
        pipeline.stage("ppo").config_for("tiny", kl_coef=0.1)
    with pytest.raises(StageError, match="unknown stage 'rlhf'; stages: data, pretrain, sft, reward, ppo, grpo"):
        pipeline.run_pipeline("unused", stages=["data", "rlhf"])
    with pytest.raises(StageError, match="unknown stage 'sfft'"):
        pipeline.run_pipeline("unused", stages=["data"], overrides={"sfft": {"lora": True}})


def test_one_list_of_stages_for_every_reader():
    chat = [f for s in registry.REGISTRY if s.kind == "chat" for f in s.folders]
    assert registry.model_folders() == ["pretrain", *chat] and chat[:3] == ["sft", "lora", "ppo"]
    assert registry.model_folders(("base",)) == ["pretrain"]
    assert [s.name for s in registry.REGISTRY if s.config_class.MAIN_PROCESS_ONLY] == ["data"]
    for s in registry.REGISTRY:  # the chat app, the report and the launcher find a stage by its folder
        config = s.config_for("smoke")
        assert config.output_name == s.folders[0] and config.STAGE == s.name
        assert all(name in MEASUREMENTS for name in config.measures()), s.name


def test_a_stage_run_under_another_name_is_in_the_report_with_its_bars(tmp_path):
    """`--stage-name` (benchmarks/rlvr.py's rlvr_grpo, notebook 06's ppo_weak_kl) must not drop a stage's
    measurements from its summary line or from RUN_DIR/report.md; the folder's stage_config.json says which stage."""
    from llmkit import runs
    from llmkit.rl import grpo, ppo

    metrics = {"task_accuracy": 0.30, "task_accuracy_sft": 0.25, "task_gain_ci_low": 0.01, "qa_heldout": 0.8,
               "sft_qa_heldout": 0.8, "task_new_accuracy": 0.2, "task_new_accuracy_sft": 0.25, "task_new_gain_ci_low": -0.1}
    for config in (grpo.config_for("smoke", reward="verifier", stage_name="my_rlvr"),
                   ppo.config_for("smoke", stage_name="ppo_weak_kl")):
        with runs.StageFolder(tmp_path, config.output_name) as out:
            result = out.commit(config, metrics, {"closed_world": True})
        line = pipeline.stage_summary(result)
        assert "gain over SFT, 95 % interval's lower end 0.010 [> 0: met]" in line
        assert "gain over SFT, 95 % interval's lower end -0.100 [> 0: not met]" in line
    (tmp_path / "notes").mkdir()  # a folder no stage wrote is no section, nor a work folder a crash left finished
    shutil.copytree(tmp_path / "my_rlvr", tmp_path / ".grpo.partial")
    text = pipeline.write_report(tmp_path).read_text()
    for folder in ("my_rlvr", "ppo_weak_kl"):
        section = text.split(f"| {folder} |")[1].split("\n| ")[0:9]
        assert any("held-out tasks answered exactly (SFT's) | 0.300 (0.250)" in r for r in section), folder
    assert "**not met**" in text and "notes" not in text and "partial" not in text
