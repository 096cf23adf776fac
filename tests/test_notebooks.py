"""Execute the notebooks top to bottom in the smoke profile (LLMKIT_SMOKE=1), as a reader would: in order,
in one folder, so each notebook reuses the stages the ones before it ran (`runs/notebook`), exactly as the
notebooks say. Each stage's from-scratch run is what the stage tests and the pipeline test cover; a single
notebook selected alone (pytest -k 05_reward) still runs from an empty folder and trains what it needs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("reader")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, reader_folder, monkeypatch):
    monkeypatch.setenv("LLMKIT_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(reader_folder)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if path.name == "01_data.ipynb":
        assert (reader_folder / "runs" / "notebook" / "data" / "metrics.json").exists()


def test_executed_notebooks_keep_a_static_view_of_each_live_monitor(tmp_path, monkeypatch):
    """docs/execute_notebooks.py saves a live monitor as what it showed last (status, curves, samples), since a
    widget shows nothing where no kernel runs (GitHub)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("execute_notebooks", NOTEBOOKS[0].parents[1] / "docs" / "execute_notebooks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as the script runs them: figures become images
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from IPython.display import display\n"
        "from widgets.live_monitor import LiveMonitor\n"
        "m = LiveMonitor('demo')\n"
        "display(m.widget)\n"
        "for s in range(1, 4):\n"
        "    m.on_log({'step': s, 'loss': 3.0 / s, 'samples': [{'prompt': 'a <b>', 'continuation': 'c'}]})"),
        nbformat.v4.new_code_cell("print('plain output stays')"), nbformat.v4.new_code_cell("m.widget"),
        nbformat.v4.new_code_cell("from tqdm.notebook import tqdm\nfor _ in tqdm(range(3)):\n    pass")])
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    result = script.execute(path, tmp_path, timeout=120)
    saved = nbformat.read(path, as_version=4)
    first = saved.cells[0].outputs
    assert result["widgets"] == 3 and "widgets" not in saved.metadata  # displayed, a cell's value, a progress bar
    assert not any(script.WIDGET_VIEW in o.get("data", {}) for o in first)
    html = [o["data"]["text/html"] for o in first if "text/html" in o.get("data", {})]
    assert any("step 3" in h for h in html) and any("a &lt;b&gt;" in h for h in html)  # status, escaped samples
    assert script.image_count(saved) >= 1
    assert saved.cells[1].outputs[0]["text"] == "plain output stays\n"
    last = saved.cells[2].outputs
    assert last and not any(script.WIDGET_VIEW in o.get("data", {}) for o in last)
    assert saved.cells[3].outputs == []  # a finished progress bar is noise on a page
