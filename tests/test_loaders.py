import gzip
import json

import pytest

from llmkit.loaders import DataError, ReadStats, iter_records, load_documents

ROWS = [{"id": "a", "text": "first document"}, {"id": "b", "text": "second document"}]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_supported_format_reads_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    expected = [(r["id"], r["text"]) for r in ROWS]
    jl = _write_jsonl(tmp_path / "c.jsonl", ROWS)
    (tmp_path / "c.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(jl.read_bytes()))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "c.parquet")
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    for name in ("c.jsonl", "c.json", "wrapped.json", "c.jsonl.gz", "c.parquet", "saved"):
        docs, _ = load_documents(tmp_path / name)
        assert [(d["id"], d["text"]) for d in docs] == expected, name

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("first document", encoding="utf-8")
    (folder / "b.txt.gz").write_bytes(gzip.compress(b"second document"))
    docs, stats = load_documents(folder)
    assert [(d["id"], d["text"]) for d in docs] == expected
    assert stats.files == 2


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON line"):
        load_documents(path)


def test_missing_text_field_names_the_field_and_the_accepted_ones(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"id": 1, "body_text": "x"}])
    with pytest.raises(DataError, match=r"c\.jsonl:1: no text field.*body_text.*accepted text fields are text, content"):
        load_documents(path)
    path = _write_jsonl(tmp_path / "d.jsonl", [{"content": "x"}, {"text": "y"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: missing text field 'content'"):
        load_documents(path)
    docs, _ = load_documents(_write_jsonl(tmp_path / "e.jsonl", [{"body_text": "x"}]), text_field="body_text")
    assert docs[0]["text"] == "x"


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "caf\xe9 and cr\xe8me"}\n{"text": "fine"}\n')
    docs, stats = load_documents(path)
    assert docs[0]["text"] == "caf\ufffd and cr\ufffdme"
    assert stats.replaced_chars == 2 and stats.records_with_replacements == 1


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(iter_records(tmp_path / "nope.jsonl", ReadStats()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        load_documents(tmp_path / "empty")


def test_repeated_ids_are_made_unique(tmp_path):
    docs, _ = load_documents(_write_jsonl(tmp_path / "c.jsonl", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]))
    assert [d["id"] for d in docs] == ["x", "x#1"]
