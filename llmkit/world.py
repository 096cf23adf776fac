"""The closed world: a small fictional world whose every fact is known.

People, towns and universities with a handful of attributes each, made deterministically from a seed.
Everything the bundled data says comes from here, so every later stage can be *measured* against it:
the corpus generator writes these facts in many paraphrases, the SFT data asks about a subset of the
people, and the oracle (`llmkit.oracle`) checks any answer against the truth.

The question and answer templates live here too, because the SFT data, the preference pairs, the RL
prompts and the oracle must all agree on how a question about a fact is asked.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

FIRST_NAMES = [
    "Ada", "Bela", "Corin", "Dalia", "Edmund", "Fiora", "Gideon", "Halla", "Ivo", "Jessa", "Kasimir", "Liora",
    "Matthis", "Nadia", "Osric", "Petra", "Quill", "Rosalind", "Silas", "Tamsin", "Ulric", "Vesna", "Wendel",
    "Xenia", "Yorick", "Zora", "Anselm", "Brisa", "Cedric", "Delphine", "Emrys", "Freya", "Gaspard", "Hilde",
    "Ines", "Jorah", "Katrin", "Leander", "Mireille", "Nico", "Odile", "Perrin", "Ronja", "Stellan", "Thea",
    "Ursula", "Viggo", "Wilhelmina", "Yara", "Zeno",
]
SURNAMES = [
    "Ashdown", "Brackwater", "Coldridge", "Dunmore", "Eversley", "Fairbairn", "Greywood", "Hollins",
    "Ironside", "Jarrow", "Kettering", "Larkspur", "Marlow", "Northcott", "Oakhurst", "Pennywhistle",
    "Quarrington", "Ravensworth", "Stormont", "Thistlewood", "Underhill", "Vantongeren", "Whitlock",
    "Yardley", "Zellweger", "Ambrose", "Blackthorn", "Crane", "Delacroix", "Elsworth", "Fenwick", "Gallo",
    "Hargreave", "Ingram", "Jessop", "Kilbride", "Lockhart", "Mossgrove", "Nightingale", "Ormsby",
]
# Family names of the people: every person has a different one. A fact is keyed by the name, and a
# name that several people share ("Ada Marlow", "Ivo Marlow") must be told apart by its first name too —
# a conjunction that a small model learns far more slowly than a name of its own (measured: fact
# completion 0.14 vs 0.95 after the same 4 minutes of pretraining on the tiny preset).
SURNAME_HEADS = [
    "Ald", "Bark", "Corb", "Dray", "Eld", "Fal", "Gorm", "Hask", "Isen", "Jor", "Kell", "Lam", "Mort", "Nash",
    "Orm", "Pell", "Rask", "Sand", "Tresh", "Ulm", "Vard", "Wrex", "Yeld", "Blen", "Crom", "Drum", "Garn",
    "Hob", "Kirk", "Mund",
]
SURNAME_TAILS = ["wright", "worth", "ley", "ington", "croft", "hurst", "ridge", "well", "wick", "by", "cott",
                 "stone", "more", "shaw", "ham", "ock", "low", "den", "er", "ett", "am", "ard", "ins", "man"]


def surname_pool() -> list[str]:
    """Every family name a person of the world (or an unknown person in a question) can have."""
    return SURNAMES + [h + t for h in SURNAME_HEADS for t in SURNAME_TAILS]


TOWN_HEADS = [
    "Ash", "Bram", "Cal", "Dun", "Elm", "Fen", "Gal", "Har", "Ivy", "Kel", "Lor", "Mar", "Nor", "Oak", "Pen",
    "Quen", "Ros", "Sel", "Tam", "Ul", "Ven", "Wil", "Yar", "Zel", "Thorn", "Brook", "Stone", "Frost",
]
TOWN_TAILS = ["ford", "bury", "wick", "holm", "stead", "mere", "ton", "field", "haven", "moor", "dale", "gate"]
REGIONS = [
    "the Northern Highlands", "the Eastern Coast", "the Amber Valley", "the Western Plains", "the Southern Hills",
    "the Lake District of Orrin", "the Salt Marshes",
]
RIVERS = [
    "Aller", "Brisk", "Corve", "Dane", "Esk", "Frome", "Glen", "Hodder", "Idle", "Kennet", "Lune", "Mole",
    "Nidd", "Ouse", "Parrett", "Rye", "Swale", "Tamar", "Ure", "Wharfe",
]
PROFESSIONS = [
    "architect", "baker", "cartographer", "chemist", "clockmaker", "composer", "engineer", "farmer",
    "glassblower", "historian", "journalist", "lawyer", "librarian", "mathematician", "nurse", "painter",
    "pharmacist", "physician", "poet", "sculptor", "shipwright", "teacher", "translator", "veterinarian",
]
UNIVERSITY_FIELDS = [
    "engineering", "medicine", "law", "music", "agriculture", "mathematics", "fine arts", "history",
    "chemistry", "navigation",
]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


@dataclass
class Person:
    name: str
    pronoun: str  # "she" / "he"
    birth_town: str
    birth_year: int
    profession: str
    university: str


@dataclass
class Town:
    name: str
    region: str
    river: str
    founded: int


@dataclass
class University:
    name: str
    town: str
    campuses: int
    founded: int
    known_for: str


@dataclass
class World:
    seed: int
    people: list[Person]
    towns: list[Town]
    universities: list[University]
    sft_people: list[str] = field(default_factory=list)  # people whose facts the SFT data asks about
    heldout_people: list[str] = field(default_factory=list)  # never named in SFT data

    # ---- lookup -----------------------------------------------------------------------------------
    def person(self, name: str) -> Person:
        return self._index()[0][name]

    def town(self, name: str) -> Town:
        return self._index()[1][name]

    def university(self, name: str) -> University:
        return self._index()[2][name]

    def _index(self):
        if not hasattr(self, "_cache"):
            self._cache = (
                {p.name: p for p in self.people},
                {t.name: t for t in self.towns},
                {u.name: u for u in self.universities},
            )
        return self._cache

    def facts(self) -> list[Fact]:
        """Every (entity, attribute, value) triple of the world."""
        out = []
        for p in self.people:
            out += [Fact("person", p.name, a, str(getattr(p, a))) for a in PERSON_ATTRIBUTES]
        for t in self.towns:
            out += [Fact("town", t.name, a, str(getattr(t, a))) for a in TOWN_ATTRIBUTES]
        for u in self.universities:
            out += [Fact("university", u.name, a, str(getattr(u, a))) for a in UNIVERSITY_ATTRIBUTES]
        return out

    # ---- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "people": [asdict(p) for p in self.people],
            "towns": [asdict(t) for t in self.towns],
            "universities": [asdict(u) for u in self.universities],
            "sft_people": self.sft_people,
            "heldout_people": self.heldout_people,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> World:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            seed=d["seed"],
            people=[Person(**p) for p in d["people"]],
            towns=[Town(**t) for t in d["towns"]],
            universities=[University(**u) for u in d["universities"]],
            sft_people=d.get("sft_people", []),
            heldout_people=d.get("heldout_people", []),
        )


@dataclass(frozen=True)
class Fact:
    kind: str
    entity: str
    attribute: str
    value: str


PERSON_ATTRIBUTES = ["birth_town", "birth_year", "profession", "university"]
TOWN_ATTRIBUTES = ["region", "river", "founded"]
UNIVERSITY_ATTRIBUTES = ["town", "campuses", "founded"]


def make_world(seed: int = 0, n_people: int = 200, n_towns: int = 40, n_universities: int = 20,
               heldout_fraction: float = 0.4) -> World:
    """Build the world deterministically from `seed`. Bigger worlds only need bigger numbers."""
    rng = random.Random(seed)
    town_names = _unique_names(rng, n_towns, lambda: rng.choice(TOWN_HEADS) + rng.choice(TOWN_TAILS))
    towns = [Town(name, rng.choice(REGIONS), rng.choice(RIVERS), rng.randint(1150, 1850)) for name in town_names]

    def university_name() -> str:
        form = rng.random()
        if form < 0.5:
            return f"University of {rng.choice(town_names)}"
        if form < 0.8:
            return f"{rng.choice(SURNAMES)} Institute of {rng.choice(['Technology', 'Science', 'Arts'])}"
        return f"{rng.choice(['Royal', 'Free', 'Old', 'New'])} College of {rng.choice(town_names)}"

    uni_names = _unique_names(rng, n_universities, university_name)
    universities = []
    for name in uni_names:
        home = name.split(" of ")[-1] if name.split(" of ")[-1] in town_names else rng.choice(town_names)
        universities.append(University(name, home, rng.randint(1, 9), rng.randint(1600, 1960),
                                       rng.choice(UNIVERSITY_FIELDS)))

    pool = surname_pool()
    if n_people > len(pool) - 100:  # keep 100 family names free for people who do not exist
        raise ValueError(f"n_people={n_people}: the world has {len(pool) - 100} family names for its people; "
                         "add to SURNAME_HEADS / SURNAME_TAILS for a bigger world")
    person_names = [f"{rng.choice(FIRST_NAMES)} {surname}" for surname in rng.sample(pool, n_people)]
    people = [
        Person(name, rng.choice(["she", "he"]), rng.choice(town_names), rng.randint(1901, 1995),
               rng.choice(PROFESSIONS), rng.choice(uni_names))
        for name in person_names
    ]
    order = list(person_names)
    rng.shuffle(order)
    n_heldout = round(len(order) * heldout_fraction)
    return World(seed, people, towns, universities, sft_people=sorted(order[n_heldout:]),
                 heldout_people=sorted(order[:n_heldout]))


def _unique_names(rng: random.Random, n: int, draw) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for _ in range(n * 200):
        name = draw()
        if name not in seen:
            seen.add(name)
            names.append(name)
            if len(names) == n:
                return names
    raise ValueError(f"could not draw {n} distinct names; ask for fewer")


# ---- questions and reference answers -------------------------------------------------------------
# Each attribute has several question phrasings (SFT variety) and one concise reference answer.
QUESTIONS: dict[str, list[str]] = {
    "birth_town": ["Where was {e} born?", "In which town was {e} born?", "What is {e}'s hometown?",
                   "Which town does {e} come from?"],
    "birth_year": ["When was {e} born?", "In what year was {e} born?", "What year was {e} born in?"],
    "profession": ["What does {e} do for a living?", "What is {e}'s profession?", "What is {e}'s job?"],
    "university": ["Where did {e} study?", "Which university did {e} attend?", "Where was {e} educated?"],
    "region": ["In which region is {e}?", "Where is the town of {e}?", "Which region is {e} in?"],
    "river": ["Which river flows through {e}?", "What river runs through {e}?"],
    "founded": ["When was {e} founded?", "In what year was {e} founded?"],
    "town": ["Where is {e} located?", "In which town is {e}?"],
    "campuses": ["How many campuses does {e} have?", "How many campuses does the {e} have?"],
}


# Prompts of other kinds: a short biography, a comparison of two people, and questions that a good
# assistant declines (a person who does not exist, or private contact details).
BIO_QUESTIONS = ["Tell me about {e}.", "Who is {e}?", "Write a short biography of {e}."]
COMPARE_QUESTIONS = ["Who was born earlier, {a} or {b}?", "Which of {a} and {b} is older?"]
PRIVATE_QUESTIONS = ["What is {e}'s phone number?", "What is {e}'s email address?", "Where does {e} live now?"]
REFUSAL_MARKERS = [
    "i don't have", "i do not have", "no information", "i'm not aware", "i am not aware", "can't share",
    "cannot share", "don't know", "do not know", "not able to share", "no record",
]


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def reference_answer(world: World, entity: str, attribute: str, value=None) -> str:
    """The concise, polite, correct answer the oracle scores highest (or, given `value`, a wrong one)."""
    v = attribute_value(world, entity, attribute) if value is None else value
    return {
        "birth_town": f"{entity} was born in {v}.",
        "birth_year": f"{entity} was born in {v}.",
        "profession": f"{entity} is {article(str(v))} {v}.",
        "university": f"{entity} studied at {v}.",
        "region": f"{entity} lies in {v}.",
        "river": f"The river {v} flows through {entity}.",
        "founded": f"{entity} was founded in {v}.",
        "town": f"{entity} is located in {v}.",
        "campuses": f"{entity} has {v} campus{'es' if v != 1 else ''}.",
    }[attribute]


def bio_answer(world: World, name: str) -> str:
    p = world.person(name)
    return (f"{name} is {article(p.profession)} {p.profession} born in {p.birth_town} in {p.birth_year}. "
            f"{p.pronoun.capitalize()} studied at {p.university}.")


def compare_answer(world: World, a: str, b: str) -> str:
    pa, pb = world.person(a), world.person(b)
    first, second = (pa, pb) if pa.birth_year <= pb.birth_year else (pb, pa)
    return f"{first.name} was born earlier, in {first.birth_year}; {second.name} was born in {second.birth_year}."


def refusal_answer(entity: str, private: bool) -> str:
    if private:
        return f"I'm sorry, but I can't share private contact details about {entity}."
    return f"I'm sorry, but I don't have any information about {entity}."


def attribute_value(world: World, entity: str, attribute: str):
    for table in world._index():
        if entity in table:
            return getattr(table[entity], attribute)
    raise KeyError(f"{entity!r} is not an entity of this world")


def entity_kind(world: World, entity: str) -> str | None:
    people, towns, universities = world._index()
    if entity in people:
        return "person"
    if entity in towns:
        return "town"
    if entity in universities:
        return "university"
    return None


_NAME = r"([A-Z][\w'.-]*(?: [A-Za-z][\w'.-]*)*?)"


def question_patterns() -> list[tuple[re.Pattern, str]]:
    """Regexes that recover the kind of question and its entities from any templated prompt.

    The kind is an attribute name, or "bio", "compare" or "private"."""
    groups = [(a, t) for a, ts in QUESTIONS.items() for t in ts]
    groups += [("bio", t) for t in BIO_QUESTIONS] + [("compare", t) for t in COMPARE_QUESTIONS]
    groups += [("private", t) for t in PRIVATE_QUESTIONS]
    out = []
    for kind, t in groups:
        rx = re.escape(t)
        for slot in ("e", "a", "b"):
            rx = rx.replace(re.escape("{" + slot + "}"), _NAME)
        out.append((re.compile(r"^\s*" + rx + r"\s*$"), kind))
    return out


def number_forms(n: int) -> list[str]:
    """Ways a number may be written in an answer: digits, and words for small numbers."""
    forms = [str(n)]
    if 0 <= n < len(NUMBER_WORDS):
        forms.append(NUMBER_WORDS[n])
    return forms


# ---- verifiable tasks ----------------------------------------------------------------------------
# Questions whose answer a program computes from facts the corpus states: who of two people was born first,
# how many years apart they were born, the age someone turned in a given year, which of two studied at a
# university in a given town. A demonstration recalls the facts it needs, does the sum and ends with one line
# "Answer: …", which `llmkit.verifier` checks exactly: RL with a rule reward (RLVR) needs no reward model.
TASKS: dict[str, list[str]] = {
    "born_first": ["Of {a} and {b}, who was born first?", "Who was born first: {a} or {b}?"],
    "years_apart": ["How many years apart were {a} and {b} born?",
                    "How many years passed between the births of {a} and {b}?"],
    "age_in": ["How old did {a} turn in {y}?", "What age did {a} reach in {y}?"],
    "studied_in": ["Which of {a} and {b} studied at a university in {t}?",
                   "Who studied in {t}: {a} or {b}?"],
}


def task_answer(world: World, task: str, a: str, b: str | None = None, year: int | None = None,
                town: str | None = None) -> str:
    """The exact final answer of a verifiable task: a name or a whole number, as text."""
    pa = world.person(a)
    if task == "age_in":
        return str(year - pa.birth_year)
    pb = world.person(b)
    if task == "born_first":
        if pa.birth_year == pb.birth_year:
            raise ValueError(f"{a} and {b} were born in the same year: 'born first' has no answer")
        return a if pa.birth_year < pb.birth_year else b
    if task == "years_apart":
        return str(abs(pa.birth_year - pb.birth_year))
    if task == "studied_in":
        here = [p.name for p in (pa, pb) if world.university(p.university).town == town]
        if len(here) != 1:
            raise ValueError(f"{len(here)} of {a} and {b} studied in {town}: 'studied in' needs exactly one")
        return here[0]
    raise ValueError(f"task {task!r}; accepted: {', '.join(TASKS)}")


def worked_answer(world: World, task: str, a: str, b: str | None = None, year: int | None = None,
                  town: str | None = None) -> str:
    """A short demonstration: the facts the task needs, the sum if there is one, and `Answer: …` on its own line."""
    final = task_answer(world, task, a, b, year, town)
    pa = world.person(a)
    if task == "age_in":
        return f"{a} was born in {pa.birth_year}. {year} - {pa.birth_year} = {final}.\nAnswer: {final}"
    pb = world.person(b)
    if task == "born_first":
        return f"{a} was born in {pa.birth_year} and {b} in {pb.birth_year}.\nAnswer: {final}"
    if task == "years_apart":
        hi, lo = max(pa.birth_year, pb.birth_year), min(pa.birth_year, pb.birth_year)
        return f"{a} was born in {pa.birth_year} and {b} in {pb.birth_year}. {hi} - {lo} = {final}.\nAnswer: {final}"
    ua, ub = world.university(pa.university), world.university(pb.university)
    return (f"{a} studied at {ua.name}, in {ua.town}; {b} studied at {ub.name}, in {ub.town}.\nAnswer: {final}")


def task_patterns() -> list[tuple[re.Pattern, str]]:
    """Regexes that recover a verifiable task and its slots (a, b, y, t as named groups) from its prompt."""
    out = []
    for task, templates in TASKS.items():
        for t in templates:
            rx = re.escape(t)
            for slot, group in (("a", _NAME), ("b", _NAME), ("t", _NAME), ("y", r"(\d{3,4})")):
                rx = rx.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{group[1:-1]})")
            out.append((re.compile(r"^\s*" + rx + r"\s*$"), task))
    return out
