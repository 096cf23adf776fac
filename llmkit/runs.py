"""The run folder: `runs/<name>/<stage>/`, one folder per finished stage, and what every stage shares about it.

A stage is finished when its folder holds `metrics.json`. A stage writes into a work folder beside it
(`.<stage>.partial`) and renames it into place only when it has finished, so a crash never leaves a
half-written stage, and an existing finished stage is replaced only when the caller asks for `overwrite` —
and only after the new one is complete. A resumable stage (pretraining) keeps its checkpoints in the work
folder, so a rerun after a crash continues where it stopped. `Stage` below does all of this; a stage's
`run()` reads:

    out = runs.Stage(run_dir, "sft", overwrite)
    if out.reusable:
        return out.reuse()
    ...read and check the inputs (bad input writes nothing)...
    with out:                                  # the work folder; deleted if the body fails (kept if resumable)
        ...train, writing into out.work...
        return out.commit(config, metrics)     # stage_config.json, metrics.json, then the rename

Under several processes (`llmkit.launch`, `accelerate launch`) the main process prepares and commits the
folders while the others wait for its answer; `world_size` and `is_main_process` say which process this is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# The stage's own config; not "config.json", which is the transformers model's in a checkpoint folder.
STAGE_CONFIG = "stage_config.json"


class StageError(ValueError):
    """A stage cannot run as asked: bad input, a missing earlier stage, a setting it does not accept. The message
    says what is wrong, where (file and line, or field), and what is accepted; the CLI prints it and exits 2."""


class StageExistsError(StageError):
    pass


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


def read_stage_config(path: str | Path) -> dict | None:
    """The config a finished stage ran with (its STAGE_CONFIG file), or None where it has none."""
    file = Path(path) / STAGE_CONFIG
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def model_folder(given: str | Path | None, default: Path, what: str, hint: str) -> Path:
    """The model folder a stage starts from: `given`, else the earlier stage's `default` folder; a clear error
    (with `hint`: how to make one) where it holds no transformers model."""
    path = Path(given) if given else default
    if not (path / "config.json").exists():
        raise StageError(f"{path}: no {what} there (not a transformers model folder: no config.json); {hint}")
    return path


class Stage:
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

    def __enter__(self) -> Stage:
        if world_size() > 1:  # two processes deleting and creating the same folder race: the main one decides
            import torch.distributed as dist

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
        cfg = json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
                         sort_keys=True, default=str)
        record = self.work / "resume_config.json"
        same = [record.exists() and record.read_text(encoding="utf-8") == cfg]
        if world_size() > 1:  # the main process's answer, for all
            import torch.distributed as dist

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

    def commit(self, config, metrics: dict) -> StageResult:
        """Write stage_config.json and metrics.json into the work folder, then move it into place (replacing a
        finished folder only now that the new one is complete)."""
        cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        (self.work / STAGE_CONFIG).write_text(json.dumps(cfg, indent=2, default=str) + "\n", encoding="utf-8")
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
    import torch.distributed as dist

    if not dist.is_initialized():
        import torch
        from accelerate import PartialState

        # joins the launcher's process group (gloo on CPU, NCCL on GPUs); accelerate counts CPU processes as
        # distributed only when told it runs on the CPU
        PartialState(cpu=not torch.cuda.is_available())
    return dist.get_world_size()


def is_main_process() -> bool:
    if world_size() == 1:
        return True
    import torch.distributed as dist

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
