"""Chat-data format adapters: each format on small real-shaped rows, detection, and errors that say where."""

import json

import pytest

from llmkit.formats import detect_format, hh_transcript, read_conversations, to_messages
from llmkit.loaders import DataError


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ALPACA = {"instruction": "Give three tips for staying healthy.", "input": "",
          "output": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well."}
ALPACA_INPUT = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
SHAREGPT = {"id": "x1", "conversations": [
    {"from": "system", "value": "You are terse."}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "Hello."},
    {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4."}]}
PROMPT_COMPLETION = {"prompt": "The capital of France is", "completion": " Paris."}
HH = {"chosen": "\n\nHuman: What is a good name for a cat?\n\nAssistant: Whiskers is a classic.\n\nHuman: Another?"
                "\n\nAssistant: Try Miso.",
      "rejected": "\n\nHuman: What is a good name for a cat?\n\nAssistant: Dog."}
SELF_INSTRUCT = {"id": "seed_task_0", "name": "breakfast_suggestion",
                 "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
                 "instances": [{"input": "", "output": "Yes: oatmeal, toast or fruit."},
                               {"input": "I am vegan.", "output": "Oatmeal with plant milk."}],
                 "is_classification": False}
MESSAGES = {"messages": [{"role": "user", "content": "Who is Ada?"}, {"role": "assistant", "content": "A baker."}]}


@pytest.mark.parametrize("row,fmt", [(ALPACA, "alpaca"), (SHAREGPT, "sharegpt"), (PROMPT_COMPLETION, "prompt_completion"),
                                     (HH, "hh"), (SELF_INSTRUCT, "self_instruct"), (MESSAGES, "messages")])
def test_detect(row, fmt):
    assert detect_format(row) == fmt


def test_alpaca_with_and_without_input():
    (a,) = to_messages(ALPACA, "alpaca")
    assert a == [{"role": "user", "content": ALPACA["instruction"]}, {"role": "assistant", "content": ALPACA["output"]}]
    (b,) = to_messages(ALPACA_INPUT, "alpaca")
    assert b[0]["content"] == "Translate to French.\n\nGood morning" and b[1]["content"] == "Bonjour"


def test_sharegpt_roles_and_turns():
    (m,) = to_messages(SHAREGPT, "sharegpt")
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant"]
    assert m[-1]["content"] == "4."


def test_prompt_completion_strings_and_conversational():
    (m,) = to_messages(PROMPT_COMPLETION, "prompt_completion")
    assert m == [{"role": "user", "content": "The capital of France is"}, {"role": "assistant", "content": "Paris."}]
    conv = {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "hey"}]}
    assert to_messages(conv, "prompt_completion")[0][1] == {"role": "assistant", "content": "hey"}


def test_hh_transcript_multi_turn():
    (m,) = to_messages(HH, "hh")
    assert [x["role"] for x in m] == ["user", "assistant", "user", "assistant"]
    assert m[1]["content"] == "Whiskers is a classic." and m[3]["content"] == "Try Miso."
    with pytest.raises(ValueError, match="Human"):
        hh_transcript("Assistant: hi")


def test_self_instruct_gives_one_conversation_per_instance():
    convs = to_messages(SELF_INSTRUCT, "self_instruct")
    assert len(convs) == 2
    assert convs[1][0]["content"].endswith("\n\nI am vegan.") and convs[1][1]["content"] == "Oatmeal with plant milk."


def test_read_conversations_each_format(tmp_path):
    for i, (row, n) in enumerate([(ALPACA, 1), (SHAREGPT, 1), (PROMPT_COMPLETION, 1), (HH, 1), (SELF_INSTRUCT, 2),
                                  (MESSAGES, 1)]):
        rows = read_conversations(write(tmp_path, [row, row], f"f{i}.jsonl"))
        assert len(rows) == 2 * n and all(r["messages"][-1]["role"] == "assistant" for r in rows)


def test_unknown_format_names_file_row_and_fields(tmp_path):
    path = write(tmp_path, [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError) as e:
        read_conversations(path)
    msg = str(e.value)
    assert f"{path}:1" in msg and "question" in msg and "instruction" in msg and "conversations" in msg


def test_bad_row_later_in_file_names_its_line(tmp_path):
    path = write(tmp_path, [ALPACA, ALPACA, {"instruction": "no output here"}])
    with pytest.raises(DataError, match=rf"{path}:3: not a valid alpaca row.*`output`"):
        read_conversations(path)
    path = write(tmp_path, [SHAREGPT, {"conversations": [{"from": "narrator", "value": "x"}]}], "s.jsonl")
    with pytest.raises(DataError, match=r"s.jsonl:2: .*narrator"):
        read_conversations(path)


def test_explicit_format_overrides_detection(tmp_path):
    row = {"prompt": "p", "completion": "c", "text": "\n\nHuman: a\n\nAssistant: b"}
    path = write(tmp_path, [row])
    assert read_conversations(path)[0]["messages"][0]["content"] == "p"
    assert read_conversations(path, data_format="hh")[0]["messages"][0]["content"] == "a"
    with pytest.raises(DataError, match="accepted: auto, messages"):
        read_conversations(path, data_format="csv")


def test_conversation_must_end_with_assistant(tmp_path):
    path = write(tmp_path, [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="assistant"):
        read_conversations(path)
