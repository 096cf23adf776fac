"""The run folder: `runs/<name>/<stage>/`, one folder per finished stage, and what every stage shares about it.

A stage is finished when its folder holds `metrics.json`. A stage writes into a work folder beside it
(`.<stage>.partial`) and renames it into place only when it has finished, so a crash never leaves a
half-written stage, and an existing finished stage is replaced only when the caller asks for `overwrite` —
and only after the new one is complete. A resumable stage keeps its checkpoints in the work folder, so a rerun
after a crash continues where it stopped. `StageFolder` below does all of this, and `llmkit.lifecycle` drives it
for every stage.

Each finished folder says what made it, in `stage_config.json`: `{"stage": "sft", "closed_world": true,
"inputs": {field: where it came from}, "measures": [...], "config": {...}}` (`provenance`), and keeps the resolved recipe it ran with
as `recipe.yaml` (`llmkit.recipes`). Code that needs to know which stage a folder is, or whether its inputs were
the closed world, reads those standard keys, never another stage's own options.

Under several processes (`llmkit.launch`, `accelerate launch`) the main process prepares and commits the
folders while the others wait for its answer; `world_size` and `is_main_process` say which process this is.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState

from llmkit.errors import StageError, StageExistsError
from llmkit.options import as_dict
from llmkit.recipes import RECIPE, write_recipe

# The stage's own record; not "config.json", which is the transformers model's in a checkpoint folder.
STAGE_CONFIG = "stage_config.json"


@dataclass
class StageResult:
    stage: str
    output_dir: Path
    metrics: dict = field(default_factory=dict)
    reused: bool = False


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / stage


def partial_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / f".{stage}.partial"


def finished(path: str | Path) -> bool:
    return (Path(path) / "metrics.json").is_file()


def read_metrics(path: str | Path) -> dict:
    return json.loads((Path(path) / "metrics.json").read_text(encoding="utf-8"))


def provenance(path: str | Path) -> dict | None:
    """What made a finished folder (its STAGE_CONFIG file): {"stage", "closed_world", "inputs", "measures",
    "config"}; None
    where it has none (a folder llmkit did not write, or a model folder from elsewhere)."""
    file = Path(path) / STAGE_CONFIG
    if not file.is_file():
        return None
    record = json.loads(file.read_text(encoding="utf-8"))
    return record if isinstance(record, dict) and "stage" in record and "config" in record else None


def read_stage_config(path: str | Path) -> dict | None:
    """The options a finished stage ran with, or None where the folder has no provenance."""
    record = provenance(path)
    return record["config"] if record else None


def closed_world(path: str | Path) -> bool:
    """Whether a finished folder's inputs were the bundled closed world (False for a folder from elsewhere)."""
    record = provenance(path)
    return bool(record and record.get("closed_world"))


def in_run(path: str | Path, run_dir: str | Path) -> Path:
    """A path as a recipe may give it: `RUN_DIR/lora` is the run's own lora folder, `~` the home folder."""
    text = str(path)
    if text == "RUN_DIR" or text.startswith("RUN_DIR/"):
        return Path(run_dir) / text[len("RUN_DIR/"):]
    return Path(text).expanduser()


def model_folder(given: str | Path | None, default: Path | None, what: str, hint: str) -> Path:
    """The model folder a stage starts from: `given` (RUN_DIR/... is in the run of `default`), else the earlier
    stage's `default` folder; a clear error (with `hint`: how to make one) where it holds no transformers model."""
    path = in_run(given, default.parent if default is not None else ".") if given else default
    if not (path / "config.json").exists():
        raise StageError(f"{path}: no {what} there (not a transformers model folder: no config.json); {hint}")
    return path


class StageFolder:
    """One stage's folders in a run: the finished `RUN_DIR/<name>` and the work folder `RUN_DIR/.<name>.partial`.

    A folder of that name that holds no finished stage is refused at once (StageExistsError) unless `overwrite`:
    it is somebody's, and is never replaced silently. `with stage:` prepares the work folder (`stage.work`):
    fresh, or as a crash left it when `resumable`. If the body raises, the work folder is deleted, unless
    `resumable` (a rerun continues from its checkpoints); a finished folder from before is never touched until
    `commit` replaces it."""

    def __init__(self, run_dir: str | Path, name: str, overwrite: bool = False, resumable: bool = False):
        self.run_dir, self.name, self.overwrite, self.resumable = Path(run_dir), name, overwrite, resumable
        self.final, self.work = stage_dir(run_dir, name), partial_dir(run_dir, name)
        if self.final.exists() and not finished(self.final) and not overwrite:
            raise self._exists()

    def _exists(self) -> StageExistsError:
        state = "is finished" if finished(self.final) else f"is not a finished {self.name} stage (no metrics.json)"
        return StageExistsError(f"{self.final} exists and {state}; move it away or pass overwrite=True "
                                "(--overwrite) to replace it")

    @property
    def reusable(self) -> bool:
        return finished(self.final) and not self.overwrite

    def reuse(self) -> StageResult:
        return StageResult(self.name, self.final, read_metrics(self.final), reused=True)

    def __enter__(self) -> StageFolder:
        if world_size() > 1:  # two processes deleting and creating the same folder race: the main one decides
            answer: list = [None]
            if dist.get_rank() == 0:
                try:
                    self._prepare()
                except StageError as e:
                    answer = [e]
            dist.broadcast_object_list(answer, src=0)
            if isinstance(answer[0], Exception):
                raise answer[0]
        else:
            self._prepare()
        return self

    def _prepare(self) -> None:
        if self.final.exists() and not self.overwrite:
            raise self._exists()
        if self.work.exists() and (self.overwrite or not self.resumable):
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)

    def same_config(self, config) -> bool:
        """For a resumable stage, inside `with`: whether the work folder was left by a run of this same config (its
        checkpoints can be resumed). Otherwise the folder is emptied and the config recorded for the next try."""
        cfg = json.dumps(as_dict(config), sort_keys=True, default=str)
        record = self.work / "resume_config.json"
        same = [record.exists() and record.read_text(encoding="utf-8") == cfg]
        if world_size() > 1:  # the main process's answer, for all
            dist.broadcast_object_list(same, src=0)
        if not same[0] and is_main_process():
            for item in self.work.iterdir():
                shutil.rmtree(item) if item.is_dir() else item.unlink()
            record.write_text(cfg, encoding="utf-8")
        return same[0]

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.resumable and self.work.exists():
            shutil.rmtree(self.work, ignore_errors=True)
        return False

    def commit(self, config, metrics: dict, origin: dict | None = None) -> StageResult:
        """Write stage_config.json (the stage, `origin`: {"closed_world", "inputs"}, and the config), recipe.yaml
        and metrics.json into the work folder, then move it into place (replacing a finished folder only now that
        the new one is complete)."""
        record = {"stage": config.STAGE, "closed_world": False, "inputs": {}, **(origin or {}),
                  "measures": list(config.measures()), "config": as_dict(config)}
        (self.work / STAGE_CONFIG).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        write_recipe(self.work / RECIPE, {config.STAGE: as_dict(config)})
        (self.work / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")
        (self.work / "resume_config.json").unlink(missing_ok=True)
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            self.final.rename(old)
            self.work.rename(self.final)
            shutil.rmtree(old)
        else:
            self.work.rename(self.final)
        return StageResult(self.name, self.final, metrics)


class LogWriter:
    """A stage's `log.jsonl`: each record appended as one JSON line and handed to the callbacks (objects with
    `on_log(record)`, such as the live monitor in widgets/). Only the main process writes."""

    def __init__(self, path: str | Path, callbacks=()):
        self.path, self.callbacks = Path(path), list(callbacks)

    def write(self, record: dict) -> None:
        if not is_main_process():
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        for cb in self.callbacks:
            cb.on_log(record)

    def keep_until(self, step: int) -> None:
        """Forget the records after `step`: a stage resumed from a checkpoint logs those steps again."""
        if is_main_process():
            keep_log_until(self.path, step)


def keep_log_until(path: str | Path, step: int) -> None:
    """Drop the records of a jsonl log whose `step` is after `step`."""
    path = Path(path)
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").split("\n") if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def world_size() -> int:
    """How many processes this stage runs on. Starts the process group when a launcher asked for one (its
    environment says WORLD_SIZE > 1) and nothing has started it yet."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1
    if not dist.is_initialized():
        # joins the launcher's process group (gloo on CPU, NCCL on GPUs); accelerate counts CPU processes as
        # distributed only when told it runs on the CPU
        PartialState(cpu=not torch.cuda.is_available())
    return dist.get_world_size()


def is_main_process() -> bool:
    if world_size() == 1:
        return True
    return dist.get_rank() == 0


def split_batch(batch: int, micro: int | None, processes: int) -> tuple[int, int]:
    """(sequences per forward pass, gradient-accumulation steps) that keep the global batch at `batch` on
    `processes` processes: the same optimizer steps, whatever the number of processes."""
    if batch % processes:
        raise StageError(f"batch_size {batch} must be a multiple of the number of processes ({processes})")
    per_process = batch // processes
    micro = min(micro or per_process, per_process)
    if per_process % micro:
        raise StageError(f"batch_size {batch} over {processes} process(es) is {per_process} per process, which must "
                         f"be a multiple of micro_batch_size {micro}")
    return micro, per_process // micro
