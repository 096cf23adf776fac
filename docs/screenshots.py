"""Take the README's screenshots from the real apps in a real browser (Playwright + a system chromium).

    python docs/screenshots.py --run-dir runs/demo      # a run folder with finished stages (llmkit pipeline)

Writes docs/img/chat.png (the chat comparison app) and docs/img/annotate.png (the annotation app), each
served by `llmkit chat` / `llmkit label` as a user starts them, and docs/img/inspector.png (the corpus
inspector on the run's data stage) and docs/img/live_monitor.png (the monitor during 200 pretraining steps),
both from notebook cells run in JupyterLab.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from browser import CHROMIUM_ARGS, Server, chromium_path, free_port  # noqa: E402

OUT = ROOT / "docs" / "img"


def _browser(p, width=1400, height=900):
    browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
    page.set_default_timeout(120_000)
    return browser, page


def chat(p, run_dir: Path, work: Path, prompt: str, models: list[str]) -> None:
    server = Server(["chat", "--run-dir", str(run_dir), "--labels", str(work / "votes.jsonl")], free_port(), work,
                    work / "chat.log").start()
    browser, page = _browser(p, height=1000)
    try:
        page.goto(server.url)
        page.wait_for_selector("#llmkit-send")
        boxes = page.locator("#llmkit-models label")
        for i in range(boxes.count()):
            box = boxes.nth(i)
            wanted = box.inner_text().strip() in models
            if box.locator("input").is_checked() != wanted:
                box.click()
        page.get_by_text("Generation settings").click()  # greedy answers: each model's most likely one
        page.get_by_label("number input for temperature (0 = greedy)").fill("0")
        page.get_by_label("number input for temperature (0 = greedy)").press("Enter")
        page.get_by_text("Generation settings").click()
        page.locator("#llmkit-prompt textarea").fill(prompt)
        page.locator("#llmkit-send").click()
        n = len(models)
        page.wait_for_function(f"() => [...Array({n}).keys()].every(i => document.querySelector("
                               "`#llmkit-verdict-${i} textarea`) && document.querySelector("
                               "`#llmkit-verdict-${i} textarea`).value.length > 0)")
        time.sleep(1)
        page.screenshot(path=str(OUT / "chat.png"), full_page=True)
    finally:
        browser.close()
        server.kill()


def annotate(p, work: Path) -> None:
    items = work / "items.jsonl"
    shutil.copy(ROOT / "data_samples" / "preferences_eval.jsonl", items)
    server = Server(["label", "--run-dir", str(work), "--items", str(items), "--labels", str(work / "labels.jsonl"),
                     "--annotator", "ana"], free_port(), work, work / "label.log").start()
    browser, page = _browser(p, height=820)
    try:
        page.goto(server.url)
        page.wait_for_selector("#llmkit-a")
        page.get_by_text("Start / resume").click()
        page.wait_for_function("() => document.querySelector('textarea') && [...document.querySelectorAll('textarea')]"
                               ".some(t => t.value.startsWith('Who') || t.value.startsWith('Where') || t.value.endsWith('?'))")
        for button in ("#llmkit-a", "#llmkit-b", "#llmkit-tie"):
            page.locator(button).click()
            time.sleep(1.5)
        page.screenshot(path=str(OUT / "annotate.png"), full_page=True)
    finally:
        browser.close()
        server.kill()


def lab_output(p, work: Path, cells: list[str], out_name: str, timeout: float = 400) -> None:
    """Run `cells` as a notebook in JupyterLab (ipywidgets rendered by the real front end) and screenshot the
    first output of the last cell (the widget) once a final marker cell has printed."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    lab_dir = work / "lab"
    lab_dir.mkdir(exist_ok=True)
    name = out_name.replace(".png", ".ipynb")
    setup = f"import sys\nsys.path.insert(0, {str(ROOT)!r})"
    nb = new_notebook(cells=[new_code_cell(setup), *map(new_code_cell, cells), new_code_cell("print('SHOT-' + 'READY')")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, lab_dir / name)
    port = free_port()
    log = open(work / "lab.log", "ab")
    lab = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                            "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={lab_dir}",
                            *(["--allow-root"] if os.geteuid() == 0 else [])],
                           stdout=log, stderr=subprocess.STDOUT)
    browser, page = _browser(p, width=1300, height=1000)
    try:
        for _ in range(120):
            try:
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}")
                break
            except Exception:
                time.sleep(1)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        time.sleep(5)  # the kernel starts
        page.get_by_text("Run", exact=True).first.click()
        page.get_by_text("Run All Cells", exact=True).first.click()
        page.wait_for_selector(".jp-OutputArea-output:has-text('SHOT-READY')", timeout=timeout * 1000)
        time.sleep(3)
        cell = page.locator(".jp-Notebook .jp-Cell").nth(len(cells))
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-OutputArea-child").first.screenshot(path=str(OUT / out_name))  # the widget
    finally:
        browser.close()
        lab.kill()


INSPECTOR = """from widgets.corpus_inspector import CorpusInspector
inspector = CorpusInspector({data!r})
inspector.select("removed by minhash_dedup")
inspector"""

MONITOR = """import shutil, pathlib
from llmkit import pretrain
from widgets.live_monitor import LiveMonitor
run = pathlib.Path("monitor_run"); shutil.rmtree(run, ignore_errors=True); run.mkdir()
(run / "data").symlink_to({data!r})
monitor = LiveMonitor("pretraining")
display(monitor)
result = pretrain.run(pretrain.config_for("tiny", max_steps=200, eval_every=20, save_every=10_000), run, progress=False,
             callbacks=[monitor])"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", required=True, help="a run folder with finished stages")
    ap.add_argument("--models", default="pretrain,sft,ppo", help="checkpoints to compare in the chat shot")
    ap.add_argument("--only", default="chat,annotate,inspector,monitor", help="which shots, comma-separated")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from llmkit import world as W
    from llmkit.loaders import bundled_path

    person = W.World.load(bundled_path("world.json")).sft_people[0]
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        work = Path(tmp)
        shots = args.only.split(",")
        if "chat" in shots:
            chat(p, Path(args.run_dir).resolve(), work, f"Where was {person} born?", args.models.split(","))
        if "annotate" in shots:
            annotate(p, work)
        data_dir = str(Path(args.run_dir).resolve() / "data")
        if "inspector" in shots:
            lab_output(p, work, [INSPECTOR.format(data=data_dir)], "inspector.png")
        if "monitor" in shots:
            lab_output(p, work, [MONITOR.format(data=data_dir)], "live_monitor.png")
    print(json.dumps(sorted(str(x.relative_to(ROOT)) for x in OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
