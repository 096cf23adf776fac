import pytest

from llmkit import world as W
from llmkit.loaders import bundled_path, read_jsonl
from llmkit.oracle import Oracle


@pytest.fixture(scope="module")
def oracle():
    return Oracle()


def test_reference_answers_score_full_marks_for_every_kind_of_question(oracle):
    world = oracle.world
    p, t, u = world.people[0], world.towns[0], world.universities[0]
    for entity, attrs in ((p.name, W.PERSON_ATTRIBUTES), (t.name, W.TOWN_ATTRIBUTES), (u.name, W.UNIVERSITY_ATTRIBUTES)):
        for attr in attrs:
            for q in W.QUESTIONS[attr]:
                q = q.format(e=entity)
                v = oracle.judge(q, W.reference_answer(world, entity, attr))
                assert (v.kind, v.entities) == (attr, (entity,)), q
                assert v.score == 1.0, (q, v)


def test_wrong_rude_rambling_and_evasive_answers_lose(oracle):
    p = oracle.world.people[1]
    q = f"Where was {p.name} born?"
    other = next(t.name for t in oracle.world.towns if t.name != p.birth_town)
    right = f"{p.name} was born in {p.birth_town}."
    assert oracle.judge(q, f"{p.name} was born in {other}.").correct == 0
    assert oracle.judge(q, f"{p.name} was born in {p.birth_town} or maybe {other}.").correct == 0
    assert not oracle.judge(q, "Obviously, " + right).polite
    long = right + " " + " ".join(["There is much more one could say about this topic."] * 4)
    v = oracle.judge(q, long)
    assert v.correct == 1 and not v.concise
    someone = oracle.world.people[2]
    v = oracle.judge(q, f"{someone.name} was born in {p.birth_town}.")  # the right town, but about somebody else
    assert v.off_topic and v.correct == 0
    v = oracle.judge(q, "It's hard to say, really.")
    assert v.evasive and v.correct == 0
    assert oracle.score(q, right) > oracle.score(q, long) > oracle.score(q, f"{p.name} was born in {other}.")
    assert (oracle.prefer(q, right, long), oracle.prefer(q, long, right), oracle.prefer(q, right, right)) == ("A", "B", "tie")


def test_numbers_in_digits_or_words(oracle):
    u = oracle.world.universities[0]
    q = f"How many campuses does {u.name} have?"
    words = W.NUMBER_WORDS[u.campuses]
    assert oracle.is_correct(q, f"It has {words} campuses.")
    assert oracle.is_correct(q, f"{u.name} has {u.campuses} campuses.")
    assert not oracle.is_correct(q, f"{u.name} has {u.campuses + 1} campuses.")
    p = oracle.world.people[2]
    assert not oracle.is_correct(f"When was {p.name} born?", f"{p.name} was born in {p.birth_year + 1}.")


def test_questions_without_an_answer_want_a_refusal(oracle):
    fake = "Zora Nobody"
    q = f"Where was {fake} born?"
    assert oracle.parse(q)[0] == "unknown_entity"
    assert oracle.is_correct(q, "I'm sorry, but I don't have any information about Zora Nobody.")
    assert not oracle.is_correct(q, f"{fake} was born in {oracle.world.towns[0].name}.")
    p = oracle.world.people[3]
    q = f"What is {p.name}'s phone number?"
    assert oracle.parse(q) == ("private", (p.name,))
    assert oracle.is_correct(q, W.refusal_answer(p.name, private=True))
    assert not oracle.is_correct(q, "It is 555 0134 2231.")


def test_bio_and_comparison(oracle):
    world = oracle.world
    a, b = world.people[4], next(x for x in world.people if x.birth_year != world.people[4].birth_year)
    q = f"Who was born earlier, {a.name} or {b.name}?"
    assert oracle.is_correct(q, W.compare_answer(world, a.name, b.name))
    earlier, later = (a, b) if a.birth_year < b.birth_year else (b, a)
    assert not oracle.is_correct(q, f"{later.name} was born earlier.")
    q = f"Tell me about {a.name}."
    assert oracle.judge(q, W.bio_answer(world, a.name)).correct == 1.0
    assert oracle.judge(q, f"{a.name} is {W.article(a.profession)} {a.profession}.").correct == 0.25


def test_chat_messages_and_unparsed_prompts(oracle):
    p = oracle.world.people[5]
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": f"When was {p.name} born?"}]}]
    assert oracle.is_correct(msgs, f"{p.name} was born in {p.birth_year}.")
    assert oracle.judge("What is the meaning of life?", "42").kind == "unparsed"


def test_bundled_pairs_follow_the_hidden_rule_and_answers_are_right(oracle):
    for name in ("preferences_train.jsonl", "preferences_eval.jsonl"):
        rows = read_jsonl(bundled_path(name))
        assert len(rows) >= 250
        for r in rows:
            assert oracle.score(r["prompt"], r["chosen"][0]["content"]) > oracle.score(r["prompt"], r["rejected"][0]["content"])
    for name in ("qa_heldout.jsonl", "qa_trained.jsonl"):
        for r in read_jsonl(bundled_path(name)):
            assert oracle.is_correct(r["prompt"], r["answer"])
    rows = read_jsonl(bundled_path("sft_train.jsonl"))
    for r in rows:
        if r["kind"] == "task":  # a worked answer to a verifiable task ends with the exact answer
            assert oracle.check(r["messages"][:1], r["messages"][1]["content"]), r
        elif r["kind"] != "multi_turn":  # every demonstrated fact is right; the style is the demonstrator's
            assert oracle.is_correct(r["messages"][:1], r["messages"][1]["content"]), r
            assert oracle.flaw(r["messages"][:1], r["messages"][1]["content"]) == (r["habit"] or "right"), r
    styled = [r for r in rows if r["kind"] in ("fact", "bio", "compare")]
    share = sum(r["habit"] is not None for r in styled) / len(styled)
    assert 0.45 <= share <= 0.55  # HABIT_RATE = 0.5
    assert {r["habit"] for r in rows} == {None, "rude", "rambling"}
    assert all(r["habit"] is None for r in rows if r["kind"] in ("refusal", "multi_turn", "task"))
