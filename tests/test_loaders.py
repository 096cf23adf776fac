import csv
import gzip
import io
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


# ---- the formats crawls and datasets come in, on fixtures written by the libraries that write them -------------
PAGE = ("<html><head><title>Mill</title></head><body><nav><a href='/'>Home</a> | <a href='/about'>About us</a></nav>"
        "<article><h1>The old mill</h1><p>The river flows past the old mill, and the people of the town walk along "
        "it every evening, talking about the weather and the harvest.</p><p>Children play on the bridge while their "
        "parents buy bread from the bakery that has stood there for a hundred years.</p></article>"
        "<footer>Copyright 2024 · Privacy · Terms</footer></body></html>")


def _warc(path, records):
    """A WARC file written by warcio: (uri, record type, payload, content type of the HTTP response)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=str(path).endswith(".gz"))
        for uri, kind, payload, content_type in records:
            http = (StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
                    if kind == "response" else None)
            writer.write_record(writer.create_warc_record(uri, kind, payload=io.BytesIO(payload), http_headers=http,
                                                          warc_content_type="text/plain" if kind == "conversion" else ""))
    return path


def test_jsonl_splits_on_newlines_only(tmp_path):
    """Web text carries U+2028 and other line separators inside its strings; the line is still one record."""
    rows = [{"text": f"line one\u2028still line one \u2029 \x85 \x0c {i}"} for i in range(300)]
    path = _write_jsonl(tmp_path / "web.jsonl", rows)
    docs, stats = load_documents(path)
    assert [d["text"] for d in docs] == [r["text"] for r in rows] and stats.records == 300


def test_warc_responses_become_their_main_text_and_wet_records_are_read_as_text(tmp_path):
    warc = _warc(tmp_path / "crawl.warc.gz", [
        ("https://example.org/mill", "request", b"GET /mill HTTP/1.1\r\n\r\n", None),
        ("https://example.org/mill", "response", PAGE.encode(), "text/html; charset=utf-8"),
        ("https://example.org/logo.png", "response", b"\x89PNG\r\n\x1a\n", "image/png"),
        ("https://example.org/empty", "response", b"<html><body></body></html>", "text/html")])
    docs, stats = load_documents(warc)
    assert len(docs) == 1 and docs[0]["url"] == "https://example.org/mill" and docs[0]["source"] == "warc"
    text = docs[0]["text"]
    assert "The river flows past the old mill" in text and "bakery" in text
    assert "About us" not in text and "Privacy" not in text  # navigation and footer left out
    assert stats.skipped == {"warc request record": 1, "warc response that is not HTML": 1,
                             "warc record without text": 1}
    wet = _warc(tmp_path / "crawl.warc.wet.gz", [
        ("https://example.org/a", "conversion", b"Plain text of page a.\nSecond line.", None),
        ("https://example.org/b", "conversion", "Text of page b, café.".encode(), None)])
    docs, _ = load_documents(wet)
    assert [(d["url"], d["text"]) for d in docs] == [("https://example.org/a", "Plain text of page a.\nSecond line."),
                                                     ("https://example.org/b", "Text of page b, café.")]


def test_tsv_and_csv_with_or_without_a_header(tmp_path):
    collection = tmp_path / "collection.tsv"  # MS MARCO style: id, passage, no header
    passages = ["The river flows past the old mill in the town of Elmford.", "Bread is baked every morning."]
    collection.write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(passages)), encoding="utf-8")
    docs, stats = load_documents(collection)
    assert [d["text"] for d in docs] == passages and stats.text_field == "column_2"
    named = tmp_path / "named.csv"
    with open(named, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "body"])
        writer.writerow(["Mill", "First line of the body,\nwith a comma and a newline inside quotes."])
        writer.writerow(["Bakery", "Second body."])
    docs, _ = load_documents(named)
    assert [d["text"] for d in docs] == ["First line of the body,\nwith a comma and a newline inside quotes.",
                                         "Second body."]


def test_zstd_arrow_and_parquet_stream_their_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = [{"id": f"d{i}", "text": f"document {i}"} for i in range(2500)]  # more than one record batch
    jl = _write_jsonl(tmp_path / "c.jsonl", rows)
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jl.read_bytes()))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=700)
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=600):
            writer.write_batch(batch)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=600)
    for name in ("c.jsonl.zst", "c.parquet", "c.arrow", "s.arrow"):
        docs, _ = load_documents(tmp_path / name)
        assert [(d["id"], d["text"]) for d in docs] == [(r["id"], r["text"]) for r in rows], name


def test_plain_text_is_cut_into_documents_at_paragraphs_and_headings(tmp_path):
    chapter = "\n".join(["It was a quiet town, and the river ran slowly past the mill"] * 6)  # hard-wrapped lines
    book = tmp_path / "novel.txt"
    book.write_text("".join(f"CHAPTER {k}\n\n" + "\n\n".join([chapter] * 5) + "\n\n" for k in range(1, 4)),
                    encoding="utf-8")
    by_size, _ = load_documents(book, text_chars=1000)
    assert len(by_size) > 3 and all(len(d["text"]) <= 1000 + len(chapter) for d in by_size)
    assert "".join(d["text"] for d in by_size).replace("\n", "") == book.read_text().replace("\n", "")
    by_heading, _ = load_documents(book, text_chars=100_000, heading=r"CHAPTER \d+")
    assert [d["text"].split("\n")[0] for d in by_heading] == ["CHAPTER 1", "CHAPTER 2", "CHAPTER 3"]
    assert [d["id"] for d in by_heading] == ["novel#1", "novel#2", "novel#3"]


def test_a_file_whose_content_is_not_its_format_is_refused_by_name(tmp_path):
    warc = _warc(tmp_path / "x.warc", [("https://example.org/", "response", PAGE.encode(), "text/html")])
    as_jsonl = tmp_path / "crawl.jsonl"
    as_jsonl.write_bytes(warc.read_bytes())
    with pytest.raises(DataError, match=r"crawl\.jsonl: unsupported format: named as jsonl, but it starts with 'WARC/"):
        load_documents(as_jsonl)
    (tmp_path / "table.tsv").write_bytes(b"PAR1\x00\x00binary")
    with pytest.raises(DataError, match=r"table\.tsv: unsupported format: named as tsv.*accepted: jsonl"):
        load_documents(tmp_path / "table.tsv")
    (tmp_path / "dump.xml").write_text("<mediawiki/>")
    with pytest.raises(DataError, match=r"dump\.xml: unsupported format \.xml; accepted: jsonl \(\.jsonl \.ndjson\)"):
        load_documents(tmp_path / "dump.xml")
