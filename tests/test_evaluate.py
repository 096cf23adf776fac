"""Measurements shared by the stages (llmkit.evaluate): a policy against its reference, and closed-world QA with
the reference's accuracy reused from its stage when it asked the same questions."""

import json
import shutil

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit.evaluate import closed_world_qa, compare_policies
from llmkit.oracle import Oracle


class LengthReward:
    """A toy reward model: longer answers score higher."""

    def score(self, prompts, responses):
        return [len(r) / 10 for r in responses]


def test_a_policy_compared_with_itself_ties_on_every_sample(base_model):
    """compare_policies samples both sides with the same seed, k answers per prompt: a policy against itself gives
    the same answers, so every comparison ties (win-rate 0.5 exactly) at zero KL."""
    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    prompts = ["Where was Ada born?", "Who is Bela Ulmer?", "Where does Yara Gormer live now?"]
    out = compare_policies(model, model, tok, LengthReward(), prompts, max_new_tokens=6, samples_per_prompt=3,
                           oracle=Oracle())
    rows = out["rows"]
    assert [r["prompt"] for r in rows] == prompts * 3  # three answers per prompt, each compared
    assert len({r["policy"] for r in rows}) > 1 and all(r["policy"] == r["sft"] for r in rows)
    assert out["oracle_win_rate"] == 0.5 and out["eval_kl_per_token"] == pytest.approx(0.0, abs=1e-6)
    assert out["eval_habit_rate"] == out["eval_habit_rate_sft"]


def test_the_references_qa_is_read_from_its_sft_stage_when_it_asked_the_same_questions(base_model, tmp_path):
    sft_dir = tmp_path / "sft"
    shutil.copytree(base_model, sft_dir)
    # what the SFT stage's own QA measurement wrote: the accuracies and how many questions of each split it asked
    (sft_dir / "metrics.json").write_text(json.dumps({"qa_heldout": 0.123, "qa_trained": 0.456,
                                                      "qa_questions": {"heldout": 4, "trained": 4}}))
    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    same = closed_world_qa(model, tok, 4, model, "sft", sft_dir)
    assert (same["sft_qa_heldout"], same["sft_qa_trained"]) == (0.123, 0.456)
    other = closed_world_qa(model, tok, 5, model, "sft", sft_dir)  # other questions: measured again, on the model itself
    assert other["sft_qa_heldout"] == other["qa_heldout"] and other["sft_qa_trained"] == other["qa_trained"]
