"""Reading at scale: memory that stays flat whatever a file's size, and the data stage's throughput on a big corpus.

    python benchmarks/loaders.py [--gb 1.0] [--worlds 20] [--markdown]

1. Memory. A generated jsonl.gz holding at least `--gb` GB of JSON lines (the bundled crawl's documents over
   and over, each with an id of its own) is read to the end in a fresh process, twice: by
   `llmkit.loaders.iter_records` (one line at a time), and by the whole-file read the loader did before
   (decompress it all, decode it all, split it) — the baseline. Each process reports its peak resident memory.
2. Throughput. A web-like corpus made by `data_samples/generate.py`: `--worlds` crawls of worlds of 600 people
   each (seeds 1, 2, …; 2.6 MB of text each, with the bundled crawl's junk, duplicates and PII, and the
   same templates across worlds) goes through the whole data stage
   (`llmkit.data.run`: filters, dedup, PII, tokenizer, packing, with 2 processes for packing) and, beside it in
   the same run, through a plain datatrove pipeline of the same filters and PII formatter on
   `LocalPipelineExecutor` with 2 tasks on 2 workers (no dedup, tokenizer or packing: it does less). MB/s are of
   the documents' text as UTF-8.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_stage import provenance, table

from llmkit.loaders import bundled_path, read_jsonl

STREAMING = """
import resource, sys
from llmkit.loaders import iter_records
n = sum(1 for _ in iter_records(sys.argv[1]))
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
WHOLE_FILE = """
import gzip, json, resource, sys
from pathlib import Path
text = gzip.decompress(Path(sys.argv[1]).read_bytes()).decode("utf-8", errors="replace")
n = sum(1 for line in text.split("\\n") if line.strip() and json.loads(line))
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_big_jsonl(path: Path, gb: float) -> tuple[int, int]:
    """(lines, uncompressed bytes) of a jsonl.gz of at least `gb` GB of the bundled crawl, repeated."""
    docs = read_jsonl(bundled_path("corpus.jsonl"))
    lines = size = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        while size < gb * 1e9:
            for d in docs:
                line = json.dumps({**d, "id": f"{d['id']}-{lines}"}, ensure_ascii=False) + "\n"
                f.write(line)
                lines += 1
                size += len(line.encode("utf-8"))
    return lines, size


def web_like_corpus(path: Path, worlds: int, work: Path) -> list[dict]:
    """The crawls of `worlds` generated worlds (600 people each), one after the other, with ids of their own."""
    generate = Path(__file__).resolve().parents[1] / "data_samples" / "generate.py"
    docs = []
    for seed in range(1, worlds + 1):
        subprocess.run([sys.executable, str(generate), "--people", "600", "--seed", str(seed), "--out",
                        str(work / f"world{seed}")], check=True, capture_output=True)
        docs += [{**d, "id": f"w{seed}-{d['id']}"} for d in read_jsonl(work / f"world{seed}" / "corpus.jsonl")]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    return docs


def read_in_fresh_process(script: str, path: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    records, peak_kb = map(int, done.stdout.split())
    return {"records": records, "peak_mb": peak_kb / 1024, "seconds": time.perf_counter() - start}


def data_stage(corpus: Path, work: Path) -> dict:
    import datasets

    from llmkit import data

    datasets.disable_progress_bars()
    start = time.perf_counter()
    result = data.run(data.DataConfig(train_data=str(corpus), num_proc=2), work / "run", progress=False)
    return {"seconds": time.perf_counter() - start, "kept": result.metrics["documents_out"]}


def datatrove_filters(corpus: Path, work: Path) -> dict:
    from data_stage import read_ids, run_quietly
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    shards = work / "shards"  # two files: one per task
    shards.mkdir()
    rows = read_jsonl(corpus)
    for k in range(2):
        with open(shards / f"part{k}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[k::2])
    executor = LocalPipelineExecutor(
        pipeline=[JsonlReader(str(shards)), GopherRepetitionFilter(), GopherQualityFilter(),
                  C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(), PIIFormatter(),
                  JsonlWriter(str(work / "dt_out"), compression=None)],
        tasks=2, workers=2, logging_dir=str(work / "dt_logs"))
    seconds = run_quietly(executor)
    return {"seconds": seconds, "kept": len(read_ids(work / "dt_out"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="uncompressed size of the generated jsonl.gz")
    parser.add_argument("--worlds", type=int, default=20, help="generated crawls in the web-like corpus (2.6 MB each)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables for BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmkit-loaders-") as tmp:
        work = Path(tmp)
        big = work / "big.jsonl.gz"
        lines, size = write_big_jsonl(big, args.gb)
        compressed = big.stat().st_size
        streaming = read_in_fresh_process(STREAMING, big)
        whole = read_in_fresh_process(WHOLE_FILE, big)
        assert streaming["records"] == whole["records"] == lines
        print(f"read: streaming {streaming}, whole file {whole}", file=sys.stderr, flush=True)  # in case a later part fails

        corpus = work / "crawl.jsonl"
        docs = web_like_corpus(corpus, args.worlds, work)
        mb = sum(len(d["text"].encode("utf-8")) for d in docs) / 1e6
        stage = data_stage(corpus, work)
        print(f"data stage: {stage}", file=sys.stderr, flush=True)
        datatrove = datatrove_filters(corpus, work)
    total = time.perf_counter() - started

    md = args.markdown
    out = []
    if md:
        out += ["## Loaders at scale", "", provenance(f"Whole benchmark: {total:.0f} s."), ""]
    out.append(f"Reading a jsonl.gz of {size / 1e9:.2f} GB ({lines:,} lines; {compressed / 1e9:.2f} GB compressed) "
               "to the end, in a fresh process each:\n")
    out.append(table(["reader", "records", "peak memory (MB)", "seconds"],
                     [[name, r["records"], f"{r['peak_mb']:.0f}", f"{r['seconds']:.1f}"]
                      for name, r in (("llmkit `iter_records` (streaming)", streaming),
                                      ("whole file in memory (the loader before)", whole))], md, right={1, 2, 3}))
    out.append(f"\nPeak memory: {streaming['peak_mb'] / whole['peak_mb']:.3f}× the whole-file read's; time "
               f"{streaming['seconds'] / whole['seconds']:.2f}×.\n")
    out.append(f"The data stage on a generated web-like corpus of {len(docs):,} documents, {mb:.1f} MB of text:\n")
    out.append(table(["pipeline", "docs kept", "seconds", "MB/s"],
                     [["llmkit `data.run` (filters on 2 processes, exact + MinHash dedup, PII, tokenizer, packing)",
                       stage["kept"], f"{stage['seconds']:.1f}", f"{mb / stage['seconds']:.2f}"],
                      ["datatrove `LocalPipelineExecutor`, 2 tasks on 2 workers (same filters, PII; nothing else)",
                       datatrove["kept"], f"{datatrove['seconds']:.1f}", f"{mb / datatrove['seconds']:.2f}"]],
                     md, right={1, 2, 3}))
    out.append(f"\nThe whole data stage runs at {datatrove['seconds'] / stage['seconds']:.2f}× the throughput of "
               "datatrove's filters alone on this corpus.")
    print("\n".join(out))


if __name__ == "__main__":  # datatrove's local executor needs the guard
    main()
