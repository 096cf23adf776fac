"""Training curves from a stage's `log.jsonl`: loss, bits per byte and throughput against steps.

One function draws them for every stage; the live monitor in widgets/ redraws it while training runs and
each stage saves it as `curves.png` in its folder.
"""

from __future__ import annotations

from pathlib import Path

from llmkit.loaders import read_jsonl


def plot_training_log(log: str | Path | list[dict], fig=None):
    """Loss (train and validation), validation bits per byte, and tokens/s with MFU, by step."""
    import matplotlib.pyplot as plt

    rows = log if isinstance(log, list) else read_jsonl(log)
    rows = [r for r in rows if "loss" in r]
    if fig is None:
        fig = plt.figure(figsize=(13, 3.6))
    fig.clear()
    ax_loss, ax_bpb, ax_tps = fig.subplots(1, 3)
    steps = [r["step"] for r in rows]
    ax_loss.plot(steps, [r["loss"] for r in rows], label="train")
    val = [r for r in rows if "val_loss" in r]
    ax_loss.plot([r["step"] for r in val], [r["val_loss"] for r in val], label="validation")
    ax_loss.set_title("loss (nats / token)")
    ax_loss.set_xlabel("step")
    ax_loss.legend()
    bpb = [r for r in rows if "val_bpb" in r]
    ax_bpb.plot([r["step"] for r in bpb], [r["val_bpb"] for r in bpb], color="C2")
    ax_bpb.set_title("validation bits per byte")
    ax_bpb.set_xlabel("step")
    tps = [r for r in rows if "tokens_per_s" in r]
    ax_tps.plot([r["step"] for r in tps], [r["tokens_per_s"] for r in tps], color="C3")
    ax_tps.set_title("tokens / s" + (f" (MFU {tps[-1]['mfu']:.0%})" if tps and "mfu" in tps[-1] else ""))
    ax_tps.set_xlabel("step")
    fig.tight_layout()
    return fig
