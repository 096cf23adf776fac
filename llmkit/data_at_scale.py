"""The data stage's cleaning on datatrove executors: the same filters, near-dedup and PII redaction as
`llmkit.data`, split into tasks that run in parallel on one machine (`LocalPipelineExecutor`) or on a
cluster (`SlurmPipelineExecutor`, `RayPipelineExecutor`) when a corpus outgrows a notebook.

    from llmkit import data, data_at_scale
    summary = data_at_scale.run_local(data.config_for("tiny"), "corpus.jsonl", "runs/big/clean", tasks=4, workers=2)

Five datatrove pipelines, each a list of blocks handed to an executor, each waiting for the one before:

    filter      read the shards ─ normalise ─ Gopher ─ C4 ─ FineWeb        ─ write the kept documents
    signatures  read the kept documents ─ MinHash signatures (one file per task and bucket)
    buckets     one task per LSH band: documents whose band hashes collide are duplicate candidates
    clusters    one task: join the candidate pairs into clusters, keep one document of each
    output      read the kept documents again ─ drop the clusters' others ─ PII redaction ─ write

`pipelines(...)` returns them (name, pipeline, tasks) so that any executor can run them; `run_local` runs
them on this machine. At this scale there is no per-document ledger (the in-process stage keeps one for
the inspector): the executors' logs and stats count what each block removed. The MinHash settings come
from the same DataConfig (bands × rows, shingle size), but datatrove's MinHash has no verification step,
so it removes a few more pairs than the in-process stage, whose candidates are checked against the exact
Jaccard similarity (tests/test_data_at_scale.py measures the difference on the bundled corpus).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from llmkit.cleaning import PIIRedactor, datatrove_pipeline
from llmkit.data import DataConfig
from llmkit.loaders import DataError, read_jsonl


def minhash_config(config: DataConfig):
    return MinhashConfig(n_grams=config.shingle_size, num_buckets=config.minhash_bands,
                         hashes_per_bucket=config.minhash_rows, seed=config.seed)


def pipelines(config: DataConfig, input_folder: str, output_folder: str, work_folder: str, tasks: int,
              text_key: str = "text", id_key: str = "id") -> list[tuple[str, list, int]]:
    """(name, datatrove pipeline, tasks) for each of the five steps, in order. `input_folder` holds jsonl
    shards (several files, so that tasks can share them out); folders may be local paths or fsspec URLs
    (s3://...) that datatrove reads and writes."""
    mh = minhash_config(config)
    work = work_folder.rstrip("/")
    kept = f"{work}/filtered"
    return [
        ("filter", [JsonlReader(input_folder, text_key=text_key, id_key=id_key), *datatrove_pipeline(config),
                    JsonlWriter(kept)], tasks),
        ("signatures", [JsonlReader(kept), MinhashDedupSignature(f"{work}/signatures", config=mh)], tasks),
        ("buckets", [MinhashDedupBuckets(f"{work}/signatures", f"{work}/buckets", config=mh)], mh.num_buckets),
        ("clusters", [MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=mh)], 1),
        ("output", [JsonlReader(kept),
                    MinhashDedupFilter(f"{work}/remove_ids", exclusion_writer=JsonlWriter(f"{work}/duplicates")),
                    *([PIIRedactor()] if config.redact_pii else []), JsonlWriter(output_folder)], tasks),
    ]


def shard_corpus(corpus: str | Path, folder: str | Path, shards: int, text_field: str = "text") -> int:
    """Split one jsonl corpus into `shards` files (round robin) so that tasks can share it; returns the
    number of documents. Each row needs `text_field`; a missing id gets the row number."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = [open(folder / f"shard-{i:05d}.jsonl", "w", encoding="utf-8") for i in range(shards)]
    n = 0
    try:
        for line_no, row in enumerate(read_jsonl(corpus), 1):
            if not isinstance(row.get(text_field), str):
                raise DataError(f"{corpus}:{line_no}: no string field {text_field!r} (set text_field)")
            row = {"id": str(row.get("id", f"doc-{line_no:07d}")), "text": row[text_field]}
            files[n % shards].write(json.dumps(row) + "\n")
            n += 1
    finally:
        for f in files:
            f.close()
    return n


def run_local(config: DataConfig, corpus: str | Path, output_folder: str | Path, tasks: int = 4, workers: int = 2,
              work_folder: str | Path | None = None) -> dict:
    """Shard `corpus`, run the five pipelines with datatrove's LocalPipelineExecutor (`tasks` tasks on
    `workers` processes each) and return {"documents_in", "documents_out", "duplicates_removed",
    "filtered_out", "output_files"}. The kept documents are gzipped jsonl files in `output_folder`."""
    output_folder = Path(output_folder)
    work = Path(work_folder) if work_folder else output_folder.with_name(output_folder.name + ".work")
    n_in = shard_corpus(corpus, work / "input", tasks, config.text_field or "text")
    executor = None
    for name, pipeline, n_tasks in pipelines(config, str(work / "input"), str(output_folder), str(work), tasks):
        # fork, not datatrove's default forkserver: forkserver re-imports the caller's __main__, which re-runs
        # a script that lacks an `if __name__ == "__main__":` guard
        executor = LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks),
                                         logging_dir=str(work / "logs" / name), depends=executor, start_method="fork")
    executor.run()  # runs every step it depends on first
    kept = read_gzip_jsonl(output_folder)
    duplicates = read_gzip_jsonl(work / "duplicates")
    return {"documents_in": n_in, "documents_out": len(kept), "duplicates_removed": len(duplicates),
            "filtered_out": n_in - len(kept) - len(duplicates),
            "output_files": sorted(str(p) for p in output_folder.glob("*.jsonl.gz"))}


def read_gzip_jsonl(folder: str | Path) -> list[dict]:
    """Every row of the datatrove JsonlWriter files (*.jsonl.gz) in `folder`, file by file."""
    rows = []
    for path in sorted(Path(folder).glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows
