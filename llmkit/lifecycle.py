"""A stage's life in its run folder, written once for every stage (as TRL's `_BaseTrainer` owns the loop and a
trainer adds hooks).

A stage supplies its config (`llmkit.options.<stage>`), a function that reads and checks every input, and a
function that trains; `run` does the rest, in this order:

    reuse        a finished RUN_DIR/<stage> is returned as it is, unless overwrite
    origin       which inputs it reads and whether they are all the closed world's (`origin`)
    read         read_inputs(config, run_dir, rejects): every file, model and setting checked; bad input raises here,
                 before anything is written, so a failed stage leaves RUN_DIR/<stage> as it was
    rejects      the rows it could not use, counted; more than max_bad_rows of them stop it
    work folder  RUN_DIR/.<stage>.partial: fresh, or as a killed run of the same config left it (resume)
    train        train(config, inputs, work) -> metrics, writing its model and files into work.dir
    measure      the measurements of its output that apply here (`llmkit.measures`), on the main process
    commit       curves.png, stage_config.json (stage, origin, config), recipe.yaml, metrics.json, then the rename

Under several processes every process trains; the main one measures and commits while the others return. A stage
whose config says MAIN_PROCESS_ONLY (the data stage) runs on the main process while the others wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from llmkit import runs
from llmkit.curves import save_curves
from llmkit.loaders import Rejects
from llmkit.measures import measure
from llmkit.options import BUNDLED, SCRATCH
from llmkit.runs import LogWriter, StageFolder, StageResult


@dataclass
class Work:
    """What a stage's `train` gets: the work folder it writes into, and the run's machinery."""

    dir: Path  # RUN_DIR/.<stage>.partial: everything written here is renamed into place by the commit
    run_dir: Path
    log: LogWriter  # log.jsonl in the work folder, and the callbacks (the live monitor)
    resume: bool  # a killed run of this same config left its checkpoints here: go on from the last
    progress: bool
    closed_world: bool  # every input is the bundled closed world's (`origin`)

    @property
    def name(self) -> str:
        return self.dir.name.removeprefix(".").removesuffix(".partial")


def runner(read_inputs: Callable, train: Callable, doc: str) -> Callable:
    """A stage's `run(config, run_dir, overwrite=False, progress=True, callbacks=())`: its life in the run folder
    (`run` below) with its own `read_inputs` and `train`. `doc`: what it writes, for `help(stage.run)`."""
    def run_stage(config, run_dir: str | Path, overwrite: bool = False, progress: bool = True,
                  callbacks: tuple = ()) -> StageResult:
        return run(config, run_dir, read_inputs, train, overwrite, progress, callbacks)

    run_stage.__doc__ = (f"{doc}\n\n`overwrite`: replace a finished folder; `progress`: progress bars; `callbacks`: "
                         "objects with `on_log(record)`, given every log record (the live monitor). Reuse, reading, "
                         "training, measuring and the commit: `llmkit.lifecycle`.")
    run_stage.__module__ = train.__module__
    run_stage.__name__ = run_stage.__qualname__ = "run"
    return run_stage


def run(config, run_dir: str | Path, read_inputs: Callable, train: Callable, overwrite: bool = False,
        progress: bool = True, callbacks: tuple = ()) -> StageResult:
    """Run one stage into RUN_DIR/<config.output_name>: reuse, read, train, measure, commit (the module docstring).
    `read_inputs(config, run_dir, rejects) -> inputs`; `train(config, inputs, work) -> metrics` (what it measured
    while training; on a process other than the main one, anything)."""
    run_dir = Path(run_dir)
    if config.MAIN_PROCESS_ONLY and runs.world_size() > 1:
        result = None
        if runs.is_main_process():
            result = _run(config, run_dir, read_inputs, train, overwrite, progress, callbacks)
        dist.barrier()
        final = runs.stage_dir(run_dir, config.output_name)
        return result or StageResult(config.output_name, final, runs.read_metrics(final) if runs.finished(final) else {})
    return _run(config, run_dir, read_inputs, train, overwrite, progress, callbacks)


def _run(config, run_dir: Path, read_inputs: Callable, train: Callable, overwrite: bool, progress: bool,
         callbacks: tuple) -> StageResult:
    folder = StageFolder(run_dir, config.output_name, overwrite, resumable=config.RESUMABLE)
    if folder.reusable:
        return folder.reuse()
    where = origin(config, run_dir)
    rejects = Rejects(config.max_bad_rows)
    inputs = read_inputs(config, run_dir, rejects)  # bad input raises here: nothing is written
    rejects.check(config.train_data or f"the {config.STAGE} stage's data")
    main = runs.is_main_process()
    with folder:
        resume = config.RESUMABLE and (folder.same_config(config) if config.RESUME_ONLY_SAME_CONFIG else True)
        if main:
            rejects.write(folder.work)
        work = Work(folder.work, run_dir, LogWriter(folder.work / "log.jsonl", callbacks), resume, progress and main,
                    where["closed_world"])
        start = time.perf_counter()
        metrics = train(config, inputs, work)
        seconds = time.perf_counter() - start
        if not main:  # every process trained; the main one saved the result, and measures and commits it
            return StageResult(folder.name, folder.final, {})
        metrics = {"train_seconds": seconds, **metrics, "rejected_rows": len(rejects.rows)}
        measured = measure(config, inputs, work, metrics)
        warnings = metrics.get("warnings", []) + measured.pop("warnings", [])
        metrics.update(measured)
        if warnings:
            metrics["warnings"] = warnings
        if (folder.work / "log.jsonl").exists():
            save_curves(folder.work)
        return folder.commit(config, metrics, where)


def origin(config, run_dir: str | Path) -> dict:
    """{"inputs": {field: where it came from}, "closed_world": bool} of a stage about to run. An input left unset
    is recorded as what it defaults to: "bundled" (the closed world's file), "scratch" (a model built from
    nothing) or "RUN_DIR/<stage>" (the run's own earlier stage, wherever the run folder is); a given one as given.
    Its inputs are the closed world when each is the bundled data, nothing, or a folder whose own inputs were the
    closed world — all the way up the run. A default folder that is not there is not an input (the verifier alone
    needs no reward model). The config's `closed_world`, where set, decides instead."""
    run_dir = Path(run_dir)
    inputs, closed = {}, True
    for name, unset in config.INPUTS.items():
        value = getattr(config, name)
        if value is None and unset in (BUNDLED, SCRATCH):
            inputs[name] = unset
            continue
        path = runs.in_run(value, run_dir) if value is not None else run_dir / unset
        if value is None and not path.exists():
            continue
        inputs[name] = str(value) if value is not None else f"RUN_DIR/{unset}"
        closed = closed and any(runs.closed_world(p) for p in (path, path.parent) if p.is_dir())
    if getattr(config, "closed_world", None) is not None:
        closed = config.closed_world
    return {"inputs": inputs, "closed_world": closed}
