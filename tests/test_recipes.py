"""Recipes: a YAML file of per-stage options for `llmkit pipeline --config` and every stage command; the flags given
override it, `--print-config` prints the resolved recipe, and each stage folder keeps the one it ran with."""

import dataclasses
import json
from pathlib import Path

import yaml

from llmkit import data, registry
from llmkit.cli import main, parse, resolve
from llmkit.recipes import read_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "recipes"


def _printed(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_closed_world_recipe_is_the_pipelines_defaults(capsys):
    """`llmkit pipeline --config configs/recipes/closed_world.yaml` runs what `llmkit pipeline` runs: every option
    of every stage the same, so the same report (the stages are deterministic given their options and seed)."""
    plain = _printed(capsys, "pipeline", "--print-config")
    recipe = _printed(capsys, "pipeline", "--config", str(RECIPES / "closed_world.yaml"), "--print-config")
    assert plain == recipe
    assert plain["stages"] == list(registry.DEFAULT_STAGES) and plain["preset"] == "tiny"
    assert plain["sft"]["learning_rate"] == 1e-3 and plain["ppo"]["beta"] == 0.1 and len(plain["ppo"]) > 30


def test_the_bundled_recipes_resolve_to_the_options_they_name(capsys):
    own = _printed(capsys, "pipeline", "--config", str(RECIPES / "your_own_data.yaml"), "--print-config")
    assert own["data"]["train_data"] == "books/" and own["data"]["profile"] == "prose"
    assert own["ppo"]["train_data"] == "hh.jsonl" and own["ppo"]["max_steps"] == 40  # the rest: the preset's
    lora = _printed(capsys, "pipeline", "--config", str(RECIPES / "lora_open_model.yaml"), "--print-config")
    assert lora["stages"] == ["sft", "reward", "ppo"] and lora["preset"] == "small"
    assert lora["sft"]["lora"] is True and lora["sft"]["batch_size"] == 64  # small's batch
    assert lora["reward"]["base_model"] == "RUN_DIR/lora"


def test_flags_override_the_recipe_which_overrides_the_preset(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    # YAML 1.1 reads 3e-4 as a string, and 2 as an int where a float is meant: both become floats
    recipe.write_text("preset: smoke\nsft:\n  learning_rate: 3e-4\n  epochs: 2\n  lora-r: 16\n"
                      "ppo:\n  beta: 0.3\n  eval_limit: null\n")
    got = _printed(capsys, "pipeline", "--config", str(recipe), "--stages", "sft,ppo", "--ppo.beta", "0.2",
                   "--print-config")
    assert got["preset"] == "smoke" and got["sft"]["max_steps"] == 12  # smoke's, from the recipe's preset
    assert got["sft"]["learning_rate"] == 3e-4 and got["sft"]["epochs"] == 2.0 and got["sft"]["lora_r"] == 16
    assert got["ppo"]["beta"] == 0.2 and got["ppo"]["eval_limit"] is None  # the flag wins; null stays None
    assert _printed(capsys, "pipeline", "--config", str(recipe), "--preset", "tiny", "--print-config")["sft"][
        "max_steps"] == -1  # --preset wins over the recipe's
    # a stage command reads its own section
    config = resolve(parse(["sft", "--run-dir", "r", "--config", str(recipe), "--lora-alpha", "4"]))[1]["sft"]
    assert (config.learning_rate, config.lora_r, config.lora_alpha, config.max_steps) == (3e-4, 16, 4, 12)


def test_a_bad_recipe_names_the_file_the_stage_and_the_option(tmp_path, capsys):
    cases = {"sft:\n  lerning_rate: 0.1\n": "sft has no option 'lerning_rate'; its options: ",
             "sft:\n  lora: maybe\n": "sft.lora: 'maybe' is not a bool",
             "rlhf:\n  beta: 1\n": "unknown stage 'rlhf'",
             "sft: 3\n": "`sft` must hold a mapping of its options",
             "- a\n- b\n": "a recipe is a mapping of stage names to their options, not a list",
             "sft: {lr: [\n": "not valid YAML",
             "preset: huge\n": "unknown preset 'huge'"}
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        assert main(["pipeline", "--run-dir", str(tmp_path / "run"), "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err, (text, err)
    assert main(["sft", "--run-dir", "r", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "no such recipe file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing ran


def test_a_stage_folder_keeps_the_recipe_it_ran_with(tmp_path, capsys):
    """RUN_DIR/<stage>/recipe.yaml holds every option resolved; `--config` with it resolves the same config again,
    and stage_config.json says which stage made the folder and whether its inputs were the closed world."""
    config = data.config_for("smoke", minhash_threshold=0.8, max_examples=200)
    out = data.run(config, tmp_path, progress=False).output_dir
    kept = read_recipe(out / "recipe.yaml")
    assert kept == {"data": dataclasses.asdict(config)}
    again = resolve(parse(["data", "--run-dir", str(tmp_path), "--config", str(out / "recipe.yaml")]))[1]["data"]
    assert again == config
    record = json.loads((out / "stage_config.json").read_text())
    assert record["stage"] == "data" and record["closed_world"] is True and record["inputs"] == {"train_data": "bundled"}
    assert record["config"] == dataclasses.asdict(config) and record["measures"] == list(config.measures())
