"""The one list of stages, in pipeline order: what the command line, the pipeline, the launcher, the loss lab, the
report and the chat app all read.

    data ─ pretrain ─ sft ─ reward ─ ppo          (grpo, rloo, dpo, kto beside ppo, on request)

An entry names the stage's options (its light config module, `llmkit.options.<stage>`: the CLI's flags and
`--help` come from it without importing torch) and its code (the stage module, imported when the stage runs).
Adding a stage is its two modules and one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from llmkit.errors import StageError
from llmkit.options import as_dict, data, dpo, grpo, kto, orpo, ppo, pretrain, reward, rloo, sft
from llmkit.recipes import TOP_LEVEL, stage_options

PRESET_NAMES = ("smoke", "tiny", "small", "gpt2")  # smoke: seconds, for tests; tiny: a CPU in minutes; small, gpt2: GPUs


@dataclass(frozen=True)
class LabEntry:
    """A row of the loss lab (`llmkit.loss_lab`): the stage with these settings, and what they change."""

    name: str
    overrides: dict
    what: str


@dataclass(frozen=True)
class StageSpec:
    name: str  # the command, and the folder it writes by default
    options: ModuleType  # llmkit.options.<stage>: its config class, PRESETS and config_for
    module: str  # the stage's code, imported when it runs
    kind: str  # what its folder holds: "data", "base" (a pretrained LM), "chat" (a chat LM) or "reward"
    writes: tuple[str, ...] = ()  # the folders it writes by default, where not its name (SFT: sft, and lora)
    in_default_pipeline: bool = True
    lab: tuple[LabEntry, ...] = ()  # its rows in the loss lab
    samples: bool = False  # an RL stage that samples answers (a verifier can reward it)

    @property
    def config_class(self) -> type:
        return next(v for v in vars(self.options).values() if isinstance(v, type) and getattr(v, "STAGE", "") == self.name)

    @property
    def presets(self) -> dict[str, dict]:
        return self.options.PRESETS

    @property
    def help(self) -> str:
        return (self.config_class.__doc__ or "").strip().split("\n")[0].rstrip(".")

    def config_for(self, preset: str = "tiny", **overrides):
        return self.options.config_for(preset, **overrides)

    def run(self, config, run_dir, **kwargs):
        """Run the stage: its module is imported here, so that reading the registry stays torch-free."""
        return importlib.import_module(self.module).run(config, run_dir, **kwargs)

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders it writes by default."""
        return self.writes or (self.name,)


def lab(*rows: tuple[str, dict, str]) -> tuple[LabEntry, ...]:
    return tuple(LabEntry(name, overrides, what) for name, overrides, what in rows)


REGISTRY = (
    StageSpec("data", data, "llmkit.data", "data"),
    StageSpec("pretrain", pretrain, "llmkit.pretrain", "base"),
    StageSpec("sft", sft, "llmkit.sft", "chat", writes=("sft", "lora")),
    StageSpec("reward", reward, "llmkit.reward", "reward"),
    StageSpec("ppo", ppo, "llmkit.rl.ppo", "chat", samples=True, lab=lab(
        ("ppo", {}, "a value model's per-token advantages, clipped ratio, KL in the reward"))),
    StageSpec("grpo", grpo, "llmkit.rl.grpo", "chat", in_default_pipeline=False, samples=True, lab=lab(
        ("grpo", {"loss_type": "grpo"}, "group-relative advantages; each answer's token losses averaged over its own "
                                        "length, so a long answer's tokens each count less"),
        ("dr_grpo", {"loss_type": "dr_grpo"}, "Dr. GRPO: no std scaling, token losses summed over a constant, no "
                                              "length bias"),
        ("dapo", {"loss_type": "dapo"}, "DAPO: token losses averaged over all tokens of the batch (TRL's default)"),
        ("cispo", {"loss_type": "cispo"}, "CISPO: the importance weight clipped and kept out of the gradient, so no "
                                          "token's gradient is dropped"),
        ("gspo", {"loss_type": "grpo", "importance_sampling_level": "sequence"},
         "GSPO: one importance ratio per answer (the mean of its tokens' log-ratios)"))),
    StageSpec("rloo", rloo, "llmkit.rl.rloo", "chat", in_default_pipeline=False, samples=True, lab=lab(
        ("rloo", {}, "REINFORCE with the mean reward of the prompt's other samples as the baseline"))),
    StageSpec("dpo", dpo, "llmkit.rl.dpo", "chat", in_default_pipeline=False, lab=lab(
        ("dpo", {"loss_type": "sigmoid"}, "DPO: the pairs' log-ratio margin through a sigmoid"),
        ("ipo", {"loss_type": "ipo"}, "IPO: the margin regressed to a fixed target, which bounds it"),
        ("dpo_norm", {"loss_type": "sigmoid_norm"}, "length-normalised DPO: log-ratios per token, not per answer"))),
    StageSpec("kto", kto, "llmkit.rl.kto", "chat", in_default_pipeline=False, lab=lab(
        ("kto", {}, "KTO: each answer judged alone against a reference point, no pairs"))),
    StageSpec("orpo", orpo, "llmkit.rl.orpo", "chat", in_default_pipeline=False, lab=lab(
        ("orpo", {}, "ORPO: the chosen answers' SFT loss plus an odds-ratio term, no reference model"))),
)
STAGES: dict[str, StageSpec] = {s.name: s for s in REGISTRY}
DEFAULT_STAGES = tuple(s.name for s in REGISTRY if s.in_default_pipeline)


def stage(name: str) -> StageSpec:
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]


def model_folders(kinds: tuple[str, ...] = ("base", "chat")) -> list[str]:
    """The folders the stages of these kinds write, in pipeline order (the chat app's checkpoints)."""
    return [folder for s in REGISTRY if s.kind in kinds for folder in s.folders]


def resolve(stages: list[str] | tuple[str, ...], preset: str | None = None, recipe: dict | None = None,
            overrides: dict[str, dict] | None = None, where: str = "the recipe") -> tuple[str, dict]:
    """(the preset, {stage: config}) for `stages`: each stage's preset values, then the recipe's options for it,
    then `overrides` (the flags given). The preset is `preset`, else the recipe's, else tiny."""
    recipe, overrides = recipe or {}, overrides or {}
    preset = preset or recipe.get("preset") or "tiny"
    if preset not in PRESET_NAMES:
        raise StageError(f"{where}: unknown preset {preset!r}; presets: {', '.join(PRESET_NAMES)}")
    for name in recipe:
        if name not in TOP_LEVEL and name not in STAGES:  # a recipe for a stage that does not exist fails here
            raise StageError(f"{where}: unknown stage {name!r}; stages: {', '.join(STAGES)}")
    configs = {}
    for name in stages:
        spec = stage(name)
        options = {**stage_options(recipe, name, spec.config_class, where), **overrides.get(name, {})}
        configs[name] = spec.config_for(preset, **options)
    return preset, configs


def as_recipe(preset: str, configs: dict, with_stages: bool = True) -> dict:
    """The resolved recipe of these configs: what `--print-config` prints and `--config` reads back."""
    return {"preset": preset, **({"stages": list(configs)} if with_stages else {}),
            **{name: as_dict(config) for name, config in configs.items()}}
