"""Benchmark of llmkit's data stage: how well it cleans the bundled crawl, and how fast, beside datatrove.

    python benchmarks/data_stage.py              # plain-text tables
    python benchmarks/data_stage.py --markdown   # markdown tables for BENCHMARKS.md, plus command and machine

What it measures, all in one run on the bundled closed-world corpus (data_samples/corpus.jsonl), whose
generator labelled every document (data_samples/corpus_labels.jsonl):

1. Quality. The whole data stage (`llmkit.data.run`, preset "tiny") and `llmkit.data.score_cleaning`:
   recall per junk category, near-duplicate precision, the fraction of good documents wrongly removed and
   PII recall, each beside the target the data stage was built to meet.

2. Cleaning throughput. llmkit cleans document by document in-process (so that every removal keeps its
   rule and reason) with datatrove's own filter blocks; a plain datatrove pipeline streams the same filters
   from a jsonl file to a jsonl file on `LocalPipelineExecutor`. Both see the same input; MB/s is of input
   text (UTF-8 bytes of the documents' text). The datatrove pipeline has no dedup, so llmkit is timed twice:
   as `llmkit.cleaning.clean_corpus` runs in the stage, and without dedup (like for like, except that llmkit also
   normalises unicode and whitespace and also redacts phone numbers).

3. MinHash near-dedup. datatrove's four MinHash stages (signatures, buckets, clusters, filter; FineWeb's
   5-grams, 14 buckets x 8 hashes) against `llmkit.cleaning.minhash_dedup` (datasketch LSH, 20 bands x 5 rows,
   then the true Jaccard of each candidate pair checked against 0.7), on the same input: the normalised
   documents that passed the quality filters, before exact dedup, so that both must also catch the exact
   copies. Scored against the labels: recall on exact_dup + near_dup documents, precision of removals.

Timings are wall clock (time.perf_counter) from a single pass on a shared CPU box, so they move between
runs, more when the machine is busy; compare rows of the same run. datatrove runs with one worker (no
process pool; the 14 bucket tasks of MinHash stage 2 run one after another), and its times include
reading and writing its jsonl files and the executor's bookkeeping, which is how datatrove is used.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import datasets
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

from llmkit import cleaning, data
from llmkit.loaders import bundled_path, load_documents, read_jsonl

DUPLICATE_LABELS = ("exact_dup", "near_dup")


# ---- 1. quality ------------------------------------------------------------------------------------
def quality(workdir: Path) -> tuple[list[list], dict, float]:
    """Run the whole data stage and score it; returns table rows, the scores and the stage's wall time."""
    t0 = time.perf_counter()
    result = data.run(data.config_for("tiny"), workdir / "run", overwrite=True, progress=False)
    seconds = time.perf_counter() - t0
    s = data.score_cleaning(result.output_dir)
    recall, counts = s["recall"], s["counts"]
    targets = {  # metric -> (value, comparison, target, documents it is measured on)
        **{f"{label} recall": (recall[label], ">=", 0.9, counts[label]) for label in ("spam", "boilerplate", "gibberish")},
        **{f"{label} recall": (recall[label], None, None, counts[label]) for label in ("lorem", "short", "repetition")},
        "exact_dup recall": (recall["exact_dup"], ">=", 1.0, counts["exact_dup"]),
        "near_dup recall": (recall["near_dup"], ">=", 0.9, counts["near_dup"]),
        "near-dup precision (MinHash removals)": (s["near_dup_precision"], ">=", 0.95, None),
        "good documents wrongly removed": (s["good_removed_fraction"], "<=", 0.02, counts["good"]),
        "PII recall (items in kept documents)": (s["pii_recall"], ">=", 0.95, counts["pii_items_in_kept_docs"]),
    }
    rows = []
    for name, (value, op, target, n) in targets.items():
        if target is None:
            verdict, target_text = "(no target)", "—"
        else:
            ok = value is not None and (value >= target if op == ">=" else value <= target)
            verdict, target_text = ("met" if ok else "NOT MET"), f"{'≥' if op == '>=' else '≤'} {target:.2f}"
        rows.append([name, "—" if n is None else n, _fmt(value), target_text, verdict])
    return rows, s, seconds


# ---- 2. cleaning throughput ------------------------------------------------------------------------
def llmkit_cleaning(docs: list[dict]) -> tuple[dict, dict, list[dict]]:
    """Time `clean_corpus` with and without dedup. Without dedup it is run as its two halves (the filters,
    then PII redaction) so that the filter output, before PII, can feed the MinHash comparison."""
    t0 = time.perf_counter()
    kept = cleaning.clean_corpus(docs, data.config_for("tiny"), cleaning.Ledger(), progress=False)
    full = {"seconds": time.perf_counter() - t0, "kept": len(kept)}

    filters_only = data.config_for("tiny", exact_dedup=False, minhash_dedup=False, redact_pii=False)
    pii_only = data.config_for("tiny", normalize=False, gopher_repetition=False, gopher_quality=False,
                               c4=False, fineweb=False, exact_dedup=False, minhash_dedup=False)
    t0 = time.perf_counter()
    filtered = cleaning.clean_corpus(docs, filters_only, cleaning.Ledger(), progress=False)
    kept = cleaning.clean_corpus(filtered, pii_only, cleaning.Ledger(), progress=False)
    no_dedup = {"seconds": time.perf_counter() - t0, "kept": len(kept)}
    return full, no_dedup, filtered


def datatrove_cleaning(corpus: Path, workdir: Path) -> dict:
    out = workdir / "datatrove_clean"
    executor = LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(corpus.parent), glob_pattern=corpus.name),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False),
            FineWebQualityFilter(),
            PIIFormatter(),
            JsonlWriter(str(out / "output"), compression=None),
        ],
        tasks=1,
        workers=1,
        logging_dir=str(out / "logs"),
    )
    seconds = run_quietly(executor)
    kept = read_ids(out / "output")
    return {"seconds": seconds, "kept": len(kept), "ids": kept}


# ---- 3. MinHash ------------------------------------------------------------------------------------
def datatrove_minhash(docs: list[dict], workdir: Path) -> tuple[dict, set[str]]:
    root = workdir / "datatrove_minhash"
    (root / "input").mkdir(parents=True)
    with open(root / "input" / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n")
    # FineWeb's settings: word 5-grams, 14 buckets x 8 hashes, 64-bit xxhash (needs xxhash < 4, pinned in
    # pyproject.toml as datatrove[processing] does)
    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    folder = {name: str(root / name) for name in ("input", "signatures", "buckets", "remove", "removed", "kept")}

    def reader():
        return JsonlReader(folder["input"])

    stages = {
        "signatures": ([reader(), MinhashDedupSignature(output_folder=folder["signatures"], config=config)], 1),
        "buckets": ([MinhashDedupBuckets(input_folder=folder["signatures"], output_folder=folder["buckets"],
                                         config=config)], config.num_buckets),
        "clusters": ([MinhashDedupCluster(input_folder=folder["buckets"], output_folder=folder["remove"],
                                          config=config)], 1),
        "filter": ([reader(),
                    MinhashDedupFilter(input_folder=folder["remove"],
                                       exclusion_writer=JsonlWriter(folder["removed"], compression=None)),
                    JsonlWriter(folder["kept"], compression=None)], 1),
    }
    times = {}
    for name, (pipeline, tasks) in stages.items():
        executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                                         logging_dir=str(root / "logs" / name))
        times[name] = run_quietly(executor)
    removed = read_ids(Path(folder["removed"]))
    return {"seconds": sum(times.values()), "stages": times}, removed


def llmkit_minhash(docs: list[dict]) -> tuple[dict, set[str]]:
    ledger = cleaning.Ledger()
    t0 = time.perf_counter()
    cleaning.minhash_dedup(docs, ledger, data.config_for("tiny"), progress=False)
    return {"seconds": time.perf_counter() - t0}, {r["id"] for r in ledger.removed}


def score_dedup(docs: list[dict], removed: set[str], labels: dict[str, str]) -> dict:
    dups = {d["id"] for d in docs if labels[d["id"]] in DUPLICATE_LABELS}
    hits = len(removed & dups)
    return {"removed": len(removed), "duplicates": len(dups), "recall": hits / len(dups) if dups else None,
            "precision": hits / len(removed) if removed else None}


# ---- helpers ---------------------------------------------------------------------------------------
def run_quietly(executor: LocalPipelineExecutor) -> float:
    """Run a datatrove executor with its console log and progress bars captured (the log files stay in
    its logging_dir); show them only if it fails. Returns wall seconds."""
    captured = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(captured):
            executor.run()
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    return time.perf_counter() - t0


def read_ids(folder: Path) -> set[str]:
    """The ids of the documents a datatrove JsonlWriter wrote (uncompressed) into `folder`."""
    return {json.loads(line)["id"] for f in folder.glob("*.jsonl") for line in open(f, encoding="utf-8")
            if line.strip()}


def _label_counts(ids: set[str], labels: dict[str, str]) -> str:
    counts = Counter(labels[i] for i in ids)
    return ", ".join(f"{n} {label}" for label, n in counts.most_common()) or "none"


def _fmt(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list], markdown: bool, right: set[int] = frozenset()) -> str:
    cells = [[str(c) for c in r] for r in rows]
    if markdown:
        rule = ["---:" if i in right else "---" for i in range(len(headers))]
        return "\n".join("| " + " | ".join(r) + " |" for r in [headers, rule, *cells])
    widths = [max(len(r[i]) for r in [headers, *cells]) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def provenance(details: str = "") -> str:
    """The line a benchmark's Markdown output opens with in BENCHMARKS.md: the command, the date and the machine."""
    line = (f"Produced by `{shlex.join(['python', *sys.argv])}` on {datetime.now(timezone.utc):%Y-%m-%d}; "
            f"machine: {machine()}.")
    return f"{line} {details}" if details else line


def matmul_peak() -> str:
    import torch

    from llmkit.pretrain import measure_matmul_flops

    return f"fp32 matmul peak {measure_matmul_flops(torch.device('cpu'), torch.float32) / 1e9:.0f} GFLOP/s"


def commit(folder: Path | None = None) -> str:
    """The short commit of the git checkout at `folder` (default: this repository's)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=folder or Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, datatrove {version('datatrove')}, "
            f"datasketch {version('datasketch')}, spacy {version('spacy')}")


# ---- main ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables for BENCHMARKS.md")
    md = parser.parse_args().markdown
    datasets.disable_progress_bars()

    corpus = bundled_path("corpus.jsonl")
    labels = {r["id"]: r["label"] for r in read_jsonl(bundled_path("corpus_labels.jsonl"))}
    docs, _ = load_documents(corpus)
    mb = sum(len(d["text"].encode("utf-8")) for d in docs) / 1e6
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="llmkit-bench-") as tmp:
        workdir = Path(tmp)
        quality_rows, scores, stage_seconds = quality(workdir)
        full, no_dedup, filtered = llmkit_cleaning(docs)
        dt_clean = datatrove_cleaning(corpus, workdir)
        dt_mh, dt_removed = datatrove_minhash(filtered, workdir)
        lk_mh, lk_removed = llmkit_minhash(filtered)
    total = time.perf_counter() - started

    heading = (lambda s: f"\n### {s}\n") if md else (lambda s: f"\n== {s} ==\n")
    out = []
    if md:
        out += ["## Data stage", "",
                provenance(f"Corpus: data_samples/corpus.jsonl, {len(docs)} documents, {mb:.2f} MB of text. "
                           f"Whole benchmark: {total:.0f} s.")]
    else:
        out += [f"corpus: {corpus} ({len(docs)} documents, {mb:.2f} MB of text)", f"machine: {machine()}"]

    out.append(heading("Cleaning quality (llmkit.data.run, preset tiny, scored against corpus_labels.jsonl)"))
    out.append(table(["metric", "documents", "value", "target", "verdict"], quality_rows, md, right={1, 2}))
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(scores["good_removed_by_rule"].items())) or "none"
    out.append(f"\nGood documents removed, by rule: {by_rule}. The whole stage (cleaning, tokenizer training, "
               f"packing, writing) took {stage_seconds:.1f} s.")

    out.append(heading("Cleaning throughput (same input, same run)"))
    rows = [
        ["llmkit `clean_corpus` (filters, exact + MinHash dedup, PII)", full],
        ["llmkit `clean_corpus` without dedup (filters, PII)", no_dedup],
        ["datatrove `LocalPipelineExecutor` (same filters, PIIFormatter; no dedup)", dt_clean],
    ]
    out.append(table(["pipeline", "docs in", "docs kept", "seconds", "MB/s"],
                     [[name, len(docs), r["kept"], f"{r['seconds']:.1f}", f"{mb / r['seconds']:.3f}"]
                      for name, r in rows], md, right={1, 2, 3, 4}))
    ratio = dt_clean["seconds"] / no_dedup["seconds"]
    llmkit_ids = {d["id"] for d in filtered}
    out.append(f"\nWithout dedup, llmkit runs at {ratio:.2f}× datatrove's throughput on this input "
               f"({mb / no_dedup['seconds']:.3f} vs {mb / dt_clean['seconds']:.3f} MB/s). llmkit also normalises "
               "unicode and whitespace and redacts phone numbers; datatrove also reads and writes jsonl files. "
               f"Kept by llmkit only: {_label_counts(llmkit_ids - dt_clean['ids'], labels)}; "
               f"by datatrove only: {_label_counts(dt_clean['ids'] - llmkit_ids, labels)} (by label; the "
               "filters are the same, so any difference comes from llmkit normalising the text first).")

    out.append(heading("MinHash near-dedup (filter-passing documents, before exact dedup)"))
    dups = score_dedup(filtered, set(), labels)["duplicates"]
    mh_rows = []
    for name, settings, timing, removed in [
        ("datatrove MinHash stages 1–4", "5-grams, 14×8 (xxhash), clusters", dt_mh, dt_removed),
        ("llmkit `minhash_dedup` (datasketch)", "5-grams, 20×5, Jaccard ≥ 0.7 verified", lk_mh, lk_removed),
    ]:
        s = score_dedup(filtered, removed, labels)
        mh_rows.append([name, settings, f"{timing['seconds']:.1f}", s["removed"], _fmt(s["recall"]),
                        _fmt(s["precision"])])
    out.append(table(["method", "settings", "seconds", "removed", "recall", "precision"], mh_rows, md,
                     right={2, 3, 4, 5}))
    stage_times = ", ".join(f"{k} {v:.1f} s" for k, v in dt_mh["stages"].items())
    out.append(f"\n{len(filtered)} documents in, {dups} of them labelled exact_dup or near_dup. "
               f"datatrove stages: {stage_times}.")
    if not md:
        out.append(f"\nwhole benchmark: {total:.0f} s")
    print("\n".join(out))


if __name__ == "__main__":  # datatrove's local executor needs the guard (forkserver start method)
    main()
