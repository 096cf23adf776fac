"""ORPO, the stage added through the stage contract alone (its options and its module, a registry entry, this test
and a line of docs): it trains without a reference model, writes the RL stages' folder, and runs in the pipeline and
the loss lab. The contract's own tests (bad input, the same measurements as every RL stage) cover it as a stage of
the registry."""

import json
import shutil

import torch
from transformers import AutoModelForCausalLM

from llmkit import loss_lab, pipeline, registry, runs


def _run_dir(chat_run, tmp_path):
    run = tmp_path / "run"
    for name in ("sft", "reward"):
        shutil.copytree(chat_run / name, run / name)
        (run / name / runs.STAGE_CONFIG).write_text(json.dumps({"stage": name, "closed_world": True, "config": {}}))
    return run


def test_orpo_runs_in_the_pipeline_without_a_reference_and_is_judged_like_every_rl_stage(chat_run, tmp_path):
    run = _run_dir(chat_run, tmp_path)
    results = pipeline.run_pipeline(run, preset="smoke", stages=["orpo"], overrides={"orpo": {"learning_rate": 1e-3}},
                                    progress=False)
    m, out = results["orpo"].metrics, results["orpo"].output_dir
    assert out == run / "orpo" and m["method"] == "orpo" and m["steps"] == 3 and m["reward"] == "pairs"
    before = AutoModelForCausalLM.from_pretrained(run / "sft").state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all("log_odds_ratio" in r for r in records if "loss" in r)  # ORPO's own term, logged by TRL
    for key in ("oracle_win_rate", "eval_kl_per_token", "qa_heldout", "sft_qa_heldout", "eval_rm_score"):
        assert key in m, key
    report = (run / "report.md").read_text()
    assert "| orpo | oracle win-rate vs SFT |" in report
    assert registry.stage("orpo").config_class.MEASURES == registry.stage("dpo").config_class.MEASURES


def test_orpo_is_a_row_of_the_loss_lab(chat_run, tmp_path):
    (entry,) = [e for e in loss_lab.ENTRIES if e.stage == "orpo"]
    assert entry.task == "preferences" and loss_lab.config_of(entry, "tiny").max_steps == 40  # the lab's budget
    run = _run_dir(chat_run, tmp_path)
    row = loss_lab.run_entry(entry, run, "smoke", eval_limit=4)
    assert row["method"] == "orpo" and row["steps"] == 3 and 0 <= row["win_rate"] <= 1
    assert (run / "lab-orpo" / "metrics.json").exists()
