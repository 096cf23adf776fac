"""The loss lab's entries and table (notebook 11 runs the lab itself in the smoke profile)."""

import importlib

from llmkit.loss_lab import ENTRIES, config_of, lab_table, row
from llmkit.registry import stage
from llmkit.rl import trl_stage


def test_the_lab_covers_the_methods_and_losses_the_issue_names_at_one_budget():
    names = {e.name for e in ENTRIES}
    assert {"ppo", "grpo", "dr_grpo", "dapo", "cispo", "gspo", "rloo", "dpo", "ipo", "dpo_norm", "kto"} <= names
    assert {e.name for e in ENTRIES if e.task == "verifiable"} == {"ppo_verifier", "grpo_verifier", "dr_grpo_verifier",
                                                                    "dapo_verifier", "cispo_verifier", "gspo_verifier",
                                                                    "rloo_verifier"}
    configs = [config_of(e, "tiny") for e in ENTRIES]
    assert len({c.output_name for c in configs}) == len(ENTRIES)  # each entry its own folder
    assert {(c.max_steps, c.batch_size) for c in configs} == {(40, 32)}  # the same budget
    for e, c in zip(ENTRIES, configs):
        if getattr(c, "loss_type", None) is not None:  # every loss is one the installed TRL has
            assert c.loss_type in trl_stage.loss_types(importlib.import_module(stage(e.stage).module).TRLConfig)
    gspo = config_of(next(e for e in ENTRIES if e.name == "gspo"))
    assert gspo.importance_sampling_level == "sequence"


def test_the_table_shows_each_task_its_own_columns_with_intervals():
    pref, ver = (next(e for e in ENTRIES if e.name == n) for n in ("dpo", "grpo_verifier"))
    rows = [row(pref, {"oracle_win_rate": 0.6, "oracle_win_rate_ci_low": 0.52, "oracle_win_rate_ci_high": 0.68,
                       "eval_oracle_score": 0.7, "eval_oracle_score_sft": 0.6, "qa_heldout": 0.7, "sft_qa_heldout": 0.72,
                       "eval_kl_per_token": 0.1, "eval_response_length": 12.0, "eval_response_length_sft": 14.0,
                       "steps": 40}, 33.0),
            row(ver, {"task_accuracy": 0.3, "task_accuracy_sft": 0.2, "task_gain": 0.1, "task_gain_ci_low": 0.05,
                      "task_gain_ci_high": 0.15, "steps": 40}, None)]
    table = lab_table(rows).splitlines()
    assert len(table) == 4
    assert "0.600 [0.520, 0.680]" in table[2] and "0.700 (0.600)" in table[2] and "-0.020" in table[2]
    assert "0.300 (0.200)" in table[3] and "+0.100 [+0.050, +0.150]" in table[3] and "0.600" not in table[3]
