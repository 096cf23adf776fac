"""Preference labels: the items people compare, the crash-safe file their labels go to, agreement and export.

An **item** is a prompt and two responses: {"id", "prompt", "responses": [first, second]} (a pairs file in any
preference format also reads as items, with the dataset's chosen answer first). The annotation app shows the
two responses as A and B in an order drawn per annotator and item, and records which response was shown as A.

The **labels file** is append-only jsonl. Each label is one line, written, flushed and fsync'ed before the
app moves on, so a crash loses nothing that was shown as saved. Undo appends a retraction
(`{"undo": <label_id>}`) instead of rewriting the file. A label record carries its prompt and responses, so the
file is self-contained: the reward stage reads pairs from it without the items file, and the chat app writes
its votes into the same file.

    {"label_id", "item_id", "annotator", "choice": "A"|"B"|"tie"|"both_bad", "a_index": 0|1,
     "preferred": 0|1|null (index into responses), "prompt", "responses", "note", "time"}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llmkit.formats import as_messages, detect_preference_format, prompt_text, to_preference
from llmkit.generation import chat_generate
from llmkit.loaders import DataError, iter_records
from llmkit.model import load_causal_lm

CHOICES = ("A", "B", "tie", "both_bad")


# ---- items ---------------------------------------------------------------------------------------
@dataclass
class Item:
    id: str
    prompt: list  # messages
    responses: list[str]  # two
    meta: dict = field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        return prompt_text(self.prompt)


def item_id(prompt: list, responses: list[str]) -> str:
    return hashlib.sha1(json.dumps([prompt, responses], ensure_ascii=False).encode()).hexdigest()[:12]


def make_item(prompt, responses: list[str], meta: dict | None = None) -> Item:
    prompt = as_messages(prompt)
    return Item(item_id(prompt, responses), prompt, list(responses), dict(meta or {}))


def load_items(path: str | Path) -> list[Item]:
    """Items from a jsonl/json file: {"prompt", "responses": [a, b]} rows, or preference pairs in any format."""
    items: list[Item] = []
    for row, where in iter_records(path):
        try:
            if isinstance(row, dict) and "responses" in row:
                responses = row["responses"]
                if not (isinstance(responses, list) and len(responses) == 2
                        and all(isinstance(r, str) and r.strip() for r in responses)):
                    raise ValueError("`responses` must be a list of two non-empty strings")
                prompt = row.get("prompt")
                if not isinstance(prompt, (str, list)) or not prompt:
                    raise ValueError("`prompt` must be a string or a list of messages")
                item = make_item(prompt, responses, row.get("meta"))
                if row.get("id"):
                    item.id = str(row["id"])
            else:
                fmt = detect_preference_format(row)
                if fmt is None:
                    raise ValueError("neither {prompt, responses: [a, b]} nor a preference pair {prompt?, chosen, rejected}")
                pair = to_preference(row, fmt)
                if len(pair["chosen"]) != 1 or len(pair["rejected"]) != 1:
                    raise ValueError("its answers run over several turns; an item compares two single answers")
                if not (pair["chosen"][0]["content"].strip() and pair["rejected"][0]["content"].strip()):
                    raise ValueError("an answer is empty")
                item = make_item(pair["prompt"], [pair["chosen"][0]["content"], pair["rejected"][0]["content"]],
                                 {"dataset_preferred": 0})
        except (ValueError, TypeError, KeyError) as e:
            fields = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{where}: not an item ({e}); fields found: [{fields}]") from None
        items.append(item)
    if not items:
        raise DataError(f"{path}: no items found")
    seen: dict[str, int] = {}
    unique = []
    for it in items:  # the same pair twice is one item
        if it.id not in seen:
            seen[it.id] = len(unique)
            unique.append(it)
    return unique


def write_items(path: str | Path, items: list[Item]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps({"id": it.id, "prompt": it.prompt, "responses": it.responses, "meta": it.meta},
                               ensure_ascii=False) + "\n")


def sample_items(model_dir: str | Path, prompts: list, temperatures: tuple[float, float] = (0.7, 1.3),
                 max_new_tokens: int = 48, seed: int = 0) -> list[Item]:
    """Two answers per prompt sampled live from a checkpoint, at two temperatures."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = load_causal_lm(model_dir)
    answers = []
    for i, t in enumerate(temperatures):
        torch.manual_seed(seed + i)
        answers.append(chat_generate(model, tokenizer, prompts, max_new_tokens, temperature=t))
    return [make_item(p, [a["text"], b["text"]], {"model": str(model_dir), "temperatures": list(temperatures)})
            for p, a, b in zip(prompts, *answers)]


def a_index(item_id_: str, annotator: str) -> int:
    """Which response this annotator sees as A for this item: drawn once, the same on every reopen."""
    return hashlib.sha1(f"{annotator}\0{item_id_}".encode()).digest()[0] % 2


# ---- the labels file -----------------------------------------------------------------------------
class LabelStore:
    """The append-only labels file. `labels()` is the current state: the last unretracted label per
    (annotator, item).

    Several writers share one file — annotators' browser sessions in one app (threads), the annotation app and
    the chat app's votes (processes) — so every check-then-write holds a lock: a thread lock within the process
    and an exclusive `flock` on LABELS.lock across processes. A label is therefore written exactly once per
    (annotator, item), whoever submits it and however often.

    A damaged file opens with a warning naming the line: a last line cut mid-write (the machine lost power
    before its newline reached the disk), or a line that is not a label. The intact labels are kept and the
    damaged line is set aside in LABELS.damaged.jsonl ({"line", "reason", "text"}), never silently dropped; a cut
    last line is also taken out of the file, so the next label does not glue onto it. Labelling goes on. The
    reward stage reads the file through this class, with the same rule."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.damaged_path = self.path.with_name(self.path.name.removesuffix(".jsonl") + ".damaged.jsonl")
        self._records: list[dict] = []
        self._offset = 0
        self._line = 0  # lines read so far
        self._thread_lock = threading.RLock()
        with self._locked():
            self._repair_tail()
            self._read()

    @contextlib.contextmanager
    def _locked(self):
        """The lock a check-then-write holds: this process's threads and every process on the file."""
        import fcntl  # POSIX only: imported where it is used, so that the rest of llmkit imports anywhere

        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _repair_tail(self) -> None:
        """A last line without its newline was cut mid-write (writers hold the lock while they write, so it is
        not one in progress): it was never reported as saved. It goes to the side file and out of this one."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            line = data[:cut].count(b"\n") + 1
            self._set_aside(line, data[cut:].decode("utf-8", errors="replace"), "cut off mid-write (no newline)")
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())

    def _set_aside(self, line: int, text: str, reason: str) -> None:
        record = {"line": line, "reason": reason, "text": text}
        known = set()
        if self.damaged_path.exists():
            for old in self.damaged_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    known.add(json.dumps(json.loads(old), sort_keys=True))
        if json.dumps(record, sort_keys=True) not in known:  # another reader of the same file set it aside already
            with open(self.damaged_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        warnings.warn(f"{self.path}, line {line}: {reason}; the intact labels are kept and this line is set aside "
                      f"in {self.damaged_path}", stacklevel=3)

    def refresh(self) -> None:
        """Read what was appended since the last read (another annotator's app may write the same file)."""
        with self._thread_lock:
            self._read()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still without its newline is read once it has one
        for raw in chunk[:end].split(b"\n")[:-1]:
            self._line += 1
            text = raw.decode("utf-8", errors="replace")
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                self._set_aside(self._line, text, f"not JSON ({e})")
                continue
            if not isinstance(record, dict) or not ({"label_id", "item_id", "annotator", "choice", "preferred",
                                                      "prompt", "responses"} <= record.keys() or "undo" in record):
                self._set_aside(self._line, text, "not a label: a label has label_id, item_id, annotator, choice, "
                                                  "preferred, prompt and responses; an undo has undo")
                continue
            self._records.append(record)
        self._offset += end

    def _append(self, record: dict) -> None:
        """Write one line and fsync it; the caller holds the lock."""
        new = not self.path.exists()
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:  # the file's directory entry must reach the disk too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._read()

    def records(self) -> list[dict]:
        with self._thread_lock:
            return list(self._records)

    def labels(self, annotator: str | None = None) -> dict[tuple[str, str], dict]:
        """{(annotator, item_id): label} for labels not retracted, in file order."""
        records = self.records()
        retracted = {r["undo"] for r in records if "undo" in r}
        out: dict[tuple[str, str], dict] = {}
        for r in records:
            if "label_id" in r and r["label_id"] not in retracted and (annotator is None or r["annotator"] == annotator):
                out[(r["annotator"], r["item_id"])] = r
        return out

    def add(self, item: Item, annotator: str, choice: str, note: str = "", a_idx: int | None = None,
            source: str = "annotate") -> dict | None:
        """Write one label; None (and nothing written) if this annotator's label for this item is already there."""
        if choice not in CHOICES:
            raise ValueError(f"choice {choice!r}; accepted: {', '.join(CHOICES)}")
        if not annotator.strip():
            raise ValueError("an annotator name is needed")
        a_idx = a_index(item.id, annotator) if a_idx is None else a_idx
        preferred = {"A": a_idx, "B": 1 - a_idx}.get(choice)
        record = {"label_id": uuid.uuid4().hex, "item_id": item.id, "annotator": annotator, "choice": choice,
                  "a_index": a_idx, "preferred": preferred, "prompt": item.prompt, "responses": item.responses,
                  "note": note, "source": source, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self._locked():  # nobody writes between the check and the write
            self._read()
            if (annotator, item.id) in self.labels(annotator):
                return None
            self._append(record)
        return record

    def undo(self, annotator: str) -> dict | None:
        """Retract this annotator's most recent label; returns it (None if there is none)."""
        with self._locked():
            self._read()
            live = {r["label_id"] for r in self.labels(annotator).values()}
            last = next((r for r in reversed(self._records) if r.get("label_id") in live), None)
            if last is None:
                return None
            self._append({"undo": last["label_id"], "item_id": last["item_id"], "annotator": annotator,
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return last


# ---- agreement and export ------------------------------------------------------------------------
def _canonical(label: dict) -> str:
    """The label in terms of the item's responses, whatever side each annotator saw them on."""
    return {0: "first", 1: "second"}.get(label["preferred"], label["choice"])


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Agreement of two raters beyond chance: (p_observed − p_chance) / (1 − p_chance)."""
    if len(a) != len(b) or not a:
        raise ValueError("two equally long, non-empty lists of labels are needed")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    cats = set(a) | set(b)
    chance = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    if chance == 1:
        return 1.0
    return (observed - chance) / (1 - chance)


def agreement(store: LabelStore) -> dict:
    """Cohen's kappa for every pair of annotators on the items both labeled, and the items they disagree on."""
    labels = store.labels()
    by_annotator: dict[str, dict[str, dict]] = {}
    for (annotator, iid), r in labels.items():
        by_annotator.setdefault(annotator, {})[iid] = r
    pairs, disagreements = [], []
    for x, y in combinations(sorted(by_annotator), 2):
        common = [i for i in by_annotator[x] if i in by_annotator[y]]
        if not common:
            continue
        lx = [_canonical(by_annotator[x][i]) for i in common]
        ly = [_canonical(by_annotator[y][i]) for i in common]
        pairs.append({"annotators": (x, y), "items": len(common), "agreement": sum(p == q for p, q in zip(lx, ly)) / len(common),
                      "kappa": cohen_kappa(lx, ly)})
        for i, p, q in zip(common, lx, ly):
            if p != q:
                r = by_annotator[x][i]
                disagreements.append({"item_id": i, "prompt": r["prompt"][-1]["content"], "first": r["responses"][0],
                                      "second": r["responses"][1], x: p, y: q})
    return {"pairs": pairs, "disagreements": disagreements}


def export_pairs(source: str | Path | LabelStore, out: str | Path | None = None) -> tuple[list[dict], dict]:
    """TRL preference rows {"prompt", "chosen", "rejected"} from the labels (one per decisive label; ties and
    "both bad" are left out and counted). Writes them to `out` as jsonl when given."""
    store = source if isinstance(source, LabelStore) else LabelStore(source)
    rows, counts = [], {"pairs": 0, "tie": 0, "both_bad": 0}
    for r in store.labels().values():
        if r["preferred"] is None:
            counts[r["choice"]] += 1
            continue
        good, bad = r["responses"][r["preferred"]], r["responses"][1 - r["preferred"]]
        rows.append({"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}]})
    counts["pairs"] = len(rows)
    if out is not None:
        with open(out, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows, counts


# ---- one annotator's pass over the items -----------------------------------------------------------
class Session:
    """Where one annotator is: the first item they have not labeled (skipped items come back last)."""

    def __init__(self, items: list[Item], store: LabelStore, annotator: str):
        if not annotator.strip():
            raise ValueError("an annotator name is needed")
        self.items, self.store, self.annotator = items, store, annotator.strip()
        self.by_id = {it.id: it for it in items}
        self.skipped: list[str] = []
        self.focus: str | None = None  # an item brought back by undo

    def done(self) -> int:
        mine = self.store.labels(self.annotator)
        return sum((self.annotator, it.id) in mine for it in self.items)

    def current(self) -> Item | None:
        self.store.refresh()
        mine = self.store.labels(self.annotator)
        todo = [it for it in self.items if (self.annotator, it.id) not in mine]
        if self.focus and any(it.id == self.focus for it in todo):
            return self.by_id[self.focus]
        fresh = [it for it in todo if it.id not in self.skipped]
        if fresh:
            return fresh[0]
        for iid in self.skipped:  # every remaining item was skipped: go round them again, oldest skip first
            if (self.annotator, iid) not in mine:
                return self.by_id[iid]
        return None

    def sides(self, item: Item) -> tuple[str, str, int]:
        a = a_index(item.id, self.annotator)
        return item.responses[a], item.responses[1 - a], a

    def choose(self, shown_item_id: str, choice: str, note: str = "") -> dict | None:
        """Label the item that was on screen. A second submission for it (a double click, a repeated key)
        writes nothing."""
        item = self.by_id.get(shown_item_id)
        if item is None:
            return None
        record = self.store.add(item, self.annotator, choice, note)
        if self.focus == shown_item_id:
            self.focus = None
        if shown_item_id in self.skipped:
            self.skipped.remove(shown_item_id)
        return record

    def skip(self, shown_item_id: str) -> None:
        if self.focus == shown_item_id:
            self.focus = None
        if shown_item_id in self.skipped:
            self.skipped.remove(shown_item_id)
        self.skipped.append(shown_item_id)

    def undo(self) -> dict | None:
        last = self.store.undo(self.annotator)
        if last is not None:
            self.focus = last["item_id"]
        return last
