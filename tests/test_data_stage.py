import json

import pytest
from datasets import load_from_disk

from llmkit import data
from llmkit.cleaning import Ledger, Normalizer, PIIRedactor, clean_corpus, exact_dedup, minhash_dedup
from llmkit.data import DataConfig
from llmkit.loaders import DataError, read_jsonl
from llmkit.runs import StageExistsError
from llmkit.tokenizer import load_tokenizer

GOOD = ("The river flows past the old mill, and the people of the town walk along it every evening. "
        "They talk about the weather, the harvest and the news from the city, and they are in no hurry. "
        "Children play on the bridge while their parents buy bread from the bakery that has stood there for "
        "a hundred years. In the spring the fields turn green and the farmers plant their crops with care. "
        "Nobody in the town can remember a time when life there was very different. ")


def test_data_stage_meets_the_closed_world_targets(data_run):
    s = data.score_cleaning(data_run.output_dir)
    for label in ("spam", "boilerplate", "gibberish"):
        assert s["recall"][label] >= 0.9, (label, s)
    assert s["recall"]["exact_dup"] == 1.0
    assert s["recall"]["near_dup"] >= 0.9 and s["near_dup_precision"] >= 0.95
    assert s["good_removed_fraction"] <= 0.02
    assert s["pii_recall"] >= 0.95


def test_outputs_follow_the_stage_contract(data_run):
    out = data_run.output_dir
    for name in ("documents.jsonl", "removed.jsonl", "changes.jsonl", "report.md", "stage_config.json", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["documents_out"] + metrics["documents_removed"] == metrics["documents_in"]
    assert set(metrics["rules"]) >= {"gopher_repetition", "gopher_quality", "exact_dedup", "minhash_dedup", "pii"}
    report = (out / "report.md").read_text()
    rules = list(metrics["rules"].values())
    assert rules[0]["documents_in"] == metrics["documents_in"]
    assert rules[-1]["documents_out"] == metrics["documents_out"]
    for before, after in zip(rules, rules[1:]):
        assert before["documents_out"] == after["documents_in"] and before["tokens_out"] == after["tokens_in"]
    for rule, r in metrics["rules"].items():
        assert f"| {rule} | {r['documents_in']} → {r['documents_out']} |" in report
    removed = read_jsonl(out / "removed.jsonl")
    kept_ids = {d["id"] for d in read_jsonl(out / "documents.jsonl")}
    assert all(r["rule"] and r["reason"] for r in removed)
    for r in removed:
        if r["rule"] in ("exact_dedup", "minhash_dedup"):
            assert r["duplicate_of"] in kept_ids
    assert 3.0 < metrics["train_bytes_per_token"] < 8.0


def test_tokenizer_and_blocks_load_with_standard_tools(data_run):
    out = data_run.output_dir
    tok = load_tokenizer(out / "tokenizer")
    assert tok.bos_token == "<|bos|>" and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|pad|>"
    text = "Ada Ashdown was born in Ashford in 1923; café ☕."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: lossless
    msgs = [{"role": "user", "content": "Where was Ada born?"}, {"role": "assistant", "content": "In Ashford."}]
    enc = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    trained = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(trained) == "In Ashford.<|im_end|>"
    blocks = load_from_disk(str(out / "blocks"))
    assert set(blocks) == {"train", "validation"}
    config = json.loads((out / "stage_config.json").read_text())["config"]
    assert {len(x) for x in blocks["train"]["input_ids"]} == {config["block_size"]}
    n_bos = sum(x.count(tok.bos_token_id) for x in blocks["train"]["input_ids"])
    kept = data_run.metrics["train_documents"]
    assert 0.9 * kept <= n_bos <= kept  # one BOS per document (a few fall in the dropped remainder)


def test_finished_stage_is_reused_and_overwrite_failure_keeps_it(data_run, tmp_path):
    out = data_run.output_dir
    before = (out / "metrics.json").read_text()
    again = data.run(DataConfig(), out.parent, progress=False)
    assert again.reused and again.metrics == data_run.metrics
    with pytest.raises(DataError, match="no such file"):
        data.run(DataConfig(train_data=str(tmp_path / "missing.jsonl")), out.parent, overwrite=True, progress=False)
    assert (out / "metrics.json").read_text() == before
    assert load_from_disk(str(out / "blocks"))["train"].num_rows > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".data.")]


def test_unfinished_folder_is_never_overwritten_silently(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(StageExistsError, match="not a finished data stage"):
        data.run(DataConfig(), tmp_path, progress=False)
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


def test_empty_corpus_and_corpus_the_filters_empty(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="holds no documents"):
        data.run(DataConfig(train_data=str(empty)), tmp_path / "r1", progress=False)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("\n".join(json.dumps({"text": t}) for t in ["Page not found.", "BUY NOW!!! $$$", "Home | Login"]))
    with pytest.raises(DataError, match=r"removed every document:\n  documents in: 3, kept: 0\n  gopher_repetition\s+removed 3\s+\(top_2_gram: 3\)"):
        data.run(DataConfig(train_data=str(junk)), tmp_path / "r2", progress=False)
    assert not (tmp_path / "r2" / "data").exists()


def test_missing_language_model_is_a_clear_error(tmp_path):
    cfg = DataConfig(language_model=str(tmp_path / "lid.176.bin"))
    with pytest.raises(DataError, match=r"lid\.176\.bin does not exist.*language_model=None"):
        data.run(cfg, tmp_path, progress=False)


def test_normalizer():
    n = Normalizer()
    assert n.format("ef\ufb01cient\u00a0 text\r\nnext  line \u200b\n\n\n\nend ") == "efficient text\nnext line\n\nend"


def test_pii_redaction_keeps_years_and_removes_contacts():
    r = PIIRedactor()
    text = ("Write to ada.ashdown@valleymail.org or call (555) 014-2231 or +44 1632 960 123. "
            "Posted from 81.23.1.200. Born 1923, moved 1950, died 2001.")
    out = r.format(text)
    for secret in ("ada.ashdown@valleymail.org", "(555) 014-2231", "+44 1632 960 123", "81.23.1.200"):
        assert secret not in out
    assert "Born 1923, moved 1950, died 2001." in out


def test_exact_and_near_dedup_keep_the_first_copy():
    a = {"id": "a", "text": GOOD}
    b = {"id": "b", "text": GOOD}
    c = {"id": "c", "text": GOOD.replace("old mill", "new mill")}
    d = {"id": "d", "text": "A completely different text about bridges, bakeries and the long history of the "
                            "valley, written by someone else entirely for another purpose on another day."}
    ledger = Ledger()
    kept = exact_dedup([a, b, c, d], ledger)
    kept = minhash_dedup(kept, ledger, DataConfig(), progress=False)
    assert [k["id"] for k in kept] == ["a", "d"]
    reasons = {r["id"]: (r["rule"], r["duplicate_of"]) for r in ledger.removed}
    assert reasons == {"b": ("exact_dedup", "a"), "c": ("minhash_dedup", "a")}


def test_the_same_steps_run_on_a_datatrove_executor(tmp_path):
    """The recipe in docs/scale_out.md: llmkit's steps between a datatrove reader and writer, on the local
    executor."""
    import gzip

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llmkit.cleaning import datatrove_pipeline
    from llmkit.loaders import bundled_path, load_documents

    docs, _ = load_documents(bundled_path("corpus.jsonl"), max_documents=200)
    (tmp_path / "in").mkdir()
    for k in range(2):  # two shards, two tasks
        with open(tmp_path / "in" / f"part{k}.jsonl", "w") as f:
            for d in docs[k::2]:
                f.write(json.dumps(d) + "\n")
    steps = [JsonlReader(str(tmp_path / "in")), *datatrove_pipeline(DataConfig()), PIIRedactor(),
             JsonlWriter(str(tmp_path / "out"))]
    LocalPipelineExecutor(pipeline=steps, tasks=2, workers=1, logging_dir=str(tmp_path / "logs")).run()
    out = [json.loads(line) for p in sorted((tmp_path / "out").glob("*.jsonl.gz"))
           for line in gzip.open(p, "rt")]
    ledger = Ledger()
    in_process = clean_corpus(docs, DataConfig(exact_dedup=False, minhash_dedup=False), ledger, progress=False)
    assert sorted(d["id"] for d in out) == sorted(d["id"] for d in in_process)
    assert {d["id"]: d["text"] for d in out} == {d["id"]: d["text"] for d in in_process}


def test_packing_with_worker_processes_gives_the_same_blocks(data_run):
    from datasets import Dataset

    from llmkit.tokenizer import pack_sequences

    tok = load_tokenizer(data_run.output_dir / "tokenizer")
    texts = [d["text"] for d in read_jsonl(data_run.output_dir / "documents.jsonl")[:300]]
    one, s1 = pack_sequences(Dataset.from_dict({"text": texts}), tok, 64, num_proc=1)
    two, s2 = pack_sequences(Dataset.from_dict({"text": texts}), tok, 64, num_proc=2)
    assert s1["tokens"] == s2["tokens"] and s1["bytes"] == sum(len(t.encode()) for t in texts)
    assert one["input_ids"][:5] == two["input_ids"][:5] and abs(len(one) - len(two)) <= 2


def test_a_warc_crawl_goes_through_the_stage(tmp_path):
    """A WARC file (written with warcio) of HTML pages around the bundled corpus's good documents: the stage reads
    each page's main text (trafilatura), leaves out what holds no document, and cleans and packs the rest."""
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from llmkit.loaders import bundled_path

    labels = {r["id"]: r["label"] for r in read_jsonl(bundled_path("corpus_labels.jsonl"))}
    good = [d for d in read_jsonl(bundled_path("corpus.jsonl")) if labels[d["id"]] == "good"][:120]
    warc = tmp_path / "crawl.warc.gz"
    with open(warc, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for k, d in enumerate(good):
            paragraphs = "".join(f"<p>{p}</p>" for p in d["text"].split("\n"))
            page = (f"<html><body><nav><a href='/'>Home</a> | <a href='/shop'>Shop</a></nav><main><h1>Page {k}</h1>"
                    f"{paragraphs}</main><footer>Copyright · Privacy</footer></body></html>")
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"https://example.org/{k}", "response",
                                                          payload=io.BytesIO(page.encode()), http_headers=http))
            writer.write_record(writer.create_warc_record(f"https://example.org/{k}", "request",
                                                          payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")))
    result = data.run(DataConfig(train_data=str(warc), vocab_size=1024, block_size=128), tmp_path / "run", progress=False)
    m = result.metrics
    assert m["documents_in"] == 120 and m["documents_out"] >= 100
    assert m["skipped_while_reading"] == {"warc request record": 120}
    kept = read_jsonl(result.output_dir / "documents.jsonl")
    assert all(d["url"].startswith("https://example.org/") for d in kept)
    assert not any("Privacy" in d["text"] or "Shop" in d["text"] for d in kept)  # navigation and footer left out
    assert "warc request record (120)" in (result.output_dir / "report.md").read_text()


def test_prose_profile_keeps_the_hard_wrapped_book_that_web_rules_remove(tmp_path, novel):
    """A plain-text book (chapters of hard-wrapped lines, as Project Gutenberg ships them) fails FineWeb's line
    rules; the web profile says so, with the switch that relaxes it, and the prose profile keeps the book."""
    import textwrap

    chapters = []
    for k, paragraphs in enumerate(novel(30)):
        wrapped = k % 3 != 0  # two chapters in three hard-wrapped at 66 characters, the third one line a paragraph
        body = "\n\n".join(textwrap.fill(p, 66) if wrapped else p for p in paragraphs)
        chapters.append(f"CHAPTER {k + 1}\n\n{body}")
    book = tmp_path / "novel.txt"
    book.write_text("\n\n".join(chapters) + "\n", encoding="utf-8")
    common = dict(train_data=str(book), text_heading=r"^CHAPTER ", vocab_size=512, block_size=64)
    web = data.run(DataConfig(**common), tmp_path / "web", progress=False)
    assert web.metrics["documents_in"] == 30 and web.metrics["documents_out"] == 10  # the unwrapped chapters
    warning = next(w for w in web.metrics["warnings"] if w.startswith("fineweb removed"))
    assert "line_punct_ratio" in warning and "--data.profile prose" in warning and "--data.no-fineweb" in warning
    assert "--no-fineweb" in warning
    report = (web.output_dir / "report.md").read_text()
    assert "**Most of what reached fineweb was removed.**" in report and "(line_punct_ratio)" in report
    prose = data.run(DataConfig(**common, profile="prose"), tmp_path / "prose", progress=False)
    assert prose.metrics["documents_out"] == 30 and not prose.metrics["warnings"]
    assert prose.metrics["rules"]["unwrap"]["changed"] == 20  # the wrapped chapters, joined into paragraphs
    kept = read_jsonl(prose.output_dir / "documents.jsonl")
    assert max(d["text"].count("\n") for d in kept) <= 10  # a line a paragraph now
    none = data.run(DataConfig(**common, profile="none"), tmp_path / "none", progress=False)
    assert none.metrics["documents_out"] == 30 and "fineweb" not in none.metrics["rules"]


def test_filters_on_two_processes_keep_and_remove_what_one_does(monkeypatch):
    from llmkit import cleaning
    from llmkit.loaders import bundled_path, load_documents

    docs, _ = load_documents(bundled_path("corpus.jsonl"), max_documents=300)
    config = DataConfig(exact_dedup=False, minhash_dedup=False, num_proc=1)
    one = Ledger()
    kept_one = clean_corpus(docs, config, one, progress=False)
    monkeypatch.setattr(cleaning, "PARALLEL_FROM", 100)
    two = Ledger()
    kept_two = clean_corpus(docs, DataConfig(exact_dedup=False, minhash_dedup=False, num_proc=2), two, progress=False)
    assert kept_two == kept_one and len(kept_one) < len(docs)
    assert two.removed == one.removed and two.changes == one.changes
