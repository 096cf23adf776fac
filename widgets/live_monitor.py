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
            rows = "".join(f"<tr><td>{html.escape(s['prompt'])}</td><td>{html.escape(s['continuation'])}</td></tr>"
                           for s in record["samples"])
            self.samples.value = f"<table><tr><th>prompt</th><th>continuation</th></tr>{rows}</table>"
            return
        if "loss" in record or "val_loss" in record:
            parts = [f"step {record['step']}"]
            if "loss" in record:
                parts.append(f"loss {record['loss']:.3f}")
            if "val_loss" in record:
                parts.append(f"val loss {record['val_loss']:.3f}")
            if "val_bpb" in record:
                parts.append(f"val bpb {record['val_bpb']:.3f}")
            if "tokens_per_s" in record:
                parts.append(f"{record['tokens_per_s']:.0f} tok/s")
            self.status.value = f"<b>{html.escape(self._title)}</b>: " + " · ".join(parts)
            if len([r for r in self.records if "loss" in r or "val_loss" in r]) % self.every == 0:
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
