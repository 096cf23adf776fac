"""The run registry: `runs/<name>/<stage>/`, one folder per finished stage.

A stage is finished when its folder holds `metrics.json`. A stage writes into a work folder beside it
(`.<stage>.partial`) and renames it into place only when it has finished, so a crash never leaves a
half-written stage, and an existing finished stage is replaced only when the caller asks for `overwrite` —
and only after the new one is complete. A resumable stage (pretraining) keeps its checkpoints in the work
folder, so a rerun after a crash continues where it stopped.
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


class StageExistsError(RuntimeError):
    pass


@dataclass
class StageResult:
    stage: str
    output_dir: Path
    metrics: dict = field(default_factory=dict)
    reused: bool = False


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / stage


def finished(path: str | Path) -> bool:
    return (Path(path) / "metrics.json").is_file()


def read_metrics(path: str | Path) -> dict:
    return json.loads((Path(path) / "metrics.json").read_text(encoding="utf-8"))


def read_stage_config(path: str | Path) -> dict | None:
    """The config a finished stage ran with (its STAGE_CONFIG file), or None where it has none."""
    file = Path(path) / STAGE_CONFIG
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def reuse_or_start(run_dir: str | Path, stage: str, overwrite: bool, resumable: bool = False) -> tuple[Path, Path | None]:
    """(final folder, work folder to write into) — the work folder is None when the finished stage is to be
    reused. The work folder `.<stage>.partial` survives a crash; a resumable stage continues from what it
    holds, any other stage starts it afresh.

    Under several processes (`llmkit.launch`, `accelerate launch`) the main process decides and prepares the
    folders, the others wait and get its answer: two processes deleting and creating the same folder race."""
    if world_size() > 1:
        import torch.distributed as dist

        answer: list = [None]
        if dist.get_rank() == 0:
            try:
                answer = [_reuse_or_start(run_dir, stage, overwrite, resumable)]
            except StageExistsError as e:
                answer = [e]
        dist.broadcast_object_list(answer, src=0)
        if isinstance(answer[0], Exception):
            raise answer[0]
        return answer[0]
    return _reuse_or_start(run_dir, stage, overwrite, resumable)


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


def split_batch(batch: int, micro: int | None, processes: int, error=ValueError) -> tuple[int, int]:
    """(sequences per forward pass, gradient-accumulation steps) that keep the global batch at `batch` on
    `processes` processes: the same optimizer steps, whatever the number of processes."""
    if batch % processes:
        raise error(f"batch_size {batch} must be a multiple of the number of processes ({processes})")
    per_process = batch // processes
    micro = min(micro or per_process, per_process)
    if per_process % micro:
        raise error(f"batch_size {batch} over {processes} process(es) is {per_process} per process, which must "
                    f"be a multiple of micro_batch_size {micro}")
    return micro, per_process // micro


def _reuse_or_start(run_dir: str | Path, stage: str, overwrite: bool, resumable: bool) -> tuple[Path, Path | None]:
    final = stage_dir(run_dir, stage)
    if final.exists() and not overwrite:
        if finished(final):
            return final, None
        raise StageExistsError(
            f"{final} exists but is not a finished {stage} stage (no metrics.json); "
            "move it away or pass overwrite=True (--overwrite) to replace it"
        )
    work = partial_dir(run_dir, stage)
    if work.exists() and (overwrite or not resumable):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return final, work


def partial_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / f".{stage}.partial"


def commit(tmp: Path, final: Path, config, metrics: dict) -> StageResult:
    """Write stage_config.json and metrics.json, then move the finished folder into place."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    (tmp / STAGE_CONFIG).write_text(json.dumps(cfg, indent=2, default=str) + "\n", encoding="utf-8")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return StageResult(final.name, final, metrics)


def abandon(tmp: Path | None) -> None:
    """Delete a work folder after a failure (for stages that cannot resume from one)."""
    if tmp is not None and tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
