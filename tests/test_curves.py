"""The curves every training stage leaves in its folder."""

import json

import matplotlib.pyplot as plt

from llmkit.curves import save_curves


def test_save_curves_writes_the_png_and_leaves_no_figure_open(tmp_path):
    rows = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 11)] + [{"step": 10, "val_loss": 2.5}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plt.close("all")
    for _ in range(3):
        save_curves(tmp_path)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []
