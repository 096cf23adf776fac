"""Read the data a user points llmkit at, one record at a time: memory stays flat whatever the file's size.

    format   suffixes                  a record is
    jsonl    .jsonl .ndjson            one JSON object per line (split on "\\n" only: web text carries U+2028
                                       inside its strings, which Python's str.splitlines() would also split on)
    json     .json                     an object of a JSON list (or of the one list an object holds); read
                                       whole, since JSON has no lines: use jsonl or parquet for big data
    parquet  .parquet                  a row, read in record batches
    arrow    .arrow .feather           a row of an Arrow IPC file or stream, in record batches
    csv tsv  .csv .tsv .tab            a row; the header names the columns (a file without one gets column_1, …)
    warc     .warc .arc                an HTML response, made text by trafilatura (navigation and boilerplate
                                       left out), with its URL
    wet      .wet                      a WET conversion record: the text Common Crawl extracted, with its URL
    text     .txt .text .md            a document of a plain-text file: paragraphs (blank-line separated) put
                                       together up to `text_chars` characters, a new one at every line that
                                       matches `heading` — a book becomes chapters, not one 500 k-character text

Each may be compressed (.gz, .zst); a folder is read file by file, a `datasets.save_to_disk` folder row by row.
The format comes from the suffix and is checked against the first bytes: a file whose content does not match
gets "unsupported format …; accepted: …", never a parse error from the wrong parser. Every record comes with
the place it came from (`file:line`, `file:row N`), so an error can say where a bad row is. Undecodable bytes
are replaced (U+FFFD) and counted rather than crashing a long run.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import trafilatura
import zstandard
from datasets import DatasetDict, load_from_disk
from warcio.archiveiterator import ArchiveIterator

from llmkit.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT_FIELDS = ("text", "content", "document", "body", "raw_content")
FILE_FORMATS = {
    "jsonl": (".jsonl", ".ndjson"), "json": (".json",), "parquet": (".parquet",), "arrow": (".arrow", ".feather"),
    "csv": (".csv",), "tsv": (".tsv", ".tab"), "warc": (".warc", ".arc"), "wet": (".wet",),
    "text": (".txt", ".text", ".md"),
}
SUFFIXES = tuple(s for suffixes in FILE_FORMATS.values() for s in suffixes)
COMPRESSIONS = (".gz", ".zst")
TEXT_CHARS = 10_000  # a plain-text document's size budget: FineWeb's documents are mostly shorter


def bundled_path(name: str = "") -> Path:
    """A file of the bundled closed-world data: `data_samples/` in the repository, which an installed package
    holds as `llmkit.data_samples` (pyproject.toml ships it as package data)."""
    try:
        folder = Path(str(resources.files("llmkit.data_samples")))
    except ModuleNotFoundError:  # a checkout on the path, not installed
        folder = REPO_ROOT / "data_samples"
    path = folder / name
    if not path.exists():
        raise DataError(f"bundled data file {path} is missing; regenerate it with `python data_samples/generate.py`")
    return path


@dataclass
class Rejects:
    """The rows a reader could not use, each with where it is and why, beside how many rows it saw.

    A few bad rows in a large file are no reason to stop: a stage keeps them in its folder's `rejected_rows.jsonl`
    (`write`), counts them in metrics.json, and stops only when more than `max_fraction` of the rows are bad
    (`check`, whose error names the first ones)."""

    max_fraction: float = 0.01
    rows: list[dict] = field(default_factory=list)
    seen: int = 0  # rows read, used or not

    def add(self, where: str, reason: str) -> None:
        self.rows.append({"where": where, "reason": reason})

    def check(self, source) -> None:
        if self.rows and len(self.rows) > self.max_fraction * max(self.seen, 1):
            first = "; ".join(f"{r['where']}: {r['reason']}" for r in self.rows[:3])
            raise DataError(f"{source}: {len(self.rows)} of {self.seen} rows cannot be used "
                            f"({len(self.rows) / max(self.seen, 1):.1%}, more than max_bad_rows={self.max_fraction:g});"
                            f" the first: {first}")

    def write(self, folder: str | Path) -> None:
        if self.rows:
            write_jsonl(Path(folder) / "rejected_rows.jsonl", self.rows)


def reject(rejects: Rejects | None, where: str, reason: str) -> None:
    """Set a row aside in `rejects`, or, without one, stop with the reason (the strict reading a direct call gets)."""
    if rejects is None:
        raise DataError(f"{where}: {reason}")
    rejects.add(where, reason)


@dataclass
class ReadStats:
    files: int = 0
    records: int = 0
    replaced_chars: int = 0  # undecodable bytes replaced by U+FFFD
    records_with_replacements: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> records left out (a WARC request, an empty page, …)
    text_field: str | None = None  # the column a csv/tsv file's text was taken from, when it was detected
    rejects: Rejects | None = None  # where malformed rows go; None: the first one stops the read

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def accepted() -> str:
    return "; ".join(f"{name} ({' '.join(s)})" for name, s in FILE_FORMATS.items()) + \
        f", each optionally {' or '.join(COMPRESSIONS)}, a folder of them, or a datasets.save_to_disk folder"


def iter_records(path: str | Path, stats: ReadStats | None = None, text_chars: int = TEXT_CHARS,
                 heading: str | None = None) -> Iterator[tuple[dict, str]]:
    """Yield (record, location) from a file, a folder of files, or a `save_to_disk` folder, one at a time.
    `text_chars`, `heading`: how plain text is cut into documents (see the module docstring)."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
            yield from _iter_saved_dataset(path, stats)
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and _format_of(p) is not None)
        if not files:
            raise DataError(f"{path}: the folder holds no file llmkit reads; accepted: {accepted()}")
        for f in files:
            yield from _iter_file(f, stats, text_chars, heading)
        return
    yield from _iter_file(path, stats, text_chars, heading)


def _format_of(path: Path) -> str | None:
    """The format a file's name says (compression suffixes aside), or None."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    if not suffixes:
        return None
    return next((name for name, known in FILE_FORMATS.items() if suffixes[-1] in known), None)


def _open_binary(path: Path):
    """The file's bytes as a buffered stream, decompressed on the fly (gzip or zstd by their magic numbers)."""
    raw = open(path, "rb")
    head = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))
    if head == b"\x28\xb5\x2f\xfd":
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def _check_content(path: Path, fmt: str, head: bytes) -> None:
    """Refuse a file whose first bytes are not what its name says."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    ok = {"jsonl": text[:1] == b"{", "json": text[:1] in (b"[", b"{"), "parquet": head[:4] == b"PAR1",
          "arrow": head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff",
          "warc": head[:5] == b"WARC/" or fmt == "warc" and head[:3] == b"fil",  # ARC files start "filedesc:"
          "wet": head[:5] == b"WARC/"}.get(fmt, b"\x00" not in head)  # csv, tsv, text: text, not binary
    if not ok and text:
        shown = head[:40].decode("utf-8", errors="replace").replace("\n", "\\n")
        raise DataError(f"{path}: unsupported format: named as {fmt}, but it starts with {shown!r}; "
                        f"accepted: {accepted()}")


def _iter_file(path: Path, stats: ReadStats, text_chars: int = TEXT_CHARS,
               heading: str | None = None) -> Iterator[tuple[dict, str]]:
    fmt = _format_of(path)
    if fmt is None:
        raise DataError(f"{path}: unsupported format {''.join(path.suffixes) or '(no suffix)'}; accepted: {accepted()}")
    stats.files += 1
    with _open_binary(path) as f:
        _check_content(path, fmt, f.peek(64)[:64])
        readers = {"jsonl": _jsonl, "json": _json, "parquet": _parquet, "arrow": _arrow, "csv": _csv, "tsv": _csv,
                   "warc": _warc, "wet": _warc, "text": _text}
        for record, where in readers[fmt](f, path, stats, fmt=fmt, text_chars=text_chars, heading=heading):
            stats.records += 1
            yield record, where


def _decode(raw: bytes, stats: ReadStats) -> str:
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.count("\ufffd".encode())
    if bad:
        stats.replaced_chars += bad
        stats.records_with_replacements += 1
    return text


# ---- one reader per format ---------------------------------------------------------------------------
def _jsonl(f, path: Path, stats: ReadStats, **_) -> Iterator[tuple[dict, str]]:
    for lineno, raw in enumerate(f, start=1):  # a binary stream splits on b"\n" alone
        if not raw.strip():
            continue
        line = _decode(raw, stats)
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            _bad(stats, f"{path}:{lineno}", f"malformed JSON line ({e.msg} at column {e.colno})")
            continue
        if not isinstance(row, dict):
            _bad(stats, f"{path}:{lineno}", f"expected a JSON object, found {type(row).__name__}")
            continue
        yield row, f"{path}:{lineno}"


def _bad(stats: ReadStats, where: str, reason: str) -> None:
    if stats.rejects is not None:
        stats.rejects.seen += 1
    reject(stats.rejects, where, reason)


def _json(f, path: Path, stats: ReadStats, **_) -> Iterator[tuple[dict, str]]:
    try:
        data = json.loads(_decode(f.read(), stats))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of records (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    for i, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: record {i} is {type(row).__name__}, expected an object")
        yield row, f"{path}:record {i}"


def _parquet(f, path: Path, stats: ReadStats, **_) -> Iterator[tuple[dict, str]]:
    i = 0
    for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            i += 1
            yield row, f"{path}:row {i}"


def _arrow(f, path: Path, stats: ReadStats, **_) -> Iterator[tuple[dict, str]]:
    head = f.peek(6)[:6]
    reader = pa.ipc.open_file(pa.PythonFile(f)) if head == b"ARROW1" else pa.ipc.open_stream(pa.PythonFile(f))
    batches = (reader.get_batch(k) for k in range(reader.num_record_batches)) if head == b"ARROW1" else reader
    i = 0
    for batch in batches:
        for row in batch.to_pylist():
            i += 1
            yield row, f"{path}:row {i}"


def _csv(f, path: Path, stats: ReadStats, fmt: str = "csv", **_) -> Iterator[tuple[dict, str]]:
    csv.field_size_limit(1 << 30)  # a web page in one cell is longer than csv's default 128 kB
    text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
    rows = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",")
    first = next(rows, None)
    if first is None:
        return
    if all(_COLUMN_NAME.match(cell.strip()) for cell in first):  # a header: every cell a column name
        names, pending = [cell.strip() for cell in first], []
    else:  # no header (an id and a passage per line, say): the columns get numbers, and the first row is data
        names, pending = [f"column_{k}" for k in range(1, len(first) + 1)], [first]
    for cells in itertools.chain(pending, rows):
        line = rows.line_num  # the row's last line in the file (a quoted cell may hold newlines)
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            _bad(stats, f"{path}:{line}", f"{len(cells)} cells where the first row has {len(names)}")
            continue
        if any("\ufffd" in c for c in cells):
            stats.records_with_replacements += 1
        yield dict(zip(names, cells)), f"{path}:{line}"


_COLUMN_NAME = re.compile(r"^[A-Za-z_][\w .-]{0,40}$")  # a short name that starts with a letter: not a number, not prose


def _warc(f, path: Path, stats: ReadStats, fmt: str = "warc", **_) -> Iterator[tuple[dict, str]]:
    wanted = "conversion" if fmt == "wet" else "response"
    for n, record in enumerate(ArchiveIterator(f, arc2warc=True), start=1):
        if record.rec_type != wanted:
            stats.skip(f"{fmt} {record.rec_type} record")
            continue
        url = record.rec_headers.get_header("WARC-Target-URI") or ""
        record_id = record.rec_headers.get_header("WARC-Record-ID") or f"{path.name}#{n}"
        body = record.content_stream().read()
        if fmt == "wet":
            text = _decode(body, stats).strip()
        else:
            kind = (record.http_headers.get_header("Content-Type") or "") if record.http_headers else ""
            if kind and "html" not in kind.lower():
                stats.skip("warc response that is not HTML")
                continue
            text = _html_to_text(body)
        if not text:
            stats.skip(f"{fmt} record without text")
            continue
        yield {"id": record_id.strip("<>"), "text": text, "url": url, "source": fmt}, f"{path}:record {n}"


def _html_to_text(html: bytes) -> str:
    """The main text of an HTML page (trafilatura: the article, without navigation, menus and footers)."""
    return (trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True)
            or "").strip()


def _text(f, path: Path, stats: ReadStats, text_chars: int = TEXT_CHARS, heading: str | None = None,
          **_) -> Iterator[tuple[dict, str]]:
    name = path.name[: -len("".join(path.suffixes))] or path.stem
    pending, n = None, 0
    for n, (text, line) in enumerate(_text_documents(f, stats, text_chars, heading), start=1):
        if pending:
            yield pending
        pending = ({"id": f"{name}#{n}", "text": text}, f"{path}:{line}")
    if pending:
        if n == 1:  # the whole file is one document: it keeps the file's name
            pending[0]["id"] = name
        yield pending


def _text_documents(f, stats: ReadStats, text_chars: int, heading: str | None) -> Iterator[tuple[str, int]]:
    """(document, its first line) of a plain-text stream: blank-line paragraphs put together up to `text_chars`
    characters (a longer paragraph stays whole), and a new document at each line matching `heading`."""
    starts = re.compile(heading) if heading else None
    doc: list[str] = []
    para: list[str] = []
    size = doc_line = para_line = 0
    lines = (_decode(raw, stats).rstrip("\r\n") for raw in f)
    for lineno, line in enumerate(itertools.chain(lines, [""]), start=1):  # the end of the file ends a paragraph
        section = starts is not None and starts.match(line) is not None
        if para and (section or not line.strip()):  # a paragraph ends
            text = "\n".join(para)
            if doc and size + len(text) > text_chars:
                yield "\n\n".join(doc), doc_line
                doc, size = [], 0
            if not doc:
                doc_line = para_line
            doc.append(text)
            size += len(text) + 2
            para = []
        if section and doc:
            yield "\n\n".join(doc), doc_line
            doc, size = [], 0
        if line.strip():
            if not para:
                para_line = lineno
            para.append(line)
    if doc:
        yield "\n\n".join(doc), doc_line


def _iter_saved_dataset(path: Path, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    ds = load_from_disk(str(path))
    splits = ds.items() if isinstance(ds, DatasetDict) else [("", ds)]
    stats.files += 1
    for split, d in splits:
        for i, row in enumerate(d, start=1):
            stats.records += 1
            yield row, f"{path}:{split + ' ' if split else ''}row {i}"


# ---- documents -----------------------------------------------------------------------------------------
def load_documents(path: str | Path, text_field: str | None = None, max_documents: int | None = None,
                   text_chars: int = TEXT_CHARS, heading: str | None = None,
                   rejects: Rejects | None = None) -> tuple[list[dict], ReadStats]:
    """Read a pretraining corpus into `{"id", "text", "url", "source"}` records.

    The text field is `text_field` if given, else the first of TEXT_FIELDS the first record has — or, for a
    csv/tsv file without one, the column whose first value is longest (`stats.text_field` says which). A row
    without it goes to `rejects` (None: the first one stops the read)."""
    stats = ReadStats(rejects=rejects)
    docs: list[dict] = []
    seen_ids: set[str] = set()
    name = text_field
    for row, where in iter_records(path, stats, text_chars, heading):
        if rejects is not None:
            rejects.seen += 1
        if name is None:
            name = next((f for f in TEXT_FIELDS if f in row), None)
            if name is None and _is_table(where) and row:
                name = max(row, key=lambda k: len(str(row[k])))
                stats.text_field = name
            if name is None:
                raise DataError(
                    f"{where}: no text field; this record has fields {sorted(row)}, accepted text fields are "
                    f"{', '.join(TEXT_FIELDS)} (or name one with text_field / --text-field)"
                )
        if name not in row:
            reject(rejects, where, f"missing text field {name!r}; this record has fields {sorted(row)}")
            continue
        text = row[name]
        if not isinstance(text, str):
            reject(rejects, where, f"field {name!r} must be a string, found {type(text).__name__}")
            continue
        doc_id = str(row.get("id", f"doc-{len(docs):06d}"))
        if doc_id in seen_ids:  # ids name documents in the stage's records, so they must be unique
            doc_id = f"{doc_id}#{len(docs)}"
        seen_ids.add(doc_id)
        docs.append({
            "id": doc_id,
            "text": text,
            "url": str(row.get("url", "") or ""),
            "source": str(row.get("source", "") or ""),
        })
        if max_documents is not None and len(docs) >= max_documents:
            break
    if rejects is not None:
        rejects.check(path)
    return docs, stats


def _is_table(where: str) -> bool:
    return _format_of(Path(where.rsplit(":", 1)[0])) in ("csv", "tsv")


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a jsonl file llmkit wrote itself (user data goes through `iter_records`)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
