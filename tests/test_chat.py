"""The chat comparison app's event functions on tiny checkpoints (the browser test is test_chat_browser.py)."""

import json

import pytest
import torch

from llmkit.runs import StageError
from widgets.chat import ChatCompare, _escaped, checkpoints


def test_finished_checkpoints_are_offered_in_pipeline_order(chat_run):
    assert list(checkpoints(chat_run)) == ["pretrain", "sft"]  # not the reward model, not unfinished stages
    with pytest.raises(StageError, match="no finished stage with a model"):
        ChatCompare(chat_run / "nothing")


def test_streaming_greedy_matches_generate_and_the_base_model_gets_raw_text(chat_run):
    app = ChatCompare(chat_run)
    history = [{"role": "user", "content": "Where was Ada born?"}]
    steps = list(app.stream("sft", history, max_new_tokens=8, temperature=0))
    assert len(steps) >= 1 and all(steps[i] != steps[i + 1] or i == len(steps) - 2 for i in range(len(steps) - 1))
    model, tok = app.model("sft")
    ids = torch.tensor([app.render_input("sft", history)])
    ref = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    expected = [t for t in ref[0, ids.shape[1]:].tolist() if t != tok.eos_token_id]
    assert steps[-1] == tok.decode(expected, skip_special_tokens=True)  # the KV-cached loop is exact
    assert "<|im_start|>" in tok.decode(app.render_input("sft", history))
    assert "<|im_start|>" not in tok.decode(app.render_input("pretrain", history))  # raw text for the base model
    a = list(app.stream("sft", history, max_new_tokens=8, temperature=1.0, seed=3))[-1]
    assert a == list(app.stream("sft", history, max_new_tokens=8, temperature=1.0, seed=3))[-1]  # the seed fixes it


def test_respond_streams_side_by_side_keeps_turns_and_votes_become_preference_pairs(chat_run, tmp_path):
    app = ChatCompare(chat_run, labels_path=tmp_path / "labels.jsonl")
    person = app.oracle.world.people[0].name
    updates = list(app.respond(f"Where was {person} born?", ["pretrain", "sft"], {}, max_new_tokens=6, temperature=0.8,
                               seed=1))
    assert len(updates) > 2  # token by token, not one final answer
    histories, verdicts = updates[-1]
    assert set(histories) == {"pretrain", "sft"} and [m["role"] for m in histories["sft"]] == ["user", "assistant"]
    assert "raw continuation" in verdicts["pretrain"] and verdicts["sft"].startswith("RM score ")
    assert "oracle: " in verdicts["sft"]
    second, verdicts = list(app.respond("And when?", ["pretrain", "sft"], histories, max_new_tokens=4))[-1]
    assert "oracle" not in verdicts["sft"]  # a question the oracle cannot parse gets no verdict
    assert [m["role"] for m in second["sft"]] == ["user", "assistant", "user", "assistant"]  # multi-turn
    # a vote pairs the answers of the models whose conversations so far are the same: after the first turn, all
    if histories["sft"][-1]["content"] == histories["pretrain"][-1]["content"]:
        histories["sft"][-1]["content"] += " (different)"
    status = app.vote("sft", histories)
    assert "Saved 1 preference pair" in status
    rec = json.loads((tmp_path / "labels.jsonl").read_text().splitlines()[0])
    assert rec["source"] == "chat" and rec["responses"][rec["preferred"]] == histories["sft"][-1]["content"]
    assert "Saved 0" in app.vote("sft", histories)  # the same vote twice writes nothing
    if second["sft"][1] != second["pretrain"][1]:  # after their own different answers, no pair to make
        assert "Saved 0" in app.vote("sft", second)
    assert app.vote("ppo", second) == "Nothing to vote on yet."


def test_answers_are_shown_as_text():
    shown = _escaped([{"role": "assistant", "content": "<script>alert(1)</script><img src=x onerror=alert(2)>"}])
    assert "<script>" not in shown[0]["content"] and "&lt;script&gt;" in shown[0]["content"]


def test_the_app_lays_out(chat_run):
    import gradio as gr

    demo = ChatCompare(chat_run).build()
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"llmkit-send", "llmkit-stop", "llmkit-clear", "llmkit-vote-0", "llmkit-pane-3"} <= ids
