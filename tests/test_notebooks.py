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
