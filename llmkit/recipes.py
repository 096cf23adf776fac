"""Recipes: a YAML file of per-stage options, as TRL's `--config`, LLaMA-Factory and axolotl take them.

    preset: tiny                       # optional; --preset overrides it
    stages: [data, pretrain, sft]      # optional, for `llmkit pipeline`; --stages overrides it
    sft:                               # a stage's options, named as its flags are (with _ or -)
      lora: true
      learning_rate: 3.0e-4

The options come from the stage's preset, then the recipe, then the flags given on the command line. Each stage
folder keeps the recipe it ran with, resolved to every option (`RECIPE`), so `llmkit sft --config
runs/demo/sft/recipe.yaml` runs it again; `--print-config` prints the resolved recipe without running anything.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from llmkit.errors import StageError

RECIPE = "recipe.yaml"
TOP_LEVEL = ("preset", "stages")


def read_recipe(path: str | Path) -> dict:
    """The recipe in a YAML file: a mapping of `preset`, `stages` and one mapping of options per stage name."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: no such recipe file (--config takes a YAML file of per-stage options)")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StageError(f"{path}: not valid YAML ({e})") from None
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise StageError(f"{path}: a recipe is a mapping of stage names to their options, not a "
                         f"{type(recipe).__name__}")
    for key, value in recipe.items():
        if key == "stages" and isinstance(value, str):
            recipe[key] = [s.strip() for s in value.split(",") if s.strip()]
        elif key not in TOP_LEVEL and not isinstance(value, dict | None):
            raise StageError(f"{path}: `{key}` must hold a mapping of its options (option: value), not {value!r}")
    return recipe


def write_recipe(path: str | Path, recipe: dict) -> None:
    Path(path).write_text("# llmkit recipe: every option, resolved; `llmkit <stage> --config THIS_FILE` runs it again\n"
                          + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")


def dump(recipe: dict) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


def stage_options(recipe: dict, stage: str, config_class: type, where: str = "the recipe") -> dict:
    """The recipe's options for `stage`, each checked against `config_class` and read as its field's type; an
    unknown option names the stage, the option and what exists."""
    given = recipe.get(stage) or {}
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    out = {}
    for key, value in given.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            raise StageError(f"{where}: {stage} has no option {key!r}; its options: {', '.join(fields)}")
        out[name] = coerce(hints[name], value, f"{where}: {stage}.{key}")
    return out


def coerce(hint, value, where: str):
    """`value` as a field of type `hint` holds it: YAML reads 3e-4 as a string, and an int where a float is
    meant."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise StageError(f"{where}: a value is needed here (null is not accepted)")
    if isinstance(value, str) and value.strip().lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    for kind in kinds:
        origin = typing.get_origin(kind) or kind
        if origin is bool:
            if isinstance(value, bool):
                return value
        elif origin in (int, float):
            if isinstance(value, bool):
                continue
            try:
                number = origin(value)
            except (TypeError, ValueError):
                continue
            if origin is int and isinstance(value, float) and not value.is_integer():
                continue
            return number
        elif origin is list:
            if isinstance(value, list):
                return [str(v) for v in value]
        elif origin is str:
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
    raise StageError(f"{where}: {value!r} is not a {' or '.join(_name(k) for k in kinds)}")


def _name(kind) -> str:
    return getattr(typing.get_origin(kind) or kind, "__name__", str(kind))
