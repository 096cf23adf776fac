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


# ---- messy rows: set aside with where and why, counted, fatal only above a share -------------------------------
def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_few_bad_rows_are_set_aside_and_too_many_stop_the_read(tmp_path):
    from llmkit.loaders import Rejects

    good = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(300)]
    path = _jsonl(tmp_path / "chats.jsonl", [*good[:100], "{not json", *good[100:200], {"q": "x"}, *good[200:]])
    rejects = Rejects(max_fraction=0.01)
    rows = read_conversations(path, rejects=rejects)
    assert len(rows) == 300 and rejects.seen == 302
    assert [r["where"] for r in rejects.rows] == [f"{path}:101", f"{path}:202"]
    assert "malformed JSON line" in rejects.rows[0]["reason"] and "fields found: [q]" in rejects.rows[1]["reason"]
    rejects.write(tmp_path)
    assert [json.loads(x)["where"] for x in (tmp_path / "rejected_rows.jsonl").read_text().splitlines()] == \
        [f"{path}:101", f"{path}:202"]
    with pytest.raises(DataError, match=r"2 of 302 rows cannot be used \(0\.7%, more than max_bad_rows=0\.001\); "
                                        rf"the first: {path}:101: malformed JSON line"):
        read_conversations(path, rejects=Rejects(max_fraction=0.001))
    with pytest.raises(DataError, match=rf"{path}:101: malformed JSON line"):  # a direct call reads strictly
        read_conversations(path)


def test_hh_pairs_keep_their_longest_shared_prompt_and_pairs_without_one_are_set_aside(tmp_path):
    """As TRL's prompt extraction: the prompt is what both transcripts share (up to a user turn), each answer the
    rest — one turn usually, several where the transcripts part earlier. A pair that shares no user turn has no
    prompt: it is set aside with the reason."""
    from llmkit.formats import read_preferences
    from llmkit.loaders import Rejects

    def hh(*turns):
        return "".join(f"\n\n{'Human' if k % 2 == 0 else 'Assistant'}: {t}" for k, t in enumerate(turns))

    rows = [{"chosen": hh("Hi", "Hello", f"Where is town {i}?", "North."),
             "rejected": hh("Hi", "Hello", f"Where is town {i}?", "Ugh.")} for i in range(150)]
    rows.append({"chosen": hh("Hi", "Hello!", "Where?", "North."), "rejected": hh("Hi", "Hey.", "Where?", "South.")})
    rows.append({"chosen": hh("Hi", "Hello!"), "rejected": hh("Bye", "Bye.")})
    rejects = Rejects()
    pairs = read_preferences(_jsonl(tmp_path / "hh.jsonl", rows), rejects=rejects)
    assert len(pairs) == 151 and pairs[0]["prompt"][-1]["content"] == "Where is town 0?"
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "North."}]
    parted = pairs[150]
    assert parted["prompt"] == [{"role": "user", "content": "Hi"}]
    assert [m["content"] for m in parted["chosen"]] == ["Hello!", "Where?", "North."]
    assert [m["content"] for m in parted["rejected"]] == ["Hey.", "Where?", "South."]
    assert rejects.rows[0]["where"].endswith("hh.jsonl:152") and "share no user turn" in rejects.rows[0]["reason"]


def test_a_reward_model_scores_an_answer_that_runs_over_several_turns(base_model):
    """A pair whose answers run over several turns is scored whole: prompt, then every turn of the answer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llmkit.reward_model import RewardModel, render

    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    rm = RewardModel(model.eval(), tok)
    answer = [{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Where?"},
              {"role": "assistant", "content": "North."}]
    ids = render(tok, "Hi", answer)
    assert tok.decode(ids).count("<|im_start|>assistant") == 2 and "Where?" in tok.decode(ids)
    one, whole = rm.score(["Hi", "Hi"], ["North.", answer])
    assert one != whole and rm.score(["Hi"], [[{"role": "assistant", "content": "North."}]])[0] == \
        pytest.approx(one, abs=1e-5)


def test_prompts_come_from_any_chat_format(tmp_path):
    from llmkit.formats import read_prompts
    from llmkit.loaders import Rejects

    rows = [{"prompt": "Where was Ada born?"},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                          {"role": "user", "content": "Where?"}, {"role": "assistant", "content": "North."}]},
            {"instruction": "Name a river.", "input": "In Elmford", "output": "The Kennet."},
            {"chosen": "\n\nHuman: Who is Bo?\n\nAssistant: A baker.", "rejected": "\n\nHuman: Who is Bo?\n\nAssistant: Ugh."},
            {"instruction": "Write a haiku about mills."},
            {"conversations": [{"from": "human", "value": "Tell me a fact."}, {"from": "gpt", "value": "Fact."}]},
            {"question": "no prompt here"}]
    rejects = Rejects(max_fraction=0.2)
    prompts = read_prompts(_jsonl(tmp_path / "p.jsonl", rows), rejects)
    assert prompts == ["Where was Ada born?",
                       [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                        {"role": "user", "content": "Where?"}],
                       [{"role": "user", "content": "Name a river.\n\nIn Elmford"}],
                       [{"role": "user", "content": "Who is Bo?"}],
                       "Write a haiku about mills.",
                       [{"role": "user", "content": "Tell me a fact."}]]
    assert len(rejects.rows) == 1 and "fields found: [question]" in rejects.rows[0]["reason"]
    # `limit` stops the read early: the side-by-side report reads five prompts, not the whole file
    assert read_prompts(tmp_path / "p.jsonl", Rejects(max_fraction=1.0), limit=2) == prompts[:2]
