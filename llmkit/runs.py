"""The run registry: `runs/<name>/<stage>/`, one folder per finished stage.

A stage is finished when its folder holds `metrics.json`. A stage writes into a temporary sibling folder
and renames it into place only when it has finished, so a crash never leaves a half-written stage, and
an existing finished stage is replaced only when the caller asks for `overwrite` — and only after the new
one is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


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


def reuse_or_start(run_dir: str | Path, stage: str, overwrite: bool) -> tuple[Path, Path | None]:
    """(final folder, temporary folder to write into) — the temporary folder is None when the finished
    stage is to be reused."""
    final = stage_dir(run_dir, stage)
    if final.exists() and not overwrite:
        if finished(final):
            return final, None
        raise StageExistsError(
            f"{final} exists but is not a finished {stage} stage (no metrics.json); "
            "move it away or pass overwrite=True (--overwrite) to replace it"
        )
    tmp = final.with_name(f".{stage}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return final, tmp


def commit(tmp: Path, final: Path, config, metrics: dict) -> StageResult:
    """Write config.json and metrics.json, then move the finished folder into place."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n", encoding="utf-8")
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
    if tmp is not None and tmp.exists():
        shutil.rmtree(tmp, ignore_errors=True)
