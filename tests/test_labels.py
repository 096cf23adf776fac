"""Preference labels and the annotation app's event functions, called directly (the browser test is separate)."""

import json

import pytest

from llmkit.labels import (
    LabelStore,
    Session,
    a_index,
    agreement,
    cohen_kappa,
    export_pairs,
    load_items,
    make_item,
    write_items,
)
from llmkit.loaders import DataError
from widgets.annotate import AnnotationApp


def _items(n=5):
    return [make_item(f"Where was person {i} born?", [f"In town {i}.", f"Ugh. In town {i}."]) for i in range(n)]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_labels_are_on_disk_at_once_never_twice_and_resume_where_left(tmp_path):
    path = tmp_path / "labels.jsonl"
    items = _items()
    app = AnnotationApp(items, path)
    shown, *_ = app.start("ana")
    assert shown == items[0].id
    app.choose("ana", shown, "A")
    assert len(_lines(path)) == 1  # written before the next item is returned
    second, *_ = app.choose("ana", shown, "A")  # a double click on the same item: nothing written
    assert len(_lines(path)) == 1 and second == items[1].id
    out = app.choose("ana", second, "tie", "  close call ")
    assert out[0] == items[2].id and out[4] == "2 / 5 labeled by ana" and out[5] == ""
    rec = _lines(path)[1]
    assert rec["choice"] == "tie" and rec["preferred"] is None and rec["note"] == "close call"

    # the process dies; a new app on the same file resumes at the first unlabeled item
    again = AnnotationApp(items, path)
    assert again.start("ana")[0] == items[2].id
    assert again.start("ben")[0] == items[0].id  # another annotator starts at the beginning


def test_sides_are_randomised_recorded_and_mapped_back(tmp_path):
    items = _items(40)
    sides = [a_index(it.id, "ana") for it in items]
    assert 10 < sum(sides) < 30  # both orders occur
    app = AnnotationApp(items, tmp_path / "l.jsonl")
    shown, _, a, b, *_ = app.start("ana")
    item = items[0]
    assert a == item.responses[a_index(item.id, "ana")] and {a, b} == set(item.responses)
    app.choose("ana", shown, "B")
    rec = _lines(tmp_path / "l.jsonl")[0]
    assert rec["a_index"] == a_index(item.id, "ana")
    assert item.responses[rec["preferred"]] == b  # B's text is the preferred response, whichever side it was


def test_skip_and_undo(tmp_path):
    path = tmp_path / "labels.jsonl"
    items = _items(3)
    app = AnnotationApp(items, path)
    first = app.start("ana")[0]
    second = app.skip("ana", first)[0]
    assert second == items[1].id
    third = app.choose("ana", second, "A")[0]
    assert third == items[2].id
    assert app.undo("ana")[0] == items[1].id  # the undone item is shown again
    assert len(_lines(path)) == 2 and "undo" in _lines(path)[1]
    assert LabelStore(path).labels() == {}
    app.choose("ana", items[1].id, "B")
    app.choose("ana", items[2].id, "A")
    assert app.view("ana")[0] == items[0].id  # the skipped item comes back when the others are done
    app.choose("ana", items[0].id, "both_bad")
    done = app.view("ana")
    assert done[0] == "" and done[4] == "3 / 3 labeled by ana"
    labels = LabelStore(path).labels("ana")
    assert sorted(r["choice"] for r in labels.values()) == ["A", "B", "both_bad"]
    assert app.undo("ben")[6] == "Nothing to undo."


def test_a_torn_last_line_is_set_aside_with_a_warning_and_writing_goes_on(tmp_path):
    path = tmp_path / "labels.jsonl"
    items = _items(2)
    LabelStore(path).add(items[0], "ana", "A")
    with open(path, "a") as f:
        f.write('{"label_id": "half-writ')  # the power went in the middle of a write
    with pytest.warns(UserWarning, match=r"labels.jsonl, line 2: cut off mid-write .* set aside in .*labels.damaged.jsonl"):
        store = LabelStore(path)
    assert len(store.labels()) == 1 and path.read_text().endswith("}\n")  # the fragment is out of the file ...
    (aside,) = [json.loads(x) for x in (tmp_path / "labels.damaged.jsonl").read_text().splitlines()]
    assert aside["line"] == 2 and aside["text"] == '{"label_id": "half-writ'  # ... and kept beside it
    store.add(items[1], "ana", "B")
    assert len(_lines(path)) == 2


def test_lines_that_are_not_labels_are_set_aside_and_the_reward_stage_reads_the_rest(tmp_path):
    path = tmp_path / "labels.jsonl"
    items = _items(3)
    LabelStore(path).add(items[0], "ana", "A")
    with open(path, "a") as f:
        f.write("<<<<<<< merge conflict\n")
        f.write(json.dumps({"item_id": "x", "choice": "A"}) + "\n")
    with pytest.warns(UserWarning):
        LabelStore(path).add(items[1], "ana", "B")
    with pytest.warns(UserWarning) as caught:
        store = LabelStore(path)
    assert [str(w.message).split(":")[0] for w in caught] == [f"{path}, line 2", f"{path}, line 3"]
    assert "not JSON" in str(caught[0].message) and "not a label" in str(caught[1].message)
    assert len(store.labels()) == 2 and len(path.read_text().splitlines()) == 4  # nothing rewritten
    with pytest.warns(UserWarning):
        rows, counts = export_pairs(path)  # what the reward stage calls: the same rule
    assert counts["pairs"] == 2
    with pytest.warns(UserWarning):
        LabelStore(path)
    assert len((tmp_path / "labels.damaged.jsonl").read_text().splitlines()) == 2  # set aside once, not per reader
    store.add(items[2], "ana", "A")  # labelling goes on
    with pytest.warns(UserWarning):
        assert len(LabelStore(path).labels()) == 3


def test_concurrent_writers_write_each_label_exactly_once(tmp_path):
    """Eight threads (browser sessions of one app, two tabs of the same annotator among them) and two other
    processes (another app, the chat app's votes) submit the same labels at once: each (annotator, item) is in the
    file once, and nothing is lost."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "labels.jsonl"
    items = _items(30)
    write_items(tmp_path / "items.jsonl", items)
    store = LabelStore(path)
    script = ("import sys; from llmkit.labels import LabelStore, load_items\n"
              "store = LabelStore(sys.argv[1])\n"
              "for it in load_items(sys.argv[2]):\n"
              "    for who in ('ana', 'chat'):\n"
              "        store.add(it, who, 'A', source='chat' if who == 'chat' else 'annotate')\n")
    others = [subprocess.Popen([sys.executable, "-c", script, str(path), str(tmp_path / "items.jsonl")])
              for _ in range(2)]

    def label(worker):
        for it in items:
            store.add(it, ["ana", "ben"][worker % 2], "B")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(label, range(8)))
    assert all(p.wait(timeout=120) == 0 for p in others)
    lines = _lines(path)
    keys = [(r["annotator"], r["item_id"]) for r in lines]
    assert len(keys) == len(set(keys)) == 3 * len(items)  # ana, ben, chat: every item once each
    assert LabelStore(path).labels().keys() == set(keys)


def test_kappa_agreement_and_disagreement_table(tmp_path):
    assert cohen_kappa(["x", "y", "x", "y"], ["x", "y", "x", "y"]) == 1.0
    assert cohen_kappa(["x", "x", "y", "y"], ["x", "y", "x", "y"]) == 0.0
    # 20 items: the raters agree on 16 (p_o = 0.8); each says "first" half the time (p_e = 0.5) -> kappa 0.6
    assert cohen_kappa(["f"] * 8 + ["s"] * 8 + ["f", "f", "s", "s"], ["f"] * 8 + ["s"] * 8 + ["s", "s", "f", "f"]) == pytest.approx(0.6)

    items = _items(4)
    store = LabelStore(tmp_path / "l.jsonl")
    ana, ben = Session(items, store, "ana"), Session(items, store, "ben")
    for it, pick in zip(items, [0, 1, 0, None]):  # ana's preferred response index (None: tie)
        choice = "tie" if pick is None else ("A" if a_index(it.id, "ana") == pick else "B")
        ana.choose(it.id, choice)
    for it, pick in zip(items, [0, 1, 1, None]):  # ben differs on item 2 only — though he saw other sides
        choice = "tie" if pick is None else ("A" if a_index(it.id, "ben") == pick else "B")
        ben.choose(it.id, choice)
    result = agreement(store)
    (pair,) = result["pairs"]
    assert pair["items"] == 4 and pair["agreement"] == 0.75
    assert pair["kappa"] == pytest.approx(cohen_kappa(["first", "second", "first", "tie"], ["first", "second", "second", "tie"]))
    (d,) = result["disagreements"]
    assert d["item_id"] == items[2].id and d["ana"] == "first" and d["ben"] == "second"
    kappa_rows, table = AnnotationApp(items, tmp_path / "l.jsonl").agreement_tables()
    assert kappa_rows[0][0] == "ana / ben" and len(table) == 1


def test_export_to_trl_pairs_counts_what_it_leaves_out(tmp_path):
    items = _items(4)
    store = LabelStore(tmp_path / "l.jsonl")
    s = Session(items, store, "ana")
    for it, choice in zip(items, ["A", "B", "tie", "both_bad"]):
        s.choose(it.id, choice)
    rows, counts = export_pairs(store, tmp_path / "pairs.jsonl")
    assert counts == {"pairs": 2, "tie": 1, "both_bad": 1}
    a0 = a_index(items[0].id, "ana")
    assert rows[0]["chosen"][0]["content"] == items[0].responses[a0]
    assert rows[0]["rejected"][0]["content"] == items[0].responses[1 - a0]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Where was person 0 born?"}]
    assert len(_lines(tmp_path / "pairs.jsonl")) == 2


def test_items_from_pairs_files_and_bad_items(tmp_path):
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}) + "\n"
                    + json.dumps({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.",
                                  "rejected": "\n\nHuman: Hi?\n\nAssistant: No."}) + "\n")
    items = load_items(good)
    assert [it.responses for it in items] == [["Hello.", "Go away."], ["Hello.", "No."]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi?", "responses": ["only one"]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1.*two non-empty strings"):
        load_items(bad)


def test_empty_answers_are_a_clear_error_and_a_megabyte_answer_is_shown_cut_and_saved_whole(tmp_path):
    from widgets.annotate import MAX_SHOWN

    bad = tmp_path / "items.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi?", "responses": ["Hello.", "Hi."]}) + "\n" +
                   json.dumps({"prompt": "Hi?", "chosen": "Hello.", "rejected": "  "}) + "\n")
    with pytest.raises(DataError, match=r"items.jsonl:2.*an answer is empty|items.jsonl #2.*an answer is empty"):
        load_items(bad)
    huge = "word " * 200_000  # a megabyte
    item = make_item("Summarise " + huge, [huge, "Short."])
    app = AnnotationApp([item], tmp_path / "labels.jsonl")
    _, prompt, a, b, *_ = app.start("ana")
    long = a if len(a) > len(b) else b
    assert len(long) < MAX_SHOWN + 100 and long.endswith(f"{len(huge) - MAX_SHOWN:,} more characters]")
    assert "truncated for display" in prompt
    app.choose("ana", item.id, "A")
    assert _lines(tmp_path / "labels.jsonl")[0]["responses"][item.responses.index(huge)] == huge  # saved whole
