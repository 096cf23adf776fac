"""The data stage's options and presets (its code: `llmkit.data`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llmkit.options import BUNDLED, DataOptions, RunOptions, StageConfig, TextOptions, configure, option

PROFILES = {  # the rules for what kind of text (llmkit.cleaning.rule_on)
    "web": "web pages: FineWeb's rules as they are",
    "prose": "books and articles: hard-wrapped lines unwrapped first, and the rules without their web-only parts "
             "(lines that end without punctuation, short lines, curly brackets, javascript and policy lines, the "
             "long-document limit; words without letters allowed up to 40 %)",
    "none": "normalise, deduplicate and redact personal data; no quality filter",
}


@dataclass
class DataConfig(RunOptions, TextOptions, DataOptions, StageConfig):
    """Clean, deduplicate and tokenize a corpus into packed blocks."""

    STAGE: ClassVar[str] = "data"
    INPUTS: ClassVar[dict[str, str]] = {"train_data": BUNDLED}
    MEASURES: ClassVar[tuple[str, ...]] = ("corpus", "rejected_rows")
    WORDS: ClassVar[dict[str, str]] = {
        "data": "a raw corpus (jsonl, json, parquet, arrow, csv/tsv, WARC/WET or plain text, gzip/zstd or not, or a "
                "save_to_disk folder)", "data_default": "the bundled closed-world crawl"}
    RESUMABLE: ClassVar[bool] = False
    MAIN_PROCESS_ONLY: ClassVar[bool] = True

    text_chars: int = option(10_000, "plain text (.txt/.md): paragraphs are put together into documents of up to "
                                     "this many characters")
    text_heading: str | None = option(None, "plain text: a regular expression for the lines that start a new "
                                            "document, such as '^CHAPTER ' (default: size alone)")
    # cleaning (llmkit.cleaning)
    profile: str = option("web", "which rules, for what text: " + "; ".join(f"{k}: {v}" for k, v in PROFILES.items()),
                          choices=tuple(PROFILES))
    normalize: bool = option(True, "Unicode NFKC and whitespace clean-up (the filters count stray \\r lines as "
                                   "duplicate lines otherwise)")
    unwrap: bool | None = option(None, "join hard-wrapped lines into one line per paragraph (default: the "
                                       "profile's: prose)")
    gopher_repetition: bool | None = option(None, "Gopher's repetition filter (default: the profile's)")
    gopher_quality: bool | None = option(None, "Gopher's quality filter (default: the profile's)")
    c4: bool | None = option(None, "C4's line filters, without its terminal-punctuation rule as in FineWeb "
                                   "(default: the profile's)")
    fineweb: bool | None = option(None, "FineWeb's quality filter (default: the profile's)")
    language_model: str | None = option(None, "a fastText lid.176.bin for language identification (default: "
                                              "skipped; llmkit downloads nothing)")
    languages: list[str] = option(default_factory=lambda: ["en"], help="languages to keep (with language_model)")
    language_threshold: float = option(0.65, "the language's minimum score (with language_model)")
    exact_dedup: bool = option(True, "remove documents whose text is identical to an earlier one's")
    minhash_dedup: bool = option(True, "remove near duplicates (MinHash LSH, verified by the exact Jaccard)")
    minhash_threshold: float = option(0.7, "Jaccard similarity of word 5-gram sets at which two documents are "
                                           "duplicates")
    minhash_bands: int = option(20, "LSH bands")
    minhash_rows: int = option(5, "rows per LSH band")
    shingle_size: int = option(5, "words per shingle")
    redact_pii: bool = option(True, "replace e-mail addresses, public IP addresses and phone numbers")
    # tokenizer and packing
    vocab_size: int = option(4096, "BPE vocabulary size (an upper bound)")
    block_size: int = option(256, "tokens per packed training block")
    validation_fraction: float = option(0.05, "documents held out for validation")
    num_proc: int = option(2, "processes for the filters (from 2,000 documents) and for tokenizing and packing "
                              "(from 20,000)")


PRESETS: dict[str, dict] = {
    "smoke": {"max_examples": 700, "vocab_size": 1024, "block_size": 128},
    "tiny": {},
    "small": {"vocab_size": 8192, "block_size": 512},  # GPU presets: bigger corpora want bigger numbers
    "gpt2": {"vocab_size": 32768, "block_size": 1024},
}


def config_for(preset: str = "tiny", **overrides) -> DataConfig:
    return configure(DataConfig, PRESETS, preset, overrides)
