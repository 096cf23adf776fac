"""The data stage's rules: per-document filters and formatters as datatrove blocks, exact and near dedup, and
the ledger that keeps what each rule did to each document.

    raw corpus ─ normalise ─ Gopher repetition ─ Gopher quality ─ C4 ─ FineWeb ─ exact dedup
               ─ MinHash near-dedup ─ PII redaction

The order and the thresholds are FineWeb's (Penedo et al., 2024), which adopted Gopher's quality and
repetition rules (Rae et al., 2021) and C4's line rules (Raffel et al., 2020) minus C4's "every line ends in
punctuation" rule, which removes too much good text. The filters, the PII formatter and the normaliser
are datatrove blocks: `datatrove_pipeline(config)` returns them as a list that runs unchanged on
datatrove's local, Slurm or Ray executors when a corpus outgrows a notebook (`llmkit.data_at_scale`). On
notebook-sized corpora `clean_corpus` runs the same blocks in-process, document by document, so that every
removed or changed document keeps the rule and the reason (the inspector in `widgets/` shows them).

Near-duplicate detection uses datasketch's MinHash LSH with a verification step: LSH proposes candidate
pairs, and a pair counts as a duplicate only if the true Jaccard similarity of their word 5-gram sets
reaches `minhash_threshold`. (datatrove's MinHash stages are the cluster-scale path; on a few thousand
documents datasketch was faster and more precise here — see BENCHMARKS.md.)

`config` below is the data stage's `DataConfig` (`llmkit.data`): its rule switches and thresholds.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import unicodedata
from collections import Counter
from pathlib import Path

from datasketch import MinHash, MinHashLSH
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.formatters.pii import PIIFormatter, PIIReplacer
from tqdm.auto import tqdm

from llmkit.loaders import DataError


class Normalizer(BaseFormatter):
    """Unicode NFKC (ligatures, full-width forms, no-break spaces) and whitespace clean-up."""

    name = "normalize"
    _spaces = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
    _zero_width = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")

    def format(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
        text = self._zero_width.sub("", text)
        lines = [self._spaces.sub(" ", line).strip() for line in text.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class Unwrapper(BaseFormatter):
    """Hard-wrapped prose (books, plain-text articles: a line break every 70 characters) made one line per
    paragraph, so that rules written for web pages' lines see paragraphs, not fragments."""

    name = "unwrap"
    _wrap = re.compile(r"(?<=\S)[ \t]*\n(?=[ \t]*\S)")  # a line break inside a paragraph (not a blank line)

    def format(self, text: str) -> str:
        return self._wrap.sub(" ", text)


PHONE_REGEX = r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\w)"


class PIIRedactor(PIIFormatter):
    """datatrove's PII formatter (emails, public IP addresses) plus phone numbers."""

    name = "pii"

    def __init__(self, phone_replacement: str = "+1 555 0100", **kwargs):
        # one fixed replacement each (datatrove cycles through several), so the output does not depend on
        # the order documents arrive in, in-process or on an executor
        kwargs.setdefault("email_replacement", "email@example.com")
        kwargs.setdefault("ip_replacement", "22.214.171.124")
        super().__init__(**kwargs)
        self.phone_replacer = PIIReplacer(PHONE_REGEX, phone_replacement, validator=_looks_like_phone)

    def format(self, text: str) -> str:
        return self.phone_replacer.replace(super().format(text))


def _looks_like_phone(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    return 9 <= digits <= 15 and not re.fullmatch(r"\d{4}( \d{4}){2,}", s)  # not a run of years


def rule_on(config, name: str) -> bool:
    """Whether a rule runs: the config's switch where it is set, else its profile's choice (`llmkit.data.PROFILES`:
    web and prose run every filter, prose unwraps lines first, none runs no filter)."""
    value = getattr(config, name)
    if value is not None:
        return value
    if name == "unwrap":
        return config.profile == "prose"
    return config.profile != "none"


def datatrove_pipeline(config) -> list:
    """The per-document steps as datatrove blocks, in order. Put a reader in front and a writer behind
    to run them on any datatrove executor; dedup at that scale uses datatrove's MinHash stages."""
    prose = config.profile == "prose"
    steps: list = []
    if config.normalize:
        steps.append(Normalizer())
    if rule_on(config, "unwrap"):
        steps.append(Unwrapper())
    if config.language_model:
        steps.append(language_filter(config))
    if rule_on(config, "gopher_repetition"):
        steps.append(GopherRepetitionFilter())
    if rule_on(config, "gopher_quality"):
        steps.append(GopherQualityFilter(max_doc_words=None, max_non_alpha_words_ratio=0.6) if prose
                     else GopherQualityFilter())
    if rule_on(config, "c4"):  # FineWeb's setting: no "every line ends in punctuation"
        steps.append(C4QualityFilter(filter_no_terminal_punct=False, **(
            {"filter_curly_bracket": False, "filter_javascript": False, "filter_policy": False} if prose else {})))
    if rule_on(config, "fineweb"):  # prose: no rule about how lines end or how short they are
        steps.append(FineWebQualityFilter(line_punct_thr=0.0, short_line_thr=1.0) if prose else FineWebQualityFilter())
    return steps


def rule_order(config) -> list[str]:
    """The names of the rules `clean_corpus` applies, in order."""
    order = [RULE_NAMES.get(type(step), type(step).__name__) for step in datatrove_pipeline(config)]
    order += [name for name, on in (("exact_dedup", config.exact_dedup), ("minhash_dedup", config.minhash_dedup),
                                    ("pii", config.redact_pii)) if on]
    return order


RULE_NAMES = {
    Normalizer: "normalize", Unwrapper: "unwrap", GopherRepetitionFilter: "gopher_repetition", GopherQualityFilter: "gopher_quality",
    C4QualityFilter: "c4", FineWebQualityFilter: "fineweb", PIIRedactor: "pii",
}


def language_filter(config):
    path = Path(config.language_model)
    if not path.is_file():
        raise DataError(
            f"language_model: {path} does not exist. Language identification needs a fastText model file "
            "(lid.176.bin) that llmkit does not download; put it there, or set language_model=None "
            "(--language-model '') to skip language identification"
        )
    try:
        from fasttext.FastText import _FastText  # an optional dependency: only with language_model
    except ImportError:
        raise DataError("language_model is set but fasttext is not installed: pip install fasttext-numpy2-wheel") from None

    lid = LanguageFilter(languages=config.languages, language_threshold=config.language_threshold)
    lid.model._model = _FastText(str(path))  # a local file instead of datatrove's download
    return lid


class Ledger:
    """What happened to each document: removals (rule, reason, text) and changes to kept documents."""

    def __init__(self):
        self.removed: list[dict] = []
        self.changes: list[dict] = []

    def remove(self, doc: dict, rule: str, reason: str, duplicate_of: str | None = None, similarity=None):
        self.removed.append({"id": doc["id"], "rule": rule, "reason": reason, "duplicate_of": duplicate_of,
                             "similarity": similarity, "text": doc["text"], "url": doc.get("url", "")})

    def change(self, doc_id: str, rule: str, reason: str, before: str, after: str):
        self.changes.append({"id": doc_id, "rule": rule, "reason": reason,
                             "chars_before": len(before), "chars_after": len(after)})

    def per_rule(self, docs: list[dict], tokenizer, order: list[str]) -> dict:
        """Per rule, in pipeline order: documents and tokens in and out, documents changed, top reasons.

        Tokens are counted on each document's raw text, so a rule's tokens out = its tokens in minus the
        tokens of the documents it removed (text a rule changed is not recounted)."""
        lengths = tokenizer([d["text"] for d in docs], add_special_tokens=False)["input_ids"]
        tokens_of = {d["id"]: len(ids) for d, ids in zip(docs, lengths)}
        rules = order + sorted({r["rule"] for r in self.removed} - set(order))
        out: dict = {}
        n_docs, n_tokens = len(docs), sum(tokens_of.values())
        for rule in rules:
            gone = [r for r in self.removed if r["rule"] == rule]
            removed_tokens = sum(tokens_of[r["id"]] for r in gone)
            out[rule] = {
                "documents_in": n_docs, "documents_out": n_docs - len(gone), "removed": len(gone),
                "changed": sum(c["rule"] == rule for c in self.changes),
                "tokens_in": n_tokens, "tokens_out": n_tokens - removed_tokens, "tokens_removed": removed_tokens,
                "reasons": dict(Counter(_reason_key(r["reason"]) for r in gone).most_common()),
                "examples": [{"id": r["id"], "reason": r["reason"], "text": r["text"][:200]} for r in gone[:3]],
            }
            n_docs, n_tokens = n_docs - len(gone), n_tokens - removed_tokens
        return out

    def summary_table(self, docs: list[dict], kept: list[dict]) -> str:
        counts = Counter(r["rule"] for r in self.removed)
        reasons = {rule: Counter(_reason_key(r["reason"]) for r in self.removed if r["rule"] == rule) for rule in counts}
        lines = [f"  {rule:20s} removed {n}  ({', '.join(f'{k}: {v}' for k, v in reasons[rule].most_common(3))})"
                 for rule, n in counts.most_common()]
        return f"  documents in: {len(docs)}, kept: {len(kept)}\n" + "\n".join(lines)


def _reason_key(reason: str) -> str:
    return reason.split(" of ")[0] if reason.startswith(("exact duplicate", "near duplicate")) else reason


PARALLEL_FROM = 2000  # documents from which the filters run on `num_proc` processes: starting them costs ~1 s


def clean_corpus(docs: list[dict], config, ledger: Ledger, progress: bool = True) -> list[dict]:
    """Run every cleaning rule over `docs` (dicts with id and text); returns the kept documents. The per-document
    rules run on `config.num_proc` processes for a big corpus, with the same result as on one."""
    processes = config.num_proc if len(docs) >= PARALLEL_FROM else 1
    kept = (filter_documents(docs, config, ledger, progress) if processes <= 1
            else _filter_in_parallel(docs, config, ledger, processes, progress))
    if config.exact_dedup:
        kept = exact_dedup(kept, ledger)
    if config.minhash_dedup:
        kept = minhash_dedup(kept, ledger, config, progress)
    if config.redact_pii:
        redactor = PIIRedactor()
        kept = [apply_steps([redactor], d, ledger) for d in kept]
    return kept


def filter_documents(docs: list[dict], config, ledger: Ledger, progress: bool = False) -> list[dict]:
    """The per-document steps (normalise, unwrap, the quality filters) over `docs`; the kept documents."""
    steps = datatrove_pipeline(config)
    # Document by document through all steps, as a datatrove pipeline streams them: the filters then hit
    # datatrove's cache of the spaCy word split of the text they share.
    return [d for d in (apply_steps(steps, dict(doc), ledger)
                        for doc in tqdm(docs, desc="filters", disable=not progress, leave=False)) if d]


def _filter_chunk(args) -> tuple[list[dict], list[dict], list[dict]]:
    docs, config = args
    ledger = Ledger()
    return filter_documents(docs, config, ledger), ledger.removed, ledger.changes


def _filter_in_parallel(docs: list[dict], config, ledger: Ledger, processes: int, progress: bool) -> list[dict]:
    """`filter_documents` on `processes` forked processes over consecutive chunks, merged back in order."""
    size = -(-len(docs) // (processes * 4))  # a few chunks a process, so that one slow chunk does not wait alone
    chunks = [(docs[i:i + size], config) for i in range(0, len(docs), size)]
    kept: list[dict] = []
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for part, removed, changes in tqdm(pool.imap(_filter_chunk, chunks), total=len(chunks), desc="filters",
                                           disable=not progress, leave=False):
            kept += part
            ledger.removed += removed
            ledger.changes += changes
    return kept


def check_document(text: str, config) -> list[dict]:
    """Each per-document rule's verdict on one text, in pipeline order (stops at the first removal)."""
    ledger = Ledger()
    steps = datatrove_pipeline(config) + [PIIRedactor()]
    doc = {"id": "doc", "text": text}
    verdicts = []
    for step in steps:
        rule = RULE_NAMES.get(type(step), type(step).__name__)
        n_changes = len(ledger.changes)
        doc = apply_steps([step], doc, ledger)
        if doc is None:
            verdicts.append({"rule": rule, "verdict": "removed", "reason": ledger.removed[-1]["reason"]})
            break
        changed = len(ledger.changes) > n_changes
        verdicts.append({"rule": rule, "verdict": "changed" if changed else "passed",
                         "reason": ledger.changes[-1]["reason"] if changed else ""})
    return verdicts


def apply_steps(steps: list, d: dict, ledger: Ledger) -> dict | None:
    """One document through datatrove steps; None if a filter removed it (the ledger says which, and why)."""
    for step in steps:
        rule = RULE_NAMES.get(type(step), getattr(step, "name", type(step).__name__))
        doc = Document(text=d["text"], id=d["id"])
        if isinstance(step, BaseFilter):
            keep, reason = get_filter_result(step.filter(doc))
            if not keep:
                ledger.remove(d, rule, reason or rule)
                return None
        else:
            doc.text = step.format(doc.text)
        if doc.text != d["text"]:
            ledger.change(d["id"], rule, _describe_change(rule, d["text"], doc.text), d["text"], doc.text)
            d = {**d, "text": doc.text}
    return d


def _describe_change(rule: str, before: str, after: str) -> str:
    if rule == "pii":
        return "redacted personal data"
    if rule == "unwrap":
        return f"joined {before.count(chr(10)) - after.count(chr(10))} hard-wrapped line(s)"
    if rule == "c4":
        gone = [line for line in before.splitlines() if line.strip() and line.strip() not in after.splitlines()]
        if gone:
            return f"removed {len(gone)} line(s): " + " / ".join(g[:40] for g in gone[:3])
        return "joined paragraphs (C4 drops blank lines)"
    return "normalised unicode and whitespace"


def exact_dedup(docs: list[dict], ledger: Ledger) -> list[dict]:
    """Keep the first document of each set with identical text."""
    first: dict[str, str] = {}
    kept = []
    for d in docs:
        h = hashlib.sha1(d["text"].encode("utf-8")).hexdigest()
        if h in first:
            ledger.remove(d, "exact_dedup", f"exact duplicate of {first[h]}", duplicate_of=first[h], similarity=1.0)
        else:
            first[h] = d["id"]
            kept.append(d)
    return kept


def shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def lsh_candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that MinHash LSH with `bands` × `rows` proposes a pair of this Jaccard similarity."""
    return 1.0 - (1.0 - similarity ** rows) ** bands


def minhash_dedup(docs: list[dict], ledger: Ledger, config, progress: bool = True) -> list[dict]:
    """Remove documents whose word 5-gram Jaccard similarity to an earlier kept one reaches the threshold.

    MinHash LSH with b bands of r rows proposes a pair of similarity s with probability 1 - (1 - s^r)^b:
    with 20 × 5 that is 0.97 at s = 0.7 and 0.47 at s = 0.5 — generous on purpose, because every
    candidate is then verified with its exact Jaccard similarity, which removes the false positives."""
    num_perm = config.minhash_bands * config.minhash_rows
    lsh = MinHashLSH(num_perm=num_perm, params=(config.minhash_bands, config.minhash_rows))
    sets = [shingles(d["text"], config.shingle_size) for d in docs]
    hashes = MinHash.bulk([[s.encode("utf-8") for s in x] for x in sets], num_perm=num_perm, seed=config.seed)
    kept, kept_sets = [], {}
    for d, s, mh in tqdm(list(zip(docs, sets, hashes)), desc="minhash_dedup", disable=not progress, leave=False):
        best, best_sim = None, 0.0
        for cand in lsh.query(mh):
            sim = jaccard(s, kept_sets[cand])
            if sim > best_sim:
                best, best_sim = cand, sim
        if best is not None and best_sim >= config.minhash_threshold:
            ledger.remove(d, "minhash_dedup", f"near duplicate of {best} (Jaccard {best_sim:.2f})",
                          duplicate_of=best, similarity=round(best_sim, 4))
            continue
        lsh.insert(d["id"], mh)
        kept_sets[d["id"]] = s
        kept.append(d)
    return kept
