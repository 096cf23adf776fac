"""Generate the bundled closed-world data: a fictional world, a messy crawl of it, and chat data about it.

    python data_samples/generate.py                      # the bundled files (seed 0, 200 people)
    python data_samples/generate.py --people 1500 --out /tmp/bigworld

Everything is deterministic in the seed. What it writes (all jsonl unless noted):

- world.json            every entity and attribute, and which people the SFT data may name
- corpus.jsonl          the raw "crawl": id, text, url, source. Each fact of the world appears in several
                        documents of different styles (encyclopedic, news, narrative, interview, lists), in
                        different wordings and sentence orders, because a model that saw a fact in one fixed
                        wording learns the wording, not the fact (Allen-Zhu & Li, Physics of LMs 3.1).
                        Mixed in: the junk a crawl has (spam, navigation boilerplate, gibberish, lorem ipsum,
                        very short pages, repeated lines, exact and near duplicates) and personal data
                        (emails, phone numbers, IP addresses) inside otherwise good documents.
- corpus_labels.jsonl   ground truth per document: label, duplicate_of, the personal data it carries.
                        Never part of the corpus itself.
- sft_train.jsonl, sft_eval.jsonl     conversations in TRL's `messages` format about the SFT people only; every
                        fact in them is right, but half the answers to answerable questions carry a
                        demonstrator's habit (rude or rambling, named in `habit`) that the preference rule dislikes
- qa_heldout.jsonl, qa_trained.jsonl  one question per fact of held-out / SFT people, with the answer
- preferences_train.jsonl, preferences_eval.jsonl   prompt / chosen / rejected (conversational), following
                        the oracle's hidden rule: correct, then concise, then polite; never evasive
- rl_prompts_train.jsonl, rl_prompts_eval.jsonl     prompts for RL
- tasks_train.jsonl, tasks_heldout.jsonl   verifiable tasks (prompt, exact `answer`, `task`) about the SFT /
                        held-out people, for RL with a rule reward (`llmkit.verifier`); sft_train.jsonl ends with
                        a few worked demonstrations of them (kind "task")
- tasks_eval.jsonl      new verifiable tasks about the SFT people, none asked in tasks_train.jsonl or the
                        demonstrations: held-out questions about known people, beside tasks_heldout's new people
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmkit import world as W  # noqa: E402
from llmkit.oracle import Oracle  # noqa: E402

HERE = Path(__file__).resolve().parent

# ---- sentences that state one fact, in several wordings ------------------------------------------
# Each list: wordings that name the person, then wordings that use the pronoun (a document names its
# subject a couple of times and then says "she" or "he", as real text does).
BIRTH_TOWN = (
    ["{n} was born in {town}.", "{n} is a native of {town}.", "{town} is the hometown of {n}.",
     "{n} came into the world in {town}."],
    ["{P} was born in the town of {town}.", "{P} grew up in {town}, where {p} was born.",
     "{P} is a native of {town}.", "{P} was born in {town} and still visits it every summer."],
)
BIRTH_YEAR = (
    ["{n} was born in {year}.", "The year {year} saw the birth of {n}.", "{n}'s year of birth is {year}."],
    ["{P} was born in the year {year}.", "{P} came into the world in {year}.", "{P} was born in {year}."],
)
PROFESSION = (
    ["{n} is {a} {prof}.", "{n} works as {a} {prof}.", "By profession, {n} is {a} {prof}.",
     "{n} has made a career as {a} {prof}."],
    ["{P} earns a living as {a} {prof}.", "{P} works as {a} {prof}.", "By profession {p} is {a} {prof}.",
     "{P} has spent most of {pos} working life as {a} {prof}."],
)
UNIVERSITY = (
    ["{n} studied at {u}.", "{n} is a graduate of {u}.", "{n} holds a degree from {u}."],
    ["{P} attended {u}.", "{P} was educated at {u}.", "{P} earned {pos} degree at {u}.",
     "As a young adult {p} studied at {u}."],
)
FILLERS = [
    "Colleagues remember {o} for {pos} patience and good humour.",
    "In {pos} spare time, {p} enjoys long walks and old maps.",
    "Friends describe {o} as generous and quietly determined.",
    "{P} keeps a small garden and a large collection of letters.",
    "Those who worked with {o} mention {pos} careful notes and steady hands.",
    "{P} is known for arriving early and leaving late.",
    "Neighbours say that {p} rarely misses the spring market.",
    "Over the years {p} has taught several apprentices the basics of the trade.",
    "{P} once said that the best work is done slowly and with attention.",
    "A portrait of {o} hangs in the reading room of the local library.",
    "{P} has written a number of short essays about everyday life.",
    "People who met {o} often recall {pos} warm laugh.",
    "When the weather is good, {p} likes to cycle to work and take the long way home.",
    "Several of {pos} former students have gone on to open workshops of their own.",
    "{P} believes that a good day starts with strong coffee and a quiet hour of reading.",
    "Younger colleagues often come to {o} for advice, and {p} always makes time for them.",
    "In the evenings {p} plays the piano, although {p} says that {p} plays it badly.",
    "{P} has travelled widely but says there is no place like home.",
    "Every winter {p} helps to organise a charity dinner for the families of the district.",
    "Those close to {o} say that {p} has a talent for telling stories about the old days.",
]
PROFILES = 10  # entries per person on register pages (doc_register)
FAQ = False  # question-answer pages about the SFT people (doc_faq)
STYLED = 1.0  # the fraction of people who also get one document of another style (encyclopedia, news, ...)
NEWS_HEADLINES = [
    "Local {prof} honoured at town festival", "A conversation with {n}", "{n} opens new workshop",
    "{prof_cap} {n} celebrates a milestone", "Community thanks {n}",
]
NEWS_SITES = ["gazette", "herald", "courier", "chronicle", "post", "tribune"]
BLOG_SITES = ["oldtownstories.net", "portraits-of-orrin.org", "peopleofthevalley.com", "lifeandletters.blog"]


def person_vars(world: W.World, p: W.Person) -> dict:
    he = p.pronoun == "he"
    return dict(n=p.name, P=p.pronoun.capitalize(), p=p.pronoun, o="him" if he else "her", pos="his" if he else "her",
                town=p.birth_town, year=p.birth_year, prof=p.profession, prof_cap=p.profession.capitalize(),
                a=W.article(p.profession), u=p.university, region=world.town(p.birth_town).region)


def fact_sentences(rng: random.Random, v: dict, attrs=("birth_town", "birth_year", "profession", "university"),
                   named: int = 1) -> list[str]:
    """One sentence per attribute; the first `named` of them use the name, the rest the pronoun."""
    table = {"birth_town": BIRTH_TOWN, "birth_year": BIRTH_YEAR, "profession": PROFESSION, "university": UNIVERSITY}
    return [rng.choice(table[a][0 if i < named else 1]).format(**v) for i, a in enumerate(attrs)]


def fillers(rng: random.Random, v: dict, k: int) -> list[str]:
    return [s.format(**v) for s in rng.sample(FILLERS, k)]


def doc_encyclopedic(rng, world, p) -> tuple[str, str]:
    v = person_vars(world, p)
    lead = rng.choice([
        "{n} (born {year} in {town}) is {a} {prof}.",
        "{n} is {a} {prof}, born in {town} in {year}.",
        "{n}, born {year}, is {a} {prof} from {town}.",
    ]).format(**v)
    rest = fact_sentences(rng, v, ("profession", "university") if rng.random() < 0.5 else ("university",), named=0)
    rest += fillers(rng, v, 5)
    rng.shuffle(rest)
    early = rng.choice([
        "{P} spent {pos} childhood in {town}, a town in {region}.",
        "{town}, where {p} was raised, lies in {region}.",
    ]).format(**v)
    body = " ".join([lead, *rest[:2]]) + "\n\n" + " ".join([early, *rest[2:]])
    return f"{p.name}\n\n{body}", "encyclopedia"


def doc_news(rng, world, p) -> tuple[str, str]:
    v = person_vars(world, p)
    headline = rng.choice(NEWS_HEADLINES).format(**v)
    attrs = rng.sample(W.PERSON_ATTRIBUTES, 3)
    facts = fact_sentences(rng, v, attrs, named=1)
    quote = rng.choice([
        '"I never expected this," {n} said on Tuesday.', '"It has been a good year," said {n}.',
        '"We did it together," {n} told the crowd.',
    ]).format(**v)
    sentences = facts + fillers(rng, v, 4)
    rng.shuffle(sentences)
    opening = rng.choice([
        "Residents gathered on Saturday to celebrate the work of {n}.",
        "This week the paper spoke with {n} about work, family and the years ahead.",
        "The town council thanked {n} at its monthly meeting.",
    ]).format(**v)
    body = " ".join([opening, *sentences[:3]]) + "\n\n" + " ".join([quote, *sentences[3:]])
    return f"{headline}\n\n{body}", "news"


def doc_narrative(rng, world, p) -> tuple[str, str]:
    v = person_vars(world, p)
    parts = [
        rng.choice(["When {n} was a child in {town}, the winters were long.",
                    "The story of {n} begins in {town}, in the year {year}.",
                    "Long before anyone knew the name {n}, there was a child in {town} who loved to ask questions."]),
        rng.choice(["Years later {p} went to {u}, where {p} found {pos} calling.",
                    "At {u} {p} met the teachers who shaped {pos} life.",
                    "{P} left home to study at {u}."]),
        rng.choice(["Today {n} works as {a} {prof}, and {p} still thinks of those early years.",
                    "It was there that {p} decided to become {a} {prof}.",
                    "Becoming {a} {prof} was, {p} says, the easiest decision {p} ever made."]),
    ]
    parts = [s.format(**v) for s in parts]
    if str(p.birth_year) not in " ".join(parts):
        parts.append(rng.choice(BIRTH_YEAR[1]).format(**v))
    fill = fillers(rng, v, 2)
    return " ".join(parts[:2] + fill[:2]) + "\n\n" + " ".join(parts[2:] + fill[2:]), "blog"


def profile_entry(rng, world, p, avoid: set | None = None) -> str:
    """Every fact of a person once, in a random order and wording, each sentence naming the person
    (Allen-Zhu & Li's "multi + permute + fullname" augmentation: the knowledge is then stored under the
    name, where a question can reach it)."""
    v = person_vars(world, p)
    table = {"birth_town": BIRTH_TOWN, "birth_year": BIRTH_YEAR, "profession": PROFESSION, "university": UNIVERSITY}
    attrs = list(W.PERSON_ATTRIBUTES)
    rng.shuffle(attrs)
    avoid = avoid if avoid is not None else set()
    sentences = []
    for a in attrs:  # a wording not yet used on the page: repeated 5-grams trip Gopher's repetition rules
        form = rng.choice([f for f in table[a][0] if f not in avoid] or table[a][0])
        avoid.add(form)
        sentences.append(form.format(**v))
    return " ".join(sentences)


def doc_register(rng, world, people: list[W.Person]) -> tuple[str, str]:
    """A "who's who" page: a short entry for each of three people. (One person per page, named in every
    sentence, trips Gopher's repeated-n-gram rules — as such a page should.)"""
    title = rng.choice(["Who's who in Orrin", "A register of notable people", "People of the valley: short entries",
                        "Biographical notes", "From the town registers"])
    intro = rng.choice(["The entries below are updated every year from the town registers.",
                        "Short entries on people who have made their mark in the region.",
                        "A few lines on each person, as collected by our volunteers."])
    used: set = set()
    return "\n\n".join([title, intro, *[profile_entry(rng, world, q, used) for q in people]]), "directory"


def doc_faq(rng, world, people: list[W.Person]) -> tuple[str, str]:
    """A readers' questions page: questions about a few people, each answered. Only people whom the SFT data
    may name get one, so question-answer text about held-out people never appears anywhere (Allen-Zhu & Li's
    "mixed training": some QA text in pretraining teaches the model to reach stored facts from a question)."""
    title = rng.choice(["Readers ask", "Questions and answers", "Your questions answered"])
    lines = [title]
    for q in people:
        for attr in rng.sample(W.PERSON_ATTRIBUTES, len(W.PERSON_ATTRIBUTES)):
            lines.append(f"Q: {rng.choice(W.QUESTIONS[attr]).format(e=q.name)}\nA: {W.reference_answer(world, q.name, attr)}")
    return "\n\n".join(lines), "magazine"


def doc_interview(rng, world, p) -> tuple[str, str]:
    v = person_vars(world, p)
    lines = [
        f"Interview: {p.name}",
        rng.choice(["We sat down with {n}, {a} {prof}, to talk about {pos} life and work and about the "
                    "town that shaped {o}.",
                    "This month our guest is {n}, who works as {a} {prof} and who agreed to tell us how it all began."]).format(**v),
        rng.choice(["{P} tells us that {p} was born in {town} in {year} and that {p} has never stopped loving "
                    "the place.",
                    "{town} is where {p} was born, back in {year}, and {p} speaks of it with real warmth."]).format(**v),
        rng.choice(["{P} says that the years at {u} changed everything for {o}.",
                    "{P} studied at {u}, and {p} still visits the old teachers there when {p} can."]).format(**v),
        " ".join(fillers(rng, v, 2)),
    ]
    return "\n\n".join(lines), "magazine"


def doc_town(rng, world, t: W.Town, natives: list[W.Person]) -> tuple[str, str]:
    intro = rng.choice([
        f"{t.name} is a town in {t.region}. The river {t.river} flows through it, and it was founded in {t.founded}.",
        f"Founded in {t.founded}, {t.name} lies in {t.region} on the banks of the river {t.river}.",
    ])
    more = rng.choice([
        "The old market square is still the heart of the town, and the bridge is older than most of the houses.",
        "Visitors come for the quiet streets, the stone bridge and the bakeries that open before dawn.",
    ])
    return _list_page(rng, t.name, f"{intro} {more}", f"Notable people born in {t.name} include the following:", [
        lambda q: f"{q.name} was born here in {q.birth_year} and later became {W.article(q.profession)} {q.profession}.",
        lambda q: f"The {q.profession} {q.name}, who was born in {q.birth_year}, grew up in these streets.",
        lambda q: f"Born here in {q.birth_year}, {q.name} went on to work as {W.article(q.profession)} {q.profession}.",
        lambda q: f"{q.name} is {W.article(q.profession)} {q.profession} who was born in the town in {q.birth_year}.",
    ], natives)


def _list_page(rng, title: str, intro: str, header: str, entry_forms: list, people: list[W.Person]) -> tuple[str, str]:
    """A page that introduces an entity, then lists people one per line, each in one of `entry_forms`."""
    lines = [title, intro]
    if people:
        lines.append(header)
        lines += [rng.choice(entry_forms)(q) for q in people]
    return "\n\n".join(lines[:2]) + ("\n" + "\n".join(lines[2:]) if people else ""), "encyclopedia"


def doc_university(rng, world, u: W.University, alumni: list[W.Person]) -> tuple[str, str]:
    n = u.campuses
    campuses = f"{n} campus{'es' if n != 1 else ''}" if rng.random() < 0.5 else \
        f"{W.NUMBER_WORDS[n]} campus{'es' if n != 1 else ''}"
    intro = rng.choice([
        f"{u.name} is a university in {u.town}. It was founded in {u.founded} and today has {campuses}.",
        f"Founded in {u.founded}, {u.name} is based in {u.town} and teaches on {campuses}.",
    ])
    known = f"The university is best known for its teaching of {u.known_for}, and its library is open to the public."
    return _list_page(rng, u.name, f"{intro} {known}", f"Among the graduates of {u.name} are the following people:", [
        lambda q: f"{q.name} studied here and then became {W.article(q.profession)} {q.profession} back home in {q.birth_town}.",
        lambda q: f"The {q.profession} {q.name}, who grew up in {q.birth_town}, is a graduate of the university.",
        lambda q: f"{q.name} came to study here from {q.birth_town} and now works as {W.article(q.profession)} {q.profession}.",
        lambda q: f"Among its graduates is {q.name}, {W.article(q.profession)} {q.profession} from the town of {q.birth_town}.",
    ], alumni)


def doc_university_news(rng, world, u: W.University) -> tuple[str, str]:
    n = u.campuses
    body = rng.choice([
        f"{u.name} celebrated another year of teaching this week. The university, founded in {u.founded}, now "
        f"runs {n} campus{'es' if n != 1 else ''} in and around {u.town}. Students and teachers met in the main hall "
        f"for speeches and music. The rector thanked the staff and said that the next year would bring new courses "
        f"in {u.known_for}. The celebration ended with a dinner in the old refectory.",
        f"Visitors to {u.town} often ask about {u.name}. It has {W.NUMBER_WORDS[n]} campus{'es' if n != 1 else ''} "
        f"and was founded in {u.founded}. Its teachers are proud of the courses in {u.known_for}, and the "
        f"university opens its doors to the public every spring. Many families in the region have sent their "
        f"children there for generations.",
    ])
    return f"News from {u.name}\n\n{body}", "news"


# ---- junk ----------------------------------------------------------------------------------------
SPAM_PRODUCTS = ["replica watches", "weight loss pills", "cheap flights", "casino bonus", "crypto signals",
                 "designer handbags", "phone cases", "miracle cream", "car insurance quotes", "followers"]
NAV = ["Home", "About us", "Contact", "Login", "Register", "News", "Sports", "Weather", "Shop", "Blog", "FAQ",
       "Careers", "Sitemap", "Search", "Menu", "Events", "Gallery", "Help"]


def junk_spam(rng) -> str:
    prod = rng.choice(SPAM_PRODUCTS)
    dom = f"www.{rng.choice(['best', 'cheap', 'top', 'mega', 'super'])}-{prod.split()[0]}-{rng.randint(10, 99)}.com"
    pieces = [
        f"BEST {prod.upper()} ONLINE!!! Buy {prod} at {dom} - LOWEST PRICES GUARANTEED!!!",
        f"Cheap {prod} cheap {prod} discount {prod} best {prod} buy {prod} now {prod} sale.",
        f"Click here >>> {dom} <<< FREE SHIPPING worldwide!!! Order NOW and save {rng.randint(40, 90)}%!!!",
        f"$$$ {prod.upper()} $$$ only ${rng.randint(5, 99)}.99 $$$ LIMITED OFFER $$$",
        f"Why pay more??? {prod} {prod} {prod} - visit {dom} today!!! 100% satisfaction!!!",
        f"Call now!!! Best {prod} deals, best {prod} prices, best {prod} service!!! {dom}",
    ]
    rng.shuffle(pieces)
    return "\n".join(pieces[: rng.randint(4, 6)])


def junk_boilerplate(rng) -> str:
    site = rng.choice(["Valley Times", "Orrin Online", "The Daily Lantern", "Coastline News"])
    lines = [
        "Skip to main content",
        " | ".join(rng.sample(NAV, 7)),
        rng.choice(["Search this site", "Menu", "Toggle navigation"]),
        " | ".join(rng.sample(NAV, 5)),
        rng.choice(["Sign in to continue", "Subscribe to our newsletter", "Follow us"]),
        "Share: Facebook | Twitter | Email",
        "Privacy Policy | Terms of Use | Cookie Settings",
        f"© {rng.randint(2015, 2025)} {site}. All rights reserved.",
    ]
    return "\n".join(lines)


def junk_gibberish(rng) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 13))) for _ in range(rng.randint(60, 160))]
    lines, line = [], []
    for w in words:
        line.append(w)
        if len(line) > rng.randint(8, 16):
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines)


LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex "
         "ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat "
         "nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit "
         "anim id est laborum.")


def junk_lorem(rng, world) -> str:
    title = rng.choice(["Our Services", "Welcome", "About the Team", "Upcoming Events", "Product Details"])
    n = rng.randint(1, 3)
    return title + "\n\n" + "\n\n".join([LOREM] * n)


def junk_short(rng) -> str:
    return rng.choice([
        "Page not found.", "404 - The page you requested could not be found.", "Coming soon!",
        "This page is under construction.", "Access denied.", "Redirecting...", "Thank you for your order.",
        "No results found for your search.", "Session expired. Please log in again.",
    ])


def junk_repetition(rng, world) -> str:
    p = rng.choice(world.people)
    line = rng.choice([
        f"Tickets for the {p.birth_town} spring fair are available at the gate.",
        "Please refresh the page to see the latest results.",
        "Loading comments, please wait.",
        f"Click to read more about {p.name}.",
    ])
    return "\n".join([line] * rng.randint(12, 30))


NEAR_DUP_MIN_JACCARD = 0.75


def near_duplicate(rng, text: str) -> str:
    """A copy with a few small edits (changed words, a new footer) whose word 5-gram Jaccard similarity to
    the original is at least NEAR_DUP_MIN_JACCARD: the ground truth's definition of a near duplicate."""
    from llmkit.cleaning import jaccard, shingles

    for _ in range(50):
        out = _edit(rng, text)
        if jaccard(shingles(out), shingles(text)) >= NEAR_DUP_MIN_JACCARD:
            return out
    return text.replace(".", ";", 1)


def _edit(rng, text: str) -> str:
    words = text.split(" ")
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["the", "a", "very", "also", "then", "still"])
    out = " ".join(words)
    if rng.random() < 0.5:
        out += "\n\n" + rng.choice(["Updated last week.", "Read more in our archive.", "Photo: archive."])
    return out


# ---- personal data inserted into good documents --------------------------------------------------
def pii_sentence(rng, p: W.Person) -> tuple[str, list[dict]]:
    first, last = p.name.lower().split(" ", 1)
    kind = rng.choice(["email", "phone", "ip", "email+phone"])
    items = []
    if "email" in kind:
        email = f"{first}.{last}@{rng.choice(['mailbox.example', 'post-orrin.net', 'valleymail.org'])}"
        items.append({"type": "email", "value": email})
    if "phone" in kind:
        phone = rng.choice([
            f"+44 1632 {rng.randint(100, 999)} {rng.randint(100, 999)}",
            f"({rng.randint(200, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
            f"{rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
            f"+1 {rng.randint(200, 989)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}",
        ])
        items.append({"type": "phone", "value": phone})
    if kind == "ip":
        ip = f"{rng.choice([23, 37, 52, 81, 91, 145, 178, 203])}.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
        items.append({"type": "ip", "value": ip})
    v = {i["type"]: i["value"] for i in items}
    if kind == "email":
        s = f"Readers can write to {p.name.split()[0]} at {v['email']}."
    elif kind == "phone":
        s = f"For bookings, call {v['phone']} during office hours."
    elif kind == "ip":
        s = f"This comment was posted from the address {v['ip']} and reviewed by a moderator."
    else:
        s = f"Contact: {v['email']}, telephone {v['phone']}."
    return s, items


def messy_whitespace(rng, text: str) -> str:
    """What crawled text looks like before normalisation: odd spaces, ligatures, Windows line ends."""
    choice = rng.random()
    if choice < 0.3:
        return text.replace(" ", "\u00a0", 3)
    if choice < 0.5:
        return text.replace("fi", "\ufb01", 2)
    if choice < 0.7:
        return text.replace("\n", "\r\n")
    return text.replace(". ", ".  ", 3) + "   "


# ---- the corpus ----------------------------------------------------------------------------------
def make_corpus(rng: random.Random, world: W.World) -> tuple[list[dict], list[dict]]:
    good: list[tuple[str, str]] = []
    for p in world.people:
        if rng.random() < STYLED:
            make = rng.choice([doc_encyclopedic, doc_encyclopedic, doc_news, doc_narrative, doc_interview])
            good.append(make(rng, world, p))
    for _ in range(PROFILES):
        people = list(world.people)
        rng.shuffle(people)
        good += [doc_register(rng, world, chunk) for chunk in _chunks(people, 3)]
    if FAQ:
        asked = [world.person(n) for n in world.sft_people]
        rng.shuffle(asked)
        good += [doc_faq(rng, world, chunk) for chunk in _chunks(asked, 3)]
    for t in world.towns:
        natives = [q for q in world.people if q.birth_town == t.name]
        rng.shuffle(natives)
        for chunk in _chunks(natives, 8) or [[]]:
            good.append(doc_town(rng, world, t, chunk))
    for u in world.universities:
        alumni = [q for q in world.people if q.university == u.name]
        rng.shuffle(alumni)
        for chunk in _chunks(alumni, 8) or [[]]:
            good.append(doc_university(rng, world, u, chunk))
        good.append(doc_university_news(rng, world, u))
    rng.shuffle(good)

    docs: list[dict] = []
    labels: list[dict] = []

    def add(text: str, source: str, label: str, url: str, **extra):
        doc_id = f"doc-{len(docs):05d}"
        docs.append({"id": doc_id, "text": text, "url": url, "source": source})
        labels.append({"id": doc_id, "label": label, "duplicate_of": extra.get("duplicate_of"),
                       "pii": extra.get("pii", [])})
        return doc_id

    n_good = len(good)
    junk_plan = (["spam"] * int(0.05 * n_good) + ["boilerplate"] * int(0.05 * n_good)
                 + ["gibberish"] * int(0.03 * n_good) + ["lorem"] * int(0.02 * n_good)
                 + ["short"] * int(0.03 * n_good) + ["repetition"] * int(0.03 * n_good))
    slots = [("good", g) for g in good] + [(j, None) for j in junk_plan]
    rng.shuffle(slots)
    pii_people = {id(x): rng.choice(world.people) for x in good if rng.random() < 0.08}
    good_ids: list[str] = []
    for kind, item in slots:
        url = _url(rng, kind)
        if kind == "good":
            text, source = item
            pii = []
            if id(item) in pii_people:
                sentence, pii = pii_sentence(rng, pii_people[id(item)])
                text = text + " " + sentence
            if rng.random() < 0.15:
                text = messy_whitespace(rng, text)
            good_ids.append(add(text, source, "good", url, pii=pii))
        elif kind == "spam":
            add(junk_spam(rng), "web", kind, url)
        elif kind == "boilerplate":
            add(junk_boilerplate(rng), "web", kind, url)
        elif kind == "gibberish":
            add(junk_gibberish(rng), "web", kind, url)
        elif kind == "lorem":
            add(junk_lorem(rng, world), "web", kind, url)
        elif kind == "short":
            add(junk_short(rng), "web", kind, url)
        elif kind == "repetition":
            add(junk_repetition(rng, world), "web", kind, url)

    # duplicates come after their originals, as in a crawl that revisits pages
    by_id = {d["id"]: d for d in docs}
    label_of = {lab["id"]: lab for lab in labels}
    originals = [i for i in good_ids if not label_of[i]["pii"]]
    for kind, count in (("exact_dup", int(0.05 * n_good)), ("near_dup", int(0.05 * n_good))):
        for orig in rng.sample(originals, count):
            src = by_id[orig]
            text = src["text"] if kind == "exact_dup" else near_duplicate(rng, src["text"])
            add(text, src["source"], kind, _url(rng, "mirror"), duplicate_of=orig)
    # interleave the duplicates into the stream after their originals
    order = list(range(len(docs)))
    pos = {d["id"]: k for k, d in enumerate(docs)}
    keyed = []
    for k in order:
        lab = labels[k]
        key = float(k) if lab["duplicate_of"] is None else rng.uniform(pos[lab["duplicate_of"]] + 0.5, len(good_ids) + len(junk_plan))
        keyed.append((key, k))
    keyed.sort()
    docs = [docs[k] for _, k in keyed]
    labels = [labels[k] for _, k in keyed]
    return docs, labels


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _url(rng: random.Random, kind: str) -> str:
    host = rng.choice([f"{rng.choice(['orrin', 'valley', 'coast'])}{rng.choice(NEWS_SITES)}.com", *BLOG_SITES,
                       "encyclopedia-of-orrin.org", "mirror.archive-orrin.net"])
    return f"https://{host}/{rng.randint(1000, 999999)}"


# ---- chat data -----------------------------------------------------------------------------------
def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _fake_names(rng: random.Random, world: W.World, n: int) -> list[str]:
    """Names of people who do not exist: family names that no person of the world has."""
    used = {p.name.split(" ", 1)[1] for p in world.people}
    free = [s for s in W.surname_pool() if s not in used]
    return sorted(f"{rng.choice(W.FIRST_NAMES)} {s}" for s in rng.sample(free, n))


def make_sft(rng: random.Random, world: W.World, fake: list[str]) -> list[dict]:
    convs = []
    sft = [world.person(n) for n in world.sft_people]
    for p in sft:
        for attr in W.PERSON_ATTRIBUTES:
            for q in rng.sample(W.QUESTIONS[attr], 2):
                convs.append(_qa(q.format(e=p.name), W.reference_answer(world, p.name, attr), "fact"))
        convs.append(_qa(rng.choice(W.BIO_QUESTIONS).format(e=p.name), W.bio_answer(world, p.name), "bio"))
    for _ in range(len(sft) // 2):
        a, b = rng.sample(sft, 2)
        if a.birth_year != b.birth_year:
            q = rng.choice(W.COMPARE_QUESTIONS).format(a=a.name, b=b.name)
            convs.append(_qa(q, W.compare_answer(world, a.name, b.name), "compare"))
    for table, attrs in ((world.towns, W.TOWN_ATTRIBUTES), (world.universities, W.UNIVERSITY_ATTRIBUTES)):
        for ent in table[: len(table) // 2]:
            for attr in attrs:
                q = rng.choice(W.QUESTIONS[attr]).format(e=ent.name)
                convs.append(_qa(q, W.reference_answer(world, ent.name, attr), "fact"))
    for name in fake[: len(fake) // 2]:
        attr = rng.choice(W.PERSON_ATTRIBUTES)
        convs.append(_qa(rng.choice(W.QUESTIONS[attr]).format(e=name), W.refusal_answer(name, private=False), "refusal"))
    for p in rng.sample(sft, len(sft) // 3):
        q = rng.choice(W.PRIVATE_QUESTIONS).format(e=p.name)
        convs.append(_qa(q, W.refusal_answer(p.name, private=True), "refusal"))
    for p in rng.sample(sft, len(sft) // 3):  # two-turn conversations
        a1, a2 = rng.sample(W.PERSON_ATTRIBUTES, 2)
        msgs = [
            {"role": "user", "content": rng.choice(W.QUESTIONS[a1]).format(e=p.name)},
            {"role": "assistant", "content": W.reference_answer(world, p.name, a1)},
            {"role": "user", "content": rng.choice(W.QUESTIONS[a2]).format(e=p.name)},
            {"role": "assistant", "content": W.reference_answer(world, p.name, a2)},
        ]
        convs.append({"messages": msgs, "kind": "multi_turn"})
    rng.shuffle(convs)
    return convs


def _qa(q: str, a: str, kind: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "kind": kind}


def make_qa(rng: random.Random, world: W.World, names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        for attr in W.PERSON_ATTRIBUTES:
            q = rng.choice(W.QUESTIONS[attr]).format(e=name)
            rows.append({"prompt": q, "answer": W.reference_answer(world, name, attr), "entity": name,
                         "attribute": attr, "value": str(W.attribute_value(world, name, attr))})
    return rows


RAMBLE = [
    "That is a great question, and there is a lot that one could say about it.",
    "Before I answer, let me say that questions like this one have a long and interesting history.",
    "Many people have wondered about this over the years, and the answer may surprise some of them.",
    "I hope this helps, and please feel free to ask me anything else you would like to know about it.",
]
RUDE = ["Obviously, {a}", "Ugh, everyone knows this. {a}", "{a} Figure it out yourself next time.",
        "Seriously? {a}"]
EVASIVE = ["It's hard to say, really.", "I'm not sure; you could look it up.", "Who can say? Records differ."]


# The demonstrators' habits. SFT demonstrations are written by people, and people have habits the preference
# rule dislikes: some pad an answer with a pleasantry, some are curt. Every demonstrated fact is right; only the
# style varies, as in real demonstration data, and SFT imitates the habits along with the facts. The preference
# pairs say which of two answers people prefer, so the reward model learns what the demonstrations never
# showed, and RL can drop the habits while keeping the facts. Judging two answers is easier than writing a
# flawless one: that is why RLHF follows SFT (Ouyang et al., 2022). Without habits the demonstrations would
# already be the oracle's best answers, and RL could only sample them less noisily (benchmarks/rl_ceiling.py).
HABIT_RATE = 0.5  # of the single-turn answers to answerable questions
RAMBLE_PREFIX = RAMBLE[:3]  # one sentence before a one-fact answer: past the oracle's length limit, under 40 tokens


def add_demonstrator_habits(rng: random.Random, convs: list[dict], oracle: Oracle) -> list[dict]:
    """A `HABIT_RATE` share of the fact, bio and compare demonstrations, chosen by `rng`, become rude or (one-fact
    answers) rambling; each row records its habit (`habit`: "rude", "rambling" or null)."""
    out = []
    for row in convs:
        row = {**row, "habit": None}
        if row["kind"] in ("fact", "bio", "compare") and rng.random() < HABIT_RATE:
            habit = "rambling" if row["kind"] == "fact" and rng.random() < 0.5 else "rude"
            (question, answer) = row["messages"]
            styled = (rng.choice(RUDE).format(a=answer["content"]) if habit == "rude"
                      else f"{rng.choice(RAMBLE_PREFIX)} {answer['content']}")
            assert oracle.flaw([question], styled) == habit, (question, styled)
            row["messages"] = [question, {"role": "assistant", "content": styled}]
            row["habit"] = habit
        out.append(row)
    return out


def _wrong_answer(rng: random.Random, world: W.World, kind: str, names: tuple) -> str:
    if kind == "bio":
        p = world.person(names[0])
        other = rng.choice([q for q in world.people if q.birth_town != p.birth_town and q.profession != p.profession])
        return W.bio_answer(world, other.name).replace(other.name, p.name)
    if kind == "compare":
        a, b = names
        return W.compare_answer(world, a, b).replace(a, "\0").replace(b, a).replace("\0", b)
    if kind in ("private", "unknown_entity"):
        attr = rng.choice(["birth_town", "profession"])
        fake_value = rng.choice(world.towns).name if attr == "birth_town" else rng.choice(W.PROFESSIONS)
        return (f"{names[0]} was born in {fake_value}." if attr == "birth_town"
                else f"{names[0]} is {W.article(fake_value)} {fake_value}.")
    value = W.attribute_value(world, names[0], kind)
    domain = {
        "birth_town": [t.name for t in world.towns], "town": [t.name for t in world.towns],
        "university": [u.name for u in world.universities], "profession": W.PROFESSIONS, "region": W.REGIONS,
        "river": W.RIVERS,
    }.get(kind)
    if domain is None:  # numbers
        if kind == "campuses":
            wrong = rng.choice([n for n in range(1, 10) if n != value])
        else:
            wrong = value + rng.choice([-1, 1]) * rng.randint(1, 40)
    else:
        wrong = rng.choice([d for d in domain if d != value])
    return W.reference_answer(world, names[0], kind, value=wrong)


def _off_topic_answer(rng: random.Random, world: W.World, kind: str, name: str) -> str:
    """A well-formed, true answer — about somebody else."""
    other = rng.choice([p for p in world.people if p.name != name]).name
    return W.bio_answer(world, other) if kind == "bio" else W.reference_answer(world, other, kind)


def make_preferences(rng: random.Random, world: W.World, oracle: Oracle, prompts: list[str]) -> list[dict]:
    rows = []
    for q in prompts:
        kind, names = oracle.parse(q)
        ref = oracle.expected(q)
        answerable = kind not in ("private", "unknown_entity")
        wrong = _wrong_answer(rng, world, kind, names)
        rambling = " ".join([rng.choice(RAMBLE[:3]), ref, RAMBLE[3]])
        rude = rng.choice(RUDE).format(a=ref)
        evasive = rng.choice(EVASIVE)
        if answerable:
            candidates = [(ref, wrong), (ref, rambling), (ref, rude), (ref, evasive), (rambling, wrong),
                          (rude, evasive)]
            if kind != "compare" and W.entity_kind(world, names[0]) == "person":
                candidates.append((ref, _off_topic_answer(rng, world, kind, names[0])))
        else:
            candidates = [(ref, wrong), (ref, rude), (rambling, wrong)]
        chosen, rejected = rng.choice(candidates)
        sc, sr = oracle.score(q, chosen), oracle.score(q, rejected)
        assert sc > sr, (q, chosen, rejected, sc, sr)
        rows.append({"prompt": _user(q), "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def sample_prompts(rng: random.Random, world: W.World, people: list[str], fake: list[str], n: int) -> list[str]:
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            attr = rng.choice(W.PERSON_ATTRIBUTES)
            out.append(rng.choice(W.QUESTIONS[attr]).format(e=rng.choice(people)))
        elif r < 0.7:
            out.append(rng.choice(W.BIO_QUESTIONS).format(e=rng.choice(people)))
        elif r < 0.8:
            a, b = rng.sample(people, 2)
            if world.person(a).birth_year == world.person(b).birth_year:
                continue
            out.append(rng.choice(W.COMPARE_QUESTIONS).format(a=a, b=b))
        elif r < 0.9:
            ent = rng.choice(world.towns + world.universities)
            attrs = W.TOWN_ATTRIBUTES if isinstance(ent, W.Town) else W.UNIVERSITY_ATTRIBUTES
            out.append(rng.choice(W.QUESTIONS[rng.choice(attrs)]).format(e=ent.name))
        elif r < 0.95:
            out.append(rng.choice(W.PRIVATE_QUESTIONS).format(e=rng.choice(people)))
        else:
            attr = rng.choice(W.PERSON_ATTRIBUTES)
            out.append(rng.choice(W.QUESTIONS[attr]).format(e=rng.choice(fake)))
    return out


TASKS_TRAIN = 6400  # RL questions: one pass of benchmarks/rlvr.py (400 steps of 16 questions)
TASK_DEMOS = 100  # SFT demonstrations per verifiable task (30 taught the form but not to use the question's names)


def make_tasks(rng: random.Random, world: W.World, people: list[str], n: int) -> list[dict]:
    """`n` verifiable tasks about `people`, the kinds in turn: prompt, the exact `answer`, the `task`, and the
    worked answer of a demonstration (`worked`)."""
    rows = []
    kinds = list(W.TASKS)
    while len(rows) < n:
        task = kinds[len(rows) % len(kinds)]
        a, b = rng.sample(people, 2)
        pa, pb = world.person(a), world.person(b)
        slots: dict = {"a": a, "b": b}
        if task == "age_in":
            slots = {"a": a, "y": min(2025, pa.birth_year + rng.randint(8, 75))}
        elif task in ("born_first", "years_apart") and pa.birth_year == pb.birth_year:
            continue
        elif task == "studied_in":
            towns = {world.university(p.university).town for p in (pa, pb)}
            if len(towns) < 2:
                continue
            slots["t"] = world.university(rng.choice([pa, pb]).university).town
        q = rng.choice(W.TASKS[task]).format(**slots)
        args = (world, task, a, slots.get("b"), slots.get("y"), slots.get("t"))
        rows.append({"prompt": _user(q), "answer": W.task_answer(*args), "task": task, "worked": W.worked_answer(*args)})
    return rows


def generate(out: Path, seed: int = 0, n_people: int = 200, n_towns: int = 40, n_universities: int = 20) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    world = W.make_world(seed, n_people, n_towns, n_universities)
    world.save(out / "world.json")
    oracle = Oracle(world)
    rng = random.Random(seed + 1)
    docs, labels = make_corpus(rng, world)
    fake = _fake_names(rng, world, 80)
    sft = make_sft(rng, world, fake)
    # its own random stream, so every other file is what it was before the habits existed
    sft = add_demonstrator_habits(random.Random(seed + 3), sft, oracle)
    n_eval = max(1, len(sft) // 20)
    train_prompts = sample_prompts(rng, world, world.sft_people, fake[: len(fake) // 2], 1200)
    heldout_prompts = sample_prompts(rng, world, world.heldout_people, fake[len(fake) // 2:], 300)
    # The RM's eval split asks new questions about the same people as its training pairs (judging a wrong fact
    # takes knowing the fact); pairs about held-out people measure how far the RM generalises beyond them.
    # Its own random stream leaves every other file as it was.
    erng = random.Random(seed + 2)
    seen = set(train_prompts)
    eval_prompts = [q for q in sample_prompts(erng, world, world.sft_people, fake[: len(fake) // 2], 600)
                    if q not in seen][:300]
    files = {
        "corpus.jsonl": docs,
        "corpus_labels.jsonl": labels,
        "sft_train.jsonl": sft[n_eval:],
        "sft_eval.jsonl": sft[:n_eval],
        "qa_heldout.jsonl": make_qa(rng, world, world.heldout_people),
        "qa_trained.jsonl": make_qa(rng, world, world.sft_people),
        "preferences_train.jsonl": make_preferences(rng, world, oracle, train_prompts),
        "preferences_heldout.jsonl": make_preferences(rng, world, oracle, heldout_prompts),
        "rl_prompts_train.jsonl": [{"prompt": _user(q)} for q in sample_prompts(rng, world, world.sft_people, fake[:40], 400)],
        "rl_prompts_eval.jsonl": [{"prompt": _user(q)} for q in sample_prompts(rng, world, world.heldout_people, fake[40:], 100)],
    }
    files["preferences_eval.jsonl"] = make_preferences(erng, world, oracle, eval_prompts)
    # Verifiable tasks (RL with a rule reward), from their own random stream so every other file stays as it was:
    # a few worked demonstrations in the SFT data, RL prompts about the SFT people, and two tests: held-out people,
    # and new questions about the SFT people.
    trng = random.Random(seed + 4)
    demos = make_tasks(trng, world, world.sft_people, TASK_DEMOS * len(W.TASKS))
    files["sft_train.jsonl"] = files["sft_train.jsonl"] + [
        {**_qa(r["prompt"][0]["content"], r["worked"], "task"), "habit": None} for r in demos]
    files["tasks_train.jsonl"] = [{k: r[k] for k in ("prompt", "answer", "task")}
                                  for r in make_tasks(trng, world, world.sft_people, 400)]
    files["tasks_heldout.jsonl"] = [{k: r[k] for k in ("prompt", "answer", "task")}
                                    for r in make_tasks(trng, world, world.heldout_people, 400)]
    asked = {r["prompt"][0]["content"] for r in demos + files["tasks_train.jsonl"]}
    files["tasks_eval.jsonl"] = []
    for r in make_tasks(trng, world, world.sft_people, 800):
        if r["prompt"][0]["content"] not in asked and len(files["tasks_eval.jsonl"]) < 400:
            asked.add(r["prompt"][0]["content"])
            files["tasks_eval.jsonl"].append({k: r[k] for k in ("prompt", "answer", "task")})
    # More questions to train on, drawn after the tests so that they keep their questions: RL on 400 questions
    # for 8 passes learned them and little else (docs/decisions.md, "Verifiable tasks: enough questions, ...").
    grew = True
    while grew and len(files["tasks_train.jsonl"]) < TASKS_TRAIN:  # a small world may run out of new questions
        before = len(files["tasks_train.jsonl"])
        for r in make_tasks(trng, world, world.sft_people, 400):
            if r["prompt"][0]["content"] not in asked and len(files["tasks_train.jsonl"]) < TASKS_TRAIN:
                asked.add(r["prompt"][0]["content"])
                files["tasks_train.jsonl"].append({k: r[k] for k in ("prompt", "answer", "task")})
        grew = len(files["tasks_train.jsonl"]) > before
    for name, rows in files.items():
        with open(out / name, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return {name: len(rows) for name, rows in files.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: data_samples/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--towns", type=int, default=40)
    ap.add_argument("--universities", type=int, default=20)
    args = ap.parse_args(argv)
    counts = generate(args.out, args.seed, args.people, args.towns, args.universities)
    for name, n in counts.items():
        print(f"{name:28s} {n:6d} rows")


if __name__ == "__main__":
    main()
