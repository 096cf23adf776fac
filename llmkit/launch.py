"""Run a stage on several processes: from a notebook (accelerate's `notebook_launcher`) or from a shell
(`accelerate launch -m llmkit <stage> ...`), with the same stage code and the same results.

    from llmkit import launch, pretrain
    launch.launch("pretrain", pretrain.config_for("smoke"), "runs/demo", num_processes=2)

Every training stage keeps its global batch when the number of processes changes: each process takes
batch / N sequences of every step, and gradient accumulation makes up the rest (`runs.split_batch`), so one
process and N processes take the same optimizer steps on the same data (tests/test_launch.py checks the
losses step by step). On a CPU-only machine the processes talk over gloo, which is how this is tested here;
on GPUs the same call uses NCCL, one process per GPU.

PPO, llmkit's own loop, does the same by itself: each process samples and scores its share of every rollout
and takes its share of every minibatch, and the gradients are summed across processes (`llmkit.rl.ppo`). The
data stage runs on the main process only; the others wait for it (the pipeline's registry says which,
`llmkit.pipeline.run_stage` does the waiting).

notebook_launcher's pitfalls, handled here:
- processes are forked from the notebook's kernel, so nothing may have initialised CUDA before the launch
  (checked: a clear error says to restart the kernel and launch first);
- each process must build its own Accelerator: a stage run in-process earlier left accelerate's shared
  state behind, which `launch` clears when that is safe (no CUDA, no process group), instead of failing;
- N processes on a few CPU cores oversubscribe them unless each takes cores / N threads (set here).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import notebook_launcher
from accelerate.state import AcceleratorState
from accelerate.utils import patch_environment

from llmkit import pipeline, runs


class LaunchError(runs.StageError):
    pass


def _stage_main(stage: str, config, run_dir: str, overwrite: bool, threads: int | None) -> None:
    """What every launched process runs."""
    if threads:
        torch.set_num_threads(threads)
    pipeline.run_stage(stage, config, run_dir, overwrite=overwrite, progress=runs.is_main_process())


def launch(stage: str, config, run_dir: str | Path, num_processes: int = 2, overwrite: bool = False,
           threads_per_process: int | None = None, port: int | None = None,
           mixed_precision: str = "no") -> runs.StageResult:
    """Run `stage` with `config` on `num_processes` processes (one per GPU, or CPU processes over gloo when
    there is no GPU) and return the finished stage as the main process wrote it.

    `threads_per_process`: torch threads in each process (default: CPU cores / processes on a CPU-only
    machine). `port`: the rendezvous port (default: a free one)."""
    pipeline.stage(stage)  # an unknown stage fails here, not in the forked processes
    if num_processes < 1:
        raise LaunchError(f"num_processes must be at least 1, not {num_processes}")
    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise LaunchError(f"num_processes={num_processes} but this machine has {torch.cuda.device_count()} GPU(s)")
    if num_processes > 1:
        _clear_launch_blockers()
    if threads_per_process is None and not torch.cuda.is_available():
        threads_per_process = max(1, (os.cpu_count() or 1) // num_processes)
    run_dir = str(run_dir)
    # Without a GPU: CPU processes over gloo on the loopback interface (as accelerate's debug_launcher sets up)
    env = {} if torch.cuda.is_available() or num_processes == 1 else {"ACCELERATE_USE_CPU": "yes",
                                                                       "GLOO_SOCKET_IFNAME": "lo"}
    with patch_environment(**env):
        notebook_launcher(_stage_main, num_processes=num_processes, use_port=str(port or free_port()),
                          args=(stage, config, run_dir, overwrite, threads_per_process if num_processes > 1 else None),
                          mixed_precision=mixed_precision)
    if num_processes > 1:
        AcceleratorState._reset_state(reset_partial_state=True)  # what the forked processes did is not ours
    final = runs.stage_dir(run_dir, config.output_name)
    if not runs.finished(final):
        raise LaunchError(f"the launched {stage} stage did not finish: no {final / 'metrics.json'} (see the output above)")
    return runs.StageResult(config.output_name, final, runs.read_metrics(final))


def _clear_launch_blockers() -> None:
    """notebook_launcher forks this process: refuse when CUDA is initialised (forked CUDA fails), and clear
    accelerate's shared state left by a stage that ran in this process before (each process builds its own)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise LaunchError("CUDA is already initialised in this process, and forked processes cannot use it: restart "
                          "the kernel and call llmkit.launch.launch before anything touches the GPU (training, "
                          "generating, moving a model or tensor to 'cuda')")
    if dist.is_available() and dist.is_initialized():
        raise LaunchError("this process already belongs to a torch.distributed process group; launch from a "
                          "plain notebook kernel or a plain Python process")
    AcceleratorState._reset_state(reset_partial_state=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
