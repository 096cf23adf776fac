"""The data stage's cleaning on datatrove's LocalPipelineExecutor: several tasks on several worker
processes give the in-process stage's documents."""

import dataclasses
import json

import pytest

from llmkit import cleaning, data, data_at_scale
from llmkit.loaders import DataError, bundled_path, read_jsonl


@pytest.fixture(scope="module")
def executor_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "clean"
    summary = data_at_scale.run_local(data.config_for("tiny"), bundled_path("corpus.jsonl"), out, tasks=4, workers=2)
    return out, summary


def test_four_tasks_filter_exactly_as_the_in_process_stage(executor_run):
    out, summary = executor_run
    config = data.config_for("tiny")
    docs = list(read_jsonl(bundled_path("corpus.jsonl")))
    filters_only = dataclasses.replace(config, exact_dedup=False, minhash_dedup=False, redact_pii=False)
    in_process = cleaning.clean_corpus(docs, filters_only, cleaning.Ledger(), progress=False)
    on_executor = data_at_scale.read_gzip_jsonl(out.with_name("clean.work") / "filtered")
    assert {d["id"] for d in on_executor} == {d["id"] for d in in_process}
    assert len(summary["output_files"]) == 4  # one file per task
    assert summary["documents_in"] == len(docs)
    assert summary["documents_out"] + summary["duplicates_removed"] + summary["filtered_out"] == len(docs)


def test_executor_output_removes_duplicates_and_redacts_as_in_process(executor_run, data_run):
    out, summary = executor_run
    kept = {r["id"]: r["text"] for r in data_at_scale.read_gzip_jsonl(out)}
    assert len(kept) == summary["documents_out"]
    labels = {row["id"]: row for row in read_jsonl(bundled_path("corpus_labels.jsonl"))}
    pairs = [(i, row["duplicate_of"]) for i, row in labels.items() if row["duplicate_of"]]
    assert pairs and all(not (a in kept and b in kept) for a, b in pairs)  # at most one of each duplicate pair
    # kept texts are the in-process stage's, character for character (normalisation, PII redaction)
    reference = {d["id"]: d["text"] for d in read_jsonl(data_run.output_dir / "documents.jsonl")}
    common = set(kept) & set(reference)
    assert len(common) >= 0.9 * len(reference)
    assert all(kept[i] == reference[i] for i in common)
    # datatrove's MinHash has no exact-Jaccard check, so it removes somewhat more than the in-process stage
    originals = {b for _, b in pairs}
    lost = [i for i, row in labels.items() if row["label"] == "good" and i not in kept and i not in originals]
    lost_in_process = [i for i, row in labels.items() if row["label"] == "good" and i not in reference
                       and i not in originals]
    n_good = sum(row["label"] == "good" for row in labels.values())
    assert len(lost_in_process) <= len(lost) <= 0.05 * n_good


def test_pipelines_are_plain_datatrove_steps_for_any_executor(tmp_path):
    from datatrove.pipeline.base import PipelineStep

    steps = data_at_scale.pipelines(data.config_for("tiny"), str(tmp_path / "raw"), str(tmp_path / "clean"),
                                    str(tmp_path / "work"), tasks=64)
    assert [name for name, _, _ in steps] == ["filter", "signatures", "buckets", "clusters", "output"]
    assert [n for _, _, n in steps] == [64, 64, 20, 1, 64]
    assert all(isinstance(step, PipelineStep) for _, pipeline, _ in steps for step in pipeline)


def test_a_corpus_row_without_text_names_the_file_and_line(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl:2: no string field 'text'"):
        data_at_scale.shard_corpus(corpus, tmp_path / "shards", 2)
