"""The rule reward: verifiable tasks on the closed world, and a checker that a formatting trick cannot fool."""

import pytest

from llmkit import world as W
from llmkit.formats import read_tasks
from llmkit.loaders import DataError, Rejects, bundled_path, read_jsonl
from llmkit.oracle import Oracle
from llmkit.verifier import final_answer, is_correct, normalise, verifier_reward


@pytest.fixture(scope="module")
def oracle():
    return Oracle()


@pytest.mark.parametrize(("completion", "expected"), [
    ("Ada was born in 1950.\nAnswer: 40", "40"),
    ("Answer: 40.", "40"),
    ("answer:   Ada  Marlow", "Ada Marlow"),
    ("#### 1,000", "1000"),
    ("The final Answer: $1000.00", "1000"),
    ("worked out\nAnswer: 40", "A long GSM8K solution: 20 + 20 = 40\n#### 40"),
])
def test_the_exact_final_answer_is_right(completion, expected):
    assert is_correct(completion, expected)


@pytest.mark.parametrize(("completion", "why"), [
    ("Answer: Ada Marlow or Bela Crane", "both names"),
    ("Answer: 39\nAnswer: 40", "two answers"),
    ("Answer: 40\nor maybe 41", "more after the answer's line"),
    ("Answer: about 40", "a hedge"),
    ("Answer: 39-41", "a range"),
    ("Answer:", "nothing"),
    ("40", "no marker"),
    ("Ada Marlow was born first.", "no marker, though the name is there"),
    ("Answer: 400", "another number"),
    ("Answer: Ada Marlowe", "another name"),
])
def test_tricks_are_wrong(completion, why):
    expected = "Ada Marlow" if "Ada" in completion or "Bela" in completion else "40"
    assert not is_correct(completion, expected), why


def test_numbers_compare_by_value_and_names_by_their_letters():
    assert normalise("1,000") == normalise("1000.0") == "1000"
    assert normalise("Ada   MARLOW.") == "ada marlow"
    assert final_answer("a\nb\nAnswer: x") == "x"
    assert verifier_reward(["q", "q"], [[{"role": "assistant", "content": "Answer: 3"}], "Answer: 4"], ["3", "3"]) == [1.0, 0.0]


def test_every_bundled_task_is_checked_by_the_oracle_from_the_worlds_facts(oracle):
    world = oracle.world
    for name, people in (("tasks_train.jsonl", set(world.sft_people)), ("tasks_heldout.jsonl", set(world.heldout_people)),
                         ("tasks_eval.jsonl", set(world.sft_people))):
        rows = read_jsonl(bundled_path(name))
        assert {r["task"] for r in rows} == set(W.TASKS)
        for r in rows:
            assert oracle.task_answer(r["prompt"]) == r["answer"], r
            task, slots = oracle.task(r["prompt"])
            assert task == r["task"] and {slots["a"], slots.get("b", slots["a"])} <= people  # who it asks about
    # the held-out tasks ask only about people the SFT data never names, and the new tasks about the SFT people
    # ask nothing that RL trains on or that SFT demonstrates
    def questions(name, kind=None):
        return {(r["prompt"] if "prompt" in r else r["messages"])[0]["content"] for r in read_jsonl(bundled_path(name))
                if kind is None or r.get("kind") == kind}
    asked = questions("tasks_train.jsonl") | questions("sft_train.jsonl", kind="task")
    assert len(questions("tasks_eval.jsonl")) == 400 and not questions("tasks_eval.jsonl") & asked
    assert not questions("tasks_heldout.jsonl") & asked


def test_task_answers_follow_from_the_facts(oracle):
    world = oracle.world
    a = world.people[0]
    b = next(p for p in world.people if p.birth_year != a.birth_year)
    older = a.name if a.birth_year < b.birth_year else b.name
    assert oracle.task_answer(f"Of {a.name} and {b.name}, who was born first?") == older
    assert oracle.task_answer(f"How many years apart were {a.name} and {b.name} born?") == str(abs(a.birth_year - b.birth_year))
    assert oracle.task_answer(f"How old did {a.name} turn in {a.birth_year + 30}?") == "30"
    assert oracle.check(f"How old did {a.name} turn in {a.birth_year + 30}?", W.worked_answer(
        world, "age_in", a.name, year=a.birth_year + 30))
    assert not oracle.check(f"How old did {a.name} turn in {a.birth_year + 30}?", "Answer: 31")
    assert oracle.task_answer("How old did Nobody Atall turn in 1990?") is None  # not a person of the world
    assert oracle.task_answer("Where was Ada born?") is None  # not a task


def test_task_files_in_other_shapes_and_files_without_answers(tmp_path):
    import json

    path = tmp_path / "gsm.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
        {"prompt": [{"role": "user", "content": "6 x 7?"}], "ground_truth": 42},
        {"question": "no answer here"},
    ]) + "\n")
    rejects = Rejects(max_fraction=0.5)
    rows = read_tasks(path, rejects)
    assert rows == [{"prompt": "What is 2 + 3?", "answer": "5"},
                    {"prompt": [{"role": "user", "content": "6 x 7?"}], "answer": "42"}]
    assert len(rejects.rows) == 1 and "answer" in str(rejects.rows[0])
    plain = tmp_path / "prompts.jsonl"
    plain.write_text(json.dumps({"prompt": "Tell me a story."}) + "\n")
    with pytest.raises(DataError, match="answer.*--reward model"):
        read_tasks(plain, Rejects(max_fraction=1.0))
