import re
import subprocess
import sys

from llmkit.cli import build_parser, label_items, main


def _llmkit(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llmkit", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_pipeline_runs_every_stage_then_reuses_them(tmp_path):
    r = _llmkit("pipeline", "--run-dir", "runs/smoke", "--preset", "smoke", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "it/s]" not in r.stderr and "examples/s]" not in r.stderr, r.stderr[-2000:]  # --quiet: no bars at all
    assert "Removed shared tensor" not in r.stderr  # accelerate's note at every checkpoint of the tied embedding
    assert "[data] done in" in r.stdout and "# Data stage report" in r.stdout
    assert "[pretrain] done in" in r.stdout and "bits/byte" in r.stdout
    assert "[sft] done in" in r.stdout and "QA held-out" in r.stdout
    assert "[reward] done in" in r.stdout and "pairwise accuracy" in r.stdout
    assert "[ppo] done in" in r.stdout and "oracle win-rate vs SFT" in r.stdout
    out = tmp_path / "runs" / "smoke" / "data"
    for name in ("blocks", "tokenizer", "report.md", "metrics.json", "removed.jsonl"):
        assert (out / name).exists(), name
    assert (tmp_path / "runs" / "smoke" / "pretrain" / "model.safetensors").exists()
    r = _llmkit("pipeline", "--run-dir", "runs/smoke", "--preset", "smoke", "--quiet", cwd=tmp_path)
    assert r.returncode == 0 and "[data] reused" in r.stdout and "[pretrain] reused" in r.stdout
    assert "[sft] reused" in r.stdout and "[reward] reused" in r.stdout and "[ppo] reused" in r.stdout
    assert (tmp_path / "runs" / "smoke" / "sft" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "smoke" / "reward" / "eval_scores.jsonl").exists()
    assert (tmp_path / "runs" / "smoke" / "ppo" / "eval_samples.jsonl").exists()
    report = (tmp_path / "runs" / "smoke" / "report.md").read_text()
    assert "| ppo | oracle win-rate vs SFT |" in report and "| reward | pairwise accuracy" in report
    assert "reused" in report and "![ppo curves](ppo/curves.png)" in report
    assert "matmul peak at" in report and "GFLOP/s" in report  # wall times mean little without the machine's speed
    # the absolute oracle score beside SFT's: the win-rate alone cannot say how good the answers are
    assert re.search(r"\| oracle score of its answers \(SFT's\) \| \d\.\d{3} \(\d\.\d{3}\) \|", report)


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    assert main(["data", "--run-dir", str(tmp_path / "run"), "--corpus", str(bad), "--quiet"]) == 2
    assert f"{bad}:2: malformed JSON line" in capsys.readouterr().err
    assert not (tmp_path / "run" / "data").exists()
    assert main(["pipeline", "--run-dir", str(tmp_path / "run"), "--stages", "data,magic"]) == 2
    assert "unknown stage(s) magic" in capsys.readouterr().err


def test_help_lists_every_data_option():
    help_text = build_parser()._subparsers._group_actions[0].choices["data"].format_help()
    for option in ("--corpus", "--text-field", "--vocab-size", "--block-size", "--minhash-threshold",
                   "--language-model", "--overwrite", "--run-dir"):
        assert option in help_text


def test_pretrain_help_lists_its_options():
    help_text = build_parser()._subparsers._group_actions[0].choices["pretrain"].format_help()
    for option in ("--data", "--base-model", "--depth", "--max-steps", "--batch-size", "--seq-len", "--compile"):
        assert option in help_text
    from llmkit.cli import _pretrain_config

    assert _pretrain_config(build_parser().parse_args(["pretrain", "--run-dir", "r", "--optimizer", "muon"])).optimizer == "muon"
    assert _pretrain_config(build_parser().parse_args(["pretrain", "--run-dir", "r"])).optimizer is None  # the preset's


def test_reward_options_reach_the_config():
    from llmkit.cli import _reward_config

    args = build_parser().parse_args(["reward", "--run-dir", "r", "--rm-head", "last_token", "--rm-lora", "--rm-epochs", "3"])
    config = _reward_config(args)
    assert (config.head, config.lora, config.epochs) == ("last_token", True, 3.0)
    assert _reward_config(build_parser().parse_args(["reward", "--run-dir", "r"])).head == "likelihood"
    help_text = build_parser()._subparsers._group_actions[0].choices["ppo"].format_help()
    from llmkit.rl.ppo import PPOConfig

    assert f"(default {PPOConfig.kl_coef})" in " ".join(help_text.split())  # the PPO default, not a stale copy


def test_report_verdicts_include_their_bounds():
    from llmkit.report import _verdict

    qa = {"sft_qa_heldout": 0.775}
    assert _verdict(0.725, "sft_qa_heldout", qa) == "met"  # 0.05 below SFT: inside the bar
    assert _verdict(0.7125, "sft_qa_heldout", qa) == "**not met**"  # 0.0625 below
    assert _verdict(0.85, "sft_qa_heldout", qa) == "met"  # better than SFT: nothing was lost
    assert _verdict(0.9, (">=", 0.9), {}) == "met" and _verdict(0.899, (">=", 0.9), {}) == "**not met**"


def test_sft_without_a_base_model_exits_2_and_says_what_to_do(tmp_path, capsys):
    assert main(["sft", "--run-dir", str(tmp_path / "run"), "--lora", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "run pretraining first" in err
    assert not (tmp_path / "run" / "lora").exists()
    help_text = build_parser()._subparsers._group_actions[0].choices["sft"].format_help()
    for option in ("--sft-data", "--format", "--lora", "--lora-r", "--max-examples", "--epochs", "--sft-base-model"):
        assert option in help_text


def test_label_samples_items_once_from_a_checkpoint_and_says_when_it_has_none(base_model, tmp_path, capsys):
    args = build_parser().parse_args(["label", "--run-dir", str(tmp_path), "--from-checkpoint", str(base_model),
                                      "--count", "3"])
    items = label_items(args)
    assert len(items) == 3 and all(len(it.responses) == 2 for it in items)
    assert (tmp_path / "label_items.jsonl").exists()
    assert [it.id for it in label_items(args)] == [it.id for it in items]  # reopening shows the same items
    assert main(["label", "--run-dir", str(tmp_path / "empty")]) == 2
    assert "nothing to label: pass --items FILE" in capsys.readouterr().err
    assert main(["label", "--run-dir", str(tmp_path), "--auth", "nocolon"]) == 2
    assert "give USER:PASSWORD" in capsys.readouterr().err
