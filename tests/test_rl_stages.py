"""The RL stages end to end on tiny models: llmkit's PPO (full and LoRA) and the TRL methods (GRPO, RLOO, DPO, KTO,
...), all writing the same run-folder contract."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from llmkit import lifecycle, registry, runs
from llmkit.loaders import Rejects, bundled_path, read_jsonl
from llmkit.oracle import Oracle
from llmkit.reward_model import LikelihoodRewardModel, answer_header
from llmkit.rl import grpo, inputs, ppo
from llmkit.runs import StageError

# every RL stage of the registry but PPO (llmkit's own, tested on its own below): TRL's trainers
TRL_METHODS = [s.name for s in registry.REGISTRY if s.module.startswith("llmkit.rl.") and s.name != "ppo"]


def _run(method: str, run_dir, **options):
    spec = registry.stage(method)
    return spec.run(spec.config_for("smoke", **options), run_dir, progress=False)


def _closed_world(folder, stage: str) -> None:
    """Mark a hand-made folder as a stage run on the closed world (what llmkit's own stages write)."""
    (folder / runs.STAGE_CONFIG).write_text(json.dumps({"stage": stage, "closed_world": True, "config": {}}))


@pytest.fixture(scope="module")
def rl_run(base_model, tmp_path_factory):
    """A run folder whose sft/ is the tiny base model and reward/ a (random-headed) likelihood reward model on it,
    the stage's default kind (PPO starts its value model from the folder's classifier; GRPO and RLOO call it
    through RewardModel.score). The chat app's fixture covers the last-token kind."""
    run = tmp_path_factory.mktemp("rl")
    shutil.copytree(base_model, run / "sft")
    _closed_world(run / "sft", "sft")
    tok = AutoTokenizer.from_pretrained(base_model)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    reference = AutoModelForCausalLM.from_pretrained(base_model)
    LikelihoodRewardModel(rm, reference, answer_header(tok)).save_pretrained(run / "reward")
    tok.save_pretrained(run / "reward")
    _closed_world(run / "reward", "reward")
    return run


def _changed(a, b) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return any(not torch.equal(wa[k], wb[k]) for k in wa if k in wb)


COMPARISON = ("eval_rm_score", "eval_rm_score_sft", "eval_kl_per_token", "eval_response_length", "oracle_win_rate",
              "eval_oracle_score", "eval_oracle_score_sft", "qa_heldout", "sft_qa_heldout")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_ppo_stage_writes_a_policy_its_log_and_the_comparison_with_sft(rl_run, tmp_path, lora):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("sft", "reward"):
        (run / name).symlink_to(rl_run / name, target_is_directory=True)
    result = ppo.run(ppo.config_for("smoke", lora=lora, learning_rate=1e-3), run, progress=False)
    out, m = result.output_dir, result.metrics
    assert out == run / "ppo" and (out / "config.json").exists() and (out / "curves.png").exists()
    assert _changed(out, rl_run / "sft")  # merged back into a plain checkpoint when LoRA
    assert not (out / "adapter_config.json").exists()
    for key in COMPARISON:
        assert key in m, key
    assert 0 <= m["oracle_win_rate"] <= 1
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # step 1: policy == reference (adapter off / copy)
    assert "samples" in records[1] and "oracle_score" in records[0]
    rows = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    oracle = Oracle()
    for side, suffix in (("policy", ""), ("sft", "_sft")):  # each answer's first flaw, and the habits' share
        flaws = [oracle.flaw(r["prompt"], r[side]) for r in rows]
        assert [r[f"flaw_{side}"] for r in rows] == flaws
        assert m[f"eval_habit_rate{suffix}"] == sum(f in ("rude", "rambling") for f in flaws) / 8
        assert sum(m[f"eval_flaws{suffix}"].values()) == 8


@pytest.mark.parametrize("method", TRL_METHODS)
def test_trl_methods_run_with_the_same_contract(rl_run, tmp_path, method):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("sft", "reward"):
        (run / name).symlink_to(rl_run / name, target_is_directory=True)
    result = _run(method, run, learning_rate=1e-3)
    out, m = result.output_dir, result.metrics
    assert out == run / method and m["method"] == method and m["steps"] == 3
    assert _changed(out, rl_run / "sft")
    for key in COMPARISON:
        assert key in m, key
    assert (out / "log.jsonl").exists() and (out / "eval_samples.jsonl").exists()


def test_missing_reward_model_and_bad_settings_are_reported(rl_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft").symlink_to(rl_run / "sft", target_is_directory=True)
    with pytest.raises(StageError, match="no reward model there.*llmkit reward"):
        ppo.run(ppo.config_for("smoke"), run, progress=False)
    (run / "reward").symlink_to(rl_run / "reward", target_is_directory=True)
    with pytest.raises(StageError, match="accepted: k1, k3"):
        ppo.run(ppo.config_for("smoke", kl_estimator="k9"), run, progress=False)
    with pytest.raises(StageError, match="multiple of mini_batch_size"):
        ppo.run(ppo.config_for("smoke", batch_size=6, mini_batch_size=4), run, progress=False)
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"question": "no prompt"}\n')
    with pytest.raises(Exception, match=r"prompts.jsonl:2: a prompt row needs `prompt`"):
        ppo.run(ppo.config_for("smoke", train_data=str(bad)), run, progress=False)
    assert not (run / "ppo").exists() and not (run / ".ppo.partial").exists()


def test_grpo_against_the_verifier_needs_no_reward_model_and_measures_exact_answers(rl_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft").symlink_to(rl_run / "sft", target_is_directory=True)  # no reward model in this run
    result = _run("grpo", run, reward="verifier", loss_type="dr_grpo", importance_sampling_level="sequence",
                  learning_rate=1e-3)
    out, m = result.output_dir, result.metrics
    assert m["reward"] == "verifier" and m["reward_model"] is None and m["loss_type"] == "dr_grpo"
    samples = [json.loads(line) for line in (out / "task_samples.jsonl").read_text().splitlines()]
    # two test sets: held-out people ("task"), and new questions about the people RL trained on ("task_new")
    heldout = {r["prompt"][0]["content"] for r in read_jsonl(bundled_path("tasks_heldout.jsonl"))}
    new = {r["prompt"][0]["content"] for r in read_jsonl(bundled_path("tasks_eval.jsonl"))}
    for split, questions in (("task", heldout), ("task_new", new)):
        rows = [r for r in samples if r["split"] == split]
        assert len(rows) == m[f"{split}_questions"] == 8 and {r["prompt"] for r in rows} <= questions
        assert m[f"{split}_accuracy"] == sum(r["policy_correct"] for r in rows) / 8
        assert m[f"{split}_accuracy_sft"] == sum(r["sft_correct"] for r in rows) / 8
        assert m[f"{split}_gain_ci_low"] <= m[f"{split}_gain"] <= m[f"{split}_gain_ci_high"]
    assert "qa_heldout" in m and "eval_kl_per_token" in m and "oracle_win_rate" not in m
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for key in ("verifier_reward", "zero_std_groups", "cut_at_cap", "entropy", "kl"):
        assert all(key in r for r in records), key
    assert "health_zero_std_groups" in m and isinstance(m["warnings"], list)


def test_grpo_against_the_reward_model_logs_the_oracle_beside_it(rl_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("sft", "reward"):
        (run / name).symlink_to(rl_run / name, target_is_directory=True)
    result = _run("grpo", run, max_steps=2)
    records = [json.loads(line) for line in (result.output_dir / "log.jsonl").read_text().splitlines()]
    assert all("oracle_score" in r and "rm_reward" in r for r in records)
    assert [r["reward"] for r in records] == pytest.approx([r["rm_reward"] for r in records])  # the oracle: weight 0


def test_unknown_rewards_losses_and_tasks_without_answers_are_refused_before_training(rl_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft").symlink_to(rl_run / "sft", target_is_directory=True)
    with pytest.raises(StageError, match="these: grpo, dr_grpo, dapo.*cispo"):
        _run("grpo", run, reward="verifier", loss_type="ppo")
    (run / "reward").symlink_to(rl_run / "reward", target_is_directory=True)
    with pytest.raises(StageError, match="sigmoid.*ipo.*sigmoid_norm"):
        _run("dpo", run, loss_type="nope")
    with pytest.raises(StageError, match="RLOOConfig has no field 'loss_type'"):  # RLOO has no losses to pick
        _run("rloo", run, loss_type="grpo")
    with pytest.raises(StageError, match="DPOConfig has no field 'reward'"):  # DPO learns from pairs, not a reward
        _run("dpo", run, reward="verifier")
    with pytest.raises(Exception, match="accepted: model, verifier, both"):
        _run("grpo", run, reward="judge")
    plain = tmp_path / "prompts.jsonl"
    plain.write_text('{"prompt": "Tell me a story."}\n{"prompt": "And another."}\n')
    with pytest.raises(Exception, match="prompts.jsonl:1: a task row needs a prompt .* and an answer to check"):
        _run("grpo", run, reward="verifier", train_data=str(plain))
    assert not (run / "grpo").exists() and not (run / ".grpo.partial").exists()


def test_ppo_against_the_verifier_starts_its_value_model_from_the_policy(rl_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "sft").symlink_to(rl_run / "sft", target_is_directory=True)  # no reward model in this run
    result = ppo.run(ppo.config_for("smoke", reward="verifier", learning_rate=1e-3), run, progress=False)
    m = result.metrics
    assert m["reward"] == "verifier" and m["reward_model"] is None and m["task_questions"] == 8
    assert "eval_rm_score" not in m and "task_gain_ci_low" in m and "qa_heldout" in m
    records = [json.loads(line) for line in (result.output_dir / "log.jsonl").read_text().splitlines()]
    for r in records:  # the score is the verifier's 0/1, and the answers' share cut at the cap is logged
        assert r["score"] == pytest.approx(r["verifier_reward"]) and r["cut_at_cap"] == pytest.approx(1 - r["eos_fraction"])
    assert "health_clipfrac" in m


def test_cispo_clips_its_importance_weight_at_trls_recommended_bound(rl_run, tmp_path):
    """TRL's cispo clamps the importance weight at epsilon_high, which defaults to epsilon (0.2): on-policy, where
    the weight is 1, every token's gradient would be a fifth of dapo's. llmkit sets ε_max as TRL recommends."""
    tasks = read_jsonl(bundled_path("tasks_train.jsonl"))[:4]
    rl = inputs.RLInputs(rl_run / "sft", None, [t["prompt"] for t in tasks], [], Rejects(),
                         answers=[t["answer"] for t in tasks])

    def trainer(loss_type, folder):
        work = lifecycle.Work(folder, tmp_path, runs.LogWriter(folder / "log.jsonl"), False, False, False)
        return grpo.build_trainer(grpo.config_for("smoke", reward="verifier", loss_type=loss_type), rl, work)[0]

    cispo = trainer("cispo", tmp_path / "cispo")
    assert cispo.loss_type == "cispo" and cispo.epsilon_high == grpo.CISPO_EPSILON_MAX == 5.0
    assert trainer("dapo", tmp_path / "dapo").epsilon_high == pytest.approx(0.2)  # the others keep TRL's defaults
