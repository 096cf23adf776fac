import re
import subprocess
import sys

import pytest

from llmkit import pipeline, registry
from llmkit.cli import build_parser, label_items, main, parse, resolve


def _config(*argv):
    args = parse(list(argv))
    return resolve(args)[1][args.command]


def test_pipeline_runs_every_stage_then_reuses_them(smoke_pipeline, llmkit_command):
    folder, r = smoke_pipeline
    assert r.returncode == 0, r.stderr
    assert "it/s]" not in r.stderr and "examples/s]" not in r.stderr, r.stderr[-2000:]  # --quiet: no bars at all
    assert "Removed shared tensor" not in r.stderr  # accelerate's note at every checkpoint of the tied embedding
    assert "is deprecated" not in r.stderr, r.stderr[-2000:]  # no option llmkit sets is on its way out
    assert "[data] done in" in r.stdout and "# Data stage report" in r.stdout
    assert "[pretrain] done in" in r.stdout and "bits per byte" in r.stdout
    assert "[sft] done in" in r.stdout and "held-out QA" in r.stdout
    assert "[reward] done in" in r.stdout and "pairwise accuracy" in r.stdout
    assert "[ppo] done in" in r.stdout and "oracle win-rate vs SFT" in r.stdout
    out = folder / "runs" / "smoke" / "data"
    for name in ("blocks", "tokenizer", "report.md", "metrics.json", "removed.jsonl"):
        assert (out / name).exists(), name
    assert (folder / "runs" / "smoke" / "pretrain" / "model.safetensors").exists()
    r = llmkit_command("pipeline", "--run-dir", "runs/smoke", "--preset", "smoke", "--quiet", cwd=folder)
    assert r.returncode == 0 and "[data] reused" in r.stdout and "[pretrain] reused" in r.stdout
    assert "[sft] reused" in r.stdout and "[reward] reused" in r.stdout and "[ppo] reused" in r.stdout
    assert (folder / "runs" / "smoke" / "sft" / "model.safetensors").exists()
    assert (folder / "runs" / "smoke" / "reward" / "eval_scores.jsonl").exists()
    assert (folder / "runs" / "smoke" / "ppo" / "eval_samples.jsonl").exists()
    report = (folder / "runs" / "smoke" / "report.md").read_text()
    assert "| ppo | oracle win-rate vs SFT |" in report and "| reward | pairwise accuracy" in report
    assert "reused" in report and "![ppo curves](ppo/curves.png)" in report
    assert "matmul peak at" in report and "GFLOP/s" in report  # wall times mean little without the machine's speed
    # the absolute oracle score beside SFT's: the win-rate alone cannot say how good the answers are
    assert re.search(r"\| oracle score of its answers \(SFT's\) \| \d\.\d{3} \(\d\.\d{3}\) \|", report)


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    assert main(["data", "--run-dir", str(tmp_path / "run"), "--train-data", str(bad), "--quiet"]) == 2
    assert f"{bad}:2: malformed JSON line" in capsys.readouterr().err
    assert not (tmp_path / "run" / "data").exists()
    assert main(["pipeline", "--run-dir", str(tmp_path / "run"), "--stages", "data,magic"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'magic'" in err and "stages: data, pretrain, sft, reward, ppo, grpo, rloo, dpo" in err
    assert not (tmp_path / "run").exists()  # an unknown stage fails before any runs


def test_help_lists_every_data_option():
    help_text = build_parser()._subparsers._group_actions[0].choices["data"].format_help()
    for option in ("--train-data", "--text-field", "--vocab-size", "--block-size", "--minhash-threshold",
                   "--language-model", "--overwrite", "--run-dir"):
        assert option in help_text


def test_pretrain_help_lists_its_options():
    help_text = build_parser()._subparsers._group_actions[0].choices["pretrain"].format_help()
    for option in ("--train-data", "--base-model", "--depth", "--max-steps", "--batch-size", "--seq-len", "--compile"):
        assert option in help_text
    assert _config("pretrain", "--run-dir", "r", "--optimizer", "muon").optimizer == "muon"
    assert _config("pretrain", "--run-dir", "r").optimizer is None  # the preset's


def test_reward_options_reach_the_config():
    config = _config("reward", "--run-dir", "r", "--head", "last_token", "--lora", "--epochs", "3")
    assert (config.head, config.lora, config.epochs) == ("last_token", True, 3.0)
    assert _config("reward", "--run-dir", "r").head == "likelihood"
    help_text = build_parser()._subparsers._group_actions[0].choices["ppo"].format_help()
    from llmkit.rl.ppo import PPOConfig

    assert f"(default: {PPOConfig.beta})" in " ".join(help_text.split())  # the PPO default, not a stale copy


def test_report_verdicts_include_their_bounds():
    from llmkit.report import Row

    qa = Row("held-out QA", "qa_heldout", beside="sft_qa_heldout", max_drop=0.05)
    assert qa.verdict({"qa_heldout": 0.725, "sft_qa_heldout": 0.775}) == "met"  # 0.05 below SFT: inside the bar
    assert qa.verdict({"qa_heldout": 0.7125, "sft_qa_heldout": 0.775}) == "**not met**"  # 0.0625 below
    assert qa.verdict({"qa_heldout": 0.85, "sft_qa_heldout": 0.775}) == "met"  # better than SFT: nothing was lost
    bar = Row("accuracy", "acc", at_least=0.9)
    assert bar.verdict({"acc": 0.9}) == "met" and bar.verdict({"acc": 0.899}) == "**not met**"
    assert Row("loss", "loss").verdict({"loss": 1.0}) == ""  # no bar, no verdict


def test_sft_without_a_base_model_exits_2_and_says_what_to_do(tmp_path, capsys):
    assert main(["sft", "--run-dir", str(tmp_path / "run"), "--lora", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "run pretraining first" in err
    assert not (tmp_path / "run" / "lora").exists()
    help_text = build_parser()._subparsers._group_actions[0].choices["sft"].format_help()
    for option in ("--train-data", "--data-format", "--lora", "--lora-r", "--max-examples", "--epochs", "--base-model"):
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


def test_every_config_field_is_an_option_of_its_command_and_of_the_pipeline():
    """The CLI is derived from the configs: each field a flag with its help and default, the same name in every
    stage, and `--STAGE.FLAG` in the pipeline."""
    import dataclasses

    commands = build_parser()._subparsers._group_actions[0].choices

    def options(command):
        return {o: a for a in commands[command]._actions for o in a.option_strings}

    whole = options("pipeline")
    for s in registry.REGISTRY:
        own = options(s.name)
        for f in dataclasses.fields(s.config_class):
            if not f.metadata.get("cli", True):
                continue
            flag = f.name.replace("_", "-")
            said = s.config_class.help_of(f.name)
            assert "{" not in said, (s.name, f.name, said)  # every placeholder of the shared help filled or empty
            for action in (own[f"--{flag}"], whole[f"--{s.name}.{flag}"]):
                assert action.help.replace("%%", "%").startswith(said), (s.name, f.name)
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                assert f"default: {default}" in action.help or "default:" in said, (s.name, f.name)


def test_pipeline_options_reach_each_stages_config(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(pipeline, "run_configs", lambda *a, **k: seen.update(args=a, kwargs=k))
    argv = ["pipeline", "--run-dir", str(tmp_path), "--preset", "smoke", "--stages", "sft,ppo", "--sft.lora",
            "--sft.learning-rate", "1e-4", "--sft.lora-targets", "q_proj", "v_proj", "--ppo.beta", "0.2",
            "--ppo.eval-limit", "none", "--ppo.no-closed-world"]
    assert main(argv) == 0
    run_dir, configs, overwrite = seen["args"]
    assert (list(configs), overwrite) == (["sft", "ppo"], False)
    sft, ppo = configs["sft"], configs["ppo"]
    assert (sft.lora, sft.learning_rate, sft.lora_targets) == (True, 1e-4, ["q_proj", "v_proj"])
    assert (ppo.beta, ppo.eval_limit, ppo.closed_world) == (0.2, None, False)
    assert sft.output_name == "lora" and sft.max_steps == 12  # the smoke preset, then the options


def test_an_unknown_option_or_preset_lists_what_exists(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sft", "--run-dir", "r", "--lerning-rate", "3e-4"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown option --lerning-rate; did you mean --learning-rate" in err
    assert "`llmkit sft` takes:" in err and "--lora-r" in err
    with pytest.raises(SystemExit):
        main(["pipeline", "--preset", "huge"])
    assert "invalid choice: 'huge' (choose from 'smoke', 'tiny', 'small', 'gpt2')" in capsys.readouterr().err


def test_help_answers_without_importing_the_heavy_libraries():
    script = ("import sys\n"
              "from llmkit.cli import main\n"
              "for argv in (['--help'], ['pipeline', '--help'], ['sft', '--help'], ['ppo', '--help'], ['data', '--help']):\n"
              "    try:\n"
              "        main(argv)\n"
              "    except SystemExit:\n"
              "        pass\n"
              "print(sorted(m for m in ('torch', 'transformers', 'datatrove', 'trl', 'datasets', 'peft', 'accelerate')"
              " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
