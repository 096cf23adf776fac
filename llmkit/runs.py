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


def reuse_or_start(run_dir: str | Path, stage: str, overwrite: bool, resumable: bool = False) -> tuple[Path, Path | None]:
    """(final folder, work folder to write into) — the work folder is None when the finished stage is to be
    reused. The work folder `.<stage>.partial` survives a crash; a resumable stage continues from what it
    holds, any other stage starts it afresh."""
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
