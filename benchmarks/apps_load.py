"""The annotation app under load: N clients label at once while the chat app's votes go to the same file.

    python benchmarks/apps_load.py [--clients 8] [--items 25] [--markdown]

`llmkit label` serves `--items` generated pairs on 127.0.0.1. `--clients` gradio_client sessions (threads in
this process, each its own browser-like session) label through the app's named endpoints: half of them as
annotators of their own, the other half as a second tab of one of those annotators (the same name in two
sessions, racing for the same items). Beside them another process writes votes into the same labels file the
way the chat app does (`LabelStore.add(..., source="chat")`). Each client starts, then clicks a choice until
its view says everything is labeled. Reported: requests per second over the whole run, the latency of a label
request (sent → the app's answer, which comes after the label is fsync'ed), its median and 95th percentile, and
the check that matters: the labels on disk equal the labels the app said it saved, none lost, none twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from data_stage import provenance, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

VOTES = """
import sys, time
from llmkit.labels import LabelStore, load_items
store = LabelStore(sys.argv[1])
for it in load_items(sys.argv[2]):
    store.add(it, "chat-voter", "A", a_idx=0, source="chat")
"""


def client(url: str, annotator: str, choice: str, by_prompt: dict, latencies: list, saved: list,
           lock: threading.Lock) -> int:
    """Label until this annotator has nothing left; returns the requests made. The API leaves out the app's
    per-session state (the item on screen): the prompt shown says which item it is."""
    from gradio_client import Client

    c = Client(url, verbose=False)
    prompt = c.predict(annotator, api_name="/start")[0]
    requests = 1
    while prompt:
        start = time.perf_counter()
        out = c.predict(annotator, "", api_name=f"/choose_{choice}")
        elapsed = time.perf_counter() - start
        requests += 1
        with lock:
            latencies.append(elapsed)
            if out[-1].startswith("Saved"):
                saved.append((annotator, by_prompt[prompt]))
        prompt = out[0]
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent sessions")
    parser.add_argument("--items", type=int, default=25, help="pairs to label")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables for BENCHMARKS.md")
    args = parser.parse_args()
    from browser import Server, free_port

    from llmkit.labels import make_item, write_items

    with tempfile.TemporaryDirectory(prefix="llmkit-apps-load-") as tmp:
        work = Path(tmp)
        items = [make_item(f"Where was person {i} born?", [f"In town {i}.", f"Ugh, town {i}."]) for i in range(args.items)]
        write_items(work / "items.jsonl", items)
        labels = work / "labels.jsonl"
        server = Server(["label", "--items", str(work / "items.jsonl"), "--labels", str(labels), "--run-dir", str(work)],
                        free_port(), work, work / "server.log").start()
        annotators = [f"annotator-{i // 2}" for i in range(args.clients)]  # two sessions each
        by_prompt = {it.prompt_text: it.id for it in items}
        choices = ["A", "B", "tie", "both_bad"]
        latencies: list[float] = []
        saved: list[tuple[str, str]] = []
        lock = threading.Lock()
        counts = [0] * args.clients
        try:
            voter = subprocess.Popen([sys.executable, "-c", VOTES, str(labels), str(work / "items.jsonl")])
            start = time.perf_counter()

            def run(i):
                counts[i] = client(server.url, annotators[i], choices[i % 4], by_prompt, latencies, saved, lock)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            assert voter.wait(timeout=300) == 0
        finally:
            server.kill()
        records = [json.loads(line) for line in labels.read_text().splitlines()]

    on_disk = [(r["annotator"], r["item_id"]) for r in records if r["source"] == "annotate"]
    votes = [r for r in records if r["source"] == "chat"]
    duplicates = len(on_disk) - len(set(on_disk))
    lost = len(set(saved) - set(on_disk))
    unreported = len(set(on_disk) - set(saved))
    expected = len(set(annotators)) * len(items)
    requests = sum(counts)
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    md = args.markdown
    out = []
    if md:
        out += ["## The annotation app under load", "", provenance(), ""]
    out.append(f"{args.clients} gradio_client sessions ({len(set(annotators))} annotators, each in two sessions) "
               f"label {len(items)} pairs through one `llmkit label` app while another process writes "
               f"{len(votes)} chat votes into the same file:\n")
    out.append(table(["requests", "seconds", "requests/s", "label latency median (ms)", "p95 (ms)", "labels on disk",
                      "expected", "lost", "twice", "on disk but not reported saved"],
                     [[requests, f"{wall:.1f}", f"{requests / wall:.1f}", f"{1000 * statistics.median(latencies):.0f}",
                       f"{1000 * p95:.0f}", len(on_disk), expected, lost, duplicates, unreported]], md,
                     right=set(range(10))))
    print("\n".join(out))
    if lost or duplicates or unreported or len(set(on_disk)) != expected or len(votes) != len(items):
        raise SystemExit("labels on disk differ from the labels sent")


if __name__ == "__main__":
    main()
