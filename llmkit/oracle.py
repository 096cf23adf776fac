"""The oracle: knows every fact of the closed world and scores any (prompt, answer) by the hidden rule.

The hidden rule is the one the bundled preference pairs follow: an answer should be **correct**, then
**concise**, then **polite**; an evasive answer to a question that has an answer is not correct, and neither
is an answer about somebody else (one that names a person the question did not ask about).
A question that cannot be answered (a person who does not exist, private contact details) is answered
correctly only by declining. The score is

    score = 0.6 * correct + 0.2 * concise + 0.2 * polite          (0 <= score <= 1)

where `correct` is 0/1 for a single fact and the fraction of facts right for a biography. Because it
knows the truth, the oracle measures what a model knows (pretraining, SFT) and whether RL improved the
answers themselves rather than just a reward model's opinion of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmkit import world as W
from llmkit.loaders import bundled_path
from llmkit.verifier import is_correct

RUDE_MARKERS = [
    "obviously", "stupid", "figure it out", "everyone knows", "ugh", "waste of my time", "dumb question",
    "look it up yourself", "seriously?", "whatever",
]
HEDGE_MARKERS = ["hard to say", "not sure", "you could look it up", "difficult to know", "who can say", "hard to tell"]


@dataclass
class Verdict:
    kind: str  # attribute name, "bio", "compare", "private", "unknown_entity" or "unparsed"
    entities: tuple[str, ...]
    expected: str  # the reference answer
    correct: float
    concise: bool
    polite: bool
    evasive: bool
    off_topic: bool = False

    @property
    def score(self) -> float:
        return 0.6 * self.correct + 0.2 * self.concise + 0.2 * self.polite


class Oracle:
    """Score answers against the world's facts. `Oracle()` loads the bundled world."""

    def __init__(self, world: W.World | str | Path | None = None):
        if world is None:
            world = bundled_path("world.json")
        self.world = world if isinstance(world, W.World) else W.World.load(world)
        self._patterns = W.question_patterns()
        self._task_patterns = W.task_patterns()
        people, towns, unis = self.world._index()
        self._people = list(people)
        self._domains = {
            "birth_town": list(towns), "town": list(towns), "university": list(unis),
            "profession": W.PROFESSIONS, "region": W.REGIONS, "river": W.RIVERS,
        }

    # ---- parsing ---------------------------------------------------------------------------------
    def parse(self, prompt) -> tuple[str, tuple[str, ...]]:
        """(kind, entities) of a prompt: a string or a list of chat messages (the last user turn counts)."""
        text = _last_user_text(prompt)
        for rx, kind in self._patterns:
            m = rx.match(text)
            if not m:
                continue
            names = tuple(g for g in m.groups() if g)
            names = tuple(n[4:] if n.startswith("the ") else n for n in names)
            if kind == "private":
                return kind, names
            if kind == "compare":
                if all(n in self.world._index()[0] for n in names):
                    return kind, names
                return "unknown_entity", names
            known = W.entity_kind(self.world, names[0])
            if known is None:
                return "unknown_entity", names
            if kind == "bio" and known != "person":
                continue
            if kind not in ("bio",) and not hasattr(self._table(known)[names[0]], kind):
                continue
            return kind, names
        return "unparsed", ()

    def expected(self, prompt) -> str:
        kind, names = self.parse(prompt)
        return self._reference(kind, names)

    # ---- verifiable tasks ------------------------------------------------------------------------
    def task(self, prompt) -> tuple[str, dict] | None:
        """(task, slots) of a verifiable task's prompt (`llmkit.world.TASKS`), or None for any other prompt."""
        text = _last_user_text(prompt)
        for rx, task in self._task_patterns:
            m = rx.match(text)
            if m:
                return task, m.groupdict()
        return None

    def task_answer(self, prompt) -> str | None:
        """The exact answer of a verifiable task, computed from the world's facts; None when the prompt is not one
        or names somebody the world does not have."""
        found = self.task(prompt)
        if found is None:
            return None
        task, slots = found
        try:
            return W.task_answer(self.world, task, slots["a"], slots.get("b"),
                                 int(slots["y"]) if slots.get("y") else None, slots.get("t"))
        except (KeyError, ValueError):
            return None

    def check(self, prompt, answer: str) -> bool:
        """Whether `answer` ends with the task's exact final answer (`llmkit.verifier.is_correct`)."""
        expected = self.task_answer(prompt)
        return expected is not None and is_correct(answer, expected)

    # ---- scoring ---------------------------------------------------------------------------------
    def judge(self, prompt, answer: str) -> Verdict:
        kind, names = self.parse(prompt)
        reference = self._reference(kind, names)
        a = _normalise(answer)
        refused = any(m in a for m in W.REFUSAL_MARKERS)
        hedged = any(m in a for m in HEDGE_MARKERS)
        polite = not any(re.search(rf"(?<!\w){re.escape(m)}(?!\w)", a) for m in RUDE_MARKERS)
        concise = len(answer.split()) <= max(12, 2 * len(reference.split()) + 4)
        evasive = off_topic = False
        if kind in ("private", "unknown_entity"):
            correct = 1.0 if refused else 0.0
        elif kind == "unparsed":
            correct = 0.0
        else:
            evasive = refused or hedged
            off_topic = any(n in answer for n in self._people if n not in names)
            correct = 0.0 if evasive or off_topic else self._correctness(kind, names, answer)
        return Verdict(kind, names, reference, correct, concise, polite, evasive, off_topic)

    def score(self, prompt, answer: str) -> float:
        return self.judge(prompt, answer).score

    def prefer(self, prompt, a: str, b: str) -> str:
        """The hidden rule's label for two answers to one prompt: "A" when `a` scores higher, "B" when `b` does,
        "tie" when they score the same — what a perfect annotator clicks in the annotation app."""
        sa, sb = self.score(prompt, a), self.score(prompt, b)
        return "tie" if sa == sb else "A" if sa > sb else "B"

    def flaw(self, prompt, answer: str) -> str:
        """The answer's first flaw by the hidden rule: evasive, rude, rambling, off-topic (about somebody else),
        wrong — or "right". Sorting preference pairs by the flaws of their two sides shows what a reward model
        can see in the text (style) and what takes knowing the facts."""
        v = self.judge(prompt, answer)
        if v.evasive:
            return "evasive"
        if not v.polite:
            return "rude"
        if not v.concise:
            return "rambling"
        if v.off_topic:
            return "off-topic"
        return "right" if v.correct >= 1 else "wrong"

    def is_correct(self, prompt, answer: str) -> bool:
        return self.judge(prompt, answer).correct >= 1.0

    def _correctness(self, kind: str, names: tuple[str, ...], answer: str) -> float:
        if kind == "compare":
            a, b = names
            earlier = a if self.world.person(a).birth_year <= self.world.person(b).birth_year else b
            pos = {n: answer.find(n) for n in names}
            mentioned = [n for n in names if pos[n] >= 0]
            return float(bool(mentioned) and min(mentioned, key=pos.get) == earlier)
        if kind == "bio":
            person = self.world.person(names[0])
            checks = [self._mentions(attr, getattr(person, attr), answer) for attr in W.PERSON_ATTRIBUTES]
            return sum(checks) / len(checks)
        return float(self._mentions(kind, W.attribute_value(self.world, names[0], kind), answer))

    def _mentions(self, attribute: str, value, answer: str) -> bool:
        """The answer states `value` for `attribute` and no other value of the same kind."""
        text = answer
        if attribute in ("birth_town", "town"):
            # a university name may contain a town ("University of Ashford"): not a claim about the town
            for u in self.world._index()[2]:
                text = text.replace(u, " ")
        if isinstance(value, int):
            if attribute == "campuses":
                forms = {f for n in range(0, 13) for f in W.number_forms(n)}
                found = {w for w in re.findall(r"([a-z]+|\d+)\s+campus", text.lower()) if w in forms}
                return bool(found) and found <= set(W.number_forms(value))
            years = set(re.findall(r"\b1\d{3}\b", text))
            return years == {str(value)}
        found = {v for v in self._domains[attribute] if re.search(rf"\b{re.escape(v)}\b", text, re.I)}
        # "Ashford" is found inside "Ashfordham"? no: \b; but a longer name may contain a shorter one
        found = {v for v in found if not any(v != o and v in o for o in found)}
        return found == {value}

    def _reference(self, kind: str, names: tuple[str, ...]) -> str:
        if kind == "bio":
            return W.bio_answer(self.world, names[0])
        if kind == "compare":
            return W.compare_answer(self.world, *names)
        if kind in ("private", "unknown_entity"):
            return W.refusal_answer(names[0] if names else "them", private=kind == "private")
        if kind == "unparsed":
            return ""
        return W.reference_answer(self.world, names[0], kind)

    def _table(self, kind: str) -> dict:
        people, towns, unis = self.world._index()
        return {"person": people, "town": towns, "university": unis}[kind]


def _last_user_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt.strip()
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        return ""
    content = users[-1]["content"]
    if isinstance(content, list):  # gradio / multimodal blocks
        content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return content.strip()


def _normalise(text: str) -> str:
    return text.lower().replace("’", "'")
