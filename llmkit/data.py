"""The data stage: a raw crawl in, clean deduplicated documents, a tokenizer and packed blocks out.

    raw corpus ─ clean (llmkit.cleaning: normalise, Gopher, C4, FineWeb, exact and near dedup, PII)
               ─ train a byte-level BPE ─ pack the documents into blocks of `block_size` tokens

Files in `runs/<name>/data/`: documents.jsonl (kept, final text), removed.jsonl (text, rule, reason,
duplicate_of), changes.jsonl (what a rule changed in a kept document), tokenizer/, blocks/ (a DatasetDict
with train and validation splits of `input_ids`), report.md, stage_config.json, metrics.json.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict
from datasets.utils import are_progress_bars_disabled

from llmkit import lifecycle
from llmkit.cleaning import Ledger, clean_corpus, rule_order
from llmkit.loaders import (
    DataError,
    ReadStats,
    Rejects,
    bundled_path,
    load_documents,
    read_jsonl,
    write_jsonl,
)
from llmkit.options.data import PRESETS, DataConfig, config_for
from llmkit.tokenizer import pack_sequences, tokenizer_fingerprint, train_tokenizer


@dataclass
class Corpus:
    source: str
    docs: list[dict]
    stats: ReadStats


def read_inputs(config: DataConfig, run_dir: Path, rejects: Rejects) -> Corpus:
    """The corpus's documents; a file that cannot be read, or holds none, stops the stage here."""
    source = config.train_data or str(bundled_path("corpus.jsonl"))
    docs, stats = load_documents(source, config.text_field, config.max_examples, config.text_chars,
                                 config.text_heading, rejects)
    if not docs:
        raise DataError(f"{source}: the corpus holds no documents")
    return Corpus(source, docs, stats)


def train(config: DataConfig, corpus: Corpus, work: lifecycle.Work) -> dict:
    docs = corpus.docs
    ledger = Ledger()
    kept = clean_corpus(docs, config, ledger, work.progress)
    if not kept:
        raise DataError("the cleaning rules removed every document:\n" + ledger.summary_table(docs, kept) +
                        f"\n  The rules are the {config.profile!r} profile's. For books and articles use the prose "
                        "profile (--profile prose), for text already clean none; any rule can be switched off "
                        "(--no-fineweb, …; in the pipeline --data.profile, --data.no-fineweb)")
    tokenizer = train_tokenizer((d["text"] for d in kept), config.vocab_size)
    tokenizer.save_pretrained(work.dir / "tokenizer")
    with _datasets_progress(work.progress):
        blocks, pack_stats = make_blocks(kept, tokenizer, config)
        blocks.save_to_disk(str(work.dir / "blocks"))
    (work.dir / "blocks" / "tokenizer_fingerprint.txt").write_text(tokenizer_fingerprint(tokenizer) + "\n")

    write_jsonl(work.dir / "documents.jsonl", kept)
    write_jsonl(work.dir / "removed.jsonl", ledger.removed)
    write_jsonl(work.dir / "changes.jsonl", ledger.changes)
    rules = ledger.per_rule(docs, tokenizer, rule_order(config))
    metrics = {
        "documents_in": len(docs),
        "documents_out": len(kept),
        "documents_removed": len(ledger.removed),
        "documents_changed": len({c["id"] for c in ledger.changes}),
        "replaced_undecodable_chars": corpus.stats.replaced_chars,
        "skipped_while_reading": corpus.stats.skipped,  # records that hold no document (a WARC request, …)
        "text_field_detected": corpus.stats.text_field,
        "language_id": "on" if config.language_model else "skipped (no language_model file given)",
        "rules": rules,
        "warnings": flag_rules(rules, config),
        "vocab_size": len(tokenizer),
        **{f"{split}_{k}": v for split, s in pack_stats.items() for k, v in s.items()},
    }
    (work.dir / "report.md").write_text(render_report(metrics), encoding="utf-8")
    return metrics


# ---- blocks ---------------------------------------------------------------------------------------
def make_blocks(docs: list[dict], tokenizer, config: DataConfig):
    """Split documents into train / validation (by document, so validation text is unseen), then pack."""
    order = list(range(len(docs)))
    random.Random(config.seed).shuffle(order)
    n_val = min(max(1, round(len(docs) * config.validation_fraction)), len(docs) - 1)
    splits = {"validation": [docs[i] for i in order[:n_val]], "train": [docs[i] for i in order[n_val:]]}
    blocks, stats = {}, {}
    for name, rows in splits.items():
        ds = Dataset.from_dict({"text": [r["text"] for r in rows]})
        # worker processes take about a second to start: worth it only for many documents
        num_proc = config.num_proc if len(rows) >= 20_000 else 1
        blocks[name], stats[name] = pack_sequences(ds, tokenizer, config.block_size, num_proc)
    if len(blocks["train"]) == 0:
        raise DataError(
            f"the cleaned corpus ({stats['train']['tokens']} training tokens) is too small for one block of "
            f"{config.block_size} tokens; lower block_size or add documents"
        )
    return DatasetDict(blocks), stats


# ---- report ---------------------------------------------------------------------------------------
WEB_RULES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def flag_rules(rules: dict, config: DataConfig) -> list[str]:
    """A warning for each rule that removed more than half of the documents that reached it: on text other than
    web pages that is usually the rule, not the text (hard-wrapped book lines fail FineWeb's line-punctuation
    rule). Each says how to relax it."""
    out = []
    for rule, r in rules.items():
        if not r["documents_in"] or r["removed"] <= r["documents_in"] / 2:
            continue
        reasons = ", ".join(f"{k} ({v})" for k, v in list(r["reasons"].items())[:3])
        flag = rule.replace("_", "-")
        switch = f"{rule}=False (llmkit data --no-{flag}, llmkit pipeline --data.no-{flag})"
        if rule in WEB_RULES and config.profile == "web":
            how = (f"its thresholds are for web pages: for books and articles use the prose profile (--profile prose, "
                   f"--data.profile prose in the pipeline), or switch it off: {switch}")
        else:
            how = f"switch it off with {switch} if that is wrong for your text"
        out.append(f"{rule} removed {r['removed']} of the {r['documents_in']} documents that reached it ({reasons}); "
                   f"{how}")
    return out


def render_report(m: dict) -> str:
    lines = [
        "# Data stage report", "",
        f"Documents in: {m['documents_in']} · kept: {m['documents_out']} · removed: {m['documents_removed']} · "
        f"changed: {m['documents_changed']}", "",
        "| rule (in order) | documents in → out | changed | tokens in → out | top reasons for removal |",
        "|---|---:|---:|---:|---|",
    ]
    for rule, r in m["rules"].items():
        reasons = ", ".join(f"{k} ({v})" for k, v in list(r["reasons"].items())[:3])
        lines.append(f"| {rule} | {r['documents_in']} → {r['documents_out']} | {r['changed']} | "
                     f"{r['tokens_in']} → {r['tokens_out']} | {reasons} |")
    for warning in m.get("warnings", []):
        rule = warning.split(" ", 1)[0]
        lines += ["", f"**Most of what reached {rule} was removed.** {warning}. Examples:", ""]
        lines += [f"- `{e['id']}` ({e['reason']}): {e['text'][:160]!r}" for e in m["rules"][rule].get("examples", [])]
    lines += [
        "", f"Language identification: {m['language_id']}.",
        f"Undecodable characters replaced while reading: {m['replaced_undecodable_chars']}.",
        *([f"Records without a document, left out while reading: "
           f"{', '.join(f'{k} ({v})' for k, v in m['skipped_while_reading'].items())}."]
          if m.get("skipped_while_reading") else []),
        *([f"Text read from the column {m['text_field_detected']!r} (the longest of the first row)."]
          if m.get("text_field_detected") else []), "",
        f"Tokenizer: byte-level BPE, {m['vocab_size']} tokens; {m['train_bytes_per_token']:.2f} bytes per token "
        "on the training split.",
        f"Blocks: {m['train_blocks']} train, {m['validation_blocks']} validation "
        f"({m['train_tokens']} and {m['validation_tokens']} tokens before packing).",
    ]
    return "\n".join(lines) + "\n"


@contextmanager
def _datasets_progress(show: bool):
    was_disabled = are_progress_bars_disabled()
    if not show:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


# ---- scoring against the closed world's ground truth ---------------------------------------------
JUNK_LABELS = ["spam", "boilerplate", "gibberish", "lorem", "short", "repetition", "exact_dup", "near_dup"]


def score_cleaning(stage_dir: str | Path, labels_path: str | Path | None = None) -> dict:
    """Precision and recall of the data stage per junk category, against the generator's labels.

    Recall of a category: the fraction of its documents that were removed (by any rule). Near-duplicate
    precision: the fraction of MinHash removals that really were duplicates. PII recall: the fraction of
    personal-data strings in kept documents that no longer appear in their final text."""
    stage_dir = Path(stage_dir)
    labels = {r["id"]: r for r in read_jsonl(labels_path or bundled_path("corpus_labels.jsonl"))}
    removed = {r["id"]: r for r in read_jsonl(stage_dir / "removed.jsonl")}
    kept = {r["id"]: r["text"] for r in read_jsonl(stage_dir / "documents.jsonl")}
    seen = set(removed) | set(kept)
    by_label: dict[str, list[str]] = defaultdict(list)
    for doc_id in seen:
        by_label[labels[doc_id]["label"]].append(doc_id)
    out: dict = {"recall": {}, "counts": {}}
    for label in JUNK_LABELS:
        ids = by_label.get(label, [])
        out["counts"][label] = len(ids)
        out["recall"][label] = sum(i in removed for i in ids) / len(ids) if ids else None
    good = by_label.get("good", [])
    out["counts"]["good"] = len(good)
    out["good_removed_fraction"] = sum(i in removed for i in good) / max(len(good), 1)
    out["good_removed_by_rule"] = dict(Counter(removed[i]["rule"] for i in good if i in removed))
    mh = [r for r in removed.values() if r["rule"] == "minhash_dedup"]
    out["near_dup_precision"] = (
        sum(labels[r["id"]]["label"] in ("near_dup", "exact_dup") for r in mh) / len(mh) if mh else None
    )
    pii_total = pii_gone = 0
    for doc_id, text in kept.items():
        for item in labels[doc_id]["pii"]:
            pii_total += 1
            pii_gone += item["value"] not in text
    out["pii_recall"] = pii_gone / pii_total if pii_total else None
    out["counts"]["pii_items_in_kept_docs"] = pii_total
    return out


# The stage's life in its run folder (reuse, read the inputs, train, measure, commit): llmkit.lifecycle
run = lifecycle.runner(read_inputs, train,
                       "Clean the corpus, train the tokenizer and pack the blocks into RUN_DIR/data.")
__all__ = ["DataConfig", "PRESETS", "config_for", "run"]  # its options: llmkit.options.data
