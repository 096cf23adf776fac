"""Options composed from groups: each concept one name, one help and (but for the numbers a stage's scale sets)
one default in every stage; the table of them in docs/stages.md is the one the code makes."""

import dataclasses
import subprocess
import sys
from pathlib import Path

from llmkit import options, registry
from llmkit.options import GROUPS, TUNABLE, group_of

ROOT = Path(__file__).resolve().parents[1]


def _fields():
    for s in registry.REGISTRY:
        for f in dataclasses.fields(s.config_class):
            yield s, f


def test_each_option_has_one_help_and_its_groups_default():
    helps: dict[str, set] = {}
    for s, f in _fields():
        helps.setdefault(f.name, set()).add(f.metadata["help"])
        group = next((g for _, g in GROUPS if f.name in g.__dataclass_fields__), None)
        if group is None:
            continue
        shared = group.__dataclass_fields__[f.name]
        assert f.metadata == shared.metadata, (s.name, f.name)  # retune keeps the group's help and choices
        if f.name not in TUNABLE:  # LoRA, precision, the data, the evaluation: one default everywhere
            assert f.default == shared.default, (s.name, f.name, f.default, shared.default)
    assert {name for name, h in helps.items() if len(h) > 1} == set()
    # an option two stages have is a shared one, declared once in a group
    users: dict[str, set] = {}
    for s, f in _fields():
        users.setdefault(f.name, set()).add(s.name)
    assert {n for n, u in users.items() if len(u) > 1 and group_of(n) is None} == set()


def test_the_concepts_the_stages_share_have_one_name():
    every = {name for _, f in _fields() for name in [f.name]}
    for gone in ("grad_clip", "policy_model", "corpus", "prompts", "preferences", "qa_limit", "task_eval_limit",
                 "oracle_prompts", "eval_sequences", "eval_prompts", "preference_format", "warmup_ratio", "model_preset",
                 "max_documents", "data"):
        assert gone not in every, gone
    rl = [s for s in registry.REGISTRY if s.module.startswith("llmkit.rl.")]
    for name in ("base_model", "reward_model", "train_data", "eval_data", "eval_limit", "max_grad_norm",
                 "mixed_precision", "closed_world", "beta"):
        assert all(name in s.config_class.__dataclass_fields__ for s in rl), name
    lora = [s for s in registry.REGISTRY if "lora" in s.config_class.__dataclass_fields__]
    assert [s.name for s in lora][:3] == ["sft", "reward", "ppo"]
    for s in lora:  # LoRA's five options alike in every stage that has them (PPO's dropout was 0.0)
        assert {n: getattr(s.config_class(), n) for n in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets")} == \
            {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_targets": "all-linear"}


def test_a_stage_says_its_own_words_in_the_shared_help():
    sft, ppo, data = (registry.stage(n).config_class for n in ("sft", "ppo", "data"))
    assert sft.help_of("train_data").startswith("what it trains on: conversations in any chat format")
    assert ppo.help_of("train_data").startswith("what it trains on: prompts")
    assert "raw corpus" in data.help_of("train_data") and "bundled closed-world crawl" in data.help_of("train_data")
    assert sft.help_of("max_steps") == "optimizer steps; > 0 overrides epochs" and ppo.help_of("max_steps") == \
        "optimizer steps"
    assert options.StageConfig.help_of.__doc__


def test_the_formats_the_options_name_are_the_ones_llmkit_reads():
    from llmkit import formats

    assert tuple(formats.EXPECTED) == options.CHAT_FORMATS
    assert tuple(formats.PREFERENCE_EXPECTED) == options.PREFERENCE_FORMATS


def test_the_docs_table_of_options_is_the_one_the_code_makes():
    made = subprocess.run([sys.executable, str(ROOT / "docs" / "options_table.py")], capture_output=True, text=True,
                          check=True).stdout.strip()
    stages_md = (ROOT / "docs" / "stages.md").read_text(encoding="utf-8")
    assert made in stages_md, "run python docs/options_table.py --write"
    assert "| `lora_dropout` | LoRA | LoRA dropout | 0.05 | sft, reward, ppo |" in made
