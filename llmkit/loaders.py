"""Read the data a user points llmkit at: jsonl, json, parquet and plain-text files (gzip-compressed or
not), folders of them, and datasets saved with `datasets.save_to_disk`.

Every record comes with the place it came from (`file:line`), so an error can say exactly where a bad
row is. Undecodable bytes are replaced (U+FFFD) and counted rather than crashing a long run.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmkit.runs import StageError

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT_FIELDS = ("text", "content", "document", "body", "raw_content")
SUFFIXES = (".jsonl", ".json", ".parquet", ".txt", ".md")


class DataError(StageError):
    """Bad input data: the message names the file (and line or field) and what is accepted."""


def bundled_path(name: str = "") -> Path:
    """A file of the bundled closed-world data: `data_samples/` in the repository, which an installed package
    holds as `llmkit.data_samples` (pyproject.toml ships it as package data)."""
    from importlib import resources

    try:
        folder = Path(str(resources.files("llmkit.data_samples")))
    except ModuleNotFoundError:  # a checkout on the path, not installed
        folder = REPO_ROOT / "data_samples"
    path = folder / name
    if not path.exists():
        raise DataError(f"bundled data file {path} is missing; regenerate it with `python data_samples/generate.py`")
    return path


@dataclass
class ReadStats:
    files: int = 0
    records: int = 0
    replaced_chars: int = 0  # undecodable bytes replaced by U+FFFD
    records_with_replacements: int = 0


def iter_records(path: str | Path, stats: ReadStats | None = None) -> Iterator[tuple[dict, str]]:
    """Yield (record, location) from a file, a folder of files, or a `save_to_disk` folder."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            yield from _iter_saved_dataset(path, stats)
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and _base_suffix(p) in SUFFIXES)
        if not files:
            raise DataError(f"{path}: the folder holds no {', '.join(SUFFIXES)} files (gzip-compressed or not)")
        for f in files:
            yield from _iter_file(f, stats)
        return
    yield from _iter_file(path, stats)


def _base_suffix(p: Path) -> str:
    return Path(p.stem).suffix.lower() if p.suffix.lower() == ".gz" else p.suffix.lower()


def _read_text(path: Path, stats: ReadStats) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.count("\ufffd".encode())
    stats.replaced_chars += bad
    return text


def _iter_file(path: Path, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    kind = _base_suffix(path)
    stats.files += 1
    if kind == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            stats.records += 1
            yield row, f"{path}:row {i}"
        return
    text = _read_text(path, stats)
    if kind in (".txt", ".md"):
        stats.records += 1
        name = path.name[:-3] if path.suffix.lower() == ".gz" else path.name
        yield {"id": Path(name).stem, "text": text}, str(path)
        return
    if kind == ".json":
        try:
            data = json.loads(text)
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
            stats.records += 1
            yield row, f"{path}:record {i}"
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, found {type(row).__name__}")
        stats.records += 1
        if "\ufffd" in line:
            stats.records_with_replacements += 1
        yield row, f"{path}:{lineno}"


def _iter_saved_dataset(path: Path, stats: ReadStats) -> Iterator[tuple[dict, str]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    splits = ds.items() if isinstance(ds, DatasetDict) else [("", ds)]
    stats.files += 1
    for split, d in splits:
        for i, row in enumerate(d, start=1):
            stats.records += 1
            yield row, f"{path}:{split + ' ' if split else ''}row {i}"


def load_documents(path: str | Path, text_field: str | None = None,
                   max_documents: int | None = None) -> tuple[list[dict], ReadStats]:
    """Read a pretraining corpus into `{"id", "text", "url", "source"}` records.

    The text field is `text_field` if given, else the first of TEXT_FIELDS the first record has."""
    stats = ReadStats()
    docs: list[dict] = []
    seen_ids: set[str] = set()
    field = text_field
    for row, where in iter_records(path, stats):
        if field is None:
            field = next((f for f in TEXT_FIELDS if f in row), None)
            if field is None:
                raise DataError(
                    f"{where}: no text field; this record has fields {sorted(row)}, accepted text fields are "
                    f"{', '.join(TEXT_FIELDS)} (or name one with text_field / --text-field)"
                )
        if field not in row:
            raise DataError(f"{where}: missing text field {field!r}; this record has fields {sorted(row)}")
        text = row[field]
        if not isinstance(text, str):
            raise DataError(f"{where}: field {field!r} must be a string, found {type(text).__name__}")
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
    return docs, stats


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a jsonl file llmkit wrote itself (user data goes through `iter_records`)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
