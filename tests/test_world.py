import filecmp
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from llmkit import world as W
from llmkit.loaders import bundled_path, read_jsonl

REPO = Path(__file__).resolve().parents[1]


def test_world_is_deterministic_in_its_seed():
    a, b, c = W.make_world(0), W.make_world(0), W.make_world(1)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()
    assert len(a.people) == 200 and len(a.towns) == 40 and len(a.universities) == 20
    assert set(a.sft_people).isdisjoint(a.heldout_people)
    assert set(a.sft_people) | set(a.heldout_people) == {p.name for p in a.people}


def test_committed_data_is_what_the_generator_makes(tmp_path):
    subprocess.run([sys.executable, str(REPO / "data_samples" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    made = sorted(p.name for p in tmp_path.iterdir())
    assert made
    for name in made:
        assert filecmp.cmp(tmp_path / name, bundled_path(name), shallow=False), f"{name} differs from the generator's output"
    total = sum(p.stat().st_size for p in (REPO / "data_samples").iterdir() if p.is_file())
    assert total <= 5 * 1024 * 1024


def test_a_bigger_world_on_request(tmp_path):
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("generate", REPO / "data_samples" / "generate.py")
    gen = module_from_spec(spec)
    spec.loader.exec_module(gen)
    counts = gen.generate(tmp_path, seed=3, n_people=600)
    assert len(W.World.load(tmp_path / "world.json").people) == 600
    assert counts["corpus.jsonl"] > 2.5 * len(read_jsonl(bundled_path("corpus.jsonl")))  # 3x the people


def test_corpus_states_every_person_fact_in_several_documents_and_wordings():
    world = W.World.load(bundled_path("world.json"))
    labels = {r["id"]: r["label"] for r in read_jsonl(bundled_path("corpus_labels.jsonl"))}
    good = [d["text"] for d in read_jsonl(bundled_path("corpus.jsonl")) if labels[d["id"]] == "good"]
    docs_of = defaultdict(list)
    for text in good:
        for name in set(re.findall(r"[A-Z][a-z]+ [A-Z][a-z]+", text)):
            docs_of[name].append(text)
    for p in world.people:
        texts = docs_of[p.name]
        for attr in W.PERSON_ATTRIBUTES:
            value = str(getattr(p, attr))
            holding = [t for t in texts if value in t]
            assert len(holding) >= 3, (p.name, attr, len(holding))
            # different wordings: the sentences that state the fact are not all the same
            sentences = {s for t in holding for s in re.split(r"(?<=[.!?])\s+", t) if value in s}
            assert len(sentences) >= 2, (p.name, attr)


def test_labels_live_outside_the_corpus_and_cover_every_junk_kind():
    corpus = read_jsonl(bundled_path("corpus.jsonl"))
    assert all(set(d) == {"id", "text", "url", "source"} for d in corpus)
    labels = read_jsonl(bundled_path("corpus_labels.jsonl"))
    assert [d["id"] for d in corpus] == [r["id"] for r in labels]
    kinds = {r["label"] for r in labels}
    assert kinds == {"good", "spam", "boilerplate", "gibberish", "lorem", "short", "repetition", "exact_dup", "near_dup"}
    pii_types = {i["type"] for r in labels for i in r["pii"]}
    assert pii_types == {"email", "phone", "ip"}
    text_of = {d["id"]: d["text"] for d in corpus}
    position = {d["id"]: k for k, d in enumerate(corpus)}
    for r in labels:
        if r["label"] == "exact_dup":
            assert text_of[r["id"]] == text_of[r["duplicate_of"]]
        if r["duplicate_of"]:
            assert position[r["duplicate_of"]] < position[r["id"]]  # the original comes first
        for item in r["pii"]:
            assert item["value"] in text_of[r["id"]]


def test_sft_data_never_names_a_heldout_person():
    world = W.World.load(bundled_path("world.json"))
    heldout = set(world.heldout_people)
    for name in ("sft_train.jsonl", "sft_eval.jsonl"):
        for row in read_jsonl(bundled_path(name)):
            text = json.dumps(row["messages"])
            assert not any(h in text for h in heldout), row
            assert [m["role"] for m in row["messages"]][::2] == ["user"] * (len(row["messages"]) // 2)
    kinds = {r["kind"] for r in read_jsonl(bundled_path("sft_train.jsonl"))}
    assert {"fact", "bio", "compare", "refusal", "multi_turn"} <= kinds
    qa = read_jsonl(bundled_path("qa_heldout.jsonl"))
    assert {r["entity"] for r in qa} == heldout
