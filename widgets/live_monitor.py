"""Live training monitor: the stage's curves redrawn in the notebook while it trains.

    from widgets.live_monitor import LiveMonitor
    monitor = LiveMonitor()
    pretrain.run(config, run_dir, callbacks=[monitor])

Any stage that takes `callbacks` calls `monitor.on_log(record)` with every log record; the monitor keeps
the records, redraws `llmkit.curves.plot_training_log` in place, and prints the newest samples.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w
import matplotlib.pyplot as plt

from llmkit.curves import plot_training_log


class LiveMonitor:
    def __init__(self, title: str = "training", every: int = 1):
        self.records: list[dict] = []
        self.every = every
        self.status = w.HTML(f"<b>{html.escape(title)}</b>: waiting for the first log record")
        self.plot = w.Output()
        self.samples = w.HTML()
        self.widget = w.VBox([self.status, self.plot, self.samples])
        with plt.ioff():
            self.fig = plt.figure(figsize=(13, 3.6))
        self._title = title

    def on_log(self, record: dict) -> None:
        self.records.append(record)
        if "samples" in record:
            self.samples.value = samples_html(record["samples"], record.get("step"))
        parts = [f"step {record['step']}"] if "step" in record else []
        for key, label, fmt in (("loss", "loss", ".3f"), ("val_loss", "val loss", ".3f"), ("val_bpb", "val bpb", ".3f"),
                                ("tokens_per_s", "tok/s", ".0f"), ("val_accuracy", "val accuracy", ".3f"),
                                ("reward", "reward", ".3f"), ("kl", "KL", ".2f"), ("oracle_score", "oracle", ".3f"),
                                ("response_length", "length", ".1f"), ("entropy", "entropy", ".2f"),
                                ("clipfrac", "clipped", ".0%"), ("cut_at_cap", "cut", ".0%"),
                                ("zero_std_groups", "one-reward groups", ".0%")):
            if key in record:
                parts.append(f"{label} {record[key]:{fmt}}")
        if len(parts) > 1:
            self.status.value = f"<b>{html.escape(self._title)}</b>: " + " · ".join(parts)
            drawn = [r for r in self.records if any(k in r for k in ("loss", "val_loss", "reward"))]
            if drawn and len(drawn) % self.every == 0:
                self.redraw()

    def redraw(self) -> None:
        plot_training_log(self.records, fig=self.fig)
        self.plot.clear_output(wait=True)
        with self.plot:
            from IPython.display import display

            display(self.fig)

    def save(self, path: str | Path) -> None:
        plot_training_log(self.records, fig=self.fig).savefig(path, dpi=100)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def samples_html(samples: list[dict], step=None) -> str:
    """A table of sampled continuations (and their rewards when RL logged them); all text escaped."""
    extra = [k for k in ("reward", "oracle") if any(k in x for x in samples)]
    head = "".join(f"<th>{k}</th>" for k in ["prompt", "continuation", *extra])
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(x.get(k, '')))}</td>" for k in ["prompt", "continuation", *extra])
                   + "</tr>" for x in samples)
    caption = f"<caption>samples at step {step}</caption>" if step is not None else ""
    return f"<table>{caption}<tr>{head}</tr>{rows}</table>"
