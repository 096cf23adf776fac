"""What every stage's config shares: fields that carry their own help, and presets merged with overrides.

A stage's config is a dataclass whose fields are declared with `option`, so that one line holds the name, the
type, the default and the help (as TRL's configs carry `metadata={"help": ...}`):

    max_steps: int = option(-1, "optimizer steps; > 0 overrides epochs")

The command line (`llmkit.cli`) builds its flags from these fields, and `configure` builds a config from a
preset and overrides, with an error that lists what exists for a preset or a field that does not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from llmkit.runs import StageError

MISSING = dataclasses.MISSING
MAX_BAD_ROWS_HELP = ("the share of the rows of your files that may be unusable (they are kept in the stage's "
                     "rejected_rows.jsonl with file, line and reason) before the stage stops")
SAVE_EVERY_HELP = "steps between checkpoints a killed run resumes from (0: none; deleted when the stage finishes)"
LORA_TARGETS_HELP = ("the layers LoRA adapts: all-linear (every linear layer but the output head, GPT-2's Conv1D "
                     "included) or module names separated by commas, e.g. q_proj,v_proj")


def option(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
           choices: tuple | None = None, cli: bool = True) -> Any:
    """A config field with its help text; `choices`: the values accepted (the CLI checks them); `cli=False`:
    no command-line flag (set by the stage or the pipeline)."""
    metadata = {"help": help, "choices": choices, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class StageConfig:
    """What every stage's config dataclass shares: its `choices` are checked when it is made (a bad value fails
    there, not minutes into a run), and `output_name` is the run folder it writes: its `stage_name` field where it
    has one and it is set, else the stage's name."""

    STAGE: ClassVar[str]

    def __post_init__(self):
        check_choices(self)

    @property
    def output_name(self) -> str:
        return getattr(self, "stage_name", None) or self.STAGE


def configure(config_class: type, presets: dict[str, dict], preset: str, overrides: dict) -> Any:
    """`config_class` with `presets[preset]`'s values, then `overrides`, on top of its defaults."""
    if preset not in presets:
        raise StageError(f"unknown preset {preset!r} for {config_class.__name__}; presets: {', '.join(presets)}")
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise StageError(f"{config_class.__name__} has no field {', '.join(map(repr, unknown))}; its fields: "
                         f"{', '.join(names)}")
    return config_class(**{**presets[preset], **overrides})


def check_choices(config) -> None:
    """Raise a StageError naming the field and what it accepts where a value is not one of its field's `choices`
    (a config's `__post_init__` calls this, so a bad value fails when the config is made, not minutes later)."""
    for f in dataclasses.fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices and value not in choices:
            raise StageError(f"{type(config).__name__}.{f.name}={value!r}; accepted: {', '.join(map(str, choices))}")
