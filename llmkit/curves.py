"""Training curves from a stage's `log.jsonl`: loss, bits per byte and throughput against steps.

One function draws them for every stage; the live monitor in widgets/ redraws it while training runs and
each stage saves it as `curves.png` in its folder.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from llmkit.loaders import read_jsonl


def plot_training_log(log: str | Path | list[dict], fig=None):
    """Loss (train and validation), validation bits per byte, and tokens/s with MFU, by step — or, for an RL
    log, reward, KL and response length."""
    rows = log if isinstance(log, list) else read_jsonl(log)
    if any("kl" in r and "reward" in r for r in rows):
        return plot_rl_log(rows, fig)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    bpb = [r for r in rows if "val_bpb" in r]
    tps = [r for r in rows if "tokens_per_s" in r]
    lrs = [r for r in rows if "lr" in r]
    acc = [r for r in rows if "accuracy" in r]  # reward models: pairwise accuracy
    val_acc = [r for r in rows if "val_accuracy" in r]
    if fig is None:
        fig = plt.figure(figsize=(13, 3.6))
    fig.clear()
    panels = ["loss", *(["bpb"] if bpb else []), *(["acc"] if acc or val_acc else []), *(["tps"] if tps else []),
              *(["lr"] if lrs and not tps else [])]
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0]))
    ax = axes["loss"]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], label="validation", marker="o" if len(val) < 20 else None)
    ax.set_title("loss (per pair)" if "acc" in axes else "loss (nats / token)")
    ax.legend()
    if "acc" in axes:
        axes["acc"].plot([r["step"] for r in acc], [r["accuracy"] for r in acc], label="train")
        axes["acc"].plot([r["step"] for r in val_acc], [r["val_accuracy"] for r in val_acc], label="validation",
                         marker="o" if len(val_acc) < 20 else None)
        axes["acc"].set_title("pairwise accuracy (chosen > rejected)")
        axes["acc"].legend()
    if bpb:
        axes["bpb"].plot([r["step"] for r in bpb], [r["val_bpb"] for r in bpb], color="C2")
        axes["bpb"].set_title("validation bits per byte")
    if tps:
        axes["tps"].plot([r["step"] for r in tps], [r["tokens_per_s"] for r in tps], color="C3")
        axes["tps"].set_title("tokens / s" + (f" (MFU {tps[-1]['mfu']:.0%})" if "mfu" in tps[-1] else ""))
    if "lr" in axes:
        axes["lr"].plot([r["step"] for r in lrs], [r["lr"] for r in lrs], color="C4")
        axes["lr"].set_title("learning rate")
    for a in axes.values():
        a.set_xlabel("step")
    fig.tight_layout()
    return fig


HEALTH = (("entropy", "entropy"), ("clipfrac", "clipped tokens"), ("cut_at_cap", "answers cut at the cap"),
          ("zero_std_groups", "groups with one reward"))  # llmkit.rl.health's signals, as the fourth panel draws them


def plot_rl_log(rows: list[dict], fig=None):
    """RL curves by step: the reward (and the oracle's score of the same answers, on the closed world: a gap that
    widens is reward hacking), the KL to the reference, response length with the fraction of responses that ended
    with EOS, and the health checks' signals (`llmkit.rl.health`)."""
    rows = [r for r in rows if "reward" in r]
    if fig is None:
        fig = plt.figure(figsize=(13, 3.6))
    fig.clear()
    ax_r, ax_kl, ax_len, ax_h = fig.subplots(1, 4)
    steps = [r["step"] for r in rows]
    ax_r.plot(steps, [r["reward"] for r in rows], label="reward")
    if any("oracle_score" in r for r in rows):
        ax_o = ax_r.twinx()
        ax_o.plot(steps, [r.get("oracle_score") for r in rows], color="C2", label="oracle score")
        ax_o.set_ylabel("oracle score", color="C2")
    ax_r.set_title("reward")
    ax_r.legend(loc="upper left", fontsize=8)
    ax_kl.plot(steps, [r["kl"] for r in rows], color="C1")
    ax_kl.set_title("KL to the reference (per sequence)")
    ax_len.plot(steps, [r.get("response_length") for r in rows], color="C3", label="tokens")
    ax_len.set_title("response length")
    if any("eos_fraction" in r for r in rows):
        ax_e = ax_len.twinx()
        ax_e.plot(steps, [r.get("eos_fraction") for r in rows], color="C4", linestyle="--")
        ax_e.set_ylabel("ended with EOS", color="C4")
        ax_e.set_ylim(0, 1.05)
    for key, label in HEALTH:
        if any(key in r for r in rows):
            ax_h.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=label)
    ax_h.set_title("health")
    if ax_h.lines:
        ax_h.legend(fontsize=7)
    for a in (ax_r, ax_kl, ax_len, ax_h):
        a.set_xlabel("step")
    fig.tight_layout()
    return fig


def save_curves(folder: str | Path) -> None:
    """Draw FOLDER/log.jsonl into FOLDER/curves.png (what every training stage leaves in its folder)."""
    folder = Path(folder)
    fig = plot_training_log(folder / "log.jsonl")
    fig.savefig(folder / "curves.png", dpi=100)
    plt.close(fig)  # pyplot keeps every figure it made open: a notebook that runs many stages would collect them
