"""Execute every notebook in order on the tiny preset and save it with its outputs, so that the notebooks show
their plots, tables and sample answers before anyone runs them.

    python docs/execute_notebooks.py                      # all of them, into runs/notebook_outputs/
    python docs/execute_notebooks.py --only 05 06         # some of them (the ones before are reused if they ran)

The notebooks run one after another in one folder (`--work-dir`), as a reader runs them: each reuses the stages
the ones before it trained (`runs/notebook` under that folder). A widget has no static view on GitHub, so each
live monitor's output is replaced by what it showed last: its status line, its curves as an image and its newest
samples; rerunning the notebook brings the live widget back. The tests execute the notebooks in the smoke profile
without writing them back (tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROGRESS = ("FloatProgressModel", "IntProgressModel")


def widget_outputs(model_id: str, state: dict) -> list[dict]:
    """The static outputs of a displayed widget: its HTML widgets' text and its Output widgets' outputs, in order.
    Nothing for widgets without a static view (buttons, sliders), nor for progress bars (tqdm's in a notebook: a
    finished bar of loading weights or mapping a dataset says nothing)."""
    model = state.get(model_id)
    if model is None:
        return []
    name, s = model["model_name"], model["state"]
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "TabModel", "AccordionModel"):
        children = [c.removeprefix("IPY_MODEL_") for c in s.get("children", [])]
        if any(state.get(c, {}).get("model_name") in PROGRESS for c in children):
            return []
        return [o for child in children for o in widget_outputs(child, state)]
    if name == "HTMLModel" and s.get("value"):
        return [nbformat.v4.new_output("display_data", data={"text/html": s["value"]})]
    if name == "OutputModel":
        return [nbformat.v4.new_output(o["output_type"], **{k: v for k, v in o.items() if k != "output_type"})
                for o in s.get("outputs", [])]
    return []


def freeze_widgets(nb) -> int:
    """Replace each displayed widget's output by its static outputs (`widget_outputs`) and drop the saved widget
    state; returns how many widgets were replaced."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for o in cell.get("outputs", []):
            view = o.get("data", {}).get(WIDGET_VIEW)  # displayed, or the value of a cell's last line
            if view is None:
                outputs.append(o)
                continue
            outputs += widget_outputs(view["model_id"], state)
            replaced += 1
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return replaced


def image_count(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def execute(path: Path, work_dir: Path, timeout: int) -> dict:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False, store_widget_state=True,
                            resources={"metadata": {"path": str(work_dir)}})
    start = time.time()
    client.execute()
    frozen = freeze_widgets(nb)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    if errors:
        raise SystemExit(f"{path.name}: a cell failed: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    nbformat.write(nb, path)
    return {"seconds": time.time() - start, "code_cells": len(code), "with_output": sum(bool(c.outputs) for c in code),
            "images": image_count(nb), "widgets": frozen}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "notebook_outputs"),
                   help="the folder the notebooks run in (their runs/notebook goes under it)")
    p.add_argument("--only", nargs="*", default=None, help="notebook numbers or names to execute (default: all)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds one cell may take")
    args = p.parse_args(argv)
    os.environ.pop("LLMKIT_SMOKE", None)  # the tiny preset: the notebooks read this to pick the smoke profile
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend: plt.show() saves each figure as an image
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if any(n.name.startswith(o) for o in args.only)]
        if not notebooks:
            raise SystemExit(f"--only {' '.join(args.only)}: no such notebook in {ROOT / 'notebooks'}")
    for path in notebooks:
        r = execute(path, work_dir, args.timeout)
        print(f"{path.name}: {r['seconds']:.0f} s, {r['with_output']} of {r['code_cells']} code cells with output, "
              f"{r['images']} images, {r['widgets']} widgets frozen", flush=True)


if __name__ == "__main__":
    sys.exit(main())
